"""Sample validation as pure functions of VMS records (no VMS, no poller)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from quotapilot.daemon.vms.validation import (
    JUMP_FLOOR_INODES,
    JUMP_FLOOR_RATIO,
    USED_OVER_HARD_IMPLAUSIBLE,
    Accepted,
    BadSample,
    HardLimits,
    QuotaNaming,
    Trend,
    agrees,
    capacity_sample,
    jumped,
    last_believed_limits,
    limit_held,
    plausible_rise,
    quota_label,
    quota_sample,
    robust_rate,
    went_backwards,
)
from quotapilot.forecasting.types import POOL_TARGET, TargetKind

T = 1_767_225_600.0
TIB = 2**40


def record(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"id": 4, "name": "raw", "path": "/cosmos7/raw", "used_capacity": 50 * TIB,
                            "hard_limit": 100 * TIB, "soft_limit": 90 * TIB, "used_inodes": 10,
                            "hard_limit_inodes": 1000, "state": "OK", "grace_period": "7d"}
    base.update(fields)
    return base


class TestQuotaSample:
    """A quota record becomes an Observation, or raises BadSample with the drop reason."""

    def test_a_good_record(self) -> None:
        obs = quota_sample("c1", record(), T, set())
        assert (obs.target.cluster, obs.target.name, obs.target.path, obs.target.kind) == \
            ("c1", "raw", "/cosmos7/raw", TargetKind.QUOTA)
        assert (obs.used_bytes, obs.hard_limit_bytes, obs.soft_limit_bytes) == (50 * TIB, 100 * TIB, 90 * TIB)
        assert (obs.quota_id, obs.grace_period, obs.state, obs.t) == (4, "7d", "OK", T)

    def test_zero_limits_mean_none(self) -> None:
        obs = quota_sample("c1", record(soft_limit=0, hard_limit_inodes=0), T, set())
        assert (obs.soft_limit_bytes, obs.hard_limit_inodes) == (None, None)

    @pytest.mark.parametrize("field", ["name", "path", "tenant_name"])
    def test_a_name_that_is_no_text_is_malformed(self, field: str) -> None:
        """JSON may escape a lone surrogate ("\\udcff"), which decodes to a str no UTF-8 can carry:
        kept, it took down the whole /metrics answer (one quota's label), the store and the MQTT
        topics. The sample is dropped as malformed, under a name that can be exported."""
        fields = record(tenant_id=2) if field == "tenant_name" else record()
        fields[field] = f"{fields.get(field) or 'acme'}\udcff"
        with pytest.raises(BadSample) as refused:
            quota_sample("c1", fields, T, set())
        assert refused.value.reason == "malformed"
        quota_label(fields).encode()  # the drop's target name (`id:<n>` for a bad name) can be exported
        str(refused.value).encode()  # the reason itself can be logged

    @pytest.mark.parametrize("hard_limit", [0, None, "absent"])
    def test_a_quota_without_a_byte_limit_is_a_sample(self, hard_limit: int | str | None) -> None:
        """VMS's 0 (or null, or no field: the schema requires only name and path) is "no limit": a
        quota that limits only the file count is watched, not dropped as `zero_limit`."""
        fields = record(hard_limit=hard_limit, soft_limit=0, used_capacity=500 * TIB)
        if hard_limit == "absent":
            del fields["hard_limit"]
        obs = quota_sample("c1", fields, T, set())
        assert (obs.hard_limit_bytes, obs.soft_limit_bytes, obs.used_bytes) == (None, None, 500 * TIB)
        assert (obs.used_inodes, obs.hard_limit_inodes) == (10, 1000)
        assert (obs.utilization_ratio, obs.inode_utilization_ratio) == (None, 0.01)

    def test_an_accounting_only_quota_is_a_sample(self) -> None:
        obs = quota_sample("c1", record(hard_limit=0, soft_limit=0, hard_limit_inodes=0, soft_limit_inodes=0),
                           T, set())
        limits = (obs.hard_limit_bytes, obs.soft_limit_bytes, obs.hard_limit_inodes, obs.soft_limit_inodes)
        assert limits == (None, None, None, None)
        assert (obs.used_bytes, obs.used_inodes) == (50 * TIB, 10)

    def test_an_inode_soft_limit_up_to_the_hard_one_is_kept(self) -> None:
        """Inode soft limit equal to the inode hard limit: plausible (only above it is not)."""
        obs = quota_sample("c1", record(soft_limit_inodes=1000), T, set())
        assert (obs.hard_limit_inodes, obs.soft_limit_inodes) == (1000, 1000)

    def test_an_inode_soft_limit_without_an_inode_hard_one_is_kept(self) -> None:
        """No inode hard limit (0: VMS's "no limit") to compare it with: kept, never `implausible`."""
        obs = quota_sample("c1", record(hard_limit_inodes=0, soft_limit_inodes=5000), T, set())
        assert (obs.hard_limit_inodes, obs.soft_limit_inodes) == (None, 5000)

    def test_a_soft_limit_without_a_hard_one_is_kept(self) -> None:
        """No hard limit to compare it with: the soft limit is what VMS says (never `implausible`)."""
        obs = quota_sample("c1", record(hard_limit=0, soft_limit=90 * TIB), T, set())
        assert (obs.hard_limit_bytes, obs.soft_limit_bytes) == (None, 90 * TIB)

    @pytest.mark.parametrize(("fields", "reason"), [
        ({"used_capacity": -1}, "negative"),
        ({"used_capacity": float("nan")}, "malformed"),
        ({"used_capacity": "12"}, "malformed"),
        ({"used_capacity": False}, "malformed"),
        ({"hard_limit": "100TB"}, "malformed"),
        ({"hard_limit": -1}, "negative"),
        ({"soft_limit": 101 * TIB}, "implausible"),
        ({"soft_limit_inodes": 1001}, "implausible"),  # inodes as bytes (review r11)
        ({"name": ""}, "malformed"),
        ({"name": POOL_TARGET}, "malformed"),
        ({"path": "relative/path"}, "malformed"),
        ({"state": 3}, "malformed"),
    ])
    def test_bad_records(self, fields: dict[str, Any], reason: str) -> None:
        with pytest.raises(BadSample) as bad:
            quota_sample("c1", record(**fields), T, set())
        assert reason == bad.value.reason

    def test_a_name_seen_this_poll_is_malformed(self) -> None:
        with pytest.raises(BadSample, match="duplicate"):
            quota_sample("c1", record(), T, {"raw"})

    def test_label_falls_back_to_the_id(self) -> None:
        assert (quota_label(record()), quota_label(record(name=None))) == ("raw", "id:4")


class TestTenantNaming:
    """A quota of the tenant the daemon works in is named as VMS names it; another tenant's gets
    `<tenant>:<name>` (or `tenant<id>:<name>`), so one name in two tenants is two targets."""

    @pytest.mark.parametrize(("tenant", "fields", "expected"), [
        # no tenant configured: the default tenant (id 1, "default") is home
        (None, {}, "raw"),  # an older VMS, or a record without tenant fields
        (None, {"tenant_id": 1, "tenant_name": "default"}, "raw"),
        (None, {"tenant_id": 1}, "raw"),
        (None, {"tenant_name": "default"}, "raw"),
        (None, {"tenant_id": 1, "tenant_name": "renamed"}, "raw"),  # the id decides
        (None, {"tenant_id": 2, "tenant_name": "acme"}, "acme:raw"),
        (None, {"tenant_id": 2}, "tenant2:raw"),  # VMS gives no tenant name
        (None, {"tenant_id": 2, "tenant_name": ""}, "tenant2:raw"),
        (None, {"tenant_name": "acme"}, "acme:raw"),
        (None, {"tenant_id": True, "tenant_name": "default"}, "raw"),  # not an id: the name decides
        # a tenant name that holds the separator (or "/", the alert id's) is not used
        (None, {"tenant_id": 3, "tenant_name": "a:b"}, "tenant3:raw"),
        (None, {"tenant_id": 3, "tenant_name": "a/b"}, "tenant3:raw"),
        # a configured tenant (X-Tenant-Name): VMS lists that tenant's quotas, and they are home
        ("acme", {"tenant_id": 2, "tenant_name": "acme"}, "raw"),
        ("acme", {"tenant_id": 2}, "raw"),
        ("acme", {}, "raw"),
        ("acme", {"tenant_id": 1, "tenant_name": "default"}, "default:raw"),
        ("default", {"tenant_id": 1, "tenant_name": "default"}, "raw"),
    ])
    def test_target_name(self, tenant: str | None, fields: dict[str, Any], expected: str) -> None:
        naming = QuotaNaming(tenant)
        assert expected == quota_sample("c1", record(**fields), T, set(), naming).target.name
        assert expected == quota_label(record(**fields), naming)

    def test_home_names_are_never_qualified(self) -> None:
        """A home quota whose name holds the separator keeps it (a single-tenant deployment sees
        no change); another tenant's quota whose qualified name it already is, is malformed,
        whatever the listing order."""
        home = record(id=1, name="acme:raw", tenant_id=1)
        other = record(id=2, name="raw", tenant_id=2, tenant_name="acme")
        for listing in ([home, other], [other, home]):
            naming = QuotaNaming.for_listing(listing, tenant=None)
            assert quota_sample("c1", home, T, set(), naming).target.name == "acme:raw"
            with pytest.raises(BadSample) as bad:
                quota_sample("c1", other, T, set(), naming)
            assert (bad.value.reason, bad.value.detail) == (
                "malformed", "quota name 'acme:raw' of the default tenant is this quota's target name")
            # dropped under its id: under `acme:raw` the home quota looked dropped at every poll
            assert (quota_label(home, naming), quota_label(other, naming)) == ("acme:raw", "id:2")

    def test_a_repeated_tenant_and_name_is_malformed(self) -> None:
        acme = record(tenant_id=2, tenant_name="acme")
        with pytest.raises(BadSample, match="duplicate quota name 'acme:raw'") as bad:
            quota_sample("c1", acme, T, {"acme:raw"}, QuotaNaming())
        assert bad.value.reason == "malformed"
        assert quota_sample("c1", record(), T, {"acme:raw"}).target.name == "raw"  # the default tenant's

    def test_another_tenants_pool_is_a_quota(self) -> None:
        pool = record(name=POOL_TARGET, tenant_id=2, tenant_name="acme")
        assert quota_sample("c1", pool, T, set()).target.name == "acme:pool"

    def test_a_nameless_record_is_labelled_by_its_id(self) -> None:
        assert quota_label(record(name=None, tenant_id=2, tenant_name="acme")) == "id:4"

    def test_bare_names_say_what_each_name_of_another_tenant_may_mean(self) -> None:
        """What a pause or policy override made by a bare name before 0198d09 may have meant."""
        acme, beta = {"tenant_id": 2, "tenant_name": "acme"}, {"tenant_id": 3, "tenant_name": "beta"}
        listing = [record(id=1, name="raw", tenant_id=1), record(id=2, name="raw", **beta),
                   record(id=3, name="raw", **acme), record(id=4, name="projects", **acme),
                   record(id=5, name="acme:tmp", tenant_id=1), record(id=6, name="tmp", **acme),
                   record(id=7, name=None, **acme), "not a record"]
        naming = QuotaNaming.for_listing(listing, tenant=None)
        # acme's `tmp` is refused (its target name is a home quota's): it has none to move to
        expected = {"raw": ("raw", "acme:raw", "beta:raw"), "projects": ("acme:projects",)}
        assert expected == naming.bare_names(listing)
        assert QuotaNaming.for_listing(listing[:1], tenant=None).bare_names(listing[:1]) == {}


class TestCapacitySample:
    """`GET /clusters/` as a list, an object or a page envelope."""

    @pytest.mark.parametrize("wrap", [lambda r: [r], lambda r: r, lambda r: {"results": [r], "count": 1}])
    def test_shapes(self, wrap: Any) -> None:
        cluster = {"usable_capacity_bytes": 1000, "free_usable_capacity": 400, "state": "ONLINE"}
        capacity, obs = capacity_sample("c1", wrap(cluster), T)
        assert (capacity.used_bytes, capacity.free_bytes, capacity.state) == (600, 400, "ONLINE")
        assert (obs.target.name, obs.target.kind, obs.hard_limit_bytes) == (POOL_TARGET, TargetKind.POOL, 1000)

    def test_what_the_quotas_promise_and_use(self) -> None:
        """Both: the reserve guard counts the quotas' unused promises as taken (`net_of_overcommit`)."""
        cluster = {"usable_capacity_bytes": 1000, "free_usable_capacity": 400,
                   "quotas_allocated_capacity": 500, "quotas_used_capacity": 300}
        capacity, _ = capacity_sample("c1", [cluster], T)
        assert (capacity.quotas_allocated_bytes, capacity.quotas_used_bytes) == (500, 300)

    @pytest.mark.parametrize(("body", "reason"), [
        ([], "malformed"),
        ({"results": [], "count": 0}, "malformed"),
        ([{"usable_capacity_bytes": 0, "free_usable_capacity": 0}], "zero_limit"),
        ([{"usable_capacity_bytes": 10, "free_usable_capacity": 11}], "implausible"),
        ([{"usable_capacity_bytes": 10}], "malformed"),
    ])
    def test_bad(self, body: Any, reason: str) -> None:
        with pytest.raises(BadSample) as bad:
            capacity_sample("c1", body, T)
        assert reason == bad.value.reason


class TestWentBackwards:
    """A fall beyond the tolerance is dropped once; the next sample settles it."""

    PREVIOUS = Accepted(T, used_bytes=1000, used_inodes=100)

    def check(self, used: int, trend: Trend, inodes: int | None = 100) -> tuple[Trend, bool]:
        return went_backwards(self.PREVIOUS, used, inodes, tolerance_ratio=0.05, trend=trend)

    def test_no_history_accepts(self) -> None:
        assert went_backwards(None, 0, None, tolerance_ratio=0.05, trend=Trend.STEADY) == (Trend.STEADY, False)

    def test_within_tolerance(self) -> None:
        assert self.check(960, Trend.STEADY) == (Trend.STEADY, False)

    def test_first_fall_is_suspect_and_dropped(self) -> None:
        assert self.check(10, Trend.STEADY) == (Trend.SUSPECT, True)

    def test_inodes_falling_count_too(self) -> None:
        assert self.check(1000, Trend.STEADY, inodes=10) == (Trend.SUSPECT, True)

    def test_a_second_fall_confirms_a_decline(self) -> None:
        assert self.check(10, Trend.SUSPECT) == (Trend.DECLINING, False)
        assert self.check(10, Trend.DECLINING) == (Trend.DECLINING, False)

    def test_back_up_is_steady_again(self) -> None:
        assert self.check(1001, Trend.SUSPECT) == (Trend.STEADY, False)


class TestUsedFarOverHard:
    """`used` a little over the hard limit is an over-run VMS allows; far over it is a wrong record."""

    def test_a_little_over_is_kept(self) -> None:
        obs = quota_sample("c", record(used_capacity=105 * TIB, hard_limit=100 * TIB), T, set())
        assert obs.used_bytes == 105 * TIB

    def test_far_over_is_implausible(self) -> None:
        """Issue 13: 14 TB used under a 1 TB hard limit."""
        with pytest.raises(BadSample) as bad:
            quota_sample("c", record(used_capacity=14 * 10**12, hard_limit=10**12, soft_limit=None), T, set())
        assert bad.value.reason == "implausible"

    def test_the_factor_is_the_documented_one(self) -> None:
        edge = int(100 * TIB * USED_OVER_HARD_IMPLAUSIBLE)
        quota_sample("c", record(used_capacity=edge, hard_limit=100 * TIB), T, set())
        with pytest.raises(BadSample):
            quota_sample("c", record(used_capacity=edge + 1, hard_limit=100 * TIB), T, set())


class TestJumped:
    """A rise beyond the plausible one is dropped once; the next sample settles it."""

    HARD = 100 * TIB
    PREVIOUS = Accepted(T, used_bytes=70 * TIB, used_inodes=None)
    RATES = (1e6, 2e6, 1.5e6, 1e6)  # bytes/s: ~1 TB a poll of 600 s at most, x4

    def check(self, used: int, t: float = T + 600, suspect: Accepted | None = None,
              rates: tuple[float, ...] = RATES) -> tuple[Accepted | None, bool]:
        return jumped(self.PREVIOUS, suspect, Accepted(t, used, None), hard_limit_bytes=self.HARD,
                      rates=rates, tolerance_ratio=0.05)

    def test_no_history_accepts(self) -> None:
        sample = Accepted(T, 99 * TIB, None)
        assert jumped(None, None, sample, hard_limit_bytes=self.HARD, rates=(),
                                       tolerance_ratio=0.05) == (None, False)

    def test_a_rise_at_the_usual_rate_is_accepted(self) -> None:
        assert self.check(70 * TIB + 600 * 2_000_000) == (None, False)

    def test_a_jump_is_suspect_and_dropped(self) -> None:
        suspect, drop = self.check(99 * TIB)
        assert (Accepted(T + 600, 99 * TIB, None), True) == (suspect, drop)

    def test_back_to_the_old_level_forgets_the_suspect(self) -> None:
        suspect = Accepted(T + 600, 99 * TIB, None)
        assert self.check(70 * TIB + 2**30, t=T + 1200, suspect=suspect) == (None, False)

    def test_agreeing_with_the_suspect_confirms_it(self) -> None:
        suspect = Accepted(T + 600, 90 * TIB, None)
        assert self.check(90 * TIB + 2**30, t=T + 1200, suspect=suspect) == (None, False)

    def test_far_below_the_suspect_is_a_new_suspect(self) -> None:
        suspect = Accepted(T + 600, 99 * TIB, None)
        new, drop = self.check(85 * TIB, t=T + 1200, suspect=suspect)
        assert (Accepted(T + 1200, 85 * TIB, None), True) == (new, drop)

    def test_one_outlier_rate_does_not_widen_the_bound(self) -> None:
        """A single huge rate in the window is set aside: the jump is still caught."""
        assert self.check(99 * TIB, rates=(*self.RATES, 1e12))[1]
        assert not self.check(99 * TIB, rates=(*self.RATES, 1e12, 1e12))[1]  # shown twice: believed

    def test_the_floor_lets_a_quiet_quota_move(self) -> None:
        """No rate at all: up to 2 % of the hard limit (or 1 GiB) passes unconfirmed."""
        assert not self.check(70 * TIB + int(self.HARD * JUMP_FLOOR_RATIO), rates=())[1]
        assert self.check(70 * TIB + int(self.HARD * JUMP_FLOOR_RATIO) + 1, rates=())[1]
        assert plausible_rise(0.0, 600, None) == 2**30

    def test_without_a_limit_the_floor_scales_with_the_usage(self) -> None:
        """VMS's "no limit" (None) leaves the usage as the only scale: up to 2 % of the previous
        sample passes unconfirmed (not 1 GiB alone: a quota without a byte limit that wrote more a
        poll was never confirmed), and a glitch of twice the usage is still a jump."""
        edge = 70 * TIB + int(70 * TIB * JUMP_FLOOR_RATIO)
        for rates in ((), self.RATES):
            assert jumped(self.PREVIOUS, None, Accepted(T + 600, edge, None), hard_limit_bytes=None,
                          rates=rates, tolerance_ratio=0.05) == (None, False)
        assert jumped(self.PREVIOUS, None, Accepted(T + 600, edge + 1, None), hard_limit_bytes=None, rates=(),
                      tolerance_ratio=0.05)[1]
        assert jumped(self.PREVIOUS, None, Accepted(T + 600, 140 * TIB, None), hard_limit_bytes=None,
                      rates=self.RATES, tolerance_ratio=0.05)[1]
        previous = Accepted(T, used_bytes=70 * TIB, used_inodes=1_000_000)
        files = Accepted(T + 600, used_bytes=70 * TIB, used_inodes=1_000_000 + 20_000)
        assert jumped(previous, None, files, hard_limit_bytes=None, rates=(), tolerance_ratio=0.05) == (None, False)

    def test_a_first_sample_without_a_limit_is_confirmed_by_the_next(self) -> None:
        """`agrees` (floors alone): 20 GiB a poll into a 70 TiB quota without a byte limit."""
        first = Accepted(T, used_bytes=70 * TIB, used_inodes=900_000, confirmed=False)
        second = Accepted(T + 600, used_bytes=70 * TIB + 20 * 2**30, used_inodes=900_010)
        assert agrees(first, second, hard_limit_bytes=None, tolerance_ratio=0.05, hard_limit_inodes=1_000_000)

    def test_an_inode_jump_is_suspect_too(self) -> None:
        previous = Accepted(T, used_bytes=70 * TIB, used_inodes=500_000)
        glitch = Accepted(T + 600, used_bytes=70 * TIB, used_inodes=990_000)
        assert (glitch, True) == jumped(previous, None, glitch, hard_limit_bytes=self.HARD, rates=self.RATES,
                                        hard_limit_inodes=1_000_000, inode_rates=(1.0, 2.0),
                                        tolerance_ratio=0.05)
        steady = Accepted(T + 600, used_bytes=70 * TIB, used_inodes=500_000 + JUMP_FLOOR_INODES)
        assert jumped(previous, None, steady, hard_limit_bytes=self.HARD, rates=self.RATES,
                                       hard_limit_inodes=None, inode_rates=(), tolerance_ratio=0.05) == (None, False)

    def test_robust_rate(self) -> None:
        assert robust_rate([]) == 0.0
        assert robust_rate([-5.0, 0.0]) == 0.0
        assert robust_rate([7.0, 3.0]) == 7.0
        assert robust_rate([1.0, 3.0, 1e9]) == 3.0


class TestLimitHeld:
    """A hard limit that moved without a write of ours holds its sample one poll, never two in a
    row; usage and limits are judged apart (`agrees` compares usage only)."""

    @staticmethod
    def sample(k: int, hard_tib: int, *, inodes: int = 1000) -> Accepted:
        return Accepted(T + 600 * k, 50 * TIB, 10, hard_limit_bytes=hard_tib * TIB, hard_limit_inodes=inodes)

    def held_flags(self, limits: list[int]) -> list[bool]:
        """Whether each of successive samples with these hard limits (TiB) is held (the first: never)."""
        flags, previous = [False], self.sample(0, limits[0])
        for k, hard in enumerate(limits[1:], start=1):
            sample = self.sample(k, hard)
            flags.append(limit_held(previous, sample))
            previous = replace(sample, limit_held=flags[-1])
        return flags

    @pytest.mark.parametrize(("limits", "expected"), [
        ([100, 100, 100], [False, False, False]),
        ([100, 60, 100, 100], [False, True, False, False]),  # a glitch is held, the return believed
        ([100, 60, 60, 60], [False, True, False, False]),  # a lasting change: believed on the repeat
        ([100, 101, 102, 103, 104], [False, True, False, True, False]),  # moving every poll
    ], ids=["steady", "glitch", "lasting", "moving"])
    def test_never_two_polls_in_a_row(self, limits: list[int], expected: list[bool]) -> None:
        assert expected == self.held_flags(limits)

    def test_a_limit_we_wrote_is_not_held(self) -> None:
        previous = self.sample(0, 100)
        assert not limit_held(previous, self.sample(1, 150), written=(150 * TIB, None))
        assert limit_held(previous, self.sample(1, 160), written=(150 * TIB, None))

    def test_inode_limits_count_too(self) -> None:
        assert limit_held(self.sample(0, 100), self.sample(1, 100, inodes=20))

    def test_agrees_compares_usage_only(self) -> None:
        """A first sample followed by a moved limit: its usage is confirmed (the limit is
        `limit_held`'s), so a limit moving from the start is not held for good."""
        assert agrees(self.sample(0, 100), self.sample(1, 101), hard_limit_bytes=101 * TIB, tolerance_ratio=0.05)


class TestLastBelievedLimits:
    """What a restart recovers its baseline from: `limit_held` replayed over a quota's stored
    samples — the limits last believed, not the last read."""

    @staticmethod
    def believed(limits: list[int], ours: frozenset[int] = frozenset()) -> HardLimits | None:
        """The believed limits of samples with these hard limits (TiB; inodes steady at 1000);
        `ours`: the limits a write of ours asked for."""
        return last_believed_limits([(hard * TIB, 1000) for hard in limits],
                                    lambda limits: (limits[0] if limits[0] in {h * TIB for h in ours} else None, None))

    @pytest.mark.parametrize(("limits", "expected"), [
        ([], None),
        ([100, 100], 100),
        ([100, 100, 60], 100),  # read once: held (a glitch, or a change not believed yet)
        ([100, 100, 60, 60], 60),  # believed on the repeat
        ([100, 100, 60, 100], 100),  # a glitch, and the return from it
        ([100, 101, 102, 103], 102),  # moving every poll: every other move believed
    ], ids=["none", "steady", "held", "lasting", "glitch", "moving"])
    def test_the_last_believed_not_the_last_read(self, limits: list[int], expected: int | None) -> None:
        assert (None if expected is None else (expected * TIB, 1000)) == self.believed(limits)

    def test_a_limit_we_wrote_is_believed_at_once(self) -> None:
        assert self.believed([100, 150], ours=frozenset({150})) == (150 * TIB, 1000)
        # so the operator's move right after it is the one held
        assert self.believed([100, 150, 160], ours=frozenset({150})) == (150 * TIB, 1000)

    def test_inode_limits_count_too(self) -> None:
        assert last_believed_limits([(100, 1000), (100, 20)], lambda limits: (None, None)) == (100, 1000)

    def test_ours_is_asked_only_of_limits_that_moved(self) -> None:
        asked: list[HardLimits] = []

        def ours(limits: HardLimits) -> HardLimits:
            asked.append(limits)
            return None, None

        last_believed_limits([(100, 1), (100, 1), (150, 1), (150, 1)], ours)
        assert asked == [(150, 1)]

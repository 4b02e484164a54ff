"""The /api/v1 routes against a daemon faked at our boundary (snapshot from plain data, real
SQLite store, virtual clock): reads, preflight, reservations, overrides, auth and validation."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from api_fakes import TB, TIB, FakeDaemon, Quota, api_client, auth, default_quotas, make_settings, target_id
from openapi_schemas import validator
from structlog.testing import capture_logs

from quotapilot.daemon.http.api.models import MAX_BYTES
from quotapilot.daemon.http.api.render import snapshot_records
from quotapilot.daemon.runtime.cycle import PollResult
from quotapilot.daemon.stages.renames import RenamedPauses
from quotapilot.daemon.store.actions import ActionStore
from quotapilot.daemon.store.db import Database
from quotapilot.daemon.store.overrides import OverrideStore
from quotapilot.forecasting.types import Decision, DecisionKind, Dimension


@pytest.fixture
def daemon(tmp_path: Path) -> FakeDaemon:
    settings = make_settings(tmp_path)
    return FakeDaemon(settings=settings, db=Database(settings.store.path), quotas=default_quotas())


def enforce(daemon: FakeDaemon, tmp_path: Path, **policy: object) -> None:
    daemon.settings = make_settings(tmp_path, policy={"mode": "enforce", **policy})


class TestReads:
    """Targets are listed with usage, runway and overrides; addressed by name or path."""

    async def test_list_targets(self, daemon: FakeDaemon) -> None:
        async with api_client(daemon) as client:
            resp = await client.get("/api/v1/targets")
            assert resp.status == 200
            body = await resp.json()
        names = [t["name"] for t in body["targets"]]
        assert names == ["cosmos7-processed", "cosmos7-raw", "cosmos7-temp"]
        raw = body["targets"][1]
        assert raw["used_bytes"] == 60 * TIB
        assert pytest.approx(raw["utilization_ratio"]) == 0.6
        assert raw["runway_seconds"]["p90"] < raw["runway_seconds"]["p50"]
        assert raw["mode"] == "observe"
        assert raw["paused"] is False
        assert len(body["clusters"]) == 1

    @pytest.mark.parametrize("url", [
        "/api/v1/targets/cosmos7-raw",
        "/api/v1/targets/%2Fcosmos7%2Fraw",
        "/api/v1/targets/by-path?path=/cosmos7/raw",
    ])
    async def test_one_target_by_name_or_path(self, daemon: FakeDaemon, url: str) -> None:
        from yarl import URL
        async with api_client(daemon) as client:
            resp = await client.get(URL(url, encoded=True))
            assert resp.status == 200
            assert (await resp.json())["path"] == "/cosmos7/raw"

    async def test_unknown_target_is_404_json(self, daemon: FakeDaemon) -> None:
        async with api_client(daemon) as client:
            resp = await client.get("/api/v1/targets/nope")
            assert resp.status == 404
            assert (await resp.json())["error"]["code"] == "unknown_target"

    async def test_openapi_document_is_served(self, daemon: FakeDaemon) -> None:
        async with api_client(daemon) as client:
            resp = await client.get("/api/v1/openapi.json")
            doc = await resp.json()
        assert doc["openapi"].startswith("3")
        assert "/api/v1/preflight" in doc["paths"]

    async def test_actions_empty_trail(self, daemon: FakeDaemon) -> None:
        async with api_client(daemon) as client:
            resp = await client.get("/api/v1/actions?target=/cosmos7/raw")
            assert resp.status == 200
            assert await resp.json() == {"actions": []}


class TestPreflight:
    """Room is judged after the p90 forecast growth over needed_for, not just limit − used."""

    async def test_small_write_fits(self, daemon: FakeDaemon) -> None:
        async with api_client(daemon) as client:
            resp = await client.post("/api/v1/preflight", json={"target": "/cosmos7/processed", "bytes": "1TB"})
            body = await resp.json()
        assert resp.status == 200
        assert body["fits"] is True and body["fits_now"] is True
        assert body["action"]["kind"] == "none"

    async def test_forecast_growth_eats_the_room(self, daemon: FakeDaemon) -> None:
        # raw: 40 TiB free now, but ~60 TB (p90) arrive over a day
        request = {"target": "cosmos7-raw", "bytes": 20 * TIB, "needed_for": "24h"}
        async with api_client(daemon) as client:
            body = await (await client.post("/api/v1/preflight", json=request)).json()
            short = await (await client.post("/api/v1/preflight", json={**request, "needed_for": 60})).json()
        assert body["fits_now"] is True
        assert body["fits"] is False
        assert body["bytes"]["forecast_growth"] == pytest.approx(60 * TB, rel=0.05)
        assert body["bytes"]["room_after_forecast"] < 20 * TIB <= body["bytes"]["room_now"]
        assert body["action"]["kind"] == "blocked" and body["action"]["guard"] == "observe_mode"
        assert short["fits"] is True

    async def test_cold_start_uses_the_observed_ingest_rate(self, daemon: FakeDaemon) -> None:
        daemon.quotas[0].forecast = False
        async with api_client(daemon) as client:
            body = await (await client.post("/api/v1/preflight", json={
                "target": "cosmos7-raw", "bytes": 1, "needed_for": "24h"})).json()
        assert body["bytes"]["growth_basis"] == "observed_rate"
        assert body["bytes"]["forecast_growth"] == pytest.approx(50 * TB, rel=0.01)

    async def test_enforce_mode_says_what_it_would_grow_to(self, daemon: FakeDaemon, tmp_path: Path) -> None:
        enforce(daemon, tmp_path)
        async with api_client(daemon) as client:
            body = await (await client.post("/api/v1/preflight", json={
                "target": "cosmos7-raw", "bytes": 80 * TIB, "needed_for": "6h"})).json()
        assert body["fits"] is False
        assert body["action"]["kind"] == "grow"
        assert body["action"]["new_hard_limit_bytes"] >= 60 * TIB + 80 * TIB
        assert body["earliest_fit_at"] == daemon.clock.now()

    async def test_ceiling_blocks(self, daemon: FakeDaemon, tmp_path: Path) -> None:
        enforce(daemon, tmp_path, max_hard_limit_bytes="120TiB")
        async with api_client(daemon) as client:
            resp = await client.post("/api/v1/preflight", json={"target": "cosmos7-raw", "bytes": "80TiB"})
            body = await resp.json()
        assert body["action"]["kind"] == "blocked"
        assert body["action"]["guard"] in ("ceiling", "max_growth")

    async def test_an_overcommitted_pool_is_planned_as_the_growth_stage_sees_it(self, daemon: FakeDaemon,
                                                                                 tmp_path: Path) -> None:
        """1000 TiB usable, 500 free, but the quotas already promise all 1000 TiB: the growth stage
        (`net_of_overcommit`) blocks a growth by the cluster reserve, so pre-flight does not
        promise one — a reservation needing it is 507, not granted as "the daemon would grow"
        (review r11: pre-flight planned with the raw pool)."""
        enforce(daemon, tmp_path)
        daemon.quotas_allocated_bytes = 1000 * TIB
        async with api_client(daemon) as client:
            resp = await client.post("/api/v1/reservations", headers=auth(), json={
                "target": "cosmos7-raw", "bytes": "50TiB", "ttl": "1h", "idempotency_key": "oc"})
            body = await resp.json()
        assert (resp.status, body["action"]["kind"], body.get("guard")) == (507, "blocked", "cluster_reserve")

    async def test_an_overcommitted_pool_still_fits_what_the_quota_has_room_for(self, daemon: FakeDaemon,
                                                                                tmp_path: Path) -> None:
        """Over-commitment holds growth only: a write the quota and the pool's free bytes take fits."""
        enforce(daemon, tmp_path)
        daemon.quotas_allocated_bytes = 1000 * TIB
        async with api_client(daemon) as client:
            body = await (await client.post("/api/v1/preflight", json={
                "target": "/cosmos7/processed", "bytes": "1TB"})).json()
        assert (body["fits"], body["action"]["kind"]) == (True, "none")

    @pytest.mark.parametrize(("payload", "field"), [
        ({"target": "cosmos7-raw", "bytes": "lots"}, "bytes"),
        ({"target": "cosmos7-raw", "bytes": -1}, "bytes"),
        ({"target": "cosmos7-raw"}, "bytes"),
        ({"target": "cosmos7-raw", "bytes": 1, "needed_for": "forever"}, "needed_for"),
        ({"target": "cosmos7-raw", "bytes": 1, "color": "red"}, "color"),
        ([1, 2], "body"),
    ])
    async def test_bad_values_are_400_naming_the_field(self, daemon: FakeDaemon, payload: object,
                                                         field: str) -> None:
        async with api_client(daemon) as client:
            resp = await client.post("/api/v1/preflight", json=payload)
            body = await resp.json()
        assert resp.status == 400
        assert field == body["error"]["field"]

    async def test_not_json_is_400(self, daemon: FakeDaemon) -> None:
        async with api_client(daemon) as client:
            resp = await client.post("/api/v1/preflight", data=b"{not json")
            assert resp.status == 400
            assert (await resp.json())["error"]["code"] == "bad_json"

    async def test_body_too_large_is_413(self, daemon: FakeDaemon) -> None:
        async with api_client(daemon) as client:
            resp = await client.post("/api/v1/preflight", data=b"{" + b" " * 70_000 + b"}")
            assert resp.status == 413

    async def test_unknown_target_is_404(self, daemon: FakeDaemon) -> None:
        async with api_client(daemon) as client:
            resp = await client.post("/api/v1/preflight", json={"target": "/no/such/path", "bytes": 1})
            assert resp.status == 404
            assert (await resp.json())["error"]["field"] == "target"


def record_growth(daemon: FakeDaemon, name: str, *, mode: str, status: str, ago: float,
                  quota_id: int | None = None) -> None:
    """An audit row of a growth of `name` `ago` seconds back, as the growth stage writes one (its
    quota id: the snapshot's, unless given)."""
    now = daemon.clock.now() - ago
    if quota_id is None:
        quota_id = daemon.snapshot.clusters["sim"].targets[name].observation.quota_id
    decision = Decision(target_id(name), Dimension.BYTES, DecisionKind.GROW, "grow", now, current_used=60 * TIB,
                        current_hard=100 * TIB, new_hard=120 * TIB)
    ActionStore(daemon.db).record(decision, mode=mode, status=status, now=now, quota_id=quota_id)


GROWN_FOR = {"target": "cosmos7-raw", "bytes": 20 * TIB, "needed_for": "12h"}
"""60 of 100 TiB used, 20 TiB more over 12 h of ~2.3 TiB/h: does not fit; the planner, asked with it
as demand, grows (75 % crossed now) and the quota is not full before 6 h."""


class TestPreflightGuardsAsTheStage:
    """Pre-flight reads the cooldown and the hourly count as the growth stage does: keyed by the
    quota's VMS id and path, in the target's own mode (review r11: by name, over every mode)."""

    async def action_of(self, daemon: FakeDaemon) -> tuple[str, str | None]:
        async with api_client(daemon) as client:
            body = await (await client.post("/api/v1/preflight", json=GROWN_FOR)).json()
        assert body["fits"] is False
        return body["action"]["kind"], body["action"]["guard"]

    async def test_an_observe_would_grow_starts_no_enforce_cooldown(self, daemon: FakeDaemon,
                                                                    tmp_path: Path) -> None:
        """A would-grow ten minutes ago, still in observe mode: switched to enforce, the daemon
        grows at once, and so says pre-flight."""
        record_growth(daemon, "cosmos7-raw", mode="observe", status="would_grow", ago=600)
        enforce(daemon, tmp_path)
        assert await self.action_of(daemon) == ("grow", None)

    async def test_a_real_growth_starts_the_cooldown(self, daemon: FakeDaemon, tmp_path: Path) -> None:
        enforce(daemon, tmp_path)
        record_growth(daemon, "cosmos7-raw", mode="enforce", status="verified", ago=600)
        assert await self.action_of(daemon) == ("blocked", "cooldown")

    async def test_a_quota_re_created_under_the_name_inherits_no_cooldown(self, daemon: FakeDaemon,
                                                                          tmp_path: Path) -> None:
        """The growth was of another quota (another VMS id) that had the name."""
        enforce(daemon, tmp_path)
        current = daemon.snapshot.clusters["sim"].targets["cosmos7-raw"].observation.quota_id
        assert current is not None
        record_growth(daemon, "cosmos7-raw", mode="enforce", status="verified", ago=600, quota_id=current + 1)
        assert await self.action_of(daemon) == ("grow", None)

    async def test_would_grows_do_not_take_an_enforce_target_s_hourly_slots(self, daemon: FakeDaemon,
                                                                             tmp_path: Path) -> None:
        enforce(daemon, tmp_path, max_actions_per_hour=1)
        record_growth(daemon, "cosmos7-processed", mode="observe", status="would_grow", ago=600)
        assert await self.action_of(daemon) == ("grow", None)
        record_growth(daemon, "cosmos7-processed", mode="enforce", status="verified", ago=600)
        assert await self.action_of(daemon) == ("blocked", "rate_limit")

class TestAuth:
    """Writes need the bearer token; without a configured token they are refused, saying why."""

    async def test_missing_and_wrong_token_are_401(self, daemon: FakeDaemon) -> None:
        body = {"target": "cosmos7-raw", "bytes": 1, "ttl": "1h", "idempotency_key": "k"}
        async with api_client(daemon) as client:
            missing = await client.post("/api/v1/reservations", json=body)
            wrong = await client.post("/api/v1/reservations", json=body, headers=auth("guess"))
            assert missing.status == 401 and wrong.status == 401
            assert "Bearer" in missing.headers["WWW-Authenticate"]
            assert (await wrong.json())["error"]["code"] == "unauthorized"

    async def test_no_token_configured_refuses_writes(self, tmp_path: Path) -> None:
        settings = make_settings(tmp_path, write_token=None)
        daemon = FakeDaemon(settings=settings, db=Database(tmp_path / "s.db"), quotas=default_quotas())
        async with api_client(daemon) as client:
            resp = await client.post("/api/v1/killswitch", json={"enabled": True}, headers=auth())
            body = await resp.json()
        assert resp.status == 403
        assert "write_token" in body["error"]["message"]

    async def test_token_from_file(self, tmp_path: Path) -> None:
        (tmp_path / "token").write_text("from-file\n")
        settings = make_settings(tmp_path, write_token=None, write_token_file=str(tmp_path / "token"))
        daemon = FakeDaemon(settings=settings, db=Database(tmp_path / "s.db"), quotas=default_quotas())
        async with api_client(daemon) as client:
            resp = await client.post("/api/v1/killswitch", json={"enabled": False}, headers=auth("from-file"))
            assert resp.status == 200


class TestWriteTokenFileIsReadAtUse:
    """Guards `[http] write_token_file` being read at use, as the README promises for `*_file`
    secrets: it was read once at start, so after an operator rotated a leaked token the old one
    kept working and the new one was refused until a restart. A file that becomes unreadable or
    empty refuses writes (503, retry later) instead of falling back to the last token it held,
    logged once, never with the token."""

    def daemon_with_token_file(self, tmp_path: Path, token: str) -> tuple[FakeDaemon, Path]:
        token_file = tmp_path / "write.token"
        token_file.write_text(token + "\n")
        token_file.chmod(0o600)
        settings = make_settings(tmp_path, write_token=None, write_token_file=str(token_file))
        return FakeDaemon(settings=settings, db=Database(tmp_path / "s.db"), quotas=default_quotas()), token_file

    async def test_a_rotated_token_is_honoured_and_the_old_one_refused(self, tmp_path: Path) -> None:
        daemon, token_file = self.daemon_with_token_file(tmp_path, "old-token")
        body = {"enabled": False}
        with capture_logs() as logs:
            async with api_client(daemon) as client:
                before = await client.post("/api/v1/killswitch", headers=auth("old-token"), json=body)
                token_file.write_text("new-token\n")  # same size: found by reading, not by its size
                new = await client.post("/api/v1/killswitch", headers=auth("new-token"), json=body)
                old = await client.post("/api/v1/killswitch", headers=auth("old-token"), json=body)
        assert (before.status, new.status, old.status) == (200, 200, 401)
        assert [e["event"] for e in logs if e["event"].startswith("api.write_token")] == ["api.write_token_changed"]
        assert "new-token" not in repr(logs) and "old-token" not in repr(logs)

    @pytest.mark.parametrize("spoil", ["remove", "empty", "a directory"])
    async def test_a_spoiled_file_refuses_writes_until_it_is_fixed(self, tmp_path: Path, spoil: str) -> None:
        daemon, token_file = self.daemon_with_token_file(tmp_path, "old-token")
        body = {"enabled": False}
        with capture_logs() as logs:
            async with api_client(daemon) as client:
                assert (await client.post("/api/v1/killswitch", headers=auth("old-token"), json=body)).status == 200
                if spoil == "empty":
                    token_file.write_text("\n")
                else:
                    token_file.unlink()
                    if spoil == "a directory":  # unreadable as a file, even to root (the test container)
                        token_file.mkdir()
                refused = [await client.post("/api/v1/killswitch", headers=auth("old-token"), json=body)
                           for _ in range(2)]
                answers = [await r.json() for r in refused]
                if token_file.is_dir():
                    token_file.rmdir()
                token_file.write_text("new-token\n")
                fixed = await client.post("/api/v1/killswitch", headers=auth("new-token"), json=body)
        assert [r.status for r in refused] == [503, 503] and fixed.status == 200
        assert {a["error"]["code"] for a in answers} == {"write_token_unavailable"}
        assert all("Retry-After" in r.headers for r in refused)
        events = [e["event"] for e in logs if e["event"].startswith("api.write_token")]
        assert events == ["api.write_token_unavailable", "api.write_token_restored"]  # once, not per request
        assert "old-token" not in repr(logs) and "new-token" not in repr(logs)
        validator("Error").validate(answers[0])


class TestReservations:
    """Granted capacity counts as demand; the same key gets the same answer; TTL and release end it."""

    async def test_grant_counts_against_later_preflights(self, daemon: FakeDaemon) -> None:
        async with api_client(daemon) as client:
            resp = await client.post("/api/v1/reservations", headers=auth(), json={
                "target": "/cosmos7/processed", "bytes": "30TiB", "ttl": "2h", "idempotency_key": "run-1"})
            granted = await resp.json()
            assert resp.status == 201
            assert granted["status"] == "granted"
            assert daemon.clock.now() + 7200 == granted["expires_at"]
            pre = await (await client.post("/api/v1/preflight", json={
                "target": "/cosmos7/processed", "bytes": 1})).json()
            assert pre["bytes"]["reserved"] == 30 * TIB
            listed = await (await client.get("/api/v1/targets/cosmos7-processed")).json()
            assert listed["reserved_bytes"] == 30 * TIB

    async def test_same_key_same_answer(self, daemon: FakeDaemon) -> None:
        body = {"target": "cosmos7-temp", "bytes": 10**9, "ttl": 3600, "idempotency_key": "k2"}
        async with api_client(daemon) as client:
            first = await client.post("/api/v1/reservations", json=body, headers=auth())
            daemon.clock.advance(60)
            second = await client.post("/api/v1/reservations", json=body, headers=auth())
            assert first.status == second.status == 201
            assert await first.json() == await second.json()
            other = await client.post("/api/v1/reservations", json={**body, "bytes": 5}, headers=auth())
            assert other.status == 422
            active = await (await client.get("/api/v1/reservations")).json()
            assert len(active["reservations"]) == 1

    async def test_release_and_expiry(self, daemon: FakeDaemon) -> None:
        async with api_client(daemon) as client:
            a = await (await client.post("/api/v1/reservations", headers=auth(), json={
                "target": "cosmos7-temp", "bytes": "1TiB", "ttl": "1h", "idempotency_key": "a"})).json()
            b = await (await client.post("/api/v1/reservations", headers=auth(), json={
                "target": "cosmos7-temp", "bytes": "2TiB", "ttl": "3h", "idempotency_key": "b"})).json()
            released = await client.delete(f"/api/v1/reservations/{a['id']}", headers=auth())
            assert released.status == 200
            assert (await released.json())["status"] == "released"
            unauth = await client.delete(f"/api/v1/reservations/{b['id']}")
            assert unauth.status == 401
            daemon.clock.advance(3 * 3600 + 1)
            expired = await (await client.get(f"/api/v1/reservations/{b['id']}")).json()
            assert expired["status"] == "expired"
            pre = await (await client.post("/api/v1/preflight", json={"target": "cosmos7-temp", "bytes": 1})).json()
            assert pre["bytes"]["reserved"] == 0
            missing = await client.delete("/api/v1/reservations/rsv_nope", headers=auth())
            assert missing.status == 404

    async def test_survives_restart(self, daemon: FakeDaemon) -> None:
        async with api_client(daemon) as client:
            await client.post("/api/v1/reservations", headers=auth(), json={
                "target": "cosmos7-temp", "bytes": "1TiB", "ttl": "1h", "idempotency_key": "keep"})
        daemon.db.close()
        reborn = FakeDaemon(settings=daemon.settings, db=Database(daemon.settings.store.path), clock=daemon.clock,
                            quotas=daemon.quotas)
        async with api_client(reborn) as client:
            listed = await (await client.get("/api/v1/reservations?target=cosmos7-temp")).json()
        assert [r["idempotency_key"] for r in listed["reservations"]] == ["keep"]

    async def test_refused_in_observe_mode_with_the_reason(self, daemon: FakeDaemon) -> None:
        async with api_client(daemon) as client:
            resp = await client.post("/api/v1/reservations", headers=auth(), json={
                "target": "cosmos7-raw", "bytes": "50TiB", "ttl": "1h", "idempotency_key": "big"})
            body = await resp.json()
        assert resp.status == 409
        assert body["guard"] == "observe_mode"
        assert body["status"] == "refused"

    async def test_grant_that_needs_growth_asks_for_a_cycle(self, daemon: FakeDaemon, tmp_path: Path) -> None:
        enforce(daemon, tmp_path)
        async with api_client(daemon) as client:
            resp = await client.post("/api/v1/reservations", headers=auth(), json={
                "target": "cosmos7-raw", "bytes": "50TiB", "ttl": "1h", "idempotency_key": "grow"})
            body = await resp.json()
        assert resp.status == 201
        assert body["action"]["kind"] == "grow"
        assert daemon.cycles_requested == ["sim"]

    async def test_cluster_reserve_refuses_with_507(self, daemon: FakeDaemon, tmp_path: Path) -> None:
        enforce(daemon, tmp_path)
        daemon.free_bytes = 120 * TIB  # reserve is 100 TiB of 1000: 20 TiB of room to grow
        async with api_client(daemon) as client:
            resp = await client.post("/api/v1/reservations", headers=auth(), json={
                "target": "cosmos7-raw", "bytes": "80TiB", "ttl": "1h", "idempotency_key": "huge"})
            body = await resp.json()
        assert resp.status == 507
        assert body["guard"] == "cluster_reserve"
        assert body["earliest_at"] is None

    async def test_paused_target_refuses_with_earliest_time(self, daemon: FakeDaemon, tmp_path: Path) -> None:
        enforce(daemon, tmp_path)
        async with api_client(daemon) as client:
            pause = await client.post("/api/v1/targets/cosmos7-raw/pause", headers=auth(),
                                      json={"until": "2h", "reason": "migration"})
            assert pause.status == 200
            resp = await client.post("/api/v1/reservations", headers=auth(), json={
                "target": "cosmos7-raw", "bytes": "50TiB", "ttl": "1h", "idempotency_key": "p"})
            body = await resp.json()
        assert resp.status == 409
        assert body["guard"] == "paused"
        assert daemon.clock.now() + 7200 == body["earliest_at"]


class TestReservationTotals:
    """Guards the store's 64-bit sums: on a quota with no inode limit nothing else bounds what is
    reserved, and two reservations of 2**62 inodes each were both granted, after which SQLite's
    SUM() overflowed and every target listing, preflight and target read was a 500 until they
    expired. A reservation that would take a target's active total past MAX_BYTES is refused
    (409, guard `max_reserved`, it lifts when reservations end)."""

    @pytest.mark.parametrize("inodes", [{"hard_inodes": None}, {"hard_inodes": None, "used_inodes": None}],
                             ids=["no inode limit", "no inode count"])
    async def test_a_total_past_max_bytes_is_refused_and_reads_keep_working(self, tmp_path: Path,
                                                                            inodes: dict[str, None]) -> None:
        settings = make_settings(tmp_path)
        daemon = FakeDaemon(settings=settings, db=Database(settings.store.path),
                            quotas=[Quota("scratch", used=TIB, hard=100 * TIB, **inodes)])
        request = {"target": "scratch", "bytes": 1, "inodes": MAX_BYTES, "ttl": "1h"}
        async with api_client(daemon) as client:
            first = await client.post("/api/v1/reservations", headers=auth(), json={**request, "idempotency_key": "a"})
            second = await client.post("/api/v1/reservations", headers=auth(),
                                       json={**request, "idempotency_key": "b"})
            refused = await second.json()
            listing = await client.get("/api/v1/targets")
            one = await client.get("/api/v1/targets/scratch")
            target = await one.json()
            preflight = await client.post("/api/v1/preflight", json={"target": "scratch", "bytes": 1, "inodes": 1})
            pre = await preflight.json()
        assert (first.status, second.status) == (201, 409)
        assert (refused["status"], refused["guard"]) == ("refused", "max_reserved")
        validator("ReservationAnswer").validate(refused)
        assert (listing.status, one.status, preflight.status) == (200, 200, 200)
        assert (target["reserved_inodes"], target["reservations"]) == (MAX_BYTES, 1)
        assert (pre["fits"], pre["action"]["guard"]) == (False, "max_reserved")


OTHER_TENANTS_DATA = Quota("tenant2:data", used=10 * TIB, hard=100 * TIB, path="/data")
"""Another tenant's quota at `/data` (see `one_quota_at_data`)."""


def one_quota_at_data(tmp_path: Path) -> FakeDaemon:
    """A daemon listing one quota, `data`, at `/data`."""
    settings = make_settings(tmp_path)
    return FakeDaemon(settings=settings, db=Database(settings.store.path),
                      quotas=[Quota("data", used=60 * TIB, hard=100 * TIB, path="/data")])


class TestOverrides:
    """Pause/resume per target and the kill switch, over HTTP, visible in the targets."""

    async def test_pause_resume(self, daemon: FakeDaemon) -> None:
        async with api_client(daemon) as client:
            resp = await client.post("/api/v1/targets/%2Fcosmos7%2Fraw/pause", headers=auth(), json={"reason": "x"})
            assert resp.status == 200
            shown = await (await client.get("/api/v1/targets/cosmos7-raw")).json()
            assert shown["paused"] is True and shown["pause_reason"] == "x"
            resp = await client.post("/api/v1/targets/cosmos7-raw/resume", headers=auth())
            assert resp.status == 200
            shown = await (await client.get("/api/v1/targets/cosmos7-raw")).json()
            assert shown["paused"] is False
            bad = await client.post("/api/v1/targets/cosmos7-raw/pause", headers=auth(), json={"until": "soon"})
            assert bad.status == 400 and (await bad.json())["error"]["field"] == "until"
            assert (await client.post("/api/v1/targets/cosmos7-raw/resume")).status == 401
            assert (await client.post("/api/v1/targets/nope/resume", headers=auth())).status == 404

    async def test_a_pause_follows_the_quota_through_a_rename(self, daemon: FakeDaemon) -> None:
        """Renamed in VMS (same VMS id and path: the same quota), a paused quota stays paused once
        the growth stage has moved the pause to its new name at a confirmed poll (`RenamedPauses`,
        run here on the fake's polls); resumed by the new name, it is lifted (review r11: the pause
        stayed with the old name)."""
        daemon.quotas[0].path = "/cosmos7/raw"
        renames = RenamedPauses(OverrideStore(daemon.db), lambda cluster, before: [], sole_cluster=True)

        async def poll() -> None:
            observations = tuple(replace(r.observation, quota_id=7) for r in snapshot_records(daemon.snapshot)
                                 if r.target.path == "/cosmos7/raw")
            now = daemon.clock.now()
            await renames.on_poll(PollResult("sim", now, observations), now, stored_before=now)

        async with api_client(daemon) as client:
            await poll()
            assert (await client.post("/api/v1/targets/cosmos7-raw/pause", headers=auth(),
                                      json={"reason": "migration"})).status == 200
            daemon.quotas[0].name = "cosmos7-raw-2027"
            with capture_logs() as logs:
                await poll()
                await poll()
            shown = await (await client.get("/api/v1/targets/cosmos7-raw-2027")).json()
            assert (shown["paused"], shown["pause_reason"]) == (True, "migration")
            assert (await client.post("/api/v1/targets/cosmos7-raw-2027/resume", headers=auth())).status == 200
        assert [(e["old_target"], e["target"]) for e in logs if e["event"] == "override.renamed"] == [
            ("cosmos7-raw", "cosmos7-raw-2027")]
        assert OverrideStore(daemon.db).active(daemon.clock.now()) == []

    async def test_resume_by_name_lifts_a_pause_made_by_path(self, daemon: FakeDaemon) -> None:
        async with api_client(daemon) as client:
            assert (await client.post("/api/v1/targets/by-path/pause?path=/cosmos7/raw",
                                      headers=auth())).status == 200
            assert (await client.post("/api/v1/targets/cosmos7-raw/resume", headers=auth())).status == 200
            shown = await (await client.get("/api/v1/targets/cosmos7-raw")).json()
        assert shown["paused"] is False
        assert OverrideStore(daemon.db).active(daemon.clock.now()) == []

    async def test_a_pause_stored_by_name_still_holds_and_is_lifted_by_path(self, daemon: FakeDaemon) -> None:
        OverrideStore(daemon.db).pause("cosmos7-raw", now=daemon.clock.now(), cluster="sim", reason="old")
        async with api_client(daemon) as client:
            shown = await (await client.get("/api/v1/targets/cosmos7-raw")).json()
            assert (shown["paused"], shown["pause_reason"]) == (True, "old")
            assert (await client.post("/api/v1/targets/%2Fcosmos7%2Fraw/resume", headers=auth())).status == 200
        assert OverrideStore(daemon.db).active(daemon.clock.now()) == []

    async def test_a_pause_stored_by_path_before_still_holds_and_is_lifted_by_name(self, daemon: FakeDaemon) -> None:
        """A pause stored by the path (by 88b95cb) holds the quota at that path; resume by its
        name lifts it, the path being this quota's alone."""
        OverrideStore(daemon.db).pause("/cosmos7/raw", now=daemon.clock.now(), cluster="sim", reason="old")
        async with api_client(daemon) as client:
            shown = await (await client.get("/api/v1/targets/cosmos7-raw")).json()
            assert (shown["paused"], shown["pause_reason"]) == (True, "old")
            assert (await client.post("/api/v1/targets/cosmos7-raw/resume", headers=auth())).status == 200
        assert OverrideStore(daemon.db).active(daemon.clock.now()) == []

    async def test_a_path_two_quotas_share_is_no_key_for_one(self, tmp_path: Path) -> None:
        """Two tenants' quotas at one path: pausing one stores it by its name, holding it alone."""
        settings = make_settings(tmp_path)
        daemon = FakeDaemon(settings=settings, db=Database(settings.store.path), quotas=[
            Quota("scratch", used=TIB, hard=10 * TIB, path="/scratch"),
            Quota("acme:scratch", used=TIB, hard=10 * TIB, path="/scratch")])
        async with api_client(daemon) as client:
            assert (await client.post("/api/v1/targets/acme:scratch/pause", headers=auth())).status == 200
            home = await (await client.get("/api/v1/targets/scratch")).json()
        assert home["paused"] is False
        assert [o.target for o in OverrideStore(daemon.db).active(daemon.clock.now())] == ["acme:scratch"]

    async def test_a_quota_listed_later_at_the_paused_path_is_not_paused(self, tmp_path: Path) -> None:
        """Paused while its path was its own, a quota's pause does not hold another tenant's
        quota listed at that path later (review r13: stored by the path, it held both)."""
        daemon = one_quota_at_data(tmp_path)
        async with api_client(daemon) as client:
            assert (await client.post("/api/v1/targets/data/pause", headers=auth(), json={"reason": "x"})).status == 200
            daemon.quotas.append(OTHER_TENANTS_DATA)  # another tenant's quota at that path, listed from now on
            other = await (await client.get("/api/v1/targets/tenant2:data")).json()
        assert other["paused"] is False, OverrideStore(daemon.db).active(daemon.clock.now())

    async def test_resuming_another_tenants_quota_at_the_path_keeps_the_pause(self, tmp_path: Path) -> None:
        """Resuming another tenant's quota at the paused quota's path lifts nothing of the paused
        one (review r13: resume deleted the pause stored by the path they share)."""
        daemon = one_quota_at_data(tmp_path)
        async with api_client(daemon) as client:
            assert (await client.post("/api/v1/targets/data/pause", headers=auth(), json={"reason": "x"})).status == 200
            daemon.quotas.append(OTHER_TENANTS_DATA)
            assert (await client.post("/api/v1/targets/tenant2:data/resume", headers=auth())).status == 200
            paused = await (await client.get("/api/v1/targets/data")).json()
        assert paused["paused"] is True

    async def test_pausing_again_replaces_a_pause_stored_by_path(self, daemon: FakeDaemon) -> None:
        """Pausing replaces the earlier pause (the store's rule), also one stored by the path (by
        88b95cb) while the path is this quota's alone."""
        OverrideStore(daemon.db).pause("/cosmos7/raw", now=daemon.clock.now(), cluster="sim", reason="old")
        async with api_client(daemon) as client:
            await client.post("/api/v1/targets/cosmos7-raw/pause", headers=auth(),
                              json={"until": "12h", "reason": "new"})
        assert [(o.target, o.paused_until, o.reason) for o in OverrideStore(daemon.db).active(daemon.clock.now())] \
            == [("cosmos7-raw", daemon.clock.now() + 12 * 3600, "new")]

    async def test_kill_switch(self, daemon: FakeDaemon) -> None:
        async with api_client(daemon) as client:
            on = await (await client.post("/api/v1/killswitch", headers=auth(),
                                          json={"enabled": True, "reason": "incident"})).json()
            assert on["enabled"] is True and on["reason"] == "incident"
            listed = await (await client.get("/api/v1/targets")).json()
            assert listed["kill_switch"] is True
            off = await (await client.post("/api/v1/killswitch", headers=auth(), json={"enabled": False})).json()
            assert off["enabled"] is False
            assert (await client.post("/api/v1/killswitch", headers=auth(), json={"enabled": "maybe"})).status == 400



class TestRobustness:
    """Bodies near the limit are read whole; slow or chunked bodies cannot hold a handler."""

    async def test_large_valid_body_is_read_whole(self, daemon: FakeDaemon) -> None:
        padding = " " * 60_000
        raw = ('{"target": "cosmos7-temp",' + padding + '"bytes": 1}').encode()

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(0, len(raw), 4096):
                yield raw[i:i + 4096]

        async with api_client(daemon) as client:
            resp = await client.post("/api/v1/preflight", data=chunks())
            assert resp.status == 200

    async def test_pause_without_a_body_pauses_until_resumed(self, daemon: FakeDaemon) -> None:
        async with api_client(daemon) as client:
            resp = await client.post("/api/v1/targets/cosmos7-temp/pause", headers=auth())
            body = await resp.json()
        assert resp.status == 200
        assert body["paused"] is True and body["paused_until"] is None


class TestDocument:
    """daemon/http/openapi.json describes exactly the routes the API registers."""

    def test_every_route_is_documented(self, daemon: FakeDaemon) -> None:
        """Every /api/v1 route the daemon's HTTP server serves (the API and the capacity plan)."""
        from quotapilot.daemon.http.api import OPENAPI_PATH
        from quotapilot.daemon.http.server import build_app

        app = build_app(daemon.settings.http, lambda: b"", lambda: (True, {}), api=daemon, capacity=lambda: None)
        served = {(r.method, r.resource.canonical) for r in app.router.routes()
                  if r.resource is not None and r.method != "HEAD"}
        doc = json.loads(OPENAPI_PATH.read_text())
        documented = {(method.upper(), path) for path, item in doc["paths"].items()
                      for method in item if method != "parameters"}
        assert {(method, path) for method, path in served if path.startswith("/api/v1/")} == documented

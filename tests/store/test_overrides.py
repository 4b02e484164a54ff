"""`OverrideStore.rename`: a pause moved to another target name (a bare name's pause, moved to
another tenant's qualified name by `stages.bare_names`); `pause(replacing=)`: a pause that replaces
the target's pause under another key; on SQLite and PostgreSQL."""

from __future__ import annotations

from store_helpers import OpenStore

from quotapilot.daemon.store.overrides import ANY, OverrideStore

T0 = 1_767_225_600.0


class TestPauseReplacing:
    """A pause replaces the target's pause under its other key: the API, pausing a quota by its
    name, replaces one stored by its path (by 88b95cb) while the path is that quota's alone."""

    def test_the_pause_by_path_on_that_cluster_goes(self, open_store: OpenStore) -> None:
        store = OverrideStore(open_store())
        store.pause("/cosmos7/raw", now=T0, cluster="c1", reason="by path")
        store.pause("/cosmos7/raw", now=T0, cluster="c2", reason="other cluster")
        store.pause("cosmos7-raw", now=T0 + 1, cluster="c1", reason="by name", replacing=("/cosmos7/raw",))
        expected = [("c1", "cosmos7-raw", "by name"), ("c2", "/cosmos7/raw", "other cluster")]
        assert expected == sorted((o.cluster, o.target, o.reason) for o in store.active(T0 + 1))

    def test_never_the_kill_switch_nor_itself(self, open_store: OpenStore) -> None:
        store = OverrideStore(open_store())
        store.engage_kill_switch(now=T0)
        store.pause("/q", now=T0 + 1, cluster=ANY, reason="again", replacing=(ANY, "/q"))
        assert sorted((o.cluster, o.target) for o in store.active(T0 + 1)) == [(ANY, ANY), (ANY, "/q")]


class TestRename:
    def test_the_pause_moves_with_its_reason_and_end(self, open_store: OpenStore) -> None:
        store = OverrideStore(open_store())
        store.pause("projects", now=T0, cluster="c1", until=T0 + 3600, reason="tenant migration")
        store.pause("projects", now=T0, cluster="c2", reason="elsewhere")
        assert store.rename("projects", "acme:projects", cluster="c1", now=T0 + 1)
        expected = [("c1", "acme:projects", T0 + 3600, "tenant migration"), ("c2", "projects", None, "elsewhere")]
        assert expected == [(o.cluster, o.target, o.paused_until, o.reason) for o in store.active(T0 + 1)]

    def test_a_pause_under_the_new_name_is_kept(self, open_store: OpenStore) -> None:
        store = OverrideStore(open_store())
        store.pause("projects", now=T0, cluster=ANY, reason="old")
        store.pause("acme:projects", now=T0 + 1, cluster=ANY, reason="re-issued")
        assert store.rename("projects", "acme:projects", cluster=ANY, now=T0 + 2)
        assert [(o.cluster, o.target, o.reason) for o in store.active(T0 + 2)] == [(ANY, "acme:projects", "re-issued")]

    def test_nothing_to_move_moves_nothing(self, open_store: OpenStore) -> None:
        store = OverrideStore(open_store())
        store.engage_kill_switch(now=T0)
        assert store.rename("projects", "acme:projects", cluster="c1", now=T0 + 1) is None
        assert [(o.cluster, o.target) for o in store.active(T0 + 1)] == [(ANY, ANY)]

    def test_an_expired_pause_under_the_new_name_gives_way(self, open_store: OpenStore) -> None:
        """An expired pause of the new name not pruned yet (prune is hourly, after the move) is no
        pause: the one in force moves over it, and the quota stays paused."""
        store = OverrideStore(open_store())
        store.pause("acme:projects", now=T0, cluster="c1", until=T0 + 3600, reason="old, expired")
        store.pause("projects", now=T0 + 10, cluster="c1", reason="indefinite, by bare name")
        renamed = store.rename("projects", "acme:projects", cluster="c1", now=T0 + 7200)
        assert renamed is not None and not renamed.already_paused
        expected = [("acme:projects", None, "indefinite, by bare name")]
        assert expected == [(o.target, o.paused_until, o.reason) for o in store.active(T0 + 7200)]

    def test_the_longer_pause_is_kept(self, open_store: OpenStore) -> None:
        """Whichever name has it: indefinite outlasts any end, a later end an earlier one. The
        kept pause keeps its own reason and time."""
        store = OverrideStore(open_store())
        store.pause("acme:projects", now=T0, cluster="c1", until=T0 + 3600, reason="short")
        store.pause("projects", now=T0 + 100, cluster="c1", reason="indefinite")
        store.pause("acme:scratch", now=T0, cluster="c1", until=T0 + 7200, reason="longer")
        store.pause("scratch", now=T0 + 100, cluster="c1", until=T0 + 3600, reason="shorter")
        projects = store.rename("projects", "acme:projects", cluster="c1", now=T0 + 200)
        scratch = store.rename("scratch", "acme:scratch", cluster="c1", now=T0 + 200)
        assert projects is not None and projects.already_paused
        assert scratch is not None and scratch.already_paused
        expected = [("acme:projects", None, "indefinite", T0 + 100), ("acme:scratch", T0 + 7200, "longer", T0)]
        actual = [(o.target, o.paused_until, o.reason, o.created_at) for o in store.active(T0 + 3601)]
        assert (expected, [projects.kept, scratch.kept]) == (actual, store.active(T0 + 3601))

    def test_an_expired_pause_is_not_moved(self, open_store: OpenStore) -> None:
        store = OverrideStore(open_store())
        store.pause("projects", now=T0, cluster="c1", until=T0 + 60, reason="expired")
        assert store.rename("projects", "acme:projects", cluster="c1", now=T0 + 120) is None
        assert store.active(T0) == []

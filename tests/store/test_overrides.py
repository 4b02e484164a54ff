"""`OverrideStore.rename`: a pause moved to another target name (a bare name's pause, moved to
another tenant's qualified name by `stages.bare_names`), on SQLite and PostgreSQL."""

from __future__ import annotations

from store_helpers import OpenStore

from quotapilot.daemon.store.overrides import ANY, OverrideStore

T0 = 1_767_225_600.0


class TestRename:
    def test_the_pause_moves_with_its_reason_and_end(self, open_store: OpenStore) -> None:
        store = OverrideStore(open_store())
        store.pause("projects", now=T0, cluster="c1", until=T0 + 3600, reason="tenant migration")
        store.pause("projects", now=T0, cluster="c2", reason="elsewhere")
        assert store.rename("projects", "acme:projects", cluster="c1")
        expected = [("c1", "acme:projects", T0 + 3600, "tenant migration"), ("c2", "projects", None, "elsewhere")]
        assert expected == [(o.cluster, o.target, o.paused_until, o.reason) for o in store.active(T0 + 1)]

    def test_a_pause_under_the_new_name_is_kept(self, open_store: OpenStore) -> None:
        store = OverrideStore(open_store())
        store.pause("projects", now=T0, cluster=ANY, reason="old")
        store.pause("acme:projects", now=T0 + 1, cluster=ANY, reason="re-issued")
        assert store.rename("projects", "acme:projects", cluster=ANY)
        assert [(o.cluster, o.target, o.reason) for o in store.active(T0 + 2)] == [(ANY, "acme:projects", "re-issued")]

    def test_nothing_to_move_moves_nothing(self, open_store: OpenStore) -> None:
        store = OverrideStore(open_store())
        store.engage_kill_switch(now=T0)
        assert not store.rename("projects", "acme:projects", cluster="c1")
        assert [(o.cluster, o.target) for o in store.active(T0 + 1)] == [(ANY, ANY)]

"""`stages.renames`: the name each quota (VMS id, path) was last confirmed under, and its pauses
moved to the new one."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from quotapilot.daemon.runtime.cycle import PollResult
from quotapilot.daemon.stages.renames import QuotaNames, Rename, RenamedPauses
from quotapilot.daemon.store.db import Database
from quotapilot.daemon.store.overrides import ANY, OverrideStore
from quotapilot.forecasting.types import Observation, TargetId, TargetKind

T0 = 1_767_225_600.0


def listed(name: str, *, quota_id: int = 7, path: str = "/raw", unconfirmed: bool = False) -> PollResult:
    obs = Observation(TargetId("c1", name, path, TargetKind.QUOTA), T0, 1, 10, None, None, None, quota_id=quota_id)
    return PollResult("c1", T0, (obs,), unconfirmed=frozenset({name}) if unconfirmed else frozenset())


class TestQuotaNames:
    def test_a_rename_is_said_at_the_confirmed_sample_once(self) -> None:
        names = QuotaNames()
        assert names.renamed(listed("raw")) == []
        assert names.renamed(listed("raw-2027", unconfirmed=True)) == []
        assert [Rename("c1", 7, "/raw", "raw", "raw-2027")] == names.renamed(listed("raw-2027"))
        assert names.renamed(listed("raw-2027")) == []

    def test_another_quota_under_the_name_is_no_rename(self) -> None:
        """Another VMS id (or path): another quota; its pause is not the first one's."""
        names = QuotaNames()
        names.renamed(listed("raw"))
        assert names.renamed(listed("raw-2027", quota_id=8)) == []
        assert names.renamed(listed("raw-2027", path="/raw2")) == []


class TestRenamedPauses:
    async def test_a_pause_of_every_cluster_moves_only_when_one_is_watched(self, tmp_path: Path) -> None:
        """On another cluster the old name may be another quota's."""
        store = OverrideStore(Database(tmp_path / "state.db"))
        store.pause("raw", now=T0, cluster=ANY, reason="all")
        renames = RenamedPauses(store, lambda cluster, before: [], sole_cluster=False)
        for poll in (listed("raw"), listed("raw-2027")):
            await renames.on_poll(poll, T0, stored_before=T0)
        assert [(o.cluster, o.target) for o in store.active(T0)] == [(ANY, "raw")]


def _obs(name: str, quota_id: int, path: str, t: float = T0) -> Observation:
    return Observation(TargetId("c1", name, path, TargetKind.QUOTA), t, 1, 10, None, None, None, quota_id=quota_id)


def _poll(*observations: Observation) -> PollResult:
    return PollResult("c1", T0, tuple(observations))


def _paused(store: OverrideStore) -> set[str]:
    return {o.target for o in store.active(T0)}


class TestRenamesInOnePoll:
    """All of a poll's renames move at once: one by one, a swap moved a pause there and back again,
    and a chain merged two quotas' pauses (review r14)."""

    async def test_two_quotas_swapping_names_keep_their_own_pauses(self, tmp_path: Path) -> None:
        """id 1 "a" (paused) and id 2 "b" swap names: id 1's pause must end on "b"."""
        store = OverrideStore(Database(tmp_path / "state.db"))
        renames = RenamedPauses(store, lambda cluster, before: [], sole_cluster=True)
        await renames.on_poll(_poll(_obs("a", 1, "/p1"), _obs("b", 2, "/p2")), T0, stored_before=T0)
        store.pause("a", now=T0, cluster="c1", reason="id 1's")
        await renames.on_poll(_poll(_obs("b", 1, "/p1"), _obs("a", 2, "/p2")), T0, stored_before=T0)
        assert _paused(store) == {"b"}

    async def test_a_chain_of_renames_listed_in_either_order(self, tmp_path: Path) -> None:
        """id 1 "a" -> "c", id 2 "b" -> "a" in one poll; only id 1 is paused. id 2 listed first."""
        store = OverrideStore(Database(tmp_path / "state.db"))
        renames = RenamedPauses(store, lambda cluster, before: [], sole_cluster=True)
        await renames.on_poll(_poll(_obs("b", 2, "/p2"), _obs("a", 1, "/p1")), T0, stored_before=T0)
        store.pause("a", now=T0, cluster="c1", reason="id 1's")
        store.pause("b", now=T0 - 10, cluster="c1", until=T0 + 60, reason="id 2's")
        await renames.on_poll(_poll(_obs("a", 2, "/p2"), _obs("c", 1, "/p1")), T0, stored_before=T0)
        active = {o.target: o.reason for o in store.active(T0)}
        assert active == {"c": "id 1's", "a": "id 2's"}


class TestRenameAcrossARestart:
    """The stored names seed every quota, also under a name the poll lists: it may be another
    quota's by now (review r14)."""

    async def test_old_name_reused_by_a_new_quota_while_down(self, tmp_path: Path) -> None:
        """While the daemon was down id 1 "a" (paused) became "c" and a new quota id 3 took "a":
        the pause is id 1's and must follow it to "c", not stay on "a" holding id 3."""
        store = OverrideStore(Database(tmp_path / "state.db"))
        store.pause("a", now=T0, cluster="c1", reason="id 1's")
        stored = [_obs("a", 1, "/p1", t=T0 - 900)]
        renames = RenamedPauses(store, lambda cluster, before: stored, sole_cluster=True)
        await renames.on_poll(_poll(_obs("c", 1, "/p1"), _obs("a", 3, "/new")), T0, stored_before=T0)
        assert _paused(store) == {"c"}


class _FailingOn:
    """A transaction whose move of a pause to `name` fails (a full disk, a lost connection)."""

    def __init__(self, conn: Any, name: str) -> None:
        self.conn, self.name = conn, name

    def execute(self, sql: str, params: Sequence[object] = ()) -> Any:
        if sql.startswith("INSERT INTO overrides") and params and params[0] == self.name:
            raise sqlite3.OperationalError("disk I/O error")
        return self.conn.execute(sql, params)

    def executemany(self, sql: str, params: Any) -> int:
        return int(self.conn.executemany(sql, params))


class TestAMoveThatFails:
    async def test_the_pause_stays_whole_and_the_rename_is_found_again(self, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
        """The store fails as the pause reaches its new name: it was left on the transit name (no
        quota's, so the renamed quota was grown), and the rename, remembered, was never moved again."""
        db = Database(tmp_path / "state.db")
        store = OverrideStore(db)
        renames = RenamedPauses(store, lambda cluster, before: [], sole_cluster=False)
        await renames.on_poll(listed("raw"), T0, stored_before=T0)
        store.pause("raw", now=T0, cluster="c1", reason="held")
        transaction = db.transaction

        @contextmanager
        def failing() -> Iterator[_FailingOn]:
            with transaction() as conn:
                yield _FailingOn(conn, "raw-2027")

        monkeypatch.setattr(db, "transaction", failing)
        with pytest.raises(sqlite3.OperationalError):
            await renames.on_poll(listed("raw-2027"), T0 + 60, stored_before=T0)
        assert _paused(store) == {"raw"}
        monkeypatch.setattr(db, "transaction", transaction)
        await renames.on_poll(listed("raw-2027"), T0 + 120, stored_before=T0)
        assert _paused(store) == {"raw-2027"}

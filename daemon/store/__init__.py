"""The state store: the only code that touches a database. One interface, two backends.

- `backend.py`: the `Backend` protocol the repositories are written against, the typed errors
  (`StoreUnavailable`, `SchemaTooNew`) and the versioned-SQL migration runner
  (`migrations/<dialect>/NNNN_name.sql`, recorded in a `schema_version` table, applied at start;
  a store with a newer schema than this code is refused).
- `db.py`: SQLite (`Database`), the embedded default for one host.
- `postgres.py`: PostgreSQL (`PostgresDatabase`), the store of a fleet; `open_backend()` picks
  one from `[store]` (`open.py`; `url = "postgresql://…"` selects PostgreSQL).
- Repositories, one per concern, each running unchanged on both backends: `observations.py`,
  `actions.py` (the audit trail, fenced by lease epochs), `outbox.py` (alerts; rows claimed with
  `FOR UPDATE SKIP LOCKED` on PostgreSQL), `overrides.py`, `reservations.py`, `leases.py`
  (leadership per VMS cluster).

The one convention (for every repository, on both backends): **repositories are synchronous**.
Each public method is one short transaction (or one query) and returns plain data; asyncio code
calls them through `asyncio.to_thread`. The only async surface is `outbox.AsyncOutbox`, a thin
adapter that exists because `quotapilot.alerts.dispatcher.Outbox` is an async protocol; it
offloads each call of the synchronous `OutboxStore` to a thread and adds nothing else.

Why synchronous, with psycopg's synchronous pool, rather than psycopg's async API: the SQLite
module is blocking anyway, so an async interface would have to hide a thread behind one backend
and not the other (two code paths, two sets of bugs); every call is a short indexed statement, so
a worker thread costs nothing that matters next to the network round trip; and one transaction
per method keeps the fencing and claim statements (which must be atomic) inside the repository
where a test can reach them, with no `await` between a check and its write.

Nothing is cached per instance: overrides, reservations and leases are read from the store on
every use, so in a fleet every instance sees a pause or a reservation as soon as it is committed.

May import: `quotapilot.forecasting` (types), `quotapilot.alerts` (the outbox types). Never the
runtime, stages or HTTP layers.
"""

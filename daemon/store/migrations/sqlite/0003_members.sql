-- v3: fleet membership, so clusters spread over the live instances (daemon/store/members.py).
CREATE TABLE members (               -- one row per running instance (process), heartbeated
    holder TEXT PRIMARY KEY,         -- the same name the instance holds leases under
    instance TEXT NOT NULL,          -- its configured instance name (stable across restarts)
    first_seen REAL NOT NULL,        -- epoch seconds; members live this long count as stable
    last_seen REAL NOT NULL          -- epoch seconds; older than the lease length: not live
);

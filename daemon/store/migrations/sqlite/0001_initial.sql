-- v1: the schema every SQLite file of quotapilot 0.1 has (PRAGMA user_version = 1).
CREATE TABLE observations (          -- every validated poll sample (raw tier)
    cluster TEXT NOT NULL,
    target TEXT NOT NULL,
    path TEXT NOT NULL,
    kind TEXT NOT NULL,              -- 'quota' | 'pool'
    t REAL NOT NULL,                 -- epoch seconds
    used_bytes INTEGER NOT NULL,
    hard_limit_bytes INTEGER,
    soft_limit_bytes INTEGER,
    used_inodes INTEGER,
    hard_limit_inodes INTEGER,
    soft_limit_inodes INTEGER,
    state TEXT NOT NULL,
    quota_id INTEGER,
    PRIMARY KEY (cluster, target, t)
) WITHOUT ROWID;
CREATE INDEX observations_by_t ON observations (t);   -- retention pruning without a full scan
CREATE TABLE observations_hourly (   -- downsampled long-term tier: last sample of each hour
    cluster TEXT NOT NULL,
    target TEXT NOT NULL,
    path TEXT NOT NULL,
    kind TEXT NOT NULL,
    hour REAL NOT NULL,              -- epoch seconds, start of the hour
    t REAL NOT NULL,
    used_bytes INTEGER NOT NULL,
    hard_limit_bytes INTEGER,
    used_inodes INTEGER,
    hard_limit_inodes INTEGER,
    PRIMARY KEY (cluster, target, hour)
) WITHOUT ROWID;
CREATE INDEX observations_hourly_by_t ON observations_hourly (t);
CREATE TABLE actions (               -- audit trail of growth actions, write-ahead
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    cluster TEXT NOT NULL,
    target TEXT NOT NULL,
    path TEXT NOT NULL,
    quota_id INTEGER,
    dimension TEXT NOT NULL,         -- 'bytes' | 'inodes'
    mode TEXT NOT NULL,              -- 'enforce' | 'observe'
    status TEXT NOT NULL,            -- intent | patched | verified | failed | replanned | would_grow | ...
    reason TEXT NOT NULL,
    old_hard INTEGER,
    old_soft INTEGER,
    new_hard INTEGER,
    new_soft INTEGER,
    detail TEXT NOT NULL DEFAULT '{}',   -- JSON: the numbers behind the decision
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX actions_target ON actions (cluster, target, created_at);
CREATE INDEX actions_status ON actions (status);
CREATE TABLE outbox (                -- every notification, before any send
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sink TEXT NOT NULL,
    alert_id TEXT NOT NULL,          -- cluster/target/kind
    dedup_key TEXT NOT NULL,         -- stable per (alert id, episode, status)
    status TEXT NOT NULL,            -- firing | resolved
    payload TEXT NOT NULL,           -- JSON notification (sink-independent)
    created_at REAL NOT NULL,
    next_attempt_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    delivered_at REAL,
    superseded_at REAL,
    dropped_at REAL,
    last_error TEXT,
    UNIQUE (sink, dedup_key)
);
CREATE INDEX outbox_pending ON outbox (sink, delivered_at, superseded_at, dropped_at, next_attempt_at);
CREATE INDEX outbox_alert ON outbox (sink, alert_id, id);   -- newest row per alert (supersede)
CREATE TABLE alert_state (           -- the rules' state machine, so restarts neither re-fire nor forget
    alert_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,             -- JSON
    updated_at REAL NOT NULL
);
CREATE TABLE overrides (             -- manual pause per target; '*' is the global kill switch
    cluster TEXT NOT NULL,
    target TEXT NOT NULL,
    paused_until REAL,               -- NULL: until resumed
    reason TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    PRIMARY KEY (cluster, target)
);
CREATE TABLE reservations (
    id TEXT PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    cluster TEXT NOT NULL,
    target TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    inodes INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL,            -- granted | refused | released | expired
    response_status INTEGER NOT NULL,
    response TEXT NOT NULL,          -- JSON answer, replayed for the same idempotency key
    request TEXT NOT NULL DEFAULT '{}',  -- JSON of the request, so a reused key with other values is refused
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    released_at REAL
);
CREATE INDEX reservations_active ON reservations (cluster, target, status, expires_at);

-- v2: leadership per VMS cluster (leases), fencing epochs on the audit trail, outbox claims.
CREATE TABLE leases (                -- one row per VMS cluster: who leads it, under which epoch
    cluster TEXT PRIMARY KEY,
    holder TEXT NOT NULL,            -- instance name + a per-process suffix
    epoch BIGINT NOT NULL,           -- +1 on every change of holder (the fencing token)
    expires_at DOUBLE PRECISION NOT NULL   -- epoch seconds; the holder renews well before
);
ALTER TABLE actions ADD COLUMN epoch BIGINT;              -- lease epoch the intent was made under
ALTER TABLE outbox ADD COLUMN claimed_by TEXT;            -- the instance sending the row now
ALTER TABLE outbox ADD COLUMN claimed_until DOUBLE PRECISION;   -- the claim lapses after this

-- The maintenance election as a lease row instead of a session advisory
-- lock: a session lock means nothing behind a transaction-mode pooler,
-- where each transaction may run on another server session. The leader
-- renews its lease at every tick; when it stops it gives the lease up, and
-- when it dies the lease runs out and another worker takes it. The steps
-- maintenance runs are safe to run twice at once (they lock what they
-- change and skip what is locked), so the lease is about economy, not
-- correctness.
CREATE TABLE @schema@.maintenance_lease (
  id          integer PRIMARY KEY DEFAULT 1 CHECK (id = 1),  -- one per schema
  holder      text NOT NULL,                                  -- a worker id
  acquired_at timestamptz NOT NULL DEFAULT now(),
  expires_at  timestamptz NOT NULL
);

-- payq foundation: facts about this payq installation.
-- Every payq object lives in the schema named by @schema@.

CREATE TABLE @schema@.installation (
  singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  created_at  timestamptz NOT NULL DEFAULT now(),
  -- The time zone in which ledger limits count a "day".
  day_time_zone text NOT NULL DEFAULT 'UTC'
);
INSERT INTO @schema@.installation DEFAULT VALUES;

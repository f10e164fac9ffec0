-- The double-entry ledger. Amounts are bigint minor units.

-- Custom currencies (ISO 4217 ones are built into the library).
CREATE TABLE @schema@.currency (
  code     text PRIMARY KEY CHECK (code ~ '^[A-Z0-9_]{3,12}$'),
  exponent integer NOT NULL CHECK (exponent BETWEEN 0 AND 18)
);

CREATE TABLE @schema@.account (
  id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  owner           text NOT NULL CHECK (length(owner) BETWEEN 1 AND 200),
  namespace       text NOT NULL CHECK (length(namespace) BETWEEN 1 AND 100),
  currency        text NOT NULL,
  balance         bigint NOT NULL DEFAULT 0,
  held            bigint NOT NULL DEFAULT 0 CHECK (held >= 0),
  -- Sequence number of the newest entry (0: none yet).
  seq             bigint NOT NULL DEFAULT 0 CHECK (seq >= 0),
  -- System accounts (the outside world, provider clearing, fee income).
  allow_negative  boolean NOT NULL DEFAULT false,
  -- A normal account may go down to -overdraft_minor, never further.
  overdraft_minor bigint NOT NULL DEFAULT 0 CHECK (overdraft_minor >= 0),
  -- Hot accounts credited by many concurrent postings (fee income): credits
  -- wait in pending_credit and are folded into the journal later, so no
  -- posting has to lock this row.
  deferred_credit boolean NOT NULL DEFAULT false,
  closed_at       timestamptz,
  created_at      timestamptz NOT NULL DEFAULT now(),
  UNIQUE (owner, namespace, currency),
  CONSTRAINT account_available_floor CHECK (allow_negative OR balance - held >= -overdraft_minor)
);

-- Ids are drawn in the statement that records the operation, so the
-- operation row can point at what it created.
CREATE SEQUENCE @schema@.ledger_transaction_id_seq AS bigint;
CREATE SEQUENCE @schema@.hold_id_seq AS bigint;

-- One row per idempotency key of any ledger write, kept forever. It is
-- written in the same statement as the operation's effects, only when the
-- operation succeeds: a request refused for a state-dependent reason
-- (insufficient funds, a limit) is not remembered and may be retried.
-- Its primary key is how every result is found by key.
CREATE TABLE @schema@.operation (
  key            text PRIMARY KEY CHECK (length(key) BETWEEN 1 AND 255),
  kind           text NOT NULL,
  request_hash   text NOT NULL,
  transaction_id bigint,  -- the journal transaction it wrote, if any
  hold_id        bigint,  -- the hold it created, captured or released, if any
  created_at     timestamptz NOT NULL DEFAULT now()
);

-- Transaction headers; "ledger_transaction" to stay clear of the keyword.
-- Foreign keys are left out where a row is written in the same statement as
-- the row it refers to (a key check there costs a third of a posting's
-- time); the audit checks those links instead.
CREATE TABLE @schema@.ledger_transaction (
  id          bigint PRIMARY KEY DEFAULT nextval('@schema@.ledger_transaction_id_seq'),
  key         text NOT NULL,  -- found through operation's primary key
  kind        text NOT NULL,
  metadata    jsonb NOT NULL DEFAULT '{}',
  reverses_id bigint REFERENCES @schema@.ledger_transaction (id),
  hold_id     bigint,
  -- For reversals: how much of the original's debit side this one returns.
  reversed_minor bigint CHECK (reversed_minor > 0),
  created_at  timestamptz NOT NULL DEFAULT now()
);
ALTER SEQUENCE @schema@.ledger_transaction_id_seq OWNED BY @schema@.ledger_transaction.id;
CREATE INDEX ledger_transaction_reverses ON @schema@.ledger_transaction (reverses_id) WHERE reverses_id IS NOT NULL;

-- An entry is identified by its account and sequence number; `leg` is its
-- position in its transaction.
CREATE TABLE @schema@.entry (
  account_id     bigint NOT NULL REFERENCES @schema@.account (id),
  seq            bigint NOT NULL CHECK (seq > 0),
  transaction_id bigint NOT NULL,
  leg            smallint NOT NULL CHECK (leg >= 0),
  amount         bigint NOT NULL CHECK (amount <> 0),
  balance_after  bigint NOT NULL,
  created_at     timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (account_id, seq)
);
CREATE INDEX entry_transaction ON @schema@.entry (transaction_id);

-- Credits to deferred_credit accounts, not yet folded into entry.
CREATE TABLE @schema@.pending_credit (
  id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  transaction_id bigint NOT NULL,
  leg            smallint NOT NULL CHECK (leg >= 0),
  account_id     bigint NOT NULL REFERENCES @schema@.account (id),
  amount         bigint NOT NULL CHECK (amount > 0),
  created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX pending_credit_account ON @schema@.pending_credit (account_id, id);
CREATE INDEX pending_credit_transaction ON @schema@.pending_credit (transaction_id);

CREATE TABLE @schema@.hold (
  id              bigint PRIMARY KEY DEFAULT nextval('@schema@.hold_id_seq'),
  key             text NOT NULL,  -- found through operation's primary key
  account_id      bigint NOT NULL REFERENCES @schema@.account (id),
  amount          bigint NOT NULL CHECK (amount > 0),
  captured_minor  bigint NOT NULL DEFAULT 0 CHECK (captured_minor >= 0 AND captured_minor <= amount),
  status          text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'captured', 'released', 'expired')),
  expires_at      timestamptz,
  metadata        jsonb NOT NULL DEFAULT '{}',
  created_at      timestamptz NOT NULL DEFAULT now(),
  finished_at     timestamptz,
  CHECK ((status = 'active') = (finished_at IS NULL))
);
ALTER SEQUENCE @schema@.hold_id_seq OWNED BY @schema@.hold.id;
CREATE INDEX hold_active_account ON @schema@.hold (account_id) WHERE status = 'active';
CREATE INDEX hold_active_expiry ON @schema@.hold (expires_at) WHERE status = 'active' AND expires_at IS NOT NULL;

-- Limits on outgoing money (transfers and holds from an account). A rule
-- names one account, or a namespace + currency, in which case it applies to
-- each account there separately.
CREATE TABLE @schema@.limit_rule (
  id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  account_id bigint REFERENCES @schema@.account (id),
  namespace  text,
  currency   text,
  kind       text NOT NULL CHECK (kind IN ('per_transaction_max', 'daily_count', 'daily_amount')),
  value      bigint NOT NULL CHECK (value >= 0),
  created_at timestamptz NOT NULL DEFAULT now(),
  CHECK ((account_id IS NOT NULL) <> (namespace IS NOT NULL AND currency IS NOT NULL))
);
CREATE UNIQUE INDEX limit_rule_account ON @schema@.limit_rule (account_id, kind) WHERE account_id IS NOT NULL;
CREATE UNIQUE INDEX limit_rule_namespace ON @schema@.limit_rule (namespace, currency, kind) WHERE account_id IS NULL;

-- Per account and day (in installation.day_time_zone); written under the
-- account's row lock, so concurrent postings cannot both squeeze under.
CREATE TABLE @schema@.limit_usage (
  account_id   bigint NOT NULL REFERENCES @schema@.account (id),
  day          date NOT NULL,
  count        bigint NOT NULL DEFAULT 0,
  amount_minor bigint NOT NULL DEFAULT 0,
  PRIMARY KEY (account_id, day)
);

-- The journal is append-only.
CREATE FUNCTION @schema@.append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'payq: % on %.% is not allowed: the journal is append-only', TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME
    USING ERRCODE = 'P0001';
END
$$;
CREATE TRIGGER entry_append_only BEFORE UPDATE OR DELETE ON @schema@.entry
  FOR EACH ROW EXECUTE FUNCTION @schema@.append_only();
CREATE TRIGGER entry_no_truncate BEFORE TRUNCATE ON @schema@.entry
  FOR EACH STATEMENT EXECUTE FUNCTION @schema@.append_only();
CREATE TRIGGER ledger_transaction_append_only BEFORE UPDATE OR DELETE ON @schema@.ledger_transaction
  FOR EACH ROW EXECUTE FUNCTION @schema@.append_only();
CREATE TRIGGER operation_append_only BEFORE UPDATE OR DELETE ON @schema@.operation
  FOR EACH ROW EXECUTE FUNCTION @schema@.append_only();


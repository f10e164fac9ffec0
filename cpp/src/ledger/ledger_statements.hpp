// Every SQL statement of the ledger, by name. Parameters are always bound;
// timestamps come back as ISO 8601 text in UTC, whichever executor carries
// them;
// arrays travel as PostgreSQL array text ("{1,2,3}").
#pragma once

#include <string>
#include <vector>

#include "payq/db.hpp"

namespace payq::ledger_sql {

inline constexpr char account_columns[] =
    "id, owner, namespace, currency, balance, held, seq, allow_negative, overdraft_minor, deferred_credit, "
    "closed_at IS NOT NULL AS closed";

inline const Statement account_open{"payq_account_open", R"sql(
WITH ins AS (
  INSERT INTO @schema@.account (owner, namespace, currency, allow_negative, overdraft_minor, deferred_credit)
  VALUES ($1, $2, $3, $4::boolean, $5::bigint, $6::boolean)
  ON CONFLICT (owner, namespace, currency) DO NOTHING
  RETURNING id
)
SELECT id FROM ins
UNION ALL
SELECT id FROM @schema@.account WHERE owner = $1 AND namespace = $2 AND currency = $3
LIMIT 1)sql"};

inline const Statement account_get{"payq_account_get", R"sql(
SELECT id, owner, namespace, currency, balance, held, seq, allow_negative, overdraft_minor, deferred_credit,
       closed_at IS NOT NULL AS closed,
       CASE WHEN deferred_credit
            THEN (SELECT coalesce(sum(amount), 0) FROM @schema@.pending_credit p WHERE p.account_id = a.id)
            ELSE 0 END AS pending
FROM @schema@.account a WHERE id = $1::bigint)sql"};

inline const Statement accounts_list{"payq_accounts_list", R"sql(
SELECT id, owner, namespace, currency, balance, held, seq, allow_negative, overdraft_minor, deferred_credit,
       closed_at IS NOT NULL AS closed,
       CASE WHEN deferred_credit
            THEN (SELECT coalesce(sum(amount), 0) FROM @schema@.pending_credit p WHERE p.account_id = a.id)
            ELSE 0 END AS pending
FROM @schema@.account a
WHERE id > $1::bigint AND ($3::text IS NULL OR owner = $3::text)
ORDER BY id LIMIT $2::bigint)sql"};

inline const Statement account_find{"payq_account_find", R"sql(
SELECT id FROM @schema@.account WHERE owner = $1 AND namespace = $2 AND currency = $3)sql"};

inline const Statement account_close{"payq_account_close", R"sql(
UPDATE @schema@.account SET closed_at = coalesce(closed_at, now()) WHERE id = $1::bigint)sql"};

inline const Statement currency_lookup{"payq_currency_lookup", R"sql(
SELECT exponent FROM @schema@.currency WHERE code = $1)sql"};

inline const Statement currencies_all{"payq_currencies_all", R"sql(
SELECT code, exponent FROM @schema@.currency ORDER BY code)sql"};

inline const Statement currency_insert{"payq_currency_insert", R"sql(
WITH ins AS (
  INSERT INTO @schema@.currency (code, exponent) VALUES ($1, $2::integer)
  ON CONFLICT (code) DO NOTHING RETURNING exponent
)
SELECT exponent FROM ins UNION ALL SELECT exponent FROM @schema@.currency WHERE code = $1 LIMIT 1)sql"};

// Locks the accounts a posting touches, in ascending id order, and reads
// what the checks need in the same round trip: the accounts and, for the
// account subject to limits ($3), its rules as an array of 'kind=value'
// (an ARRAY sub-select and EXISTS: no aggregate for the executor to set up
// on every call). Deferred-credit accounts that are only credited ($2) are
// read without a lock: that is what keeps a hot fee account off the
// critical path. The idempotency key is not read here:
// the write inserts it or finds it taken (ON CONFLICT), and a posting that
// fails a check looks it up before reporting (see posting_execute).
// Under READ COMMITTED only the locked rows are re-read after waiting for a
// lock; everything else here comes from the snapshot taken before the wait.
// Limit usage is therefore read by limit_usage_today, after the lock.
inline const Statement posting_lock{"payq_posting_lock", R"sql(
WITH locked AS (
  SELECT id, owner, namespace, currency, balance, held, seq, allow_negative, overdraft_minor, deferred_credit,
         closed_at IS NOT NULL AS closed, true AS locked,
         deferred_credit AND EXISTS (SELECT FROM @schema@.pending_credit p WHERE p.account_id = a.id)
           AS pending_any,
         CASE WHEN id = $3::bigint THEN
           ARRAY(SELECT r.kind || '=' || r.value
                 FROM @schema@.limit_rule r
                 WHERE r.account_id = a.id
                    OR (r.account_id IS NULL AND r.namespace = a.namespace AND r.currency = a.currency)
                 ORDER BY r.id)::text
         END AS limit_rules
  FROM @schema@.account a
  WHERE id = ANY($1::bigint[]) AND NOT (deferred_credit AND id = ANY($2::bigint[]))
  ORDER BY id
  FOR UPDATE
)
SELECT * FROM locked
UNION ALL
SELECT id, owner, namespace, currency, balance, held, seq, allow_negative, overdraft_minor, deferred_credit,
       closed_at IS NOT NULL, false, false, NULL
FROM @schema@.account
WHERE deferred_credit AND id = ANY($2::bigint[]))sql"};

// posting_write (posting_write.cpp) writes a posting in one statement, in
// the shape the posting needs.
struct PostingWriteShape {
  bool pending = false;  // credits to deferred-credit accounts
  bool capture = false;  // the hold it captures
  bool limits = false;   // today's limit usage of the source
};

// The values a posting write may take, named {like_this} in its parts.
enum class PostingParam {
  key,
  op_kind,
  request_hash,
  hold_id,
  transaction_kind,
  metadata,
  reverses_id,
  reversed_minor,
  entry_account,
  entry_amount,
  entry_seq,
  entry_balance_after,
  entry_leg,
  update_account,
  update_balance,
  update_seq,
  update_held_release,
  pending_account,
  pending_amount,
  pending_leg,
  captured_minor,
  limit_account,
  limit_amount,
  count
};

// The statement for a shape, and which value goes to each of its $n.
struct PostingWrite {
  Statement statement;
  std::vector<PostingParam> params;
};
const PostingWrite& posting_write(PostingWriteShape shape);

inline const Statement limit_usage_today{"payq_limit_usage_today", R"sql(
SELECT u.count, u.amount_minor FROM @schema@.limit_usage u, @schema@.installation i
WHERE u.account_id = $1::bigint AND u.day = (now() AT TIME ZONE i.day_time_zone)::date)sql"};

inline const Statement operation_get{"payq_operation_get", R"sql(
SELECT kind, request_hash, hold_id FROM @schema@.operation WHERE key = $1)sql"};

inline const Statement transaction_by_id{"payq_transaction_by_id", R"sql(
SELECT id, key, kind, metadata::text AS metadata, reverses_id, hold_id, reversed_minor,
       to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS created_at
FROM @schema@.ledger_transaction WHERE id = $1::bigint)sql"};

inline const Statement transaction_by_key{"payq_transaction_by_key", R"sql(
SELECT transaction_id AS id FROM @schema@.operation WHERE key = $1 AND transaction_id IS NOT NULL)sql"};

// Journal entries and still-pending credits of one transaction, in the
// order their legs were written.
inline const Statement transaction_legs{"payq_transaction_legs", R"sql(
SELECT l.account_id, a.currency, l.amount, l.seq, l.balance_after, to_char(l.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS created_at
FROM (SELECT leg, account_id, amount, seq, balance_after, created_at
      FROM @schema@.entry WHERE transaction_id = $1::bigint
      UNION ALL
      SELECT leg, account_id, amount, NULL, NULL, created_at
      FROM @schema@.pending_credit WHERE transaction_id = $1::bigint) l
JOIN @schema@.account a ON a.id = l.account_id
ORDER BY l.leg)sql"};

// The original's net amount per account, less what earlier reversals
// already returned, under a lock that serialises reversals of it.
inline const Statement reversal_lock{"payq_reversal_lock", R"sql(
SELECT transaction_id AS id, reverses_id FROM @schema@.operation WHERE transaction_id = $1::bigint
FOR NO KEY UPDATE)sql"};

inline const Statement reversal_remaining{"payq_reversal_remaining", R"sql(
WITH legs AS (
  SELECT transaction_id, account_id, amount FROM @schema@.entry
  UNION ALL
  SELECT transaction_id, account_id, amount FROM @schema@.pending_credit
), original AS (
  SELECT account_id, sum(amount) AS net FROM legs WHERE transaction_id = $1::bigint GROUP BY account_id
), returned AS (
  SELECT l.account_id, sum(l.amount) AS net
  FROM legs l JOIN @schema@.operation r ON r.transaction_id = l.transaction_id
  WHERE r.reverses_id = $1::bigint GROUP BY l.account_id
)
SELECT o.account_id, o.net::bigint AS original_net, coalesce(r.net, 0)::bigint AS returned_net
FROM original o LEFT JOIN returned r ON r.account_id = o.account_id
ORDER BY o.account_id)sql"};

inline const Statement hold_lock{"payq_hold_lock", R"sql(
SELECT h.id, h.key, h.account_id, a.currency, h.amount, h.captured_minor, h.status,
       to_char(h.expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS expires_at, h.metadata::text AS metadata,
       h.task_id, h.expires_at IS NOT NULL AND h.expires_at <= now() AS expired
FROM @schema@.hold h JOIN @schema@.account a ON a.id = h.account_id
WHERE h.id = $1::bigint FOR UPDATE OF h)sql"};

inline const Statement hold_get{"payq_hold_get", R"sql(
SELECT h.id, h.key, h.account_id, a.currency, h.amount, h.captured_minor, h.status,
       to_char(h.expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS expires_at, h.metadata::text AS metadata,
       h.task_id
FROM @schema@.hold h JOIN @schema@.account a ON a.id = h.account_id
WHERE h.id = $1::bigint)sql"};

// The hold's owning task, if it is still live. Read in a statement of its
// own after the hold's row lock is held, so it sees a task committed by the
// transaction that held the lock before.
inline const Statement hold_task_live{"payq_hold_task_live", R"sql(
SELECT id, state FROM @schema@.task
WHERE id = $1::bigint AND state IN ('held', 'pending', 'running', 'needs_review'))sql"};

inline const Statement hold_by_key{"payq_hold_by_key", R"sql(
SELECT hold_id AS id FROM @schema@.operation WHERE key = $1 AND kind = 'hold')sql"};

inline const Statement hold_write{"payq_hold_write", R"sql(
WITH op AS (
  INSERT INTO @schema@.operation (key, kind, request_hash, hold_id)
  VALUES ($1, 'hold', $2, nextval('@schema@.hold_id_seq'))
  ON CONFLICT (key) DO NOTHING
  RETURNING key, hold_id
), h AS (
  INSERT INTO @schema@.hold (id, key, account_id, amount, expires_at, metadata)
  SELECT hold_id, key, $3::bigint, $4::bigint,
         CASE WHEN $5::bigint IS NULL THEN NULL ELSE now() + $5::bigint * interval '1 millisecond' END,
         $6::jsonb
  FROM op
  RETURNING id, to_char(expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS expires_at
), a AS (
  UPDATE @schema@.account SET held = held + $4::bigint FROM h WHERE account.id = $3::bigint
), l AS (
  INSERT INTO @schema@.limit_usage AS u (account_id, day, count, amount_minor)
  SELECT $3::bigint, (now() AT TIME ZONE i.day_time_zone)::date, 1, $4::bigint
  FROM h, @schema@.installation i
  WHERE $7::boolean
  ON CONFLICT (account_id, day)
  DO UPDATE SET count = u.count + 1, amount_minor = u.amount_minor + EXCLUDED.amount_minor
)
SELECT id, expires_at FROM h)sql"};

// Release or expire: the hold row is already locked by the caller.
inline const Statement hold_finish{"payq_hold_finish", R"sql(
WITH op AS (
  INSERT INTO @schema@.operation (key, kind, request_hash, hold_id) VALUES ($1, 'release', $2, $3::bigint)
  ON CONFLICT (key) DO NOTHING
  RETURNING key
), h AS (
  UPDATE @schema@.hold SET status = 'released', finished_at = now()
  FROM op WHERE hold.id = $3::bigint
  RETURNING hold.account_id, hold.amount
)
UPDATE @schema@.account SET held = account.held - h.amount FROM h WHERE account.id = h.account_id
RETURNING account.id)sql"};

// A hold owned by a live task is not expired: its payout may still happen
// (see hold_task_live). Once the task is final, or pruned, it may expire.
inline const Statement holds_expired_lock{"payq_holds_expired_lock", R"sql(
SELECT id, account_id, amount FROM @schema@.hold h
WHERE status = 'active' AND expires_at <= now()
  AND (task_id IS NULL
       OR NOT EXISTS (SELECT 1 FROM @schema@.task t
                      WHERE t.id = h.task_id AND t.state IN ('held', 'pending', 'running', 'needs_review')))
ORDER BY id
LIMIT $1::bigint
FOR UPDATE SKIP LOCKED)sql"};

inline const Statement accounts_lock{"payq_accounts_lock", R"sql(
SELECT id FROM @schema@.account WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE)sql"};

inline const Statement holds_expire{"payq_holds_expire", R"sql(
WITH h AS (
  UPDATE @schema@.hold SET status = 'expired', finished_at = now()
  WHERE id = ANY($1::bigint[]) AND status = 'active'
  RETURNING account_id, amount
), s AS (
  SELECT account_id, sum(amount)::bigint AS total FROM h GROUP BY account_id
)
UPDATE @schema@.account SET held = account.held - s.total FROM s WHERE account.id = s.account_id
RETURNING account.id)sql"};

// The pending credits a fold would take, read without writing: an
// operation decides on the folded balance first and folds only when it
// writes (a refused or replayed request changes nothing).
inline const Statement pending_peek{"payq_pending_peek", R"sql(
SELECT coalesce(array_agg(id ORDER BY id), '{}') AS ids, count(*) AS folded,
       coalesce(sum(amount), 0)::bigint AS total
FROM (SELECT id, amount FROM @schema@.pending_credit WHERE account_id = $1::bigint ORDER BY id
      LIMIT $2::bigint) p)sql"};

// Folds exactly the credits a peek returned into the journal, in id order.
inline const Statement pending_fold_ids{"payq_pending_fold_ids", R"sql(
WITH d AS (
  DELETE FROM @schema@.pending_credit
  WHERE account_id = $1::bigint AND id = ANY ($2::bigint[])
  RETURNING id, transaction_id, leg, amount, created_at
), o AS (
  SELECT d.*, row_number() OVER (ORDER BY id) AS rn, sum(amount) OVER (ORDER BY id) AS cum FROM d
), e AS (
  INSERT INTO @schema@.entry (account_id, seq, transaction_id, leg, amount, balance_after, created_at)
  SELECT $1::bigint, $3::bigint + rn, transaction_id, leg, amount, ($4::bigint + cum)::bigint, created_at FROM o
), u AS (
  UPDATE @schema@.account
  SET balance = ($4::bigint + (SELECT coalesce(sum(amount), 0) FROM d))::bigint,
      seq = $3::bigint + (SELECT count(*) FROM d)
  WHERE id = $1::bigint AND EXISTS (SELECT 1 FROM d)
)
SELECT count(*) AS folded, coalesce(sum(amount), 0)::bigint AS total FROM d)sql"};

inline const Statement account_lock_one{"payq_account_lock_one", R"sql(
SELECT balance, seq, deferred_credit FROM @schema@.account WHERE id = $1::bigint FOR UPDATE)sql"};

inline const Statement limit_set_account{"payq_limit_set_account", R"sql(
INSERT INTO @schema@.limit_rule (account_id, kind, value) VALUES ($1::bigint, $2, $3::bigint)
ON CONFLICT (account_id, kind) WHERE account_id IS NOT NULL DO UPDATE SET value = EXCLUDED.value)sql"};

inline const Statement limit_set_namespace{"payq_limit_set_namespace", R"sql(
INSERT INTO @schema@.limit_rule (namespace, currency, kind, value) VALUES ($1, $2, $3, $4::bigint)
ON CONFLICT (namespace, currency, kind) WHERE account_id IS NULL DO UPDATE SET value = EXCLUDED.value)sql"};

inline const Statement limit_remove{"payq_limit_remove", R"sql(
DELETE FROM @schema@.limit_rule
WHERE kind = $1 AND ((account_id = $2::bigint) OR (account_id IS NULL AND namespace = $3 AND currency = $4)))sql"};

inline const Statement history{"payq_history", R"sql(
SELECT e.transaction_id, e.account_id, a.currency, e.amount, e.seq, e.balance_after,
       to_char(e.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS created_at
FROM @schema@.entry e JOIN @schema@.account a ON a.id = e.account_id
WHERE e.account_id = $1::bigint AND e.seq > $2::bigint ORDER BY e.seq LIMIT $3::bigint)sql"};

// ---- audit: each statement returns one row per violation.

inline const Statement audit_counts{"payq_audit_counts", R"sql(
SELECT (SELECT count(*) FROM @schema@.account) AS accounts, (SELECT count(*) FROM @schema@.entry) AS entries)sql"};

inline const Statement audit_accounts{"payq_audit_accounts", R"sql(
SELECT a.id, a.balance, a.seq, coalesce(s.total, 0)::text AS total, coalesce(s.n, 0) AS n,
       coalesce(s.seq_max, 0) AS seq_max, coalesce(s.seq_min, 1) AS seq_min,
       coalesce(last.balance_after, 0) AS last_balance_after
FROM @schema@.account a
LEFT JOIN (SELECT account_id, sum(amount) AS total, count(*) AS n, max(seq) AS seq_max, min(seq) AS seq_min
           FROM @schema@.entry GROUP BY account_id) s ON s.account_id = a.id
LEFT JOIN LATERAL (SELECT balance_after FROM @schema@.entry e WHERE e.account_id = a.id ORDER BY seq DESC LIMIT 1)
  last ON true
WHERE a.balance <> coalesce(s.total, 0) OR a.balance <> coalesce(last.balance_after, 0)
   OR a.seq <> coalesce(s.n, 0) OR coalesce(s.seq_max, 0) <> coalesce(s.n, 0) OR coalesce(s.seq_min, 1) <> 1
ORDER BY a.id)sql"};

inline const Statement audit_entry_chain{"payq_audit_entry_chain", R"sql(
SELECT account_id, seq, amount, balance_after, prev_after FROM (
  SELECT e.*, lag(balance_after, 1, 0::bigint) OVER (PARTITION BY account_id ORDER BY seq) AS prev_after
  FROM @schema@.entry e
) c WHERE prev_after + amount <> balance_after
ORDER BY account_id, seq LIMIT 1000)sql"};

inline const Statement audit_held{"payq_audit_held", R"sql(
SELECT a.id, a.held, coalesce(h.total, 0)::bigint AS active_total
FROM @schema@.account a
LEFT JOIN (SELECT account_id, sum(amount) AS total FROM @schema@.hold WHERE status = 'active' GROUP BY account_id) h
  ON h.account_id = a.id
WHERE a.held <> coalesce(h.total, 0)
ORDER BY a.id)sql"};

inline const Statement audit_currency_sum{"payq_audit_currency_sum", R"sql(
SELECT a.currency, sum(l.amount)::text AS total
FROM (SELECT account_id, amount FROM @schema@.entry UNION ALL SELECT account_id, amount FROM @schema@.pending_credit) l
JOIN @schema@.account a ON a.id = l.account_id
GROUP BY a.currency HAVING sum(l.amount) <> 0
ORDER BY a.currency)sql"};

inline const Statement audit_transaction_sum{"payq_audit_transaction_sum", R"sql(
SELECT l.transaction_id, a.currency, sum(l.amount)::text AS total
FROM (SELECT transaction_id, account_id, amount FROM @schema@.entry
      UNION ALL SELECT transaction_id, account_id, amount FROM @schema@.pending_credit) l
JOIN @schema@.account a ON a.id = l.account_id
GROUP BY l.transaction_id, a.currency HAVING sum(l.amount) <> 0
ORDER BY l.transaction_id LIMIT 1000)sql"};

inline const Statement audit_floor{"payq_audit_floor", R"sql(
SELECT id, balance, held, overdraft_minor FROM @schema@.account
WHERE NOT allow_negative AND balance - held < -overdraft_minor ORDER BY id)sql"};

inline const Statement audit_reversals{"payq_audit_reversals", R"sql(
SELECT r.reverses_id, sum(r.reversed_minor)::text AS reversed,
       (SELECT sum(amount) FROM (SELECT amount FROM @schema@.entry WHERE transaction_id = r.reverses_id AND amount > 0
                                 UNION ALL
                                 SELECT amount FROM @schema@.pending_credit WHERE transaction_id = r.reverses_id) c)::text
         AS original
FROM @schema@.ledger_transaction r WHERE r.reverses_id IS NOT NULL
GROUP BY r.reverses_id
HAVING sum(r.reversed_minor) > (SELECT sum(amount) FROM (
  SELECT amount FROM @schema@.entry WHERE transaction_id = r.reverses_id AND amount > 0
  UNION ALL SELECT amount FROM @schema@.pending_credit WHERE transaction_id = r.reverses_id) c2)
ORDER BY r.reverses_id)sql"};

// Links that are written in one statement or under a lock instead of
// enforced by foreign keys (see 002_ledger.sql and 005_ledger_lean.sql):
// every entry and pending credit has its transaction and its account,
// every reversal its original, every hold its operation record.
inline const Statement audit_links{"payq_audit_links", R"sql(
SELECT 'entry' AS what, e.account_id || '/' || e.seq AS id,
       'refers to missing transaction ' || e.transaction_id AS problem
FROM @schema@.entry e
WHERE NOT EXISTS (SELECT 1 FROM @schema@.operation o WHERE o.transaction_id = e.transaction_id)
UNION ALL
SELECT 'entry', e.account_id || '/' || e.seq, 'refers to missing account ' || e.account_id FROM @schema@.entry e
WHERE NOT EXISTS (SELECT 1 FROM @schema@.account a WHERE a.id = e.account_id)
UNION ALL
SELECT 'pending credit', p.id::text, 'refers to missing transaction ' || p.transaction_id FROM @schema@.pending_credit p
WHERE NOT EXISTS (SELECT 1 FROM @schema@.operation o WHERE o.transaction_id = p.transaction_id)
UNION ALL
SELECT 'pending credit', p.id::text, 'refers to missing account ' || p.account_id FROM @schema@.pending_credit p
WHERE NOT EXISTS (SELECT 1 FROM @schema@.account a WHERE a.id = p.account_id)
UNION ALL
SELECT 'transaction', o.transaction_id::text, 'reverses missing transaction ' || o.reverses_id
FROM @schema@.operation o
WHERE o.reverses_id IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM @schema@.operation r WHERE r.transaction_id = o.reverses_id)
UNION ALL
SELECT 'hold', h.id::text, 'has no operation record' FROM @schema@.hold h
WHERE NOT EXISTS (SELECT 1 FROM @schema@.operation o WHERE o.key = h.key AND o.hold_id = h.id)
UNION ALL
SELECT 'hold', h.id::text, 'is still active although task ' || t.id || ', which settles it, is ' || t.state
FROM @schema@.hold h JOIN @schema@.task t ON t.id = h.task_id
WHERE h.status = 'active' AND t.state IN ('succeeded', 'dead', 'cancelled')
ORDER BY 1, 2 LIMIT 1000)sql"};

}  // namespace payq::ledger_sql

// The hand-written queues payq's worker is judged against, in schema
// bench_raw: the minimal flip (information only) and the like-for-like loop
// that does the same durable work per task as payq's fenced completion.
#include <atomic>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "queue_bench.hpp"

namespace payq::queue_bench {

const char* const raw_schema_sql = R"sql(
CREATE SCHEMA IF NOT EXISTS bench_raw;
CREATE TABLE IF NOT EXISTS bench_raw.task (id bigint PRIMARY KEY, kind text NOT NULL, payload jsonb NOT NULL,
                                           state text NOT NULL);
CREATE INDEX IF NOT EXISTS task_pending ON bench_raw.task (id) WHERE state = 'pending';
CREATE SEQUENCE IF NOT EXISTS bench_raw.lease_token_seq AS bigint;
CREATE TABLE IF NOT EXISTS bench_raw.leased_task (
  id          bigint PRIMARY KEY,
  kind        text NOT NULL,
  payload     jsonb NOT NULL,
  state       text NOT NULL,
  attempt     integer NOT NULL DEFAULT 0,
  timeout_ms  integer NOT NULL,
  lease_token bigint,
  lease_until timestamptz,
  result      jsonb,
  finished_at timestamptz
);
CREATE INDEX IF NOT EXISTS leased_task_pending ON bench_raw.leased_task (id) WHERE state = 'pending';
-- What a reaper of expired leases reads.
CREATE INDEX IF NOT EXISTS leased_task_lease ON bench_raw.leased_task (lease_until) WHERE state = 'running';
CREATE TABLE IF NOT EXISTS bench_raw.attempt (
  task_id     bigint NOT NULL,
  attempt     integer NOT NULL,
  lease_token bigint NOT NULL,
  outcome     text NOT NULL,
  duration_ms bigint NOT NULL,
  started_at  timestamptz NOT NULL,
  finished_at timestamptz NOT NULL,
  PRIMARY KEY (task_id, attempt)
);
)sql";

const char* const raw_minimal_description =
    "bench_raw.task (id PK, kind, payload jsonb, state) + partial index (id) WHERE state='pending'; per thread "
    "its own connection, each statement its own transaction: WITH c AS (SELECT id ... WHERE state='pending' "
    "ORDER BY id LIMIT batch FOR UPDATE SKIP LOCKED) UPDATE ... SET state='running' ... RETURNING; then "
    "UPDATE ... SET state='done' WHERE id=$1 per task (synchronous) or WHERE id = ANY($1) per batch (batched). "
    "No lease token, no fence, no attempt record: information only";

const char* const raw_like_for_like_description =
    "bench_raw.leased_task (id PK, kind, payload, state, attempt, timeout_ms, lease_token, lease_until, result, "
    "finished_at) + partial indexes on pending (id) and running (lease_until, for a lease reaper), and "
    "bench_raw.attempt (task_id, attempt, lease_token, outcome, duration_ms, started_at, finished_at; PK task_id, "
    "attempt). Per thread its own connection, each statement its own transaction. Claim: one statement, SKIP "
    "LOCKED, state running, attempt + 1, lease token from a sequence, lease_until = now() + timeout. Completion: "
    "one statement, a CTE that updates the task only under its lease token (state succeeded, result, finished_at, "
    "lease cleared) and inserts the attempt row from what it updated; per task (synchronous) or per claimed batch "
    "through unnest (batched)";

namespace {

const char* const raw_reset_sql = "TRUNCATE bench_raw.task, bench_raw.leased_task, bench_raw.attempt;";

const Statement minimal_prefill{"bench_raw_prefill", R"sql(
INSERT INTO bench_raw.task (id, kind, payload, state)
SELECT g, 'bench.noop', jsonb_build_object('n', g), 'pending' FROM generate_series(1, $1::bigint) g)sql"};

const Statement minimal_claim{"bench_raw_claim", R"sql(
WITH c AS (
  SELECT id FROM bench_raw.task WHERE state = 'pending' ORDER BY id LIMIT $1::bigint FOR UPDATE SKIP LOCKED
)
UPDATE bench_raw.task t SET state = 'running' FROM c WHERE t.id = c.id
RETURNING t.id, t.kind, t.payload::text AS payload)sql"};

const Statement minimal_complete{"bench_raw_complete", R"sql(
UPDATE bench_raw.task SET state = 'done' WHERE id = $1::bigint)sql"};

const Statement minimal_complete_batch{"bench_raw_complete_batch", R"sql(
UPDATE bench_raw.task SET state = 'done' WHERE id = ANY($1::bigint[]))sql"};

const Statement minimal_count_done{"bench_raw_count_done", R"sql(
SELECT count(*) AS done FROM bench_raw.task WHERE state = 'done')sql"};

const Statement leased_prefill{"bench_raw_leased_prefill", R"sql(
INSERT INTO bench_raw.leased_task (id, kind, payload, state, timeout_ms)
SELECT g, 'bench.noop', jsonb_build_object('n', g), 'pending', 60000 FROM generate_series(1, $1::bigint) g)sql"};

const Statement leased_claim{"bench_raw_leased_claim", R"sql(
WITH c AS (
  SELECT id FROM bench_raw.leased_task WHERE state = 'pending' ORDER BY id LIMIT $1::bigint FOR UPDATE SKIP LOCKED
)
UPDATE bench_raw.leased_task t
SET state = 'running', attempt = t.attempt + 1, lease_token = nextval('bench_raw.lease_token_seq'),
    lease_until = now() + t.timeout_ms * interval '1 millisecond'
FROM c WHERE t.id = c.id
RETURNING t.id, t.kind, t.payload::text AS payload, t.attempt, t.lease_token)sql"};

const Statement leased_complete{"bench_raw_leased_complete", R"sql(
WITH done AS (
  UPDATE bench_raw.leased_task
  SET state = 'succeeded', result = $3::jsonb, finished_at = now(), lease_token = NULL, lease_until = NULL
  WHERE id = $1::bigint AND lease_token = $2::bigint
  RETURNING id, attempt
)
INSERT INTO bench_raw.attempt (task_id, attempt, lease_token, outcome, duration_ms, started_at, finished_at)
SELECT id, attempt, $2::bigint, 'success', $4::bigint, now() - $4::bigint * interval '1 millisecond', now()
FROM done
RETURNING task_id)sql"};

const Statement leased_complete_batch{"bench_raw_leased_complete_batch", R"sql(
WITH input AS (
  SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::jsonb[], $4::bigint[])
    AS x(id, lease_token, result, duration_ms)
), done AS (
  UPDATE bench_raw.leased_task t
  SET state = 'succeeded', result = input.result, finished_at = now(), lease_token = NULL, lease_until = NULL
  FROM input WHERE t.id = input.id AND t.lease_token = input.lease_token
  RETURNING t.id, t.attempt, input.lease_token, input.duration_ms
)
INSERT INTO bench_raw.attempt (task_id, attempt, lease_token, outcome, duration_ms, started_at, finished_at)
SELECT id, attempt, lease_token, 'success', duration_ms, now() - duration_ms * interval '1 millisecond', now()
FROM done
RETURNING task_id)sql"};

// Done means succeeded with its attempt row.
const Statement leased_count_done{"bench_raw_leased_count_done", R"sql(
SELECT count(*) AS done FROM bench_raw.leased_task t
WHERE t.state = 'succeeded' AND EXISTS (SELECT FROM bench_raw.attempt a WHERE a.task_id = t.id))sql"};

std::string array_of(const std::vector<std::string>& items) {
  std::string out = "{";
  for (std::size_t i = 0; i < items.size(); ++i) out += (i ? "," : "") + items[i];
  return out + "}";
}

// One thread's loop until nothing is left to claim; returns tasks done.
std::int64_t raw_thread(Connection& connection, RawLoop loop, const BurnConfig& config) {
  const std::string batch_text = std::to_string(config.claim_batch);
  const bool leased = loop == RawLoop::like_for_like;
  const Statement& claim = leased ? leased_claim : minimal_claim;
  std::int64_t done = 0;
  // Every claim but the last takes a task: bounded.
  for (std::int64_t claims = 0; claims <= config.tasks; ++claims) {
    const Rows tasks = SingleStatement(connection).exec(claim, {batch_text});
    if (tasks.empty()) break;
    const std::size_t n = tasks.size();
    if (!leased) {
      if (config.batched) {
        std::vector<std::string> ids;
        for (std::size_t t = 0; t < n; ++t) ids.push_back(tasks.text(t, "id"));
        SingleStatement(connection).exec(minimal_complete_batch, {array_of(ids)});
      } else {
        for (std::size_t t = 0; t < n; ++t) SingleStatement(connection).exec(minimal_complete, {tasks.text(t, "id")});
      }
      done += static_cast<std::int64_t>(n);
      continue;
    }
    // The handler took no measurable time; the attempt row records 0 ms,
    // as payq's does for a no-op.
    if (config.batched) {
      std::vector<std::string> ids, tokens, results, durations;
      for (std::size_t t = 0; t < n; ++t) {
        ids.push_back(tasks.text(t, "id"));
        tokens.push_back(tasks.text(t, "lease_token"));
        results.push_back("\"null\"");
        durations.push_back("0");
      }
      const Rows completed = SingleStatement(connection)
                                 .exec(leased_complete_batch,
                                       {array_of(ids), array_of(tokens), array_of(results), array_of(durations)});
      if (completed.size() != n) throw std::logic_error("raw batched completion lost a lease");
    } else {
      for (std::size_t t = 0; t < n; ++t) {
        const Rows completed = SingleStatement(connection)
                                   .exec(leased_complete,
                                         {tasks.text(t, "id"), tasks.text(t, "lease_token"), "null", "0"});
        if (completed.size() != 1) throw std::logic_error("raw completion lost its lease");
      }
    }
    done += static_cast<std::int64_t>(n);
  }
  return done;
}

}  // namespace

json raw_burn_point(Database& db, RawLoop loop, const BurnConfig& config, const std::function<void()>& after_prefill) {
  const bool leased = loop == RawLoop::like_for_like;
  db.transact([](Transaction& tx) { tx.exec_script(raw_reset_sql); });
  db.transact([&](Transaction& tx) { tx.exec(leased ? leased_prefill : minimal_prefill, {std::to_string(config.tasks)}); });
  db.transact([&](Transaction& tx) {
    tx.exec_script(leased ? "ANALYZE bench_raw.leased_task; ANALYZE bench_raw.attempt" : "ANALYZE bench_raw.task");
  });
  std::vector<std::shared_ptr<Connection>> connections;
  for (int i = 0; i < config.concurrency; ++i) connections.push_back(raw_connection(db));
  if (after_prefill) after_prefill();
  std::atomic<std::int64_t> done{0};
  std::mutex failure_mutex;
  std::string failure;
  std::vector<std::thread> threads;
  const auto started = Clock::now();
  for (int i = 0; i < config.concurrency; ++i) {
    threads.emplace_back([&, i] {
      try {
        done += raw_thread(*connections[static_cast<std::size_t>(i)], loop, config);
      } catch (const std::exception& e) {
        const std::lock_guard<std::mutex> lock(failure_mutex);
        failure = e.what();
      }
    });
  }
  for (auto& thread : threads) thread.join();
  if (!failure.empty()) throw std::runtime_error("raw loop: " + failure);
  const double seconds = std::chrono::duration<double>(Clock::now() - started).count();
  const std::int64_t rows = db.transact([&](Transaction& tx) {
    return tx.exec(leased ? leased_count_done : minimal_count_done, {}).i64(0, "done");
  });
  return {{"per_s", rounded(seconds > 0 ? static_cast<double>(done.load()) / seconds : 0, 1)},
          {"seconds", rounded(seconds, 3)},
          {"done_rows", rows},
          {"verified", rows == config.tasks && done.load() == config.tasks}};
}

}  // namespace payq::queue_bench

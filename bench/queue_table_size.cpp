// The claim rate against what the table holds (issue 16, target 6): a
// burn-down on an empty task table against the same in a second schema
// that holds millions of finished tasks, and a burn-down while another
// session keeps an old snapshot open against one without.
#include <pqxx/nontransaction>
#include <pqxx/transaction>

#include "payq/migrate.hpp"
#include "queue_bench.hpp"

namespace payq::queue_bench {

namespace {

// Finished tasks as a worker leaves them (kept prune_after_ms, 7 days by
// default), each with its attempt row, written in one statement each.
const Statement finished_tasks_insert{"bench_finished_tasks_insert", R"sql(
INSERT INTO @schema@.task (id, queue, kind, payload, state, attempt, attempt_max, timeout_ms, idempotency_key, result,
                           run_at, created_at, updated_at, finished_at)
SELECT n.id, 'default', 'bench.noop', jsonb_build_object('n', n.id), 'succeeded', 1, 10, 60000, 'task:' || n.id,
       'null', now(), now(), now(), now()
FROM (SELECT nextval('@schema@.task_id_seq') AS id FROM generate_series(1, $1::bigint)) n)sql"};

const Statement finished_attempts_insert{"bench_finished_attempts_insert", R"sql(
INSERT INTO @schema@.task_attempt (task_id, attempt, lease_token, worker_id, kind, started_at, finished_at, outcome,
                                   duration_ms)
SELECT id, 1, nextval('@schema@.lease_token_seq'), 'bench-fill', kind, finished_at, finished_at, 'success', 0
FROM @schema@.task WHERE state = 'succeeded')sql"};

// New pending tasks, leaving what the table holds.
const Statement pending_insert{"bench_pending_insert", R"sql(
INSERT INTO @schema@.task (id, queue, kind, payload, state, attempt_max, timeout_ms, idempotency_key)
SELECT n.id, 'default', 'bench.noop', jsonb_build_object('n', n.id), 'pending', 10, 60000, 'task:' || n.id
FROM (SELECT nextval('@schema@.task_id_seq') AS id FROM generate_series(1, $1::bigint)) n)sql"};

const Statement unfinished_count{"bench_unfinished_count", R"sql(
SELECT count(*) AS unfinished FROM @schema@.task WHERE state <> 'succeeded')sql"};

// What autovacuum would have done by the time a real system runs: dead
// versions gone, statistics and the visibility map current. VACUUM cannot
// run inside a transaction block.
void vacuum_analyze(Database& db) {
  Connection connection(ConnectionOptions{db.dsn(), db.schema(), false});
  pqxx::nontransaction work(connection.raw());
  work.exec("VACUUM ANALYZE " + db.schema() + ".task");
  work.exec("VACUUM ANALYZE " + db.schema() + ".task_attempt");
}

// A session that took a snapshot and keeps it: the xmin horizon stays
// behind it, so no row version deleted after it can be vacuumed or killed
// in an index.
class OldSnapshot {
 public:
  explicit OldSnapshot(Database& db)
      : connection_(ConnectionOptions{db.dsn(), db.schema(), false}), work_(connection_.raw()) {
    work_.exec("SELECT count(*) FROM " + db.schema() + ".task");
  }
  ~OldSnapshot() {
    try {
      work_.abort();
    } catch (...) {
    }
  }

 private:
  Connection connection_;
  pqxx::transaction<pqxx::repeatable_read> work_;
};

// Inserts `tasks` pending tasks (after a TRUNCATE when `empty_first`),
// vacuums, runs `before` and burns them down.
json burn_point(Database& db, const BurnConfig& config, bool empty_first, bool old_snapshot) {
  if (empty_first) payq_reset(db);
  db.transact([&](Transaction& tx) { tx.exec(pending_insert, {std::to_string(config.tasks)}); });
  vacuum_analyze(db);
  std::unique_ptr<OldSnapshot> holder;
  if (old_snapshot) holder = std::make_unique<OldSnapshot>(db);
  json stats;
  const BurnResult r = payq_burn(db, config, stats);
  const json table = relation_stats(db, db.schema() + ".task");
  holder.reset();
  const std::int64_t unfinished =
      db.transact([](Transaction& tx) { return tx.exec(unfinished_count, {}).i64(0, "unfinished"); });
  return {{"per_s", rounded(r.per_second(), 1)},
          {"seconds", rounded(r.seconds, 3)},
          {"verified", !r.timed_out && r.done == config.tasks && unfinished == 0},
          {"task_table_after", table},
          {"worker", stats}};
}

double per_s(const json& point) { return point["per_s"].get<double>(); }

json finished_rows_part(Database& db, const Options& o, const BurnConfig& config) {
  DatabaseOptions big_options;
  big_options.dsn = db.dsn();
  big_options.schema = db.schema() + "_big";
  Database big(big_options);
  migrate(big);
  payq_reset(big);
  progress("table size: inserting " + std::to_string(o.bloat_rows) + " finished tasks and their attempts into " +
           big.schema());
  const auto fill_started = Clock::now();
  big.transact([&](Transaction& tx) { tx.exec(finished_tasks_insert, {std::to_string(o.bloat_rows)}); });
  big.transact([&](Transaction& tx) { tx.exec(finished_attempts_insert, {}); });
  vacuum_analyze(big);
  const double fill_seconds = std::chrono::duration<double>(Clock::now() - fill_started).count();
  const json big_table_before = relation_stats(big, big.schema() + ".task");
  std::vector<double> empty_rounds, full_rounds;
  bool verified = true;
  json details = json::array();
  // Rounds alternate the two schemas on the same server.
  for (int round = 0; round < o.rounds; ++round) {
    const json empty = burn_point(db, config, true, false);
    const json full = burn_point(big, config, false, false);
    empty_rounds.push_back(per_s(empty));
    full_rounds.push_back(per_s(full));
    verified = verified && empty["verified"] == true && full["verified"] == true;
    details.push_back({{"empty", empty}, {"finished_rows", full}});
    progress("table size round " + std::to_string(round + 1) + " " +
             json{{"empty_per_s", empty["per_s"]}, {"finished_rows_per_s", full["per_s"]}}.dump());
  }
  payq_reset(big);
  json out = {{"finished_rows", o.bloat_rows},
              {"fill",
               "a second schema (" + big.schema() +
                   ", same migrations) with finished_rows succeeded tasks and one attempt row each, by INSERT ... "
                   "SELECT generate_series; VACUUM ANALYZE after the fill and after each round's pending rows "
                   "are inserted, in both schemas, as autovacuum would have"},
              {"fill_seconds", rounded(fill_seconds, 1)},
              {"task_table_with_finished_rows", big_table_before},
              {"empty", spread(empty_rounds)},
              {"with_finished_rows", spread(full_rounds)}};
  out["ratio_finished_rows_vs_empty"] = ratio_or_null(out["with_finished_rows"]["median"], out["empty"]["median"]);
  out["verified"] = verified;
  out["rounds_detail"] = details;
  return out;
}

json old_snapshot_part(Database& db, const Options& o, const BurnConfig& config) {
  std::vector<double> without_rounds, with_rounds, raw_without_rounds, raw_with_rounds;
  bool verified = true;
  json details = json::array();
  for (int round = 0; round < o.rounds; ++round) {
    const json without = burn_point(db, config, true, false);
    const json with = burn_point(db, config, true, true);
    // The like-for-like raw loop under the same conditions, for scale.
    const json raw_without = raw_burn_point(db, RawLoop::like_for_like, config);
    std::unique_ptr<OldSnapshot> holder;
    const json raw_with =
        raw_burn_point(db, RawLoop::like_for_like, config, [&] { holder = std::make_unique<OldSnapshot>(db); });
    holder.reset();
    without_rounds.push_back(per_s(without));
    with_rounds.push_back(per_s(with));
    raw_without_rounds.push_back(per_s(raw_without));
    raw_with_rounds.push_back(per_s(raw_with));
    verified = verified && without["verified"] == true && with["verified"] == true;
    details.push_back({{"without", without}, {"with", with}});
    progress("old snapshot round " + std::to_string(round + 1) + " " +
             json{{"without_per_s", without["per_s"]},
                  {"with_per_s", with["per_s"]},
                  {"raw_without_per_s", raw_without["per_s"]},
                  {"raw_with_per_s", raw_with["per_s"]}}.dump());
  }
  json out = {{"old_snapshot",
               "another session: BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM task; kept open from "
               "after the pending rows are in until the burn-down ends"},
              {"without_old_snapshot", spread(without_rounds)},
              {"with_old_snapshot", spread(with_rounds)}};
  out["ratio_with_vs_without"] = ratio_or_null(out["with_old_snapshot"]["median"], out["without_old_snapshot"]["median"]);
  out["raw_like_for_like_for_scale"] = {{"without_old_snapshot", spread(raw_without_rounds)},
                                        {"with_old_snapshot", spread(raw_with_rounds)}};
  out["raw_like_for_like_for_scale"]["ratio_with_vs_without"] =
      ratio_or_null(out["raw_like_for_like_for_scale"]["with_old_snapshot"]["median"],
                    out["raw_like_for_like_for_scale"]["without_old_snapshot"]["median"]);
  out["verified"] = verified;
  out["rounds_detail"] = details;
  return out;
}

}  // namespace

json table_size_section(Database& db, const Options& o) {
  BurnConfig config = burn_config(o, o.table_size_concurrency, o.burn_tasks);
  config.batched = o.table_size_batched;
  json out = {{"tasks", o.burn_tasks},
              {"concurrency", o.table_size_concurrency},
              {"completion", o.table_size_batched ? "batched" : "synchronous"},
              {"claim_batch", o.claim_batch},
              {"rounds", o.rounds},
              {"measure",
               "claim rate = tasks / seconds of a burn-down of `tasks` pre-inserted no-op tasks by the C++ worker "
               "(claim and complete); medians over rounds"}};
  out["finished_rows"] = finished_rows_part(db, o, config);
  out["old_snapshot"] = old_snapshot_part(db, o, config);
  payq_reset(db);
  return out;
}

}  // namespace payq::queue_bench

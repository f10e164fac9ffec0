// Shared by the queue benchmark's sections: payq's side of a burn-down, the
// prefill and reset of its tables, medians, child processes.
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <iostream>
#include <thread>

#include <pqxx/nontransaction>

#include "payq/handler.hpp"
#include "payq/worker.hpp"
#include "queue_bench.hpp"

extern char** environ;

namespace payq::queue_bench {

const std::vector<std::string> section_names = {"enqueue", "claim",   "burndown", "python",
                                                "latency", "table_size", "memory"};

const char* const task_kind_noop = "bench.noop";
const char* const task_kind_latency = "bench.latency";

namespace {

// The same statement text is in bench/queue_python.py: both sides burn down
// identical rows.
const char* const payq_reset_sql =
    "TRUNCATE @schema@.task, @schema@.task_attempt, @schema@.queue_start, @schema@.task_key;"
    "INSERT INTO @schema@.queue (name) VALUES ('default') ON CONFLICT (name) DO NOTHING;";

const Statement payq_prefill{"bench_payq_prefill", R"sql(
INSERT INTO @schema@.task (id, queue, kind, payload, state, attempt_max, timeout_ms, idempotency_key)
SELECT n.id, 'default', 'bench.noop', jsonb_build_object('n', n.g), 'pending', 10, 60000, 'task:' || n.id
FROM (SELECT nextval('@schema@.task_id_seq') AS id, g FROM generate_series(1, $1::bigint) g) n)sql"};

const Statement payq_count_succeeded{"bench_payq_count_succeeded", R"sql(
SELECT count(*) FILTER (WHERE state = 'succeeded') AS succeeded, count(*) AS total FROM @schema@.task)sql"};

const Statement table_stats{"bench_table_stats", R"sql(
SELECT coalesce(s.n_dead_tup, 0) AS dead_rows, pg_relation_size($1::regclass) AS heap_bytes,
       pg_indexes_size($1::regclass) AS index_bytes
FROM pg_class c LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid WHERE c.oid = $1::regclass)sql"};

}  // namespace

void progress(const std::string& message) { std::cerr << "[queue] " << message << std::endl; }

json ratio_or_null(const json& numerator, const json& denominator) {
  if (!numerator.is_number() || !denominator.is_number() || denominator.get<double>() <= 0) return nullptr;
  return rounded(numerator.get<double>() / denominator.get<double>(), 3);
}

json spread(const std::vector<double>& per_round) {
  if (per_round.empty()) return {{"median", nullptr}};
  const auto [low, high] = std::minmax_element(per_round.begin(), per_round.end());
  json rounds = json::array();
  for (double value : per_round) rounds.push_back(rounded(value, 1));
  return {{"median", rounded(bench::median(per_round), 1)},
          {"min", rounded(*low, 1)},
          {"max", rounded(*high, 1)},
          {"rounds", rounds}};
}

// Nearest-rank percentile of sorted values.
double percentile(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return 0;
  const auto rank = static_cast<std::size_t>(std::ceil(q * static_cast<double>(sorted.size())));
  return sorted[std::min(sorted.size() - 1, rank == 0 ? 0 : rank - 1)];
}

void payq_reset(Database& db) {
  db.transact([](Transaction& tx) { tx.exec_script(payq_reset_sql); });
}

void payq_prefill_tasks(Database& db, std::int64_t tasks) {
  payq_reset(db);
  db.transact([&](Transaction& tx) { tx.exec(payq_prefill, {std::to_string(tasks)}); });
  db.transact([](Transaction& tx) { tx.exec_script("ANALYZE @schema@.task"); });
}

std::int64_t payq_succeeded_rows(Database& db) {
  return db.transact([](Transaction& tx) { return tx.exec(payq_count_succeeded, {}).i64(0, "succeeded"); });
}

json relation_stats(Database& db, const std::string& relation) {
  return db.transact([&](Transaction& tx) {
    Rows rows = tx.exec(table_stats, {relation});
    return json{{"dead_rows", rows.i64(0, "dead_rows")},
                {"heap_bytes", rows.i64(0, "heap_bytes")},
                {"index_bytes", rows.i64(0, "index_bytes")}};
  });
}

std::shared_ptr<Connection> raw_connection(Database& db) {
  auto connection = std::make_shared<Connection>(ConnectionOptions{db.dsn(), db.schema(), true});
  pqxx::nontransaction reset(connection->raw());
  reset.exec("RESET plan_cache_mode");
  reset.commit();
  return connection;
}

void pool_warm(Database& db, int count) {
  std::vector<Database::Lease> leases;
  for (int i = 0; i < count; ++i) leases.push_back(db.acquire());
}

BurnConfig burn_config(const Options& o, int concurrency, std::int64_t tasks) {
  BurnConfig config;
  config.concurrency = concurrency;
  config.claim_batch = o.claim_batch;
  config.tasks = tasks;
  config.timeout = std::chrono::seconds(o.burn_timeout_s);
  return config;
}

BurnResult payq_burn(Database& db, const BurnConfig& config, json& worker_stats,
                     const std::function<void(std::int64_t)>& on_tick) {
  HandlerRegistry registry;
  HandlerOptions handler_options;
  handler_options.batched_completion = config.batched;
  registry.add(
      task_kind_noop, [](const Task&, const TaskContext&) -> HandlerResult { return Outcome{}; }, handler_options);
  LogSink sink;
  WorkerOptions options;
  options.concurrency = config.concurrency;
  options.claim_batch_count_max = config.claim_batch;
  options.log_sink = sink.function();
  pool_warm(db, config.concurrency);
  Worker worker(db, registry, options);
  BurnResult result;
  const auto started = Clock::now();
  worker.start();
  // Bounded by the timeout.
  while (true) {
    const std::int64_t succeeded = worker.stats().succeeded;
    if (on_tick) on_tick(succeeded);
    if (succeeded >= config.tasks) break;
    if (Clock::now() - started > config.timeout) {
      result.timed_out = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  result.seconds = std::chrono::duration<double>(Clock::now() - started).count();
  worker.stop();
  const WorkerStats s = worker.stats();
  result.done = s.succeeded;
  worker_stats = {{"claimed", s.claimed},
                  {"succeeded", s.succeeded},
                  {"batched_completions", s.batched_completions},
                  {"lease_lost", s.lease_lost},
                  {"complete_errors", s.complete_errors},
                  {"database_errors", s.database_errors},
                  {"given_back", s.given_back},
                  {"log_lines", sink.lines.load()}};
  return result;
}

json payq_burn_point(Database& db, const BurnConfig& config) {
  payq_prefill_tasks(db, config.tasks);
  json stats;
  const BurnResult r = payq_burn(db, config, stats);
  const std::int64_t rows = payq_succeeded_rows(db);
  return {{"per_s", rounded(r.per_second(), 1)}, {"seconds", rounded(r.seconds, 3)},
          {"timed_out", r.timed_out},             {"succeeded_rows", rows},
          {"verified", rows == config.tasks},     {"worker", stats}};
}

ChildResult child_run(const std::vector<std::string>& argv) {
  int fds[2];
  if (pipe(fds) != 0) throw std::runtime_error("pipe failed");
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[1], 1);
  posix_spawn_file_actions_addclose(&actions, fds[0]);
  posix_spawn_file_actions_addclose(&actions, fds[1]);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  const int spawned = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  close(fds[1]);
  ChildResult result;
  if (spawned != 0) {
    close(fds[0]);
    result.out = std::string("cannot start ") + argv[0] + ": " + std::strerror(spawned);
    return result;
  }
  char buffer[65536];
  for (ssize_t n; (n = read(fds[0], buffer, sizeof buffer)) != 0;) {
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    result.out.append(buffer, static_cast<std::size_t>(n));
  }
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  result.exit_status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

std::string self_path() {
  char path[4096];
  const ssize_t n = readlink("/proc/self/exe", path, sizeof path - 1);
  if (n <= 0) throw std::runtime_error("cannot read /proc/self/exe");
  return std::string(path, static_cast<std::size_t>(n));
}

}  // namespace payq::queue_bench

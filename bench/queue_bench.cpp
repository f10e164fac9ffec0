// Queue benchmark: enqueue rates (one task per transaction, multi-row
// batches, a COPY bulk load), the claim's cost against the table's size,
// burn-down of pre-inserted no-op tasks by the
// C++ worker against a bare SKIP LOCKED loop in raw SQL, the same burn-down
// with Python handlers (bench/queue_python.py, run as a child process on the
// same server), enqueue-to-start latency with LISTEN/NOTIFY, burn-down under
// an old snapshot, and the worker's resident memory over a long burn-down
// (this program re-run as a child, so the reading is the worker's alone).
// Everything runs on one throwaway embedded server in one run; prints one
// JSON document to stdout and progress to stderr.
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <set>
#include <sstream>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>
#include <pqxx/nontransaction>
#include <pqxx/result>
#include <pqxx/stream_to>
#include <pqxx/transaction>

#include "bench_support.hpp"
#include "payq/database.hpp"
#include "payq/handler.hpp"
#include "payq/migrate.hpp"
#include "payq/outbox.hpp"
#include "payq/worker.hpp"

extern char** environ;

using namespace payq;
using bench::rounded;
// Keys stay in the order written, so the document reads top to bottom.
using json = nlohmann::ordered_json;
using Clock = std::chrono::steady_clock;

namespace {

const std::vector<std::string> section_names = {"enqueue", "claim", "burndown", "python", "latency", "bloat", "memory"};

struct Options {
  bool durable = false;  // --fsync
  std::set<std::string> sections{section_names.begin(), section_names.end()};
  // Enqueue.
  std::vector<int> enqueue_clients = {1, 8};
  int enqueue_duration_ms = 1500;
  std::vector<int> enqueue_batch_sizes = {100, 1000};
  int copy_rows = 10'000;
  // Burn-down.
  std::int64_t burn_tasks = 10'000;
  std::vector<int> burn_concurrency = {1, 8, 32};
  std::size_t claim_batch = 10;
  int burn_timeout_s = 600;
  int burn_rounds = 2;
  // Claim cost.
  std::int64_t claim_rows = 100'000;
  int claim_count = 50;
  // Latency.
  int latency_tasks = 400;
  int latency_interval_ms = 5;
  int latency_concurrency = 4;
  // Bloat.
  int bloat_concurrency = 8;
  // Memory.
  std::int64_t memory_tasks = 20'000;
  int memory_concurrency = 32;
  // Python.
  std::string python = "python3";
  std::string python_script;  // empty: the Python section is skipped
  std::string dsn;            // empty: a throwaway embedded cluster
  bool memory_child = false;  // internal: this process is the memory-measuring worker
};

const char* usage =
    "payq_bench_queue [--fsync] [--sections enqueue,claim,burndown,python,latency,bloat,memory]\n"
    "  [--enqueue-clients 1,8] [--enqueue-duration-ms 1500] [--enqueue-batch-sizes 100,1000] [--copy-rows 10000]\n"
    "  [--claim-rows 100000] [--tasks 10000] [--concurrency 1,8,32] [--claim-batch 10] [--rounds 2]\n"
    "  [--burn-timeout-s 600]\n"
    "  [--latency-tasks 400] [--latency-interval-ms 5] [--latency-concurrency 4] [--bloat-concurrency 8]\n"
    "  [--memory-tasks 20000] [--memory-concurrency 32] [--python python3] [--python-script bench/queue_python.py]\n"
    "  [--dsn DSN]";

std::vector<int> int_list(const std::string& text) {
  std::vector<int> out;
  std::stringstream list(text);
  for (std::string n; std::getline(list, n, ',');) out.push_back(std::stoi(n));
  return out;
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error(arg + " needs a value");
      return argv[++i];
    };
    if (arg == "--fsync") {
      o.durable = true;
    } else if (arg == "--sections") {
      o.sections.clear();
      std::stringstream list(next());
      for (std::string s; std::getline(list, s, ',');) {
        if (std::find(section_names.begin(), section_names.end(), s) == section_names.end()) {
          throw std::runtime_error("unknown section " + s);
        }
        o.sections.insert(s);
      }
    } else if (arg == "--enqueue-clients") {
      o.enqueue_clients = int_list(next());
    } else if (arg == "--enqueue-duration-ms") {
      o.enqueue_duration_ms = std::stoi(next());
    } else if (arg == "--enqueue-batch-sizes") {
      o.enqueue_batch_sizes = int_list(next());
    } else if (arg == "--copy-rows") {
      o.copy_rows = std::stoi(next());
    } else if (arg == "--tasks") {
      o.burn_tasks = std::stoll(next());
    } else if (arg == "--concurrency") {
      o.burn_concurrency = int_list(next());
    } else if (arg == "--claim-batch") {
      o.claim_batch = static_cast<std::size_t>(std::stoul(next()));
    } else if (arg == "--rounds") {
      o.burn_rounds = std::stoi(next());
    } else if (arg == "--burn-timeout-s") {
      o.burn_timeout_s = std::stoi(next());
    } else if (arg == "--claim-rows") {
      o.claim_rows = std::stoll(next());
    } else if (arg == "--latency-tasks") {
      o.latency_tasks = std::stoi(next());
    } else if (arg == "--latency-interval-ms") {
      o.latency_interval_ms = std::stoi(next());
    } else if (arg == "--latency-concurrency") {
      o.latency_concurrency = std::stoi(next());
    } else if (arg == "--bloat-concurrency") {
      o.bloat_concurrency = std::stoi(next());
    } else if (arg == "--memory-tasks") {
      o.memory_tasks = std::stoll(next());
    } else if (arg == "--memory-concurrency") {
      o.memory_concurrency = std::stoi(next());
    } else if (arg == "--python") {
      o.python = next();
    } else if (arg == "--python-script") {
      o.python_script = next();
    } else if (arg == "--dsn") {
      o.dsn = next();
    } else if (arg == "--memory-child") {
      o.memory_child = true;
    } else {
      throw std::runtime_error("unknown argument " + arg + "\n" + usage);
    }
  }
  if (o.burn_tasks < 1 || o.memory_tasks < 1 || o.latency_tasks < 1 || o.copy_rows < 1 || o.burn_rounds < 1) {
    throw std::runtime_error("task counts must be positive");
  }
  return o;
}

void progress(const std::string& message) { std::cerr << "[queue] " << message << std::endl; }

json ratio_or_null(double numerator, double denominator) {
  if (denominator <= 0) return nullptr;
  return rounded(numerator / denominator, 3);
}

// ---------------------------------------------------------------- SQL

const char* const task_kind_noop = "bench.noop";
const char* const task_kind_latency = "bench.latency";

// The same statement text is in bench/queue_python.py: both sides burn down
// identical rows.
const char* const payq_reset_sql =
    "TRUNCATE @schema@.task, @schema@.task_attempt, @schema@.queue_start, @schema@.task_key;"
    "INSERT INTO @schema@.queue (name) VALUES ('default') ON CONFLICT (name) DO NOTHING;";

const Statement payq_prefill{"bench_payq_prefill", R"sql(
INSERT INTO @schema@.task (id, queue, kind, payload, state, attempt_max, timeout_ms, idempotency_key)
SELECT n.id, 'default', 'bench.noop', jsonb_build_object('n', n.g), 'pending', 10, 60000, 'task:' || n.id
FROM (SELECT nextval('@schema@.task_id_seq') AS id, g FROM generate_series(1, $1::bigint) g) n)sql"};

// Finished tasks as a worker leaves them (kept prune_after_ms, 7 days by
// default), to show what the claim costs as the table grows.
const Statement payq_prefill_finished{"bench_payq_prefill_finished", R"sql(
INSERT INTO @schema@.task (id, queue, kind, payload, state, attempt, attempt_max, timeout_ms, idempotency_key, result,
                           finished_at)
SELECT n.id, 'default', 'bench.noop', jsonb_build_object('n', n.g), 'succeeded', 1, 10, 60000, 'task:' || n.id,
       'null', now()
FROM (SELECT nextval('@schema@.task_id_seq') AS id, g FROM generate_series(1, $1::bigint) g) n)sql"};

const Statement payq_count_succeeded{"bench_payq_count_succeeded", R"sql(
SELECT count(*) FILTER (WHERE state = 'succeeded') AS succeeded, count(*) AS total FROM @schema@.task)sql"};

const Statement table_stats{"bench_table_stats", R"sql(
SELECT coalesce(s.n_dead_tup, 0) AS dead_rows, pg_relation_size($1::regclass) AS heap_bytes,
       pg_indexes_size($1::regclass) AS index_bytes
FROM pg_class c LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid WHERE c.oid = $1::regclass)sql"};

// A raw enqueue writes the same row into payq's task table that
// Outbox::enqueue writes, without payq's validation, JSON batch envelope,
// unique-key and queue upserts.
const Statement raw_enqueue_one{"bench_raw_enqueue_one", R"sql(
INSERT INTO @schema@.task (id, queue, kind, payload, state, attempt_max, timeout_ms, idempotency_key)
SELECT n.id, 'default', $1, $2::jsonb, 'pending', 10, 60000, 'task:' || n.id
FROM (SELECT nextval('@schema@.task_id_seq') AS id) n)sql"};

const Statement raw_enqueue_many{"bench_raw_enqueue_many", R"sql(
INSERT INTO @schema@.task (id, queue, kind, payload, state, attempt_max, timeout_ms, idempotency_key)
SELECT n.id, 'default', $1, n.payload, 'pending', 10, 60000, 'task:' || n.id
FROM (SELECT nextval('@schema@.task_id_seq') AS id, p AS payload FROM jsonb_array_elements($2::jsonb) p) n)sql"};

const Statement ids_reserve{"bench_ids_reserve", R"sql(
SELECT nextval('@schema@.task_id_seq') AS id FROM generate_series(1, $1::integer))sql"};

// The bare queue the worker is compared with: a minimal table, a partial
// index on what is pending, claim by SKIP LOCKED, one UPDATE per completion.
const char* const raw_schema_sql =
    "CREATE SCHEMA IF NOT EXISTS bench_raw;"
    "CREATE TABLE IF NOT EXISTS bench_raw.task (id bigint PRIMARY KEY, kind text NOT NULL,"
    " payload jsonb NOT NULL, state text NOT NULL);"
    "CREATE INDEX IF NOT EXISTS task_pending ON bench_raw.task (id) WHERE state = 'pending';";

const char* const raw_reset_sql = "TRUNCATE bench_raw.task;";

const Statement raw_prefill{"bench_raw_prefill", R"sql(
INSERT INTO bench_raw.task (id, kind, payload, state)
SELECT g, 'bench.noop', jsonb_build_object('n', g), 'pending' FROM generate_series(1, $1::bigint) g)sql"};

const Statement raw_claim{"bench_raw_claim", R"sql(
WITH c AS (
  SELECT id FROM bench_raw.task WHERE state = 'pending' ORDER BY id LIMIT $1::bigint FOR UPDATE SKIP LOCKED
)
UPDATE bench_raw.task t SET state = 'running' FROM c WHERE t.id = c.id
RETURNING t.id, t.kind, t.payload::text AS payload)sql"};

const Statement raw_complete{"bench_raw_complete", R"sql(
UPDATE bench_raw.task SET state = 'done' WHERE id = $1::bigint)sql"};

const Statement raw_complete_batch{"bench_raw_complete_batch", R"sql(
UPDATE bench_raw.task SET state = 'done' WHERE id = ANY($1::bigint[]))sql"};

const Statement raw_count_done{"bench_raw_count_done", R"sql(
SELECT count(*) FILTER (WHERE state = 'done') AS done FROM bench_raw.task)sql"};

// ---------------------------------------------------------------- helpers

void payq_reset(Database& db) {
  db.transact([](Transaction& tx) { tx.exec_script(payq_reset_sql); });
}

void payq_prefill_tasks(Database& db, std::int64_t tasks) {
  payq_reset(db);
  db.transact([&](Transaction& tx) { tx.exec(payq_prefill, {std::to_string(tasks)}); });
  db.transact([](Transaction& tx) { tx.exec_script("ANALYZE @schema@.task"); });
}

void raw_prefill_tasks(Database& db, std::int64_t tasks) {
  db.transact([](Transaction& tx) { tx.exec_script(raw_reset_sql); });
  db.transact([&](Transaction& tx) { tx.exec(raw_prefill, {std::to_string(tasks)}); });
  db.transact([](Transaction& tx) { tx.exec_script("ANALYZE bench_raw.task"); });
}

json relation_stats(Database& db, const std::string& relation) {
  return db.transact([&](Transaction& tx) {
    Rows rows = tx.exec(table_stats, {relation});
    return json{{"dead_rows", rows.i64(0, "dead_rows")},
                {"heap_bytes", rows.i64(0, "heap_bytes")},
                {"index_bytes", rows.i64(0, "index_bytes")}};
  });
}

// The raw baselines run as a plain PostgreSQL client would: prepared
// statements under the server's default plan_cache_mode (auto). payq's own
// connections force generic plans (connection.cpp); that stays on the payq
// side of every comparison.
std::shared_ptr<Connection> raw_connection(Database& db) {
  auto connection = std::make_shared<Connection>(ConnectionOptions{db.dsn(), db.schema(), true});
  pqxx::nontransaction reset(connection->raw());
  reset.exec("RESET plan_cache_mode");
  reset.commit();
  return connection;
}

// Opens the pool's connections before a timed run, so connection setup is
// not counted (the raw baseline opens its connections before timing too).
void pool_warm(Database& db, int count) {
  std::vector<Database::Lease> leases;
  for (int i = 0; i < count; ++i) leases.push_back(db.acquire());
}

// The worker's log lines go where the default sink sends them, stderr,
// except that here stderr would be /dev/null: the same write per line,
// without burying the progress output.
struct LogSink {
  std::FILE* file = nullptr;
  std::atomic<std::int64_t> lines{0};
  std::atomic<bool> listening{false};

  LogSink() {
    file = std::fopen("/dev/null", "w");
    if (file == nullptr) throw std::runtime_error("cannot open /dev/null");
    std::setvbuf(file, nullptr, _IONBF, 0);
  }
  ~LogSink() { std::fclose(file); }
  std::function<void(const std::string&)> function() {
    return [this](const std::string& line) {
      ++lines;
      if (line.find("\"listener_listening\"") != std::string::npos) listening = true;
      std::string out = line;
      out.push_back('\n');
      std::fputs(out.c_str(), file);
    };
  }
};

struct ChildResult {
  int exit_status = -1;
  std::string out;
};

// Runs argv with stdout captured and stderr shared; returns its exit status.
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

// Nearest-rank percentile of sorted values.
double percentile(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return 0;
  const auto rank = static_cast<std::size_t>(std::ceil(q * static_cast<double>(sorted.size())));
  return sorted[std::min(sorted.size() - 1, rank == 0 ? 0 : rank - 1)];
}

// ---------------------------------------------------------------- enqueue

TaskSpec noop_spec(std::int64_t n) {
  TaskSpec spec;
  spec.kind = task_kind_noop;
  spec.payload_json = "{\"n\":" + std::to_string(n) + "}";
  return spec;
}

std::string payload_array(std::int64_t first, int count) {
  std::string out = "[";
  for (int i = 0; i < count; ++i) out += (i ? ",{\"n\":" : "{\"n\":") + std::to_string(first + i) + "}";
  return out + "]";
}

// One COPY of `rows` tasks into payq's task table, ids drawn from its
// sequence first (the idempotency key is derived from the id).
void copy_tasks(Connection& connection, int rows, std::int64_t first_n) {
  pqxx::work work(connection.raw());
  const pqxx::result ids =
      work.exec_params(sql_expand_schema(ids_reserve.sql, connection.schema()), rows);
  const std::vector<std::string> columns = {"id",    "queue",       "kind",       "payload",
                                            "state", "attempt_max", "timeout_ms", "idempotency_key"};
  pqxx::stream_to stream(work, connection.schema() + ".task", columns);
  std::int64_t n = first_n;
  for (const auto& row : ids) {
    const auto id = row[0].as<std::int64_t>();
    stream << std::make_tuple(id, std::string("default"), std::string(task_kind_noop),
                              "{\"n\":" + std::to_string(n++) + "}", std::string("pending"), 10, 60000,
                              "task:" + std::to_string(id));
  }
  stream.complete();
  work.commit();
}

double rate_of(const bench::RunResult& result, int tasks_per_operation) {
  return rounded(result.per_second() * tasks_per_operation, 1);
}

json enqueue_single(Database& db, const Options& o) {
  const std::chrono::milliseconds duration(o.enqueue_duration_ms);
  json rows = json::array();
  for (int clients : o.enqueue_clients) {
    payq_reset(db);
    const auto payq = bench::run_clients(clients, duration, [&](int index) -> std::function<bool()> {
      auto counter = std::make_shared<std::int64_t>(index * 1'000'000'000LL);
      return [&db, counter] {
        db.transact([&](Transaction& tx) { Outbox(tx).enqueue(noop_spec((*counter)++)); });
        return true;
      };
    });
    payq_reset(db);
    const auto payq_notify = bench::run_clients(clients, duration, [&](int index) -> std::function<bool()> {
      auto counter = std::make_shared<std::int64_t>(index * 1'000'000'000LL);
      return [&db, counter] {
        db.transact([&](Transaction& tx) { Outbox(tx).enqueue(noop_spec((*counter)++)); });
        notify_queue(db, "default");
        return true;
      };
    });
    payq_reset(db);
    const auto raw = bench::run_clients(clients, duration, [&](int index) -> std::function<bool()> {
      auto connection = raw_connection(db);
      auto counter = std::make_shared<std::int64_t>(index * 1'000'000'000LL);
      return [connection, counter] {
        Transaction tx(*connection);
        tx.exec(raw_enqueue_one, {task_kind_noop, "{\"n\":" + std::to_string((*counter)++) + "}"});
        tx.commit();
        return true;
      };
    });
    json row = {{"clients", clients},
                {"payq_enqueue_per_s", rate_of(payq, 1)},
                {"payq_enqueue_then_notify_queue_per_s", rate_of(payq_notify, 1)},
                {"raw_sql_insert_per_s", rate_of(raw, 1)}};
    row["ratio_payq_vs_raw"] = ratio_or_null(row["payq_enqueue_per_s"], row["raw_sql_insert_per_s"]);
    progress("enqueue single " + row.dump());
    rows.push_back(row);
  }
  return rows;
}

json enqueue_batches(Database& db, const Options& o) {
  const std::chrono::milliseconds duration(o.enqueue_duration_ms);
  json rows = json::array();
  for (int size : o.enqueue_batch_sizes) {
    payq_reset(db);
    const auto payq = bench::run_clients(1, duration, [&](int) -> std::function<bool()> {
      auto counter = std::make_shared<std::int64_t>(0);
      return [&db, counter, size] {
        std::vector<TaskSpec> specs;
        specs.reserve(static_cast<std::size_t>(size));
        for (int i = 0; i < size; ++i) specs.push_back(noop_spec((*counter)++));
        db.transact([&](Transaction& tx) { Outbox(tx).enqueue_batch(specs); });
        return true;
      };
    });
    payq_reset(db);
    const auto raw = bench::run_clients(1, duration, [&](int) -> std::function<bool()> {
      auto connection = raw_connection(db);
      auto counter = std::make_shared<std::int64_t>(0);
      return [connection, counter, size] {
        Transaction tx(*connection);
        tx.exec(raw_enqueue_many, {task_kind_noop, payload_array(*counter, size)});
        tx.commit();
        *counter += size;
        return true;
      };
    });
    json row = {{"batch_size", size},
                {"clients", 1},
                {"payq_enqueue_batch_per_s", rate_of(payq, size)},
                {"raw_sql_multi_row_insert_per_s", rate_of(raw, size)}};
    row["ratio_payq_vs_raw"] =
        ratio_or_null(row["payq_enqueue_batch_per_s"], row["raw_sql_multi_row_insert_per_s"]);
    progress("enqueue batch " + row.dump());
    rows.push_back(row);
  }
  return rows;
}

json enqueue_copy(Database& db, const Options& o) {
  payq_reset(db);
  const auto copy = bench::run_clients(1, std::chrono::milliseconds(o.enqueue_duration_ms),
                                       [&](int) -> std::function<bool()> {
                                         auto connection = raw_connection(db);
                                         auto counter = std::make_shared<std::int64_t>(0);
                                         const int rows = o.copy_rows;
                                         return [connection, counter, rows] {
                                           copy_tasks(*connection, rows, *counter);
                                           *counter += rows;
                                           return true;
                                         };
                                       });
  json out = {{"rows_per_copy", o.copy_rows},
              {"clients", 1},
              {"copy_per_s", rate_of(copy, o.copy_rows)},
              {"path", "pqxx::stream_to (COPY payq.task (...) FROM STDIN), ids drawn from task_id_seq first; "
                       "payq has no COPY API, so this bypasses Outbox validation"}};
  progress("enqueue copy " + out.dump());
  return out;
}

json enqueue_section(Database& db, const Options& o) {
  json out;
  out["duration_ms_per_point"] = o.enqueue_duration_ms;
  out["single_task_per_transaction"] = enqueue_single(db, o);
  out["batch_per_transaction"] = enqueue_batches(db, o);
  out["copy_bulk_load"] = enqueue_copy(db, o);
  const double best_batch =
      out["batch_per_transaction"].empty() ? 0.0 : out["batch_per_transaction"].back()["payq_enqueue_batch_per_s"].get<double>();
  out["copy_bulk_load"]["ratio_copy_vs_largest_payq_batch"] =
      ratio_or_null(out["copy_bulk_load"]["copy_per_s"], best_batch);
  payq_reset(db);
  return out;
}

// ---------------------------------------------------------------- claim cost

// Mean time of one Outbox::claim (claim_batch tasks, fast path), each
// claim rolled back so every one sees the same table.
double claim_ms_mean(Connection& connection, const Options& o) {
  const ClaimRequest request{"default", "bench-claim", o.claim_batch};
  double seconds = 0;
  for (int i = 0; i < o.claim_count; ++i) {
    Transaction tx(connection);
    const auto started = Clock::now();
    const std::size_t claimed = Outbox(tx).claim(request).size();
    seconds += std::chrono::duration<double>(Clock::now() - started).count();
    if (claimed != o.claim_batch) throw std::logic_error("claim took " + std::to_string(claimed) + " tasks");
    tx.rollback();
  }
  return seconds * 1000 / o.claim_count;
}

json claim_point(Database& db, const Options& o, std::int64_t pending, std::int64_t finished) {
  payq_prefill_tasks(db, pending);
  db.transact([&](Transaction& tx) { tx.exec(payq_prefill_finished, {std::to_string(finished)}); });
  db.transact([](Transaction& tx) { tx.exec_script("ANALYZE @schema@.task"); });
  Database::Lease pooled = db.acquire();
  // The same claim where the session keeps PostgreSQL's default
  // plan_cache_mode instead of the generic plans payq forces.
  const std::shared_ptr<Connection> custom = raw_connection(db);
  return {{"pending_rows", pending},
          {"finished_rows", finished},
          {"claim_ms_mean", rounded(claim_ms_mean(*pooled, o), 3)},
          {"claim_ms_mean_plan_cache_mode_auto", rounded(claim_ms_mean(*custom, o), 3)}};
}

// The claim's cost against what the table holds: a small queue, the same
// with many finished tasks (kept prune_after_ms), and a large backlog.
json claim_section(Database& db, const Options& o) {
  const std::int64_t small = 1000;
  const std::int64_t big = o.claim_rows;
  json rows = json::array({claim_point(db, o, small, 0), claim_point(db, o, small, big), claim_point(db, o, big, 0)});
  json out = {{"claims_per_point", o.claim_count},
              {"claim_batch", o.claim_batch},
              {"method",
               "Outbox::claim (fast path) after ANALYZE, each claim rolled back; claim_ms_mean on a pooled payq "
               "connection (plan_cache_mode = force_generic_plan, as connection.cpp sets it), "
               "claim_ms_mean_plan_cache_mode_auto on a payq Connection after RESET plan_cache_mode"},
              {"results", rows},
              {"ratio_finished_rows_vs_small", ratio_or_null(rows[1]["claim_ms_mean"], rows[0]["claim_ms_mean"])},
              {"ratio_backlog_vs_small", ratio_or_null(rows[2]["claim_ms_mean"], rows[0]["claim_ms_mean"])}};
  progress("claim cost " + rows.dump());
  payq_reset(db);
  return out;
}

// ---------------------------------------------------------------- burn-down

struct BurnConfig {
  int concurrency = 1;
  bool batched = false;  // payq: HandlerOptions::batched_completion; raw: one UPDATE per claimed batch
  bool raw_autocommit = false;  // raw: each statement its own transaction, no BEGIN/COMMIT
  std::size_t claim_batch = 10;
  std::int64_t tasks = 0;
  std::chrono::seconds timeout{600};
};

struct BurnResult {
  double seconds = 0;
  std::int64_t done = 0;
  bool timed_out = false;
  double per_second() const { return seconds > 0 ? static_cast<double>(done) / seconds : 0; }
};

// The C++ worker with a no-op handler over the pre-inserted tasks, timed
// from start() until the last success is recorded. `on_tick(succeeded)`
// runs every poll (the memory child samples RSS there).
BurnResult payq_burn(Database& db, const BurnConfig& config, json& worker_stats,
                     const std::function<void(std::int64_t)>& on_tick = nullptr) {
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
  worker_stats = {{"claimed", s.claimed},           {"succeeded", s.succeeded},
                  {"lease_lost", s.lease_lost},     {"complete_errors", s.complete_errors},
                  {"database_errors", s.database_errors}, {"given_back", s.given_back},
                  {"log_lines", sink.lines.load()}};
  return result;
}

// The bare loop: each thread with its own connection claims a batch with
// SKIP LOCKED in one transaction, then completes each task in a transaction
// of its own, until nothing is left to claim.
BurnResult raw_burn(Database& db, const BurnConfig& config) {
  std::vector<std::shared_ptr<Connection>> connections;
  for (int i = 0; i < config.concurrency; ++i) connections.push_back(raw_connection(db));
  std::atomic<std::int64_t> done{0};
  std::vector<std::thread> threads;
  const std::string batch_text = std::to_string(config.claim_batch);
  const std::int64_t claim_count_max = config.tasks + 1;  // every claim but the last takes a task
  const auto started = Clock::now();
  for (int i = 0; i < config.concurrency; ++i) {
    threads.emplace_back([&, i] {
      Connection& connection = *connections[static_cast<std::size_t>(i)];
      // One statement, in an explicit transaction or as its own.
      auto run = [&](const Statement& statement, const Params& params) {
        if (config.raw_autocommit) return SingleStatement(connection).exec(statement, params);
        Transaction tx(connection);
        Rows rows = tx.exec(statement, params);
        tx.commit();
        return rows;
      };
      for (std::int64_t claims = 0; claims < claim_count_max; ++claims) {
        Rows tasks = run(raw_claim, {batch_text});
        if (tasks.empty()) return;
        if (config.batched) {
          std::string ids = "{";
          for (std::size_t t = 0; t < tasks.size(); ++t) ids += (t ? "," : "") + tasks.text(t, "id");
          run(raw_complete_batch, {ids + "}"});
        } else {
          for (std::size_t t = 0; t < tasks.size(); ++t) run(raw_complete, {tasks.text(t, "id")});
        }
        done += static_cast<std::int64_t>(tasks.size());
      }
    });
  }
  for (auto& thread : threads) thread.join();
  BurnResult result;
  result.seconds = std::chrono::duration<double>(Clock::now() - started).count();
  result.done = done.load();
  return result;
}

std::int64_t payq_succeeded_rows(Database& db) {
  return db.transact([](Transaction& tx) { return tx.exec(payq_count_succeeded, {}).i64(0, "succeeded"); });
}

std::int64_t raw_done_rows(Database& db) {
  return db.transact([](Transaction& tx) { return tx.exec(raw_count_done, {}).i64(0, "done"); });
}

BurnConfig burn_config(const Options& o, int concurrency, std::int64_t tasks) {
  BurnConfig config;
  config.concurrency = concurrency;
  config.claim_batch = o.claim_batch;
  config.tasks = tasks;
  config.timeout = std::chrono::seconds(o.burn_timeout_s);
  return config;
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

json raw_burn_point(Database& db, const BurnConfig& config) {
  raw_prefill_tasks(db, config.tasks);
  const BurnResult r = raw_burn(db, config);
  const std::int64_t rows = raw_done_rows(db);
  return {{"per_s", rounded(r.per_second(), 1)},
          {"seconds", rounded(r.seconds, 3)},
          {"done_rows", rows},
          {"verified", rows == config.tasks}};
}

// The faster of two rounds: external load on shared cores only ever slows
// a run down.
json faster(const json& a, const json& b) { return a["per_s"].get<double>() >= b["per_s"].get<double>() ? a : b; }

json burndown_section(Database& db, const Options& o) {
  json rows = json::array();
  for (const bool batched : {false, true}) {
    for (int concurrency : o.burn_concurrency) {
      BurnConfig config = burn_config(o, concurrency, o.burn_tasks);
      config.batched = batched;
      BurnConfig autocommit = config;
      autocommit.raw_autocommit = true;
      json raw, raw_alone, payq;
      json rounds = json::array();
      for (int round = 0; round < o.burn_rounds; ++round) {
        const json raw_round = raw_burn_point(db, config);
        const json raw_alone_round = raw_burn_point(db, autocommit);
        const json payq_round = payq_burn_point(db, config);
        rounds.push_back({{"raw_sql_per_s", raw_round["per_s"]},
                          {"raw_sql_autocommit_per_s", raw_alone_round["per_s"]},
                          {"payq_per_s", payq_round["per_s"]}});
        raw = round == 0 ? raw_round : faster(raw, raw_round);
        raw_alone = round == 0 ? raw_alone_round : faster(raw_alone, raw_alone_round);
        payq = round == 0 ? payq_round : faster(payq, payq_round);
      }
      // The target is judged against the faster raw loop.
      const json& best_raw = faster(raw, raw_alone);
      const char* mode = batched ? "batched" : "synchronous";
      json row = {{"completion", mode},
                  {"concurrency", concurrency},
                  {"payq_cpp_handler_per_s", payq["per_s"]},
                  {"raw_sql_per_s", raw["per_s"]},
                  {"raw_sql_autocommit_per_s", raw_alone["per_s"]},
                  {"ratio_payq_vs_raw", ratio_or_null(payq["per_s"], best_raw["per_s"])},
                  {"ratio_payq_vs_raw_explicit_transactions", ratio_or_null(payq["per_s"], raw["per_s"])},
                  {"ratio_payq_vs_raw_autocommit", ratio_or_null(payq["per_s"], raw_alone["per_s"])},
                  {"rounds", rounds},
                  {"payq", payq},
                  {"raw_sql", raw},
                  {"raw_sql_autocommit", raw_alone}};
      progress("burn-down " + json{{"completion", mode}, {"concurrency", concurrency}, {"rounds", rounds}}.dump());
      rows.push_back(row);
    }
  }
  return {{"tasks", o.burn_tasks},
          {"claim_batch", o.claim_batch},
          {"rounds", o.burn_rounds},
          {"figure",
           "the faster round of each side; rounds alternate raw (explicit transactions), raw (autocommit), payq; "
           "ratio_payq_vs_raw is against the faster raw loop"},
          {"handler", "C++ FunctionHandler returning Outcome{success}"},
          {"completion_modes",
           {{"synchronous",
             "the default (money-moving kinds): fenced Outbox::complete, one transaction per task; raw: one "
             "UPDATE ... SET state='done' WHERE id=$1 per task, each in its own transaction"},
            {"batched",
             "opt-in for idempotent kinds (HandlerOptions::batched_completion): the claimed batch's successes in "
             "one fenced statement and transaction; raw: one UPDATE ... WHERE id = ANY($1) per claimed batch"}}},
          {"worker_options", "listen on, maintenance on, poll_interval 1000 ms, log lines written to /dev/null"},
          {"raw_sql",
           "bench_raw.task (id PK, kind, payload jsonb, state) + partial index (id) WHERE state='pending'; "
           "per thread its own connection: BEGIN; WITH c AS (SELECT id ... WHERE state='pending' ORDER BY id "
           "LIMIT batch FOR UPDATE SKIP LOCKED) UPDATE ... SET state='running' ... RETURNING; COMMIT; then the "
           "completion of the mode; raw_sql_autocommit: the same statements, each its own transaction (no "
           "BEGIN/COMMIT), as payq's worker runs its single-statement claims and completions"},
          {"results", rows}};
}

// ---------------------------------------------------------------- Python

// One Python burn-down (a child process, one concurrency), then the C++
// burn-down at the same concurrency right after it: on shared cores the
// load drifts, so the ratio compares neighbours in time.
json python_point(Database& db, const Options& o, int concurrency, bool batched) {
  std::vector<std::string> argv = {o.python, o.python_script, "--dsn", db.dsn(), "--schema", db.schema(),
                                   "--tasks", std::to_string(o.burn_tasks), "--concurrency",
                                   std::to_string(concurrency), "--claim-batch", std::to_string(o.claim_batch)};
  if (batched) argv.push_back("--batched");
  const ChildResult child = child_run(argv);
  if (child.exit_status != 0) {
    return {{"concurrency", concurrency},
            {"failed", "python exited with status " + std::to_string(child.exit_status)},
            {"output", child.out.substr(0, 2000)}};
  }
  json row = json::parse(child.out);
  BurnConfig config = burn_config(o, concurrency, o.burn_tasks);
  config.batched = batched;
  const json cpp = payq_burn_point(db, config);
  row["results"][0]["completion"] = batched ? "batched" : "synchronous";
  row["results"][0]["payq_cpp_handler_per_s_adjacent"] = cpp["per_s"];
  row["results"][0]["ratio_python_vs_cpp"] = ratio_or_null(row["results"][0]["per_s"], cpp["per_s"]);
  return row;
}

json python_section(Database& db, const Options& o) {
  if (o.python_script.empty()) return {{"skipped", "no --python-script given"}};
  json results = json::array();
  json about;
  for (const bool batched : {false, true}) {
    for (int concurrency : o.burn_concurrency) {
      progress("python burn-down at concurrency " + std::to_string(concurrency) + (batched ? ", batched" : "") +
               ": " + o.python + " " + o.python_script);
      json point = python_point(db, o, concurrency, batched);
      if (point.contains("failed")) {
        point["completion"] = batched ? "batched" : "synchronous";
        results.push_back(point);
        continue;
      }
      results.push_back(point["results"][0]);
      point.erase("results");
      point.erase("completion");
      about = point;
      progress("python " + json{{"completion", batched ? "batched" : "synchronous"},
                                {"concurrency", concurrency},
                                {"python_per_s", results.back()["per_s"]},
                                {"cpp_per_s", results.back()["payq_cpp_handler_per_s_adjacent"]}}.dump());
    }
  }
  payq_reset(db);
  about["comparison"] = "each Python run is followed at once by a C++ run at the same concurrency on the same rows";
  about["results"] = results;
  return about;
}

// ---------------------------------------------------------------- latency

json latency_section(Database& db, const Options& o) {
  payq_reset(db);
  const auto n = static_cast<std::size_t>(o.latency_tasks);
  std::vector<std::atomic<std::int64_t>> started_ns(n);
  for (auto& s : started_ns) s = -1;
  std::vector<std::int64_t> committed_ns(n, -1);
  const auto epoch = Clock::now();
  auto since_epoch_ns = [epoch] {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - epoch).count();
  };
  HandlerRegistry registry;
  registry.add(task_kind_latency, [&](const Task& task, const TaskContext&) -> HandlerResult {
    const std::int64_t now = since_epoch_ns();
    const auto seq = json::parse(task.payload_json).at("seq").get<std::size_t>();
    std::int64_t unset = -1;
    if (seq < n) started_ns[seq].compare_exchange_strong(unset, now);
    return Outcome{};
  });
  LogSink sink;
  WorkerOptions options;
  options.concurrency = o.latency_concurrency;
  options.claim_batch_count_max = o.claim_batch;
  options.log_sink = sink.function();
  pool_warm(db, o.latency_concurrency + 2);
  Worker worker(db, registry, options);
  worker.start();
  // Bounded waits: the listener is up, and the claimers have gone idle.
  for (int i = 0; i < 500 && !sink.listening; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const auto interval = std::chrono::milliseconds(o.latency_interval_ms);
  auto next = Clock::now();
  for (std::size_t i = 0; i < n; ++i) {
    TaskSpec spec;
    spec.kind = task_kind_latency;
    spec.payload_json = json{{"seq", i}}.dump();
    db.transact([&](Transaction& tx) { Outbox(tx).enqueue(spec); });
    committed_ns[i] = since_epoch_ns();
    notify_queue(db, "default");
    next += interval;
    std::this_thread::sleep_until(next);
  }
  for (int i = 0; i < 1000 && worker.stats().succeeded < o.latency_tasks; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  worker.stop();
  std::vector<double> ms;
  std::int64_t negative = 0;
  for (std::size_t i = 0; i < n; ++i) {
    if (started_ns[i] < 0 || committed_ns[i] < 0) continue;
    const double latency = static_cast<double>(started_ns[i] - committed_ns[i]) / 1e6;
    if (latency < 0) ++negative;
    ms.push_back(latency);
  }
  std::sort(ms.begin(), ms.end());
  json out = {{"tasks", o.latency_tasks},
              {"started", ms.size()},
              {"enqueue_interval_ms", o.latency_interval_ms},
              {"worker_concurrency", o.latency_concurrency},
              {"claim_batch", o.claim_batch},
              {"method",
               "one enqueuer: Outbox::enqueue in its own transaction, commit, then notify_queue; worker with "
               "LISTEN (poll_interval 1000 ms); latency = handler start - enqueue commit returned, "
               "steady_clock in this process"},
              {"p50_ms", rounded(percentile(ms, 0.50), 3)},
              {"p90_ms", rounded(percentile(ms, 0.90), 3)},
              {"p99_ms", rounded(percentile(ms, 0.99), 3)},
              {"max_ms", ms.empty() ? 0.0 : rounded(ms.back(), 3)},
              {"min_ms", ms.empty() ? 0.0 : rounded(ms.front(), 3)},
              {"started_before_commit_returned", negative}};
  progress("latency " + json{{"p50_ms", out["p50_ms"]}, {"p99_ms", out["p99_ms"]}}.dump());
  payq_reset(db);
  return out;
}

// ---------------------------------------------------------------- bloat

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

json bloat_point(Database& db, const BurnConfig& config, bool old_snapshot) {
  payq_prefill_tasks(db, config.tasks);
  std::unique_ptr<OldSnapshot> holder;
  if (old_snapshot) holder = std::make_unique<OldSnapshot>(db);
  json stats;
  const BurnResult r = payq_burn(db, config, stats);
  json table = relation_stats(db, db.schema() + ".task");
  holder.reset();
  const std::int64_t rows = payq_succeeded_rows(db);
  return {{"per_s", rounded(r.per_second(), 1)},
          {"seconds", rounded(r.seconds, 3)},
          {"timed_out", r.timed_out},
          {"verified", rows == config.tasks},
          {"task_table_after", table}};
}

// The bare loop under the same old snapshot, for scale.
json raw_bloat_point(Database& db, const BurnConfig& config, bool old_snapshot) {
  raw_prefill_tasks(db, config.tasks);
  std::unique_ptr<OldSnapshot> holder;
  if (old_snapshot) holder = std::make_unique<OldSnapshot>(db);
  const BurnResult r = raw_burn(db, config);
  holder.reset();
  return {{"per_s", rounded(r.per_second(), 1)}, {"verified", raw_done_rows(db) == config.tasks}};
}

json bloat_section(Database& db, const Options& o) {
  const BurnConfig config = burn_config(o, o.bloat_concurrency, o.burn_tasks);
  const json without = bloat_point(db, config, false);
  const json with = bloat_point(db, config, true);
  const json raw_without = raw_bloat_point(db, config, false);
  const json raw_with = raw_bloat_point(db, config, true);
  json out = {{"tasks", o.burn_tasks},
              {"concurrency", o.bloat_concurrency},
              {"claim_batch", o.claim_batch},
              {"old_snapshot", "another session: BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM "
                               "task; kept open for the whole burn-down"},
              {"without_old_snapshot", without},
              {"with_old_snapshot", with},
              {"ratio_with_vs_without", ratio_or_null(with["per_s"], without["per_s"])},
              {"raw_sql_for_scale",
               {{"without_old_snapshot", raw_without},
                {"with_old_snapshot", raw_with},
                {"ratio_with_vs_without", ratio_or_null(raw_with["per_s"], raw_without["per_s"])}}}};
  progress("bloat " + json{{"without_per_s", without["per_s"]}, {"with_per_s", with["per_s"]}}.dump());
  payq_reset(db);
  return out;
}

// ---------------------------------------------------------------- memory

// In the child: the worker alone in a fresh process, RSS sampled every
// 100 ms; the reading "after warm-up" is the first sample after a tenth of
// the tasks are done.
int memory_child(const Options& o) {
  DatabaseOptions db_options;
  db_options.dsn = o.dsn;
  Database db(db_options);
  const std::int64_t warmup_tasks = std::max<std::int64_t>(1, o.memory_tasks / 10);
  const std::int64_t rss_before = bench::resident_kib();
  std::int64_t rss_warm = -1, rss_max = 0, rss_last = 0;
  json samples = json::array();
  auto sampled_at = Clock::now() - std::chrono::seconds(1);
  auto on_tick = [&](std::int64_t succeeded) {
    if (Clock::now() - sampled_at < std::chrono::milliseconds(100)) return;
    sampled_at = Clock::now();
    rss_last = bench::resident_kib();
    rss_max = std::max(rss_max, rss_last);
    if (rss_warm < 0 && succeeded >= warmup_tasks) rss_warm = rss_last;
    samples.push_back(json::array({succeeded, rss_last}));
  };
  json stats;
  const BurnResult r = payq_burn(db, burn_config(o, o.memory_concurrency, o.memory_tasks), stats, on_tick);
  // Keep about twenty evenly spaced samples in the report.
  json kept = json::array();
  const std::size_t step = std::max<std::size_t>(1, samples.size() / 20);
  for (std::size_t i = 0; i < samples.size(); i += step) kept.push_back(samples[i]);
  if (!samples.empty()) kept.push_back(samples.back());
  const double growth =
      rss_warm > 0 ? 100.0 * static_cast<double>(rss_last - rss_warm) / static_cast<double>(rss_warm) : 0.0;
  json out = {{"tasks", o.memory_tasks},
              {"concurrency", o.memory_concurrency},
              {"claim_batch", o.claim_batch},
              {"per_s", rounded(r.per_second(), 1)},
              {"timed_out", r.timed_out},
              {"rss_kib_before_worker_start", rss_before},
              {"rss_kib_after_warmup", rss_warm},
              {"warmup_tasks", warmup_tasks},
              {"rss_kib_end", rss_last},
              {"rss_kib_max", rss_max},
              {"rss_growth_after_warmup_pct", rounded(growth, 2)},
              {"samples_succeeded_rss_kib", kept},
              {"worker", stats}};
  std::cout << out.dump() << std::endl;
  return r.timed_out ? 1 : 0;
}

json memory_section(Database& db, const Options& o) {
  payq_prefill_tasks(db, o.memory_tasks);
  progress("memory: " + std::to_string(o.memory_tasks) + " tasks at concurrency " +
           std::to_string(o.memory_concurrency) + " in a child process");
  const ChildResult child =
      child_run({self_path(), "--memory-child", "--dsn", db.dsn(), "--memory-tasks", std::to_string(o.memory_tasks),
                 "--memory-concurrency", std::to_string(o.memory_concurrency), "--claim-batch",
                 std::to_string(o.claim_batch), "--burn-timeout-s", std::to_string(o.burn_timeout_s)});
  if (child.exit_status != 0) {
    return {{"failed", "memory child exited with status " + std::to_string(child.exit_status)},
            {"output", child.out.substr(0, 2000)}};
  }
  json out = json::parse(child.out);
  out["process"] = "a fresh process running only the worker (this program with --memory-child)";
  const std::int64_t rows = payq_succeeded_rows(db);
  out["verified"] = rows == o.memory_tasks;
  progress("memory " + json{{"rss_kib_after_warmup", out["rss_kib_after_warmup"]},
                            {"rss_kib_end", out["rss_kib_end"]},
                            {"rss_kib_max", out["rss_kib_max"]}}.dump());
  payq_reset(db);
  return out;
}

// ---------------------------------------------------------------- targets

json target(const std::string& name, const std::string& rule, const json& value, bool met) {
  return {{"target", name}, {"rule", rule}, {"value", value}, {"met", value.is_null() ? json(nullptr) : json(met)}};
}

json targets_of(const json& doc) {
  json out = json::array();
  if (doc.contains("burn_down")) {
    for (const auto& row : doc["burn_down"]["results"]) {
      const json ratio = row["ratio_payq_vs_raw"];
      out.push_back(target("cpp_handler_vs_raw_sql@" + row["completion"].get<std::string>() +
                               "@concurrency=" + row["concurrency"].dump(),
                           ">= 0.7", ratio, !ratio.is_null() && ratio.get<double>() >= 0.7));
    }
  }
  if (doc.contains("python_handler") && doc["python_handler"].contains("results")) {
    for (const auto& row : doc["python_handler"]["results"]) {
      const json ratio = row.contains("ratio_python_vs_cpp") ? row["ratio_python_vs_cpp"] : json(nullptr);
      const std::string mode = row.contains("completion") ? row["completion"].get<std::string>() : "synchronous";
      out.push_back(target("python_handler_vs_cpp_handler@" + mode + "@concurrency=" + row["concurrency"].dump(),
                           ">= 0.5", ratio, !ratio.is_null() && ratio.get<double>() >= 0.5));
    }
  } else if (doc.contains("python_handler")) {
    out.push_back(target("python_handler_vs_cpp_handler", ">= 0.5", nullptr, false));
  }
  if (doc.contains("latency")) {
    const json p50 = doc["latency"]["p50_ms"];
    out.push_back(target("enqueue_to_start_p50_ms", "<= 5", p50, p50.get<double>() <= 5.0));
  }
  if (doc.contains("bloat")) {
    const json ratio = doc["bloat"]["ratio_with_vs_without"];
    out.push_back(target("old_snapshot_vs_without", ">= 0.8", ratio, !ratio.is_null() && ratio.get<double>() >= 0.8));
  }
  if (doc.contains("memory") && doc["memory"].contains("rss_kib_max")) {
    const json growth = doc["memory"]["rss_growth_after_warmup_pct"];
    out.push_back(target("rss_growth_after_warmup_pct", "< 10", growth, growth.get<double>() < 10.0));
    const double mib = doc["memory"]["rss_kib_max"].get<double>() / 1024.0;
    out.push_back(target("rss_mib_max_with_" + doc["memory"]["concurrency"].dump() + "_cpp_handlers", "< 150",
                         rounded(mib, 1), mib < 150.0));
  } else if (doc.contains("memory")) {
    out.push_back(target("rss", "flat and < 150 MB", nullptr, false));
  }
  return out;
}

int bench_main(const Options& o) {
  std::unique_ptr<bench::Cluster> own_cluster;
  if (o.dsn.empty()) own_cluster = std::make_unique<bench::Cluster>(o.durable);
  DatabaseOptions db_options;
  db_options.dsn = own_cluster ? own_cluster->dsn() : o.dsn;
  Database db(db_options);
  migrate(db);
  db.transact([](Transaction& tx) { tx.exec_script(raw_schema_sql); });
  payq_reset(db);
  const std::string server_version =
      db.transact([](Transaction& tx) { return tx.exec_sql("SHOW server_version").text(0, "server_version"); });
  const auto started = Clock::now();

  json doc = {{"bench", "queue"}};
  doc["conditions"] = {
      {"server", "embedded PostgreSQL " + server_version + ", unix socket, same machine, one server for all sections"},
      {"fsync", o.durable},
      {"durability_settings", o.durable ? "PostgreSQL defaults" : "fsync=off, synchronous_commit=off, full_page_writes=off"},
      {"cores", std::thread::hardware_concurrency()},
      {"note", "2 cores shared with other work: figures are for comparison within this run"},
      {"payload", "{\"n\": <int>}"},
      {"plan_cache_mode",
       "payq connections: force_generic_plan (set by payq's Connection); raw-SQL connections: server default (auto)"}};
  if (o.sections.count("enqueue")) {
    progress("enqueue");
    doc["enqueue"] = enqueue_section(db, o);
  }
  if (o.sections.count("claim")) {
    progress("claim cost");
    doc["claim_cost"] = claim_section(db, o);
  }
  if (o.sections.count("burndown")) {
    progress("burn-down of " + std::to_string(o.burn_tasks) + " tasks");
    doc["burn_down"] = burndown_section(db, o);
  }
  if (o.sections.count("python")) {
    doc["python_handler"] = python_section(db, o);
  }
  if (o.sections.count("latency")) {
    progress("latency");
    doc["latency"] = latency_section(db, o);
  }
  if (o.sections.count("bloat")) {
    progress("bloat");
    doc["bloat"] = bloat_section(db, o);
  }
  if (o.sections.count("memory")) doc["memory"] = memory_section(db, o);

  doc["targets"] = targets_of(doc);
  bool met = true;
  for (const auto& t : doc["targets"]) met = met && t["met"] == true;
  doc["targets_met"] = met;
  doc["run_seconds"] = rounded(std::chrono::duration<double>(Clock::now() - started).count(), 1);
  std::cout << doc.dump(2) << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Options options = parse(argc, argv);
    if (options.memory_child) return memory_child(options);
    return bench_main(options);
  } catch (const std::exception& e) {
    std::cerr << "payq_bench_queue: " << e.what() << std::endl;
    return 2;
  }
}

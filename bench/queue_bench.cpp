// Queue benchmark (issue 16): enqueue rates, the claim's cost against the
// table's size, burn-downs of pre-inserted no-op tasks by the C++ worker
// against hand-written SKIP LOCKED loops (one doing the same durable work
// per task, one minimal), the same burn-down with Python handlers
// (bench/queue_python.py, a child process on the same server), the claim
// rate with millions of finished rows and under an old snapshot,
// enqueue-to-start latency with LISTEN/NOTIFY, and the worker's resident
// memory over a long burn-down (this program re-run as a child, so the
// reading is the worker's alone). Everything runs on one throwaway embedded
// server (fsync on unless --no-fsync) in one run; prints one JSON document
// to stdout, progress and a summary with each target's verdict to stderr.
//
// Parts: queue_support.cpp (helpers, payq's burn-down), queue_raw.cpp (the
// raw loops), queue_enqueue.cpp, queue_burndown.cpp, queue_table_size.cpp,
// queue_summary.cpp (targets); latency and memory are here.
#include <algorithm>
#include <ctime>
#include <iostream>
#include <sstream>
#include <thread>
#include <vector>

#include "payq/handler.hpp"
#include "payq/migrate.hpp"
#include "payq/outbox.hpp"
#include "payq/worker.hpp"
#include "queue_bench.hpp"

namespace payq::queue_bench {

namespace {

const char* usage =
    "payq_bench_queue [--no-fsync] [--rounds 3]\n"
    "  [--sections enqueue,claim,burndown,python,latency,table_size,memory]\n"
    "  [--enqueue-clients 1,8] [--enqueue-duration-ms 1500] [--enqueue-batch-sizes 100,1000,10000] [--copy-rows 10000]\n"
    "  [--claim-rows 100000] [--tasks 10000] [--concurrency 8,32] [--claim-batch 10] [--burn-timeout-s 600]\n"
    "  [--bloat-rows 2000000] [--table-size-concurrency 8] [--table-size-completion batched|synchronous]\n"
    "  [--latency-tasks 400] [--latency-interval-ms 5] [--latency-concurrency 4]\n"
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
  o.sections = {section_names.begin(), section_names.end()};
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error(arg + " needs a value");
      return argv[++i];
    };
    if (arg == "--no-fsync") {
      o.durable = false;
    } else if (arg == "--fsync") {
      o.durable = true;  // the default; kept so older command lines still run
    } else if (arg == "--sections") {
      o.sections.clear();
      std::stringstream list(next());
      for (std::string s; std::getline(list, s, ',');) {
        if (s == "bloat") s = "table_size";  // the section's former name
        if (std::find(section_names.begin(), section_names.end(), s) == section_names.end()) {
          throw std::runtime_error("unknown section " + s + "\n" + usage);
        }
        o.sections.insert(s);
      }
    } else if (arg == "--rounds") {
      o.rounds = std::stoi(next());
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
    } else if (arg == "--burn-timeout-s") {
      o.burn_timeout_s = std::stoi(next());
    } else if (arg == "--claim-rows") {
      o.claim_rows = std::stoll(next());
    } else if (arg == "--bloat-rows") {
      o.bloat_rows = std::stoll(next());
    } else if (arg == "--table-size-concurrency" || arg == "--bloat-concurrency") {
      o.table_size_concurrency = std::stoi(next());
    } else if (arg == "--table-size-completion") {
      const std::string mode = next();
      if (mode != "batched" && mode != "synchronous") throw std::runtime_error("--table-size-completion " + mode);
      o.table_size_batched = mode == "batched";
    } else if (arg == "--latency-tasks") {
      o.latency_tasks = std::stoi(next());
    } else if (arg == "--latency-interval-ms") {
      o.latency_interval_ms = std::stoi(next());
    } else if (arg == "--latency-concurrency") {
      o.latency_concurrency = std::stoi(next());
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
  if (o.burn_tasks < 1 || o.memory_tasks < 1 || o.latency_tasks < 1 || o.copy_rows < 1 || o.rounds < 1 ||
      o.bloat_rows < 1 || o.claim_batch < 1) {
    throw std::runtime_error("counts must be positive");
  }
  return o;
}

// The commit the binary's sources came from, as git reads it (read only).
std::string git_commit() {
  const ChildResult head = child_run({"sh", "-c", "git describe --always --dirty --abbrev=12 2>/dev/null"});
  std::string out = head.exit_status == 0 ? head.out : "unknown";
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  return out;
}

std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buffer[32];
  std::strftime(buffer, sizeof buffer, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buffer;
}

}  // namespace

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


namespace {

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
  const std::string fsync =
      db.transact([](Transaction& tx) { return tx.exec_sql("SHOW fsync").text(0, "fsync"); });
  const std::string synchronous_commit = db.transact(
      [](Transaction& tx) { return tx.exec_sql("SHOW synchronous_commit").text(0, "synchronous_commit"); });
  const auto started = Clock::now();

  json doc = {{"bench", "queue"}};
  std::vector<std::string> sections(o.sections.begin(), o.sections.end());
  doc["conditions"] = {
      {"date", utc_now()},
      {"git_commit", git_commit()},
      {"postgresql", server_version},
      {"server", o.dsn.empty() ? "embedded, unix socket, same machine, one server for all sections"
                               : "the server at --dsn"},
      {"fsync", fsync == "on"},
      {"synchronous_commit", synchronous_commit},
      {"cores", std::thread::hardware_concurrency()},
      {"tasks", o.burn_tasks},
      {"claim_batch", o.claim_batch},
      {"rounds", o.rounds},
      {"concurrency", o.burn_concurrency},
      {"bloat_rows", o.bloat_rows},
      {"sections", sections},
      {"note", "client and server share the cores: compare figures within one run"},
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
  if (o.sections.count("python")) doc["python_handler"] = python_section(db, o);
  if (o.sections.count("table_size")) {
    progress("table size");
    doc["table_size"] = table_size_section(db, o);
  }
  if (o.sections.count("latency")) {
    progress("latency");
    doc["latency"] = latency_section(db, o);
  }
  if (o.sections.count("memory")) doc["memory"] = memory_section(db, o);

  doc["run_seconds"] = rounded(std::chrono::duration<double>(Clock::now() - started).count(), 1);
  doc["targets"] = targets_of(doc);
  doc["information"] = information_of(doc);
  bool met = true;
  for (const auto& t : doc["targets"]) met = met && t["met"] == true;
  doc["targets_met"] = met;
  std::cout << doc.dump(2) << std::endl;
  print_summary(doc);
  return 0;
}

}  // namespace

}  // namespace payq::queue_bench

int main(int argc, char** argv) {
  using namespace payq::queue_bench;
  try {
    const Options options = parse(argc, argv);
    if (options.memory_child) return memory_child(options);
    return bench_main(options);
  } catch (const std::exception& e) {
    std::cerr << "payq_bench_queue: " << e.what() << std::endl;
    return 2;
  }
}

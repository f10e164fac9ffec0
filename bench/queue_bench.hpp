// The queue benchmark's parts (bench/queue_*.cpp): options, shared SQL and
// helpers, and one function per section of the JSON document.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench_support.hpp"
#include "payq/database.hpp"

namespace payq::queue_bench {

// Keys stay in the order written, so the document reads top to bottom.
using json = nlohmann::ordered_json;
using Clock = std::chrono::steady_clock;
using bench::rounded;

extern const std::vector<std::string> section_names;

struct Options {
  bool durable = true;  // --no-fsync turns it off
  std::set<std::string> sections;
  int rounds = 3;  // every rate a target reads: the median of this many rounds
  // Enqueue.
  std::vector<int> enqueue_clients = {1, 8};
  int enqueue_duration_ms = 1500;
  std::vector<int> enqueue_batch_sizes = {100, 1000, 10'000};
  int copy_rows = 10'000;
  // Burn-down.
  std::int64_t burn_tasks = 10'000;
  std::vector<int> burn_concurrency = {8, 32};  // the targets' thread counts; 1 is slow with fsync on
  std::size_t claim_batch = 10;
  int burn_timeout_s = 600;
  // Claim cost.
  std::int64_t claim_rows = 100'000;
  int claim_count = 50;
  // Table size: finished rows and an old snapshot.
  std::int64_t bloat_rows = 2'000'000;
  int table_size_concurrency = 8;
  bool table_size_batched = true;
  // Latency.
  int latency_tasks = 400;
  int latency_interval_ms = 5;
  int latency_concurrency = 4;
  // Memory.
  std::int64_t memory_tasks = 20'000;
  int memory_concurrency = 32;
  // Python.
  std::string python = "python3";
  std::string python_script;  // empty: the Python section is skipped
  std::string dsn;            // empty: a throwaway embedded cluster
  bool memory_child = false;  // internal: this process is the memory-measuring worker
};

// ---- helpers (queue_support.cpp)

void progress(const std::string& message);
json ratio_or_null(const json& numerator, const json& denominator);
// Median, min, max and each round's figure of one rate.
json spread(const std::vector<double>& per_round);
double percentile(const std::vector<double>& sorted, double q);

// The schema of the bare baselines (bench_raw), created once per run.
extern const char* const raw_schema_sql;
extern const char* const task_kind_noop;
extern const char* const task_kind_latency;

void payq_reset(Database& db);
void payq_prefill_tasks(Database& db, std::int64_t tasks);
std::int64_t payq_succeeded_rows(Database& db);
json relation_stats(Database& db, const std::string& relation);
// A connection under the server's default plan_cache_mode, as a plain
// client would have; payq's own connections force generic plans.
std::shared_ptr<Connection> raw_connection(Database& db);
// Opens the pool's connections before a timed run.
void pool_warm(Database& db, int count);

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
  LogSink(const LogSink&) = delete;
  LogSink& operator=(const LogSink&) = delete;
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

struct BurnConfig {
  int concurrency = 1;
  bool batched = false;  // payq: HandlerOptions::batched_completion; raw: one statement per claimed batch
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

BurnConfig burn_config(const Options& o, int concurrency, std::int64_t tasks);
// The C++ worker with a no-op handler over pre-inserted tasks, timed from
// start() until the last success is recorded; `on_tick(succeeded)` runs
// every poll.
BurnResult payq_burn(Database& db, const BurnConfig& config, json& worker_stats,
                     const std::function<void(std::int64_t)>& on_tick = nullptr);
// Prefills, burns down and checks the rows: {per_s, seconds, verified, ...}.
json payq_burn_point(Database& db, const BurnConfig& config);

struct ChildResult {
  int exit_status = -1;
  std::string out;
};
// Runs argv with stdout captured and stderr shared.
ChildResult child_run(const std::vector<std::string>& argv);
std::string self_path();

// ---- raw loops (queue_raw.cpp)

enum class RawLoop {
  minimal,         // claim flips state to running, completion flips it to done
  like_for_like,   // lease token and expiry at claim; fenced completion with an attempt row
};
// Prefills bench_raw, burns it down with `config.concurrency` threads (each
// statement its own transaction), checks the rows.
// `after_prefill` runs once the rows are in, before the timed run.
json raw_burn_point(Database& db, RawLoop loop, const BurnConfig& config,
                    const std::function<void()>& after_prefill = nullptr);
extern const char* const raw_minimal_description;
extern const char* const raw_like_for_like_description;

// ---- sections

json enqueue_section(Database& db, const Options& o);     // queue_enqueue.cpp
json claim_section(Database& db, const Options& o);       // queue_enqueue.cpp
json burndown_section(Database& db, const Options& o);    // queue_burndown.cpp
json python_section(Database& db, const Options& o);      // queue_burndown.cpp
json table_size_section(Database& db, const Options& o);  // queue_table_size.cpp
json latency_section(Database& db, const Options& o);     // queue_bench.cpp
json memory_section(Database& db, const Options& o);      // queue_bench.cpp
int memory_child(const Options& o);                       // queue_bench.cpp

// ---- targets (queue_summary.cpp)

// Issue 16's targets that this document measures, each with its figure and
// verdict (null when not measured).
json targets_of(const json& doc);
// Ratios shown without a verdict (the minimal loop, batched vs raw).
json information_of(const json& doc);
// A few lines for a human: conditions, then each target and its verdict.
void print_summary(const json& doc);

}  // namespace payq::queue_bench

// Shared by the worker tests: a log sink a test can wait on, a worker that
// runs for a scope, a latch, and the WorkerTest fixture.
#pragma once

#include <chrono>
#include <cstdint>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "harness.hpp"
#include "payq/outbox.hpp"
#include "payq/worker.hpp"

namespace payq::testing {

using Json = nlohmann::json;

// Every wait on worker events ends after this long, failing the test.
inline constexpr std::chrono::milliseconds worker_wait_bound{60'000};

// Collects the worker's log lines and lets a test wait for a condition on
// them.
class LogCollector {
 public:
  std::function<void(const std::string&)> sink() {
    return [this](const std::string& line) {
      Json event = Json::parse(line);
      {
        std::lock_guard<std::mutex> guard(mutex_);
        events_.push_back(std::move(event));
      }
      cv_.notify_all();
    };
  }

  // Waits until `predicate(events)` holds; false after the bound.
  bool wait_for(const std::function<bool(const std::vector<Json>&)>& predicate,
                std::chrono::milliseconds bound = worker_wait_bound) {
    std::unique_lock<std::mutex> lock(mutex_);
    return cv_.wait_for(lock, bound, [&] { return predicate(events_); });
  }

  bool wait_count(const std::string& event, std::size_t count, std::chrono::milliseconds bound = worker_wait_bound) {
    return wait_for([&](const std::vector<Json>& events) { return count_of(events, event) >= count; }, bound);
  }

  // Waits for a task_done event of `task_id` that left it in `state`.
  bool wait_task_state(std::int64_t task_id, const std::string& state,
                       std::chrono::milliseconds bound = worker_wait_bound) {
    return wait_for(
        [&](const std::vector<Json>& events) {
          for (const auto& e : events) {
            if (e.at("event") == "task_done" && e.at("task_id") == task_id && e.at("state") == state) return true;
          }
          return false;
        },
        bound);
  }

  std::vector<Json> events() {
    std::lock_guard<std::mutex> guard(mutex_);
    return events_;
  }

  static std::size_t count_of(const std::vector<Json>& events, const std::string& event) {
    std::size_t n = 0;
    for (const auto& e : events) n += e.at("event") == event ? 1 : 0;
    return n;
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<Json> events_;
};

// A worker started on construction and stopped (gracefully) on scope exit.
class Running {
 public:
  Running(Database& database, HandlerRegistry& registry, WorkerOptions options)
      : worker(database, registry, std::move(options)) {
    worker.start();
  }
  Running(const Running&) = delete;
  Running& operator=(const Running&) = delete;
  ~Running() { worker.stop(); }
  Worker worker;
};

// A latch a test opens and a handler waits on (with the bound).
class Gate {
 public:
  void open() {
    {
      std::lock_guard<std::mutex> guard(mutex_);
      open_ = true;
    }
    cv_.notify_all();
  }
  bool wait(std::chrono::milliseconds bound = worker_wait_bound) {
    std::unique_lock<std::mutex> lock(mutex_);
    return cv_.wait_for(lock, bound, [&] { return open_; });
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  bool open_ = false;
};

inline Outcome outcome_of(OutcomeKind kind, std::string error = {}) {
  Outcome outcome;
  outcome.kind = kind;
  outcome.error = std::move(error);
  if (kind == OutcomeKind::retry || kind == OutcomeKind::unknown) outcome.retry_after_ms = 0;
  return outcome;
}

// The fixture of the worker tests (worker_test.cpp, worker_maintenance_test.cpp):
// a registry with fast retries, and options for a quiet test worker.
class WorkerTest : public DbTest {
 protected:
  void SetUp() override {
    DbTest::SetUp();
    // Retries without retry_after_ms (a handler exception) come back fast.
    BackoffPolicy fast;
    fast.delay_ms_base = 5;
    fast.delay_ms_max = 20;
    registry.default_backoff_set(fast);
  }

  WorkerOptions options() {
    using namespace std::chrono_literals;
    WorkerOptions o;
    o.concurrency = 2;
    o.poll_interval = 50ms;
    o.listen = false;
    o.maintenance = false;
    o.shutdown_grace = 10s;
    o.log_sink = logs.sink();
    return o;
  }

  std::int64_t enqueue(TaskSpec spec) {
    return db->transact([&](Transaction& tx) { return Outbox(tx).enqueue(spec).task_id; });
  }

  std::vector<std::int64_t> enqueue_many(const std::string& kind, int count,
                                         const std::function<void(TaskSpec&, int)>& shape = {}) {
    std::vector<TaskSpec> specs;
    for (int i = 0; i < count; ++i) {
      TaskSpec spec;
      spec.kind = kind;
      spec.payload_json = Json{{"n", i}}.dump();
      if (shape) shape(spec, i);
      specs.push_back(spec);
    }
    return db->transact([&](Transaction& tx) {
      std::vector<std::int64_t> ids;
      for (const auto& r : Outbox(tx).enqueue_batch(specs)) ids.push_back(r.task_id);
      return ids;
    });
  }

  Task task_get(std::int64_t id) {
    return db->transact([&](Transaction& tx) { return Outbox(tx).task_get(id); });
  }

  std::vector<TaskAttempt> attempts(std::int64_t id) {
    return db->transact([&](Transaction& tx) { return Outbox(tx).attempts(id); });
  }

  std::int64_t count_in_state(const std::string& state) {
    return db->transact([&](Transaction& tx) {
      return tx.exec_sql("SELECT count(*) AS n FROM @schema@.task WHERE state = $1 AND kind <> 'payq.alert'", {state})
          .i64(0, "n");
    });
  }

  // Waits until `count` tasks are done (any outcome) according to the log.
  bool wait_done(std::size_t count) { return logs.wait_count("task_done", count); }

  bool wait_state(std::int64_t task_id, const std::string& state) { return logs.wait_task_state(task_id, state); }

  LogCollector logs;
  HandlerRegistry registry;
};

}  // namespace payq::testing

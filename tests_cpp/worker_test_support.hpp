// Shared by the worker tests: a log sink a test can wait on, and a worker
// that runs for a scope.
#pragma once

#include <chrono>
#include <cstdint>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

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

}  // namespace payq::testing

// Maintenance: one elected worker at a time runs the maintenance services
// (services.hpp) at every tick. The election is a lease row (migration 010),
// renewed at every tick: it works the same through a transaction-mode
// pooler, a worker that stops gives it up, and one that dies loses it when
// the lease runs out.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "payq/connection.hpp"
#include "payq/database.hpp"
#include "worker/reconnect_policy.hpp"
#include "worker/services.hpp"
#include "worker/worker_internal.hpp"

namespace payq {

inline constexpr ReconnectPolicy maintenance_reconnect_default{std::chrono::milliseconds{100},
                                                               std::chrono::milliseconds{30'000}};

struct MaintenanceOptions {
  // The lease holder's name (the worker id): 1 to worker_id_bytes_max bytes.
  std::string worker_id;
  std::chrono::milliseconds interval{1000};
  // After the maintenance connection failed.
  ReconnectPolicy reconnect = maintenance_reconnect_default;
  // A service with a full batch suggests a backlog: the next tick runs at
  // once, but at most this many times in a row before waiting an interval.
  int hurry_tick_count_max = 100;
  // The lease outlives a few missed renewals (a slow tick, a short network
  // hiccup) before another worker may take over.
  int lease_interval_count = 3;
  std::chrono::milliseconds lease_margin{2'000};

  // Throws InvalidArgument naming the first bad field.
  void validate() const;
  std::chrono::milliseconds lease() const { return interval * lease_interval_count + lease_margin; }
};

// A service and what follows its step's commit (counting, waking threads).
struct MaintenanceStep {
  std::unique_ptr<MaintenanceService> service;
  std::function<void(std::int64_t count)> committed;  // may be empty
};

class Maintenance {
 public:
  // Validates the options; the references must outlive this object.
  Maintenance(Database& database, MaintenanceOptions options, std::vector<MaintenanceStep> steps,
              StopSignal& stop, WorkerLog& log, WorkerCounters& counters);

  // Takes part in the election until stop, reconnecting after failures.
  // Returns at stop; only a broken invariant (not a std::exception) escapes.
  void run();

 private:
  void session(int& failure_count);
  // Takes or renews the lease; whether this worker holds it.
  bool lease_take(Connection& connection);
  void lease_give_up(Connection& connection) noexcept;
  // Whether a service reported a backlog.
  bool tick(Connection& connection);
  bool due(std::size_t index, std::chrono::steady_clock::time_point now) const;

  Database& database_;
  MaintenanceOptions options_;
  std::vector<MaintenanceStep> steps_;
  // When each step last ran (a default time_point: never).
  std::vector<std::chrono::steady_clock::time_point> last_run_;
  StopSignal& stop_;
  WorkerLog& log_;
  WorkerCounters& counters_;
};

}  // namespace payq

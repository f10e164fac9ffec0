// Maintenance: the election and the services' schedule (maintenance.hpp).
#include "worker/maintenance.hpp"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "payq/error.hpp"
#include "worker/worker_statements.hpp"

namespace payq {

void MaintenanceOptions::validate() const {
  auto fail = [](const std::string& message) { throw InvalidArgument("maintenance options: " + message); };
  if (worker_id.empty() || worker_id.size() > worker_id_bytes_max) {
    fail("worker_id must be 1 to " + std::to_string(worker_id_bytes_max) + " bytes");
  }
  if (interval < worker_maintenance_interval_min || interval > worker_maintenance_interval_max) {
    fail("interval must be " + std::to_string(worker_maintenance_interval_min.count()) + " to " +
         std::to_string(worker_maintenance_interval_max.count()) + " ms");
  }
  reconnect.validate("maintenance");
  if (hurry_tick_count_max < 0) fail("hurry_tick_count_max cannot be negative");
  if (lease_interval_count < 1) fail("lease_interval_count must be at least 1");
  if (lease_margin.count() < 0) fail("lease_margin cannot be negative");
}

Maintenance::Maintenance(Database& database, MaintenanceOptions options, std::vector<MaintenanceStep> steps,
                         StopSignal& stop, WorkerLog& log, WorkerCounters& counters)
    : database_(database),
      options_(std::move(options)),
      steps_(std::move(steps)),
      last_run_(steps_.size()),
      stop_(stop),
      log_(log),
      counters_(counters) {
  options_.validate();
  for (const auto& step : steps_) {
    if (!step.service) throw InvalidArgument("maintenance: a step has no service");
  }
}

void Maintenance::run() {
  int failure_count = 0;
  // Bounded by stop: each session ends at stop or on a connection error,
  // and each reconnection delay ends at stop.
  while (!stop_.requested()) {
    try {
      session(failure_count);
    } catch (const std::exception& e) {
      if (counters_.maintenance_leader.exchange(false)) {
        log_.write("warning", "maintenance_leader_lost", {{"error", e.what()}});
      }
      failure_count = std::min(failure_count + 1, options_.reconnect.failure_count_max());
      log_.write("error", "maintenance_failed", {{"error", e.what()}, {"failure_count", failure_count}});
      if (stop_.wait_for(options_.reconnect.delay(failure_count))) break;
    }
  }
  counters_.maintenance_leader = false;
}

void Maintenance::session(int& failure_count) {
  // Outside the pool, and not silently replaced when it breaks: a broken
  // connection ends the session, and leadership with it, loudly.
  Connection connection(ConnectionOptions{database_.dsn(), database_.schema(), false, false});
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
  connection.raw().inhibit_reactivation(true);
#pragma GCC diagnostic pop
  int hurry_count = 0;
  // Bounded by stop; every pass ends in an interval wait unless a service
  // had a backlog (itself bounded by hurry_tick_count_max). An error ends
  // the session; run() says leadership is lost, and this worker renews its
  // lease when it is back (or another takes it over).
  while (!stop_.requested()) {
    const bool holding = lease_take(connection);
    if (holding && !counters_.maintenance_leader.exchange(true)) {
      log_.write("info", "maintenance_leader_acquired", {{"schema", database_.schema()}});
    } else if (!holding && counters_.maintenance_leader.exchange(false)) {
      log_.write("warning", "maintenance_leader_lost", {{"error", "the lease ran out and another worker took it"}});
    } else if (!holding && log_.debug()) {
      log_.write("debug", "maintenance_lock_busy", {{"schema", database_.schema()}});
    }
    failure_count = 0;
    bool hurry = false;
    if (holding) {
      hurry = tick(connection) && hurry_count < options_.hurry_tick_count_max;
      ++counters_.maintenance_ticks;
    }
    hurry_count = hurry ? hurry_count + 1 : 0;
    if (!hurry && stop_.wait_for(options_.interval)) break;
  }
  lease_give_up(connection);
}

bool Maintenance::lease_take(Connection& connection) {
  return transact_on(connection, 0, [&](Transaction& tx) {
    return !tx.exec(worker_sql::maintenance_lease_take, {options_.worker_id, std::to_string(options_.lease().count())})
                .empty();
  });
}

void Maintenance::lease_give_up(Connection& connection) noexcept {
  if (!counters_.maintenance_leader.exchange(false)) return;
  try {
    transact_on(connection, 0,
                [&](Transaction& tx) { tx.exec(worker_sql::maintenance_lease_give_up, {options_.worker_id}); });
    log_.write("info", "maintenance_leader_released", {{"schema", database_.schema()}});
  } catch (const std::exception& e) {
    // The lease runs out by itself.
    log_.write("warning", "maintenance_leader_released", {{"error", e.what()}});
  }
}

bool Maintenance::due(std::size_t index, std::chrono::steady_clock::time_point now) const {
  const auto interval = steps_[index].service->interval();
  return interval == service_interval_every_tick || last_run_[index] == std::chrono::steady_clock::time_point{} ||
         now - last_run_[index] >= interval;
}

// Runs each due service in a transaction of its own, so one failing service
// neither undoes nor blocks the others.
bool Maintenance::tick(Connection& connection) {
  bool backlog = false;
  for (std::size_t i = 0; i < steps_.size(); ++i) {
    if (stop_.requested()) break;
    const auto now = std::chrono::steady_clock::now();
    if (!due(i, now)) continue;
    last_run_[i] = now;
    MaintenanceService& service = *steps_[i].service;
    try {
      Transaction tx(connection);
      const std::int64_t count = service.run(tx);
      tx.commit();
      if (steps_[i].committed) steps_[i].committed(count);
      if (count > 0) log_.write("info", "maintenance_step", {{"step", service.name()}, {"count", count}});
      if (service.backlog(count)) backlog = true;
    } catch (const std::exception& e) {
      log_.write("error", "maintenance_step_failed", {{"step", service.name()}, {"error", e.what()}});
      // A broken connection ends the session (and leadership): reconnect.
      if (!connection.is_open()) throw;
    }
  }
  return backlog;
}

}  // namespace payq

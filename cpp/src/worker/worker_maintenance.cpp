// Maintenance: lease rescue, hold expiry, pruning (and the lead's extra
// hook), run by one elected worker at a time. The election is a lease row
// (migration 010), renewed at every tick: it works the same through a
// transaction-mode pooler, a worker that stops gives it up, and one that
// dies loses it when the lease runs out.
#include <algorithm>
#include <functional>

#include <nlohmann/json.hpp>

#include "payq/error.hpp"
#include "payq/inbox.hpp"
#include "payq/ledger.hpp"
#include "payq/worker.hpp"
#include "worker/worker_statements.hpp"

namespace payq {
namespace {

// Reconnection delay after the maintenance connection failed.
constexpr std::chrono::milliseconds maintenance_reconnect_delay_min{100};
constexpr std::chrono::milliseconds maintenance_reconnect_delay_max{30'000};
constexpr int maintenance_reconnect_doubling_count_max = 9;
// A step that handled a full batch suggests a backlog: the next tick runs at
// once, but at most this many times in a row before waiting an interval.
constexpr int maintenance_hurry_tick_count_max = 100;
// The lease outlives a few missed renewals (a slow tick, a short network
// hiccup) before another worker may take over.
constexpr int maintenance_lease_interval_count = 3;
constexpr std::chrono::milliseconds maintenance_lease_margin{2'000};

std::chrono::milliseconds reconnect_delay(int failure_count) {
  const int doublings = std::clamp(failure_count - 1, 0, maintenance_reconnect_doubling_count_max);
  return std::min(maintenance_reconnect_delay_max, maintenance_reconnect_delay_min * (1 << doublings));
}

}  // namespace

void Worker::maintenance_run() noexcept {
  try {
    int failure_count = 0;
    // Bounded by stop: each session ends at stop or on a connection error,
    // and each reconnection delay ends at stop.
    while (!stop_requested()) {
      try {
        maintenance_session(failure_count);
      } catch (const std::exception& e) {
        if (counters_.maintenance_leader.exchange(false)) {
          log("warning", "maintenance_leader_lost", {{"error", e.what()}});
        }
        failure_count = std::min(failure_count + 1, maintenance_reconnect_doubling_count_max + 1);
        log("error", "maintenance_failed", {{"error", e.what()}, {"failure_count", failure_count}});
        if (stop_wait_for(reconnect_delay(failure_count))) break;
      }
    }
  } catch (...) {
    thread_fatal("maintenance");
  }
  counters_.maintenance_leader = false;
}

void Worker::maintenance_session(int& failure_count) {
  // Outside the pool, and not silently replaced when it breaks: a broken
  // connection ends the session, and leadership with it, loudly.
  Connection connection(ConnectionOptions{database_.dsn(), database_.schema(), false, false});
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
  connection.raw().inhibit_reactivation(true);
#pragma GCC diagnostic pop
  int hurry_count = 0;
  // Bounded by stop; every pass ends in an interval wait unless a step had a
  // full batch (itself bounded by maintenance_hurry_tick_count_max). An
  // error ends the session; the caller says leadership is lost, and this
  // worker renews its lease when it is back (or another takes it over).
  while (!stop_requested()) {
    const bool holding = maintenance_lease_take(connection);
    if (holding && !counters_.maintenance_leader.exchange(true)) {
      log("info", "maintenance_leader_acquired", {{"schema", database_.schema()}});
    } else if (!holding && counters_.maintenance_leader.exchange(false)) {
      log("warning", "maintenance_leader_lost", {{"error", "the lease ran out and another worker took it"}});
    } else if (!holding && log_debug_enabled()) {
      log("debug", "maintenance_lock_busy", {{"schema", database_.schema()}});
    }
    failure_count = 0;
    bool hurry = false;
    if (holding) {
      hurry = maintenance_tick(connection) && hurry_count < maintenance_hurry_tick_count_max;
      ++counters_.maintenance_ticks;
    }
    hurry_count = hurry ? hurry_count + 1 : 0;
    if (!hurry && stop_wait_for(options_.maintenance_interval)) break;
  }
  maintenance_lease_give_up(connection);
}

bool Worker::maintenance_lease_take(Connection& connection) {
  const auto lease = options_.maintenance_interval * maintenance_lease_interval_count + maintenance_lease_margin;
  return transact_on(connection, 0, [&](Transaction& tx) {
    return !tx.exec(worker_sql::maintenance_lease_take, {options_.worker_id, std::to_string(lease.count())}).empty();
  });
}

void Worker::maintenance_lease_give_up(Connection& connection) noexcept {
  if (!counters_.maintenance_leader.exchange(false)) return;
  try {
    transact_on(connection, 0,
                [&](Transaction& tx) { tx.exec(worker_sql::maintenance_lease_give_up, {options_.worker_id}); });
    log("info", "maintenance_leader_released", {{"schema", database_.schema()}});
  } catch (const std::exception& e) {
    // The lease runs out by itself.
    log("warning", "maintenance_leader_released", {{"error", e.what()}});
  }
}

// Runs each step in a transaction of its own, so one failing step neither
// undoes nor blocks the others. Returns whether a step handled a full batch.
bool Worker::maintenance_tick(Connection& connection) {
  const std::int64_t bound = options_.maintenance_batch_count_max;
  struct Step {
    const char* name;
    std::function<std::int64_t(Transaction&)> run;
    std::atomic<std::int64_t>* done = nullptr;  // counted after the commit
  };
  const Step steps[] = {
      {"leases_rescue", [&](Transaction& tx) { return Outbox(tx).leases_rescue(bound); }, &counters_.leases_rescued},
      {"holds_expire", [&](Transaction& tx) { return Ledger(tx).holds_expire(bound); }, &counters_.holds_expired},
      {"prune", [&](Transaction& tx) { return Outbox(tx).prune(options_.prune_after_ms, bound); },
       &counters_.tasks_pruned},
      {"inbox_prune", [&](Transaction& tx) { return Inbox(tx).prune(options_.inbox_retention_ms, bound); },
       &counters_.inbox_events_pruned},
      {"extra",
       [&](Transaction& tx) -> std::int64_t {
         if (options_.maintenance_extra) options_.maintenance_extra(tx);
         return 0;
       },
       nullptr},
  };
  bool full_batch = false;
  for (const Step& step : steps) {
    if (stop_requested()) break;
    try {
      Transaction tx(connection);
      const std::int64_t count = step.run(tx);
      tx.commit();
      if (step.done != nullptr) *step.done += count;
      if (count > 0) log("info", "maintenance_step", {{"step", step.name}, {"count", count}});
      if (count >= bound) full_batch = true;
      // Rescued tasks are pending again: let idle threads claim them now.
      if (std::string(step.name) == "leases_rescue" && count > 0) {
        wake(static_cast<int>(std::min<std::int64_t>(count, options_.concurrency)));
      }
    } catch (const std::exception& e) {
      log("error", "maintenance_step_failed", {{"step", step.name}, {"error", e.what()}});
      // A broken connection ends the session (and leadership): reconnect.
      if (!connection.is_open()) throw;
    }
  }
  return full_batch;
}

}  // namespace payq

// Maintenance: lease rescue, hold expiry, pruning (and the lead's extra
// hook), run by one elected worker at a time. The election is a
// session-level advisory lock held on a dedicated connection: whoever holds
// it is the leader until its connection ends, so a dead leader's lock frees
// itself and another worker takes over at its next tick.
#include <algorithm>
#include <functional>

#include <nlohmann/json.hpp>

#include "payq/error.hpp"
#include "payq/inbox.hpp"
#include "payq/ledger.hpp"
#include "payq/worker.hpp"

namespace payq {
namespace {

// Reconnection delay after the maintenance connection failed.
constexpr std::chrono::milliseconds maintenance_reconnect_delay_min{100};
constexpr std::chrono::milliseconds maintenance_reconnect_delay_max{30'000};
constexpr int maintenance_reconnect_doubling_count_max = 9;
// A step that handled a full batch suggests a backlog: the next tick runs at
// once, but at most this many times in a row before waiting an interval.
constexpr int maintenance_hurry_tick_count_max = 100;

// The lock key is derived from the schema, so schemas elect independently.
const Statement lock_try{"payq_worker_maintenance_lock_try", R"sql(
SELECT pg_try_advisory_lock(hashtextextended('payq.maintenance:' || $1, 0)) AS acquired)sql"};

// Asserts this session still holds the lock (a bigint advisory lock shows
// in pg_locks as classid = high 32 bits, objid = low 32 bits, objsubid = 1).
const Statement lock_held{"payq_worker_maintenance_lock_held", R"sql(
SELECT EXISTS (
  SELECT 1 FROM pg_locks, (SELECT hashtextextended('payq.maintenance:' || $1, 0) AS k) key
  WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted AND objsubid = 1
    AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
    AND classid = ((key.k >> 32) & 4294967295)::oid AND objid = (key.k & 4294967295)::oid) AS held)sql"};

std::chrono::milliseconds reconnect_delay(int failure_count) {
  const int doublings = std::clamp(failure_count - 1, 0, maintenance_reconnect_doubling_count_max);
  return std::min(maintenance_reconnect_delay_max, maintenance_reconnect_delay_min * (1 << doublings));
}

bool query_flag(Connection& connection, const Statement& statement, const std::string& schema,
                const char* column) {
  Transaction tx(connection);
  const bool value = tx.exec(statement, {schema}).boolean(0, column);
  tx.commit();
  return value;
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
  // Outside the pool: the lock lives exactly as long as this session.
  Connection connection(ConnectionOptions{database_.dsn(), database_.schema(), false, false});
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
  // A silent reconnect would drop the lock while we still acted as leader.
  connection.raw().inhibit_reactivation(true);
#pragma GCC diagnostic pop
  int hurry_count = 0;
  // Bounded by stop; every pass ends in an interval wait unless a step had
  // a full batch (itself bounded by maintenance_hurry_tick_count_max).
  while (!stop_requested()) {
    if (!counters_.maintenance_leader.load()) {
      if (maintenance_lock_try(connection)) {
        counters_.maintenance_leader = true;
        log("info", "maintenance_leader_acquired", {{"schema", database_.schema()}});
      } else if (log_debug_enabled()) {
        log("debug", "maintenance_lock_busy", {{"schema", database_.schema()}});
      }
    } else if (!maintenance_lock_held(connection)) {
      // Cannot happen while the session lives; if it does, step down loudly.
      counters_.maintenance_leader = false;
      log("error", "maintenance_leader_lost", {{"error", "advisory lock no longer held by this session"}});
      continue;
    }
    failure_count = 0;
    bool hurry = false;
    if (counters_.maintenance_leader.load()) {
      hurry = maintenance_tick(connection) && hurry_count < maintenance_hurry_tick_count_max;
      ++counters_.maintenance_ticks;
    }
    hurry_count = hurry ? hurry_count + 1 : 0;
    if (!hurry && stop_wait_for(options_.maintenance_interval)) break;
  }
  if (counters_.maintenance_leader.exchange(false)) {
    // Closing the session releases the lock; say so for the operator.
    log("info", "maintenance_leader_released", {{"schema", database_.schema()}});
  }
}

bool Worker::maintenance_lock_try(Connection& connection) {
  return query_flag(connection, lock_try, database_.schema(), "acquired");
}

bool Worker::maintenance_lock_held(Connection& connection) {
  return query_flag(connection, lock_held, database_.schema(), "held");
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

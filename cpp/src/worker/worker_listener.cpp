// Wakeup: a listener thread with a connection of its own LISTENs on the
// schema's channel and hands idle claiming threads a wake token per
// notification. Polling stays the fallback, so a lost notification (or a
// listener that is reconnecting) only costs latency.
#include <algorithm>
#include <cstdio>
#include <set>

#include <nlohmann/json.hpp>
#include <pqxx/nontransaction>
#include <pqxx/notification>

#include "payq/error.hpp"
#include "payq/worker.hpp"

namespace payq {
namespace {

// await_notification returns at least this often, so stop is seen promptly.
constexpr long listener_wait_slice_us = 250'000;
// A ping on an otherwise silent connection notices a half-open TCP
// connection, on which notifications would never arrive.
constexpr std::chrono::seconds listener_ping_interval{30};
// Reconnection delay: doubling from the minimum up to the maximum.
constexpr std::chrono::milliseconds listener_reconnect_delay_min{100};
constexpr std::chrono::milliseconds listener_reconnect_delay_max{30'000};
constexpr int listener_reconnect_doubling_count_max = 9;  // 100 ms * 2^9 > 30 s

constexpr std::size_t channel_bytes_max = 63;  // PostgreSQL's NAMEDATALEN - 1

const Statement notify_statement{"payq_worker_notify", "SELECT pg_notify($1, $2)"};

std::chrono::milliseconds reconnect_delay(int failure_count) {
  const int doublings = std::clamp(failure_count - 1, 0, listener_reconnect_doubling_count_max);
  return std::min(listener_reconnect_delay_max, listener_reconnect_delay_min * (1 << doublings));
}

// 64-bit FNV-1a: stable across processes and languages, unlike std::hash.
std::uint64_t fnv1a_64(const std::string& text) {
  std::uint64_t hash = 1469598103934665603ULL;
  for (const unsigned char c : text) {
    hash ^= c;
    hash *= 1099511628211ULL;
  }
  return hash;
}

class QueueReceiver final : public pqxx::notification_receiver {
 public:
  QueueReceiver(pqxx::connection_base& connection, const std::string& channel,
                std::function<void(const std::string&)> on_payload)
      : pqxx::notification_receiver(connection, channel), on_payload_(std::move(on_payload)) {}
  void operator()(const std::string& payload, int /*backend_pid*/) override { on_payload_(payload); }

 private:
  std::function<void(const std::string&)> on_payload_;
};

}  // namespace

std::string queue_notify_channel(const std::string& schema) {
  schema_name_validate(schema);
  std::string channel = "payq_" + schema;
  if (channel.size() <= channel_bytes_max) return channel;
  char hash[17];
  std::snprintf(hash, sizeof hash, "%016llx", static_cast<unsigned long long>(fnv1a_64(schema)));
  // "payq_" + prefix + "_" + 16 hex digits = 63 bytes.
  return "payq_" + schema.substr(0, channel_bytes_max - 5 - 1 - 16) + "_" + hash;
}

void notify_queue(Database& database, const std::string& queue) {
  if (queue.empty()) throw InvalidArgument("notify_queue needs a queue name");
  const std::string channel = queue_notify_channel(database.schema());
  database.transact([&](Transaction& tx) { tx.exec(notify_statement, {channel, queue}); });
}

void Worker::listener_run() noexcept {
  try {
    int failure_count = 0;
    // Bounded by stop: each session ends at stop or on a connection error,
    // and each reconnection delay ends at stop.
    while (!stop_requested()) {
      try {
        listener_session(failure_count);
      } catch (const std::exception& e) {
        failure_count = std::min(failure_count + 1, listener_reconnect_doubling_count_max + 1);
        log("error", "listener_failed", {{"error", e.what()}, {"failure_count", failure_count}});
        if (stop_wait_for(reconnect_delay(failure_count))) break;
      }
    }
  } catch (...) {
    thread_fatal("listener");
  }
}

void Worker::listener_session(int& failure_count) {
  // A connection outside the pool: LISTEN is session state that must not
  // leak to other users of a pooled connection.
  // Its own DSN: behind a transaction-mode pooler, a direct connection.
  Connection connection(ConnectionOptions{*database_.listen_dsn(), database_.schema(), false, false});
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
  // A silent reconnect would hide lost notifications; fail loudly instead.
  connection.raw().inhibit_reactivation(true);
#pragma GCC diagnostic pop
  const std::string channel = queue_notify_channel(database_.schema());
  std::set<std::string> served;
  for (const auto& queue : options_.queues) served.insert(queue.first);
  QueueReceiver receiver(connection.raw(), channel, [this, &served](const std::string& payload) {
    // An empty payload is a wake-up for every queue.
    if (payload.empty() || served.count(payload)) wake(1);
  });
  failure_count = 0;
  // Notifications sent while this session was not listening were lost.
  wake(options_.concurrency);
  log("info", "listener_listening", {{"channel", channel}});
  auto ping_at = std::chrono::steady_clock::now() + listener_ping_interval;
  while (!stop_requested()) {
    connection.raw().await_notification(0, listener_wait_slice_us);
    if (!connection.is_open()) throw DatabaseError("listener connection closed", "08006");
    if (std::chrono::steady_clock::now() >= ping_at) {
      pqxx::nontransaction ping(connection.raw());
      ping.exec("SELECT 1");
      ping_at = std::chrono::steady_clock::now() + listener_ping_interval;
    }
  }
}

}  // namespace payq

// The listener (listener.hpp) and the other end of its channel:
// queue_notify_channel and notify_queue.
#include "worker/listener.hpp"

#include <algorithm>
#include <cstdio>

#include <nlohmann/json.hpp>
#include <pqxx/nontransaction>
#include <pqxx/notification>

#include "payq/error.hpp"
#include "payq/worker.hpp"
#include "worker/worker_statements.hpp"

namespace payq {
namespace {

constexpr std::size_t channel_bytes_max = 63;  // PostgreSQL's NAMEDATALEN - 1
constexpr std::chrono::milliseconds listener_wait_slice_min{1};
constexpr std::chrono::milliseconds listener_wait_slice_max{60'000};

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
  database.transact([&](Transaction& tx) { tx.exec(worker_sql::queue_notify, {channel, queue}); });
}

void ListenerOptions::validate() const {
  auto fail = [](const std::string& message) { throw InvalidArgument("listener options: " + message); };
  if (queues.empty()) fail("queues is empty");
  if (listen_wake_count < 1 || listen_wake_count > worker_concurrency_max) {
    fail("listen_wake_count must be 1 to " + std::to_string(worker_concurrency_max));
  }
  reconnect.validate("listener");
  if (wait_slice < listener_wait_slice_min || wait_slice > listener_wait_slice_max) {
    fail("wait_slice must be " + std::to_string(listener_wait_slice_min.count()) + " to " +
         std::to_string(listener_wait_slice_max.count()) + " ms");
  }
  if (ping_interval < wait_slice) fail("ping_interval must not be below wait_slice");
}

Listener::Listener(Database& database, ListenerOptions options, Wake wake, StopSignal& stop, WorkerLog& log)
    : database_(database), options_(std::move(options)), wake_(std::move(wake)), stop_(stop), log_(log) {
  options_.validate();
  if (!wake_) throw InvalidArgument("listener: the wake callback is empty");
  if (!database_.listen_dsn()) throw InvalidArgument("listener: the database has no listen_dsn");
}

void Listener::run() {
  int failure_count = 0;
  // Bounded by stop: each session ends at stop or on a connection error,
  // and each reconnection delay ends at stop.
  while (!stop_.requested()) {
    try {
      session(failure_count);
    } catch (const std::exception& e) {
      failure_count = std::min(failure_count + 1, options_.reconnect.failure_count_max());
      log_.write("error", "listener_failed", {{"error", e.what()}, {"failure_count", failure_count}});
      if (stop_.wait_for(options_.reconnect.delay(failure_count))) break;
    }
  }
}

void Listener::session(int& failure_count) {
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
  QueueReceiver receiver(connection.raw(), channel, [this](const std::string& payload) {
    // An empty payload is a wake-up for every queue.
    if (payload.empty() || options_.queues.count(payload)) wake_(1);
  });
  failure_count = 0;
  // Notifications sent while this session was not listening were lost.
  wake_(options_.listen_wake_count);
  log_.write("info", "listener_listening", {{"channel", channel}});
  const auto slice_s = std::chrono::duration_cast<std::chrono::seconds>(options_.wait_slice);
  const auto slice_us = std::chrono::duration_cast<std::chrono::microseconds>(options_.wait_slice - slice_s);
  auto ping_at = std::chrono::steady_clock::now() + options_.ping_interval;
  while (!stop_.requested()) {
    connection.raw().await_notification(static_cast<long>(slice_s.count()), static_cast<long>(slice_us.count()));
    if (!connection.is_open()) throw DatabaseError("listener connection closed", "08006");
    if (std::chrono::steady_clock::now() >= ping_at) {
      pqxx::nontransaction ping(connection.raw());
      ping.exec(worker_sql::listener_ping);
      ping_at = std::chrono::steady_clock::now() + options_.ping_interval;
    }
  }
}

}  // namespace payq

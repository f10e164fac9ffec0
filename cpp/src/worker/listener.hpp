// The listener: a connection of its own LISTENs on the schema's channel and
// hands idle claiming threads a wake token per notification for a served
// queue. Polling stays the fallback, so a lost notification (or a listener
// that is reconnecting) only costs latency.
#pragma once

#include <chrono>
#include <functional>
#include <set>
#include <string>

#include "payq/database.hpp"
#include "worker/reconnect_policy.hpp"
#include "worker/worker_internal.hpp"

namespace payq {

inline constexpr ReconnectPolicy listener_reconnect_default{std::chrono::milliseconds{100},
                                                            std::chrono::milliseconds{30'000}};

struct ListenerOptions {
  // The queues whose notifications wake; an empty payload wakes for all.
  std::set<std::string> queues;
  // Tokens handed out when a session starts listening: notifications sent
  // while no session listened were lost, so every thread should look.
  int listen_wake_count = 1;
  ReconnectPolicy reconnect = listener_reconnect_default;
  // The wait for a notification returns at least this often, so stop is
  // seen promptly.
  std::chrono::milliseconds wait_slice{250};
  // A ping on an otherwise silent connection notices a half-open TCP
  // connection, on which notifications would never arrive.
  std::chrono::milliseconds ping_interval{30'000};

  // Throws InvalidArgument naming the first bad field.
  void validate() const;
};

class Listener {
 public:
  using Wake = std::function<void(int token_count)>;
  // Validates the options; `database` must have a listen_dsn. The
  // references must outlive this object.
  Listener(Database& database, ListenerOptions options, Wake wake, StopSignal& stop, WorkerLog& log);

  // Listens until stop, reconnecting after failures. Returns at stop; only
  // a broken invariant (not a std::exception) escapes.
  void run();

 private:
  void session(int& failure_count);

  Database& database_;
  ListenerOptions options_;
  Wake wake_;
  StopSignal& stop_;
  WorkerLog& log_;
};

}  // namespace payq

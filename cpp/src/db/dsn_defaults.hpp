// Network settings payq gives its own connections unless the DSN (or
// libpq's environment) names them.
#pragma once

#include <string>

namespace payq::db_detail {

struct DsnDefault {
  const char* keyword;
  const char* value;
  const char* environment;  // libpq's variable for it, or nullptr
};

// libpq's own defaults leave a connection to a host that vanished (a
// partition, a failed-over primary's host powered off) silent for about 15
// minutes of TCP retransmissions and a connect to a black hole for about
// 2 minutes. A worker holding leases on money-moving tasks should notice in
// seconds (docs/deployment.md, "Timeouts"). Ignored on Unix sockets.
inline constexpr DsnDefault dsn_defaults[] = {
    // ms during which sent data may stay unacknowledged before the kernel
    // closes the connection; a long query sends nothing and is unaffected.
    {"tcp_user_timeout", "30000", nullptr},
    // An idle connection is probed after 30 s, then every 10 s; 3 missed
    // answers end it (90 s for a dead peer of an idle session).
    {"keepalives_idle", "30", nullptr},
    {"keepalives_interval", "10", nullptr},
    {"keepalives_count", "3", nullptr},
    // Seconds per host (a multi-host DSN tries the next one after it).
    {"connect_timeout", "10", "PGCONNECT_TIMEOUT"},
};

// The DSN with every default above that it does not set, as a key=value
// connection string (URIs are rewritten; values are quoted). Expects a DSN
// that libpq parses (the caller has validated it).
std::string dsn_with_defaults(const std::string& dsn);

}  // namespace payq::db_detail

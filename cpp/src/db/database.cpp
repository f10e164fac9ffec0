#include "payq/database.hpp"

#include <cstdlib>
#include <random>

#include "payq/embedded.hpp"

namespace payq {

ResolvedDsn dsn_resolve(const std::optional<std::string>& dsn_argument) {
  if (dsn_argument) {
    if (dsn_argument->empty()) throw ConfigError("DSN argument is empty; pass None for the default");
    return {*dsn_argument, DsnSource::argument};
  }
  if (const char* env = std::getenv("PAYQ_DSN"); env != nullptr && *env != '\0') {
    return {env, DsnSource::environment};
  }
  EmbeddedServer server(EmbeddedServer::default_options());
  return {server.up(), DsnSource::embedded};
}

const char* pooler_name(Pooler pooler) {
  switch (pooler) {
    case Pooler::none: return "none";
    case Pooler::transaction: return "transaction";
  }
  return "none";
}

Pooler pooler_parse(const std::string& name) {
  if (name == "none" || name == "session" || name.empty()) return Pooler::none;
  if (name == "transaction") return Pooler::transaction;
  throw ConfigError("unknown pooler '" + name + "': use \"transaction\" behind a transaction-mode pooler such as "
                    "pgbouncer, else \"none\"");
}

namespace {

std::optional<std::string> environment(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return std::nullopt;
  return std::string(value);
}

}  // namespace

Database::Database(DatabaseOptions options) : options_(std::move(options)) {
  schema_name_validate(options_.schema);
  if (options_.transient_retry_count_max < 0) throw ConfigError("transient_retry_count_max must be >= 0");
  if (!options_.pooler) options_.pooler = pooler_parse(environment("PAYQ_POOLER").value_or("none"));
  dsn_ = dsn_resolve(options_.dsn);
  if (!options_.listen_dsn) options_.listen_dsn = environment("PAYQ_LISTEN_DSN");
  if (*options_.pooler == Pooler::transaction) {
    // The pooler hands each transaction any server session: nothing that
    // lives in a session (prepared statements, a SET) may be relied on.
    options_.prepare_statements = false;
  } else if (!options_.listen_dsn) {
    options_.listen_dsn = dsn_.dsn;
  }
  if (options_.listen_dsn && options_.listen_dsn->empty()) throw ConfigError("listen_dsn is empty");
  // Connect once now, so a bad DSN fails here and not at first use.
  Lease probe = acquire();
}

Database::Lease::Lease(Database& database, std::unique_ptr<Connection> connection)
    : database_(&database), connection_(std::move(connection)) {}

Database::Lease::~Lease() {
  if (connection_) database_->release(std::move(connection_));
}

Database::Lease Database::acquire() {
  {
    std::lock_guard<std::mutex> guard(pool_mutex_);
    while (!pool_idle_.empty()) {
      auto connection = std::move(pool_idle_.back());
      pool_idle_.pop_back();
      if (connection->is_open()) return Lease(*this, std::move(connection));
    }
  }
  ConnectionOptions connection_options{dsn_.dsn, options_.schema, options_.prepare_statements, true};
  return Lease(*this, std::make_unique<Connection>(std::move(connection_options)));
}

void Database::release(std::unique_ptr<Connection> connection) noexcept {
  if (!connection || !connection->is_open()) return;
  std::lock_guard<std::mutex> guard(pool_mutex_);
  if (pool_idle_.size() < options_.pool_idle_count_max) pool_idle_.push_back(std::move(connection));
}

void transient_backoff(int attempt) {
  // Full jitter over an exponential window: 1 ms, 2 ms, 4 ms ... capped.
  constexpr int window_ms_max = 100;
  const int window_ms = std::min(window_ms_max, 1 << std::min(attempt, 7));
  thread_local std::minstd_rand random(std::random_device{}());
  std::uniform_int_distribution<int> pick(0, window_ms);
  std::this_thread::sleep_for(std::chrono::milliseconds(pick(random)));
}

}  // namespace payq

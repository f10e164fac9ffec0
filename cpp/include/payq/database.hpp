// A payq database: where it is (DSN resolution, the embedded default), a
// pool of payq's own connections, and transactions that retry transient
// failures with a bound.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "payq/connection.hpp"
#include "payq/error.hpp"

namespace payq {

enum class DsnSource { argument, environment, embedded };

struct ResolvedDsn {
  std::string dsn;
  DsnSource source;
};

// DSN precedence: the explicit argument, then the PAYQ_DSN environment
// variable, then the embedded server (started here if it is not running).
ResolvedDsn dsn_resolve(const std::optional<std::string>& dsn_argument);

// What sits between payq and PostgreSQL. Behind a transaction-mode pooler
// (pgbouncer's pool_mode=transaction) a session is not payq's from one
// transaction to the next: no prepared statements, no LISTEN, no session
// advisory locks. A session-mode pooler needs nothing special.
enum class Pooler { none, transaction };
const char* pooler_name(Pooler pooler);
// "none", "session" (the same as none) or "transaction"; ConfigError else.
Pooler pooler_parse(const std::string& name);

struct DatabaseOptions {
  std::optional<std::string> dsn;  // nullopt: PAYQ_DSN, else embedded
  std::string schema = "payq";
  bool prepare_statements = true;  // forced off behind a transaction-mode pooler
  std::optional<Pooler> pooler;    // nullopt: PAYQ_POOLER, else none
  // A direct connection (not through the pooler) for the workers' LISTEN.
  // nullopt: PAYQ_LISTEN_DSN, else `dsn` unless behind a transaction-mode
  // pooler, where workers then poll instead.
  std::optional<std::string> listen_dsn;
  std::size_t pool_idle_count_max = 32;
  // Bound on re-running a payq-owned transaction after a serialization
  // failure or deadlock.
  int transient_retry_count_max = 8;
};

class Database {
 public:
  explicit Database(DatabaseOptions options);
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;

  const std::string& dsn() const noexcept { return dsn_.dsn; }
  DsnSource dsn_source() const noexcept { return dsn_.source; }
  const std::string& schema() const noexcept { return options_.schema; }
  const DatabaseOptions& options() const noexcept { return options_; }
  Pooler pooler() const noexcept { return *options_.pooler; }
  // Where workers LISTEN; nullopt when they must poll.
  const std::optional<std::string>& listen_dsn() const noexcept { return options_.listen_dsn; }

  // A pooled connection, returned to the pool when the lease ends.
  class Lease {
   public:
    Lease(Database& database, std::unique_ptr<Connection> connection);
    Lease(Lease&&) noexcept = default;
    Lease& operator=(Lease&&) = delete;
    ~Lease();
    Connection& operator*() noexcept { return *connection_; }
    Connection* operator->() noexcept { return connection_.get(); }

   private:
    Database* database_;
    std::unique_ptr<Connection> connection_;
  };
  Lease acquire();

  // Runs `work(transaction)` in a transaction of its own and commits.
  // Re-runs it from the start after a TransientError, at most
  // transient_retry_count_max times; CommitUnknown is never retried.
  template <typename Work>
  auto transact(Work&& work) -> std::invoke_result_t<Work&, Transaction&>;

 private:
  void release(std::unique_ptr<Connection> connection) noexcept;

  DatabaseOptions options_;
  ResolvedDsn dsn_;
  std::mutex pool_mutex_;
  std::vector<std::unique_ptr<Connection>> pool_idle_;
};

// A transaction together with the pooled connection it runs on, for callers
// that drive the transaction themselves (the Python `with db.transaction()`).
class PooledTransaction {
 public:
  explicit PooledTransaction(Database& database) : lease_(database.acquire()), transaction_(*lease_) {}
  Transaction& transaction() noexcept { return transaction_; }

 private:
  Database::Lease lease_;  // declared first: outlives the transaction
  Transaction transaction_;
};

// Sleeps a random time in an exponential window before re-running a
// transaction that failed transiently (full jitter, capped).
void transient_backoff(int attempt);

// Runs `work(transaction)` on `connection` and commits, re-running it from
// the start after a TransientError or a ConnectionLost (both mean nothing
// was applied) at most `transient_retry_count_max` times; CommitUnknown and
// every other error propagate at once.
template <typename Work>
auto transact_on(Connection& connection, int transient_retry_count_max, Work&& work)
    -> std::invoke_result_t<Work&, Transaction&> {
  using Result = std::invoke_result_t<Work&, Transaction&>;
  for (int attempt = 0;; ++attempt) {
    try {
      Transaction transaction(connection);
      if constexpr (std::is_void_v<Result>) {
        work(transaction);
        transaction.commit();
        return;
      } else {
        Result result = work(transaction);
        transaction.commit();
        return result;
      }
    } catch (const TransientError&) {
      if (attempt >= transient_retry_count_max) throw;
      transient_backoff(attempt);
    } catch (const ConnectionLost&) {
      // Lost before COMMIT: nothing was applied. The next try starts on a
      // fresh connection (Transaction replaces a dead one).
      if (attempt >= transient_retry_count_max) throw;
      transient_backoff(attempt);
    }
  }
}

// The same for work that is one statement, run as its own transaction
// (SingleStatement): no BEGIN and COMMIT round trips.
template <typename Work>
auto single_statement_on(Connection& connection, int transient_retry_count_max, Work&& work)
    -> std::invoke_result_t<Work&, SingleStatement&> {
  for (int attempt = 0;; ++attempt) {
    try {
      SingleStatement alone(connection);
      return work(alone);
    } catch (const TransientError&) {
      if (attempt >= transient_retry_count_max) throw;
      transient_backoff(attempt);
    }
  }
}

template <typename Work>
auto Database::transact(Work&& work) -> std::invoke_result_t<Work&, Transaction&> {
  Lease lease = acquire();
  return transact_on(*lease, options_.transient_retry_count_max, std::forward<Work>(work));
}

}  // namespace payq

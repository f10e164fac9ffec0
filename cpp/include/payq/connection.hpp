// payq's own connections: the libpqxx implementation of Executor.
#pragma once

#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include <pqxx/connection>
#include <pqxx/nontransaction>

#include "payq/db.hpp"

namespace payq {

struct ConnectionOptions {
  std::string dsn;
  std::string schema = "payq";
  // Prepared statements are session state; switch them off behind a
  // transaction-mode pooler that does not track them.
  bool prepare_statements = true;
  // A connection found dead before a transaction starts (the server
  // restarted or failed over while it was idle) is replaced by a fresh one.
  // Off for connections whose session state matters (the listener's LISTEN).
  bool reconnect_when_dead = true;
};

// One libpqxx connection. Belongs to one thread at a time.
class Connection {
 public:
  // Throws ConfigError for a malformed DSN or schema, DatabaseError when the
  // server cannot be reached.
  explicit Connection(ConnectionOptions options);

  pqxx::connection& raw() noexcept { return *raw_; }
  const std::string& schema() const noexcept { return options_.schema; }
  bool is_open() const noexcept;
  // Whether an idle connection still looks alive without a round trip: open,
  // and nothing to read on its socket (a server that shut down or crashed
  // leaves an end-of-file or a termination notice there).
  bool idle_alive() const noexcept;
  // Before a transaction's first statement: a connection that died while
  // idle is replaced (when reconnect_when_dead), so the work starts on a
  // live one. DatabaseError if the server cannot be reached now.
  void ensure_alive();
  // Replaces the session with a fresh one (prepared statements re-prepare
  // on first use).
  void reconnect();
  bool reconnect_when_dead() const noexcept { return options_.reconnect_when_dead; }

  // The statement's SQL with the schema filled in; prepares it on this
  // connection the first time when prepared statements are on.
  const std::string& statement_sql(const Statement& statement);
  bool prepare_statements() const noexcept { return options_.prepare_statements; }

 private:
  void open();

  ConnectionOptions options_;
  // options_.dsn with payq's network defaults (timeouts, keepalives) for
  // what it leaves unset: cpp/src/db/dsn_defaults.hpp.
  std::string dsn_with_defaults_;
  std::unique_ptr<pqxx::connection> raw_;
  std::unordered_map<std::string, std::string> statement_sql_by_name_;
};

class Database;

// A transaction on a payq connection; rolled back on destruction unless
// committed. BEGIN is not a round trip of its own: it travels with the
// transaction's first statement (as `BEGIN; EXECUTE ...` when statements
// are prepared), and a transaction that ran nothing commits without
// talking to the server.
class Transaction final : public Executor {
 public:
  explicit Transaction(Connection& connection);
  ~Transaction() override;
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;

  Rows exec(const Statement& statement, const Params& params) override;
  bool copy_supported() const noexcept override { return true; }
  void copy_in(const CopyTarget& target, std::string_view data) override;
  void savepoint_begin() override;
  void savepoint_release() override;
  void savepoint_rollback() override;
  const std::string& schema() const override { return connection_.schema(); }

  // Ad-hoc SQL with $n parameters (not prepared); @schema@ is expanded.
  Rows exec_sql(const std::string& sql, const Params& params = {});
  // Several statements without parameters, as one simple query.
  void exec_script(const std::string& sql);

  // Throws CommitUnknown when the outcome of COMMIT cannot be known, and
  // DatabaseError when an earlier error had already aborted the
  // transaction (the server answers such a COMMIT with a rollback).
  void commit();
  void rollback();
  bool is_open() const noexcept { return open_; }
  std::size_t savepoint_depth() const noexcept { return savepoint_depth_; }

 private:
  pqxx::nontransaction& current();
  Rows exec_now(const Statement& statement, const Params& params);
  // Runs the transaction's first statement: if the connection turns out
  // dead before anything of this transaction reached the server, or while
  // the statement ran (nothing is committed without COMMIT), it is run once
  // more on a fresh connection.
  template <typename Run>
  auto first_statement(Run&& run) -> decltype(run());
  // Runs `sql` (no parameters), preceded by BEGIN if nothing ran yet.
  pqxx::result simple_query(const std::string& sql);
  void begin_now();
  // Records a server error (which aborts the transaction) and rethrows the
  // exception in flight as its payq type.
  [[noreturn]] void failed();

  Connection& connection_;
  // libpqxx's view of the connection: payq sends BEGIN and COMMIT itself.
  std::unique_ptr<pqxx::nontransaction> work_;
  bool open_ = true;
  bool begun_ = false;    // BEGIN has been sent
  bool aborted_ = false;  // a statement failed; the server refuses all but a rollback
  std::size_t savepoint_depth_ = 0;
};

// One statement that is its own transaction: no BEGIN and COMMIT round
// trips, for work that one statement does atomically (a fenced success
// completion, say). It runs at most one statement: a second exec() is a
// logic error, since two statements here would be two transactions. If
// the connection is lost while the statement runs, its outcome is unknown
// (CommitUnknown); any other error means nothing was written.
class SingleStatement final : public Executor {
 public:
  explicit SingleStatement(Connection& connection) : connection_(connection) {}

  Rows exec(const Statement& statement, const Params& params) override;
  void savepoint_begin() override;
  void savepoint_release() override;
  void savepoint_rollback() override;
  const std::string& schema() const override { return connection_.schema(); }

 private:
  Connection& connection_;
  bool used_ = false;
};

// Converts the libpqxx exception in flight into its payq type and throws it.
[[noreturn]] void rethrow_as_payq_error();

}  // namespace payq

#include "payq/connection.hpp"

#include <libpq-fe.h>
#include <poll.h>

#include <stdexcept>

#include <pqxx/except>
#include <pqxx/nontransaction>
#include <pqxx/prepared_statement>
#include <pqxx/result>
#include <pqxx/tablewriter>

#include "db/dsn_defaults.hpp"
#include "payq/error.hpp"

namespace payq {
namespace {

// Checks DSN syntax without connecting, so a typo is a ConfigError rather
// than a connection failure.
void dsn_validate(const std::string& dsn) {
  // libpq reads a C string: a NUL would silently cut the DSN short, and
  // other control characters are no part of one. Tab, CR and LF are
  // whitespace to libpq. The message does not repeat the DSN (a password).
  for (std::size_t i = 0; i < dsn.size(); ++i) {
    const auto c = static_cast<unsigned char>(dsn[i]);
    if ((c < 0x20 && c != '\t' && c != '\n' && c != '\r') || c == 0x7f) {
      throw ConfigError("invalid DSN: control character at position " + std::to_string(i));
    }
  }
  char* message = nullptr;
  PQconninfoOption* parsed = PQconninfoParse(dsn.c_str(), &message);
  if (parsed == nullptr) {
    std::string text = message ? message : "out of memory";
    if (message) PQfreemem(message);
    while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
    throw ConfigError("invalid DSN: " + text);
  }
  PQconninfoFree(parsed);
}

std::vector<const char*> param_pointers(const Params& params) {
  std::vector<const char*> pointers;
  pointers.reserve(params.size());
  for (const Value& value : params) pointers.push_back(value ? value->c_str() : nullptr);
  return pointers;
}

Rows rows_from(const pqxx::result& result) {
  std::vector<std::string> columns;
  const auto column_count = static_cast<std::size_t>(result.columns());
  columns.reserve(column_count);
  for (pqxx::row::size_type i = 0; i < result.columns(); ++i) columns.emplace_back(result.column_name(i));
  std::vector<std::vector<Value>> values;
  values.reserve(result.size());
  for (const auto& row : result) {
    std::vector<Value> out;
    out.reserve(column_count);
    for (const auto& field : row) {
      if (field.is_null()) {
        out.emplace_back(std::nullopt);
      } else {
        out.emplace_back(std::string(field.c_str(), field.size()));
      }
    }
    values.push_back(std::move(out));
  }
  return Rows(std::move(columns), std::move(values));
}

// EXECUTE takes the name as an identifier: only names that need no
// quoting and fit one (63 bytes) are sent that way.
bool name_is_plain(const char* name) {
  std::size_t length = 0;
  for (const char* c = name; *c != '\0'; ++c, ++length) {
    const bool plain = (*c >= 'a' && *c <= 'z') || *c == '_' || (length > 0 && *c >= '0' && *c <= '9');
    if (!plain || length >= 63) return false;
  }
  return length > 0;
}

// A named statement on `work`: prepared on the connection, or sent with its
// text when prepared statements are off (behind a transaction-mode pooler).
Rows statement_run(Connection& connection, pqxx::transaction_base& work, const Statement& statement,
                   const Params& params) {
  const std::string& sql = connection.statement_sql(statement);
  const auto pointers = param_pointers(params);
  if (connection.prepare_statements()) {
    return rows_from(work.exec_prepared(statement.name, pqxx::prepare::make_dynamic_params(pointers)));
  }
  return rows_from(work.exec_params(sql, pqxx::prepare::make_dynamic_params(pointers)));
}

}  // namespace

void rethrow_as_payq_error() {
  try {
    throw;
  } catch (const Error&) {
    throw;
  } catch (const pqxx::in_doubt_error& e) {
    throw CommitUnknown(e.what());
  } catch (const pqxx::serialization_failure& e) {
    // The whole transaction is gone and may be run again from the start.
    throw TransientError(e.what(), "40001");
  } catch (const pqxx::deadlock_detected& e) {
    throw TransientError(e.what(), "40P01");
  } catch (const pqxx::transaction_rollback& e) {
    throw TransientError(e.what(), "40000");
  } catch (const pqxx::sql_error& e) {
    // A write on a standby (or a read-only session): the DSN is wrong.
    if (e.sqlstate() == "25006") {
      throw ConfigError(std::string("the server is read-only (a standby?); nothing was written: point the DSN at "
                                    "the primary, e.g. host=a,b target_session_attrs=read-write: ") +
                        e.what());
    }
    // payq never deallocates its prepared statements: one that exists
    // twice, or vanished, means sessions are shared behind our back.
    if (e.sqlstate() == "42P05" || e.sqlstate() == "26000") {
      std::string text = e.what();
      while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
      throw ConfigError(text +
                        " (payq's prepared statements met a session they did not prepare: the server is behind a "
                        "transaction-mode pooler such as pgbouncer; connect with pooler=\"transaction\" "
                        "(PAYQ_POOLER=transaction), see docs/deployment.md)");
    }
    throw DatabaseError(e.what(), e.sqlstate());
  } catch (const pqxx::broken_connection& e) {
    std::string text = e.what();
    while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
    // libpqxx's words when a transaction starts on a session that is
    // already gone: libpq has no encoding for a dead connection.
    if (text.find("Could not obtain client encoding") != std::string::npos) {
      text = "the session was already closed (the server ended it, or the network dropped it)";
    }
    throw ConnectionLost("connection to the database lost: " + text, "08006");
  } catch (const pqxx::failure& e) {
    throw DatabaseError(e.what());
  } catch (const pqxx::usage_error& e) {
    throw DatabaseError(std::string("database usage error: ") + e.what());
  } catch (const pqxx::conversion_error& e) {
    throw DatabaseError(std::string("conversion error: ") + e.what());
  }
  // Anything else was rethrown unchanged by `throw;` above.
  __builtin_unreachable();
}

Connection::Connection(ConnectionOptions options) : options_(std::move(options)) {
  schema_name_validate(options_.schema);
  dsn_validate(options_.dsn);
  dsn_with_defaults_ = db_detail::dsn_with_defaults(options_.dsn);
  open();
}

void Connection::open() {
  try {
    // Replaced only once the new session is up: a failed reconnect leaves
    // the dead one in place (never none), which reports itself closed.
    auto fresh = std::make_unique<pqxx::connection>(dsn_with_defaults_);
    if (options_.prepare_statements) {
      // payq's statements are short and index-driven; re-planning them on
      // every call (PostgreSQL's default for array parameters) costs more
      // than running them. Session state, like the prepared statements.
      pqxx::nontransaction setup(*fresh);
      setup.exec("SET plan_cache_mode = force_generic_plan");
    }
    raw_ = std::move(fresh);
  } catch (const pqxx::broken_connection& e) {
    std::string text = e.what();
    while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
    // Nothing was sent: like a connection lost before COMMIT, nothing of
    // the caller's work was applied, and it may be run again.
    throw ConnectionLost("cannot connect to PostgreSQL: " + text, "08001");
  } catch (...) {
    rethrow_as_payq_error();
  }
}

bool Connection::is_open() const noexcept { return raw_ && raw_->is_open(); }

bool Connection::idle_alive() const noexcept {
  if (!is_open()) return false;
  pollfd socket{raw_->sock(), POLLIN, 0};
  if (socket.fd < 0) return false;
  // An idle session of payq's has nothing to say: anything readable is the
  // server going away (or gone).
  return ::poll(&socket, 1, 0) == 0;
}

void Connection::ensure_alive() {
  if (!options_.reconnect_when_dead || idle_alive()) return;
  reconnect();
}

void Connection::reconnect() {
  open();
  statement_sql_by_name_.clear();
}

const std::string& Connection::statement_sql(const Statement& statement) {
  auto found = statement_sql_by_name_.find(statement.name);
  if (found != statement_sql_by_name_.end()) return found->second;
  std::string sql = sql_expand_schema(statement.sql, options_.schema);
  // libpqxx prepares lazily, on first execution.
  if (options_.prepare_statements) raw_->prepare(statement.name, sql);
  return statement_sql_by_name_.emplace(statement.name, std::move(sql)).first->second;
}

// libpqxx's view of the connection is made at the first statement, after
// a connection that died while idle has been replaced.
Transaction::Transaction(Connection& connection) : connection_(connection) {}

Transaction::~Transaction() {
  if (work_ && begun_) {
    try {
      work_->exec("ROLLBACK");
    } catch (...) {
      // The connection is gone, and the server rolls back with it.
    }
  }
}

pqxx::nontransaction& Transaction::current() {
  if (!open_) throw DatabaseError("transaction is already finished");
  if (!work_) {
    connection_.ensure_alive();
    work_ = std::make_unique<pqxx::nontransaction>(connection_.raw());
  }
  return *work_;
}

template <typename Run>
auto Transaction::first_statement(Run&& run) -> decltype(run()) {
  if (begun_ || !connection_.reconnect_when_dead()) return run();
  try {
    return run();
  } catch (const pqxx::broken_connection&) {
    // Nothing of this transaction can have been applied (no COMMIT was
    // sent): start it again, once, on a fresh connection.
    work_.reset();
    begun_ = false;
    connection_.reconnect();
    return run();
  }
}

void Transaction::failed() {
  try {
    throw;
  } catch (const pqxx::sql_error&) {
    // The server aborted the transaction: only a rollback (to a savepoint)
    // makes it usable again.
    if (begun_) aborted_ = true;
    rethrow_as_payq_error();
  } catch (...) {
    rethrow_as_payq_error();
  }
}

void Transaction::begin_now() {
  if (begun_) return;
  pqxx::nontransaction& work = current();
  begun_ = true;  // before the round trip: if it fails, ROLLBACK is harmless
  work.exec("BEGIN");
}

pqxx::result Transaction::simple_query(const std::string& sql) {
  pqxx::nontransaction& work = current();
  if (begun_) return work.exec(sql);
  begun_ = true;
  // One simple query runs both; its result is the last statement's.
  return work.exec("BEGIN; " + sql);
}

Rows Transaction::exec(const Statement& statement, const Params& params) {
  try {
    return first_statement([&] { return exec_now(statement, params); });
  } catch (...) {
    failed();
  }
}

Rows Transaction::exec_now(const Statement& statement, const Params& params) {
  {
    if (begun_ || !connection_.prepare_statements() || !name_is_plain(statement.name)) {
      begin_now();
      return statement_run(connection_, current(), statement, params);
    }
    current();  // a connection that died while idle is replaced first
    // The first statement: EXECUTE the prepared statement by SQL, so that
    // BEGIN travels in the same round trip. Parameters become quoted
    // literals, which the server converts to the statement's parameter
    // types exactly as it converts text parameters.
    connection_.statement_sql(statement);
    connection_.raw().prepare_now(statement.name);
    std::string sql = std::string("EXECUTE ") + statement.name;
    for (std::size_t i = 0; i < params.size(); ++i) {
      sql += i == 0 ? "(" : ", ";
      sql += params[i] ? connection_.raw().quote(*params[i]) : "NULL";
    }
    if (!params.empty()) sql += ")";
    return rows_from(simple_query(sql));
  }
}

void Transaction::copy_in(const CopyTarget& target, std::string_view data) {
  if (data.empty() || data.back() != '\n') throw std::logic_error("COPY data must end with a newline");
  try {
    first_statement([&] {
      begin_now();
      // libpqxx 6.4's stream_to sends one row per call, from values it
      // escapes itself; tablewriter's raw line takes text already in COPY
      // format, and a "line" of many rows goes out as one message. It adds
      // the last newline itself.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
      pqxx::tablewriter writer(current(), sql_expand_schema(target.table, schema()) + " (" + target.columns + ")");
#pragma GCC diagnostic pop
      writer.write_raw_line(std::string(data.substr(0, data.size() - 1)));
      writer.complete();
      return 0;
    });
  } catch (...) {
    failed();
  }
}

Rows Transaction::exec_sql(const std::string& sql, const Params& params) {
  try {
    const auto pointers = param_pointers(params);
    return first_statement([&] {
      begin_now();
      return rows_from(current().exec_params(sql_expand_schema(sql, schema()),
                                             pqxx::prepare::make_dynamic_params(pointers)));
    });
  } catch (...) {
    failed();
  }
}

void Transaction::exec_script(const std::string& sql) {
  try {
    first_statement([&] { return simple_query(sql_expand_schema(sql, schema())); });
  } catch (...) {
    failed();
  }
}

// Savepoints are plain SQL on the one transaction, the same statements the
// application-connection executor sends, so both behave identically.
void Transaction::savepoint_begin() {
  const std::size_t depth = savepoint_depth_ + 1;
  exec_script("SAVEPOINT payq_sp_" + std::to_string(depth));
  savepoint_depth_ = depth;
}

void Transaction::savepoint_release() {
  if (savepoint_depth_ == 0) throw DatabaseError("no savepoint to release");
  const std::size_t depth = savepoint_depth_--;
  exec_script("RELEASE SAVEPOINT payq_sp_" + std::to_string(depth));
}

void Transaction::savepoint_rollback() {
  if (savepoint_depth_ == 0) throw DatabaseError("no savepoint to roll back");
  const std::size_t depth = savepoint_depth_--;
  exec_script("ROLLBACK TO SAVEPOINT payq_sp_" + std::to_string(depth) + "; RELEASE SAVEPOINT payq_sp_" +
              std::to_string(depth));
  // Every savepoint still open was set before the error that aborted the
  // transaction, so rolling back to one recovers it.
  aborted_ = false;
}

Rows SingleStatement::exec(const Statement& statement, const Params& params) {
  if (used_) throw std::logic_error("a SingleStatement executor runs one statement only");
  used_ = true;
  try {
    connection_.ensure_alive();
    pqxx::nontransaction alone(connection_.raw());
    return statement_run(connection_, alone, statement, params);
  } catch (const pqxx::broken_connection& e) {
    throw CommitUnknown(std::string("connection lost while a single-statement transaction ran, outcome unknown: ") +
                        e.what());
  } catch (...) {
    rethrow_as_payq_error();
  }
}

void SingleStatement::savepoint_begin() { throw std::logic_error("a SingleStatement executor has no savepoints"); }
void SingleStatement::savepoint_release() { throw std::logic_error("a SingleStatement executor has no savepoints"); }
void SingleStatement::savepoint_rollback() { throw std::logic_error("a SingleStatement executor has no savepoints"); }

void Transaction::commit() {
  if (!open_) throw DatabaseError("transaction is already finished");
  if (savepoint_depth_ != 0) throw DatabaseError("commit with an open savepoint");
  open_ = false;
  auto work = std::move(work_);
  if (!begun_) return;  // nothing ran: nothing to commit
  begun_ = false;
  // A transaction that an error aborted would answer COMMIT with a
  // rollback, and libpqxx does not show the command tag: refuse here.
  if (aborted_) {
    try {
      work->exec("ROLLBACK");
    } catch (...) {
      // The server rolls back when the connection goes.
    }
    throw DatabaseError("the transaction failed earlier and was rolled back; nothing was committed", "25P02");
  }
  // COMMIT goes as a plain statement (libpqxx sees a nontransaction), so
  // a lost connection is the one way its outcome becomes unknown.
  try {
    work->exec("COMMIT");
  } catch (const pqxx::broken_connection& e) {
    throw CommitUnknown(std::string("connection lost during commit, outcome unknown: ") + e.what());
  } catch (...) {
    rethrow_as_payq_error();
  }
}

void Transaction::rollback() {
  savepoint_depth_ = 0;
  if (!open_) return;
  open_ = false;
  auto work = std::move(work_);
  if (!begun_) return;
  begun_ = false;
  try {
    work->exec("ROLLBACK");
  } catch (...) {
    rethrow_as_payq_error();
  }
}

}  // namespace payq

#include "payq/connection.hpp"

#include <libpq-fe.h>

#include <stdexcept>

#include <pqxx/except>
#include <pqxx/nontransaction>
#include <pqxx/prepared_statement>
#include <pqxx/result>

#include "payq/error.hpp"

namespace payq {
namespace {

// Checks DSN syntax without connecting, so a typo is a ConfigError rather
// than a connection failure.
void dsn_validate(const std::string& dsn) {
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
    throw DatabaseError(e.what(), e.sqlstate());
  } catch (const pqxx::broken_connection& e) {
    throw DatabaseError(std::string("connection to the database lost: ") + e.what(), "08006");
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
  try {
    raw_ = std::make_unique<pqxx::connection>(options_.dsn);
    if (options_.prepare_statements) {
      // payq's statements are short and index-driven; re-planning them on
      // every call (PostgreSQL's default for array parameters) costs more
      // than running them. Session state, like the prepared statements.
      pqxx::nontransaction setup(*raw_);
      setup.exec("SET plan_cache_mode = force_generic_plan");
    }
  } catch (const pqxx::broken_connection& e) {
    std::string text = e.what();
    while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
    throw DatabaseError("cannot connect to PostgreSQL: " + text, "08001");
  } catch (...) {
    rethrow_as_payq_error();
  }
}

bool Connection::is_open() const noexcept { return raw_ && raw_->is_open(); }

const std::string& Connection::statement_sql(const Statement& statement) {
  auto found = statement_sql_by_name_.find(statement.name);
  if (found != statement_sql_by_name_.end()) return found->second;
  std::string sql = sql_expand_schema(statement.sql, options_.schema);
  // libpqxx prepares lazily, on first execution.
  if (options_.prepare_statements) raw_->prepare(statement.name, sql);
  return statement_sql_by_name_.emplace(statement.name, std::move(sql)).first->second;
}

Transaction::Transaction(Connection& connection) : connection_(connection) {
  try {
    work_ = std::make_unique<pqxx::nontransaction>(connection_.raw());
  } catch (...) {
    rethrow_as_payq_error();
  }
}

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
  if (!open_ || !work_) throw DatabaseError("transaction is already finished");
  return *work_;
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
    if (begun_ || !connection_.prepare_statements() || !name_is_plain(statement.name)) {
      begin_now();
      return statement_run(connection_, current(), statement, params);
    }
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
  } catch (...) {
    failed();
  }
}

Rows Transaction::exec_sql(const std::string& sql, const Params& params) {
  try {
    const auto pointers = param_pointers(params);
    begin_now();
    return rows_from(current().exec_params(sql_expand_schema(sql, schema()),
                                           pqxx::prepare::make_dynamic_params(pointers)));
  } catch (...) {
    failed();
  }
}

void Transaction::exec_script(const std::string& sql) {
  try {
    simple_query(sql_expand_schema(sql, schema()));
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

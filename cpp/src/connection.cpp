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
    work_ = std::make_unique<pqxx::work>(connection_.raw());
  } catch (...) {
    rethrow_as_payq_error();
  }
}

Transaction::~Transaction() {
  work_.reset();  // a pqxx::work destroyed without commit rolls back
}

pqxx::dbtransaction& Transaction::current() {
  if (!work_) throw DatabaseError("transaction is already finished");
  return *work_;
}

Rows Transaction::exec(const Statement& statement, const Params& params) {
  try {
    return statement_run(connection_, current(), statement, params);
  } catch (...) {
    rethrow_as_payq_error();
  }
}

Rows Transaction::exec_sql(const std::string& sql, const Params& params) {
  try {
    const auto pointers = param_pointers(params);
    return rows_from(current().exec_params(sql_expand_schema(sql, schema()),
                                           pqxx::prepare::make_dynamic_params(pointers)));
  } catch (...) {
    rethrow_as_payq_error();
  }
}

void Transaction::exec_script(const std::string& sql) {
  try {
    current().exec(sql_expand_schema(sql, schema()));
  } catch (...) {
    rethrow_as_payq_error();
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
  if (!work_) throw DatabaseError("transaction is already finished");
  if (savepoint_depth_ != 0) throw DatabaseError("commit with an open savepoint");
  auto work = std::move(work_);
  try {
    work->commit();
  } catch (const pqxx::in_doubt_error& e) {
    throw CommitUnknown(std::string("commit outcome unknown: ") + e.what());
  } catch (const pqxx::broken_connection& e) {
    throw CommitUnknown(std::string("connection lost during commit, outcome unknown: ") + e.what());
  } catch (...) {
    rethrow_as_payq_error();
  }
}

void Transaction::rollback() {
  savepoint_depth_ = 0;
  auto work = std::move(work_);
  if (!work) return;
  try {
    work->abort();
  } catch (...) {
    rethrow_as_payq_error();
  }
}

}  // namespace payq

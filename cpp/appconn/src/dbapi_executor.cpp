// DbApiExecutor (payq/appconn.hpp): statements in the driver's parameter
// style, savepoints by name, results and errors as payq's.
#include <algorithm>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "driver_errors.hpp"
#include "payq/appconn.hpp"
#include "payq/error.hpp"
#include "python_values.hpp"

namespace payq::appconn {
namespace {

// Statements are few and named; ad-hoc SQL from the test helper is keyed by
// its text, so the cache is emptied when it reaches this size.
constexpr std::size_t statement_cache_count_max = 512;

py::object param_object(const Params& params, std::size_t index) {
  const Value& value = params[index];
  if (!value) return py::none();
  return python_text(*value, "SQL parameter $" + std::to_string(index + 1));
}

}  // namespace

DbApiExecutor::DbApiExecutor(py::object cursor, std::string schema, py::object copy_in)
    : cursor_(std::move(cursor)), copy_in_(std::move(copy_in)), schema_(std::move(schema)) {
  schema_name_validate(schema_);
  if (!copy_in_.is_none() && !PyCallable_Check(copy_in_.ptr())) {
    throw InvalidArgument("AppExecutor's copy_in must be callable or None, not a " + type_name(copy_in_));
  }
  copy_supported_ = !copy_in_.is_none();
  for (const char* name : {"execute", "fetchall", "description"}) {
    if (!py::hasattr(cursor_, name)) {
      throw InvalidArgument("AppExecutor needs a DB-API cursor; a " + type_name(cursor_) + " has no '" + name + "'");
    }
  }
}

Rows DbApiExecutor::exec(const Statement& statement, const Params& params) {
  py::gil_scoped_acquire gil;
  const std::shared_ptr<const FormatSql> sql = format_sql(statement);
  if (params.size() != sql->param_count) {
    throw InvalidArgument("statement '" + std::string(statement.name) + "' takes " +
                          std::to_string(sql->param_count) + " parameters, got " + std::to_string(params.size()));
  }
  py::list args(sql->param_order.size());
  for (std::size_t i = 0; i < sql->param_order.size(); ++i) args[i] = param_object(params, sql->param_order[i]);
  try {
    // Without parameters the driver is given no sequence, so it leaves the
    // SQL (and its percent signs) untouched.
    if (sql->param_count == 0) {
      cursor_.attr("execute")(sql->text);
    } else {
      cursor_.attr("execute")(sql->text, args);
    }
    py::object description = cursor_.attr("description");
    if (description.is_none()) return Rows();
    return rows_from_python(description, cursor_.attr("fetchall")());
  } catch (py::error_already_set& error) {
    if (!error.matches(PyExc_Exception)) throw;  // KeyboardInterrupt, SystemExit
    throw_as_payq_error(error);
  }
}

void DbApiExecutor::copy_in(const CopyTarget& target, std::string_view data) {
  if (!copy_supported_) Executor::copy_in(target, data);
  py::gil_scoped_acquire gil;
  const std::string sql = "COPY " + sql_expand_schema(target.table, schema_) + " (" + target.columns + ") FROM STDIN";
  try {
    copy_in_(python_text(sql, "COPY statement"), py::bytes(data.data(), data.size()));
  } catch (py::error_already_set& error) {
    if (!error.matches(PyExc_Exception)) throw;
    throw_as_payq_error(error);
  }
}

void DbApiExecutor::savepoint_begin() {
  const std::size_t depth = savepoint_depth_ + 1;
  exec_script("SAVEPOINT payq_sp_" + std::to_string(depth));
  savepoint_depth_ = depth;
}

void DbApiExecutor::savepoint_release() {
  if (savepoint_depth_ == 0) throw DatabaseError("no savepoint to release");
  const std::size_t depth = savepoint_depth_--;
  exec_script("RELEASE SAVEPOINT payq_sp_" + std::to_string(depth));
}

// Two statements, because psycopg 3 sends one statement per call.
void DbApiExecutor::savepoint_rollback() {
  if (savepoint_depth_ == 0) throw DatabaseError("no savepoint to roll back");
  const std::size_t depth = savepoint_depth_--;
  exec_script("ROLLBACK TO SAVEPOINT payq_sp_" + std::to_string(depth));
  exec_script("RELEASE SAVEPOINT payq_sp_" + std::to_string(depth));
}

// Shared, so an entry outlives a cache reset made by another thread while
// the driver runs it without the GIL.
std::shared_ptr<const DbApiExecutor::FormatSql> DbApiExecutor::format_sql(const Statement& statement) {
  auto found = sql_by_name_.find(statement.name);
  if (found != sql_by_name_.end()) return found->second;
  if (sql_by_name_.size() >= statement_cache_count_max) sql_by_name_.clear();
  const std::string expanded = sql_expand_schema(statement.sql, schema_);
  FormatStyleSql format = sql_to_format_style(expanded);
  auto entry = std::make_shared<FormatSql>();
  for (std::size_t index : format.param_order) entry->param_count = std::max(entry->param_count, index + 1);
  entry->param_order = std::move(format.param_order);
  entry->text = python_text(entry->param_count == 0 ? expanded : format.sql, "statement SQL");
  sql_by_name_.emplace(statement.name, entry);
  return entry;
}

void DbApiExecutor::exec_script(const std::string& sql) {
  py::gil_scoped_acquire gil;
  try {
    cursor_.attr("execute")(sql);
  } catch (py::error_already_set& error) {
    if (!error.matches(PyExc_Exception)) throw;
    throw_as_payq_error(error);
  }
}

}  // namespace payq::appconn

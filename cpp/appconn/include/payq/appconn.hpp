// The second implementation of payq::Executor: payq's SQL runs on an
// application's DB-API cursor (psycopg2, psycopg 3, Django, SQLAlchemy), so
// ledger and queue writes join the application's own transaction, which the
// application commits or rolls back.
//
// A small glue library (payq_appconn) beside the core: it speaks Python
// through pybind11's C++ API but registers nothing; bindings/
// bind_app_executor.cpp makes it payq._core.AppExecutor.
//
// The core calls an executor with the GIL released; every step here that
// touches Python takes it back first. Results are turned into PostgreSQL's
// text format so that Rows behaves exactly as it does on libpqxx, and driver
// errors become the payq errors libpqxx's would.
#pragma once

#include <pybind11/pybind11.h>

#include <cstddef>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "payq/db.hpp"

namespace payq::appconn {

namespace py = pybind11;

// Created and destroyed with the GIL held (it owns a Python cursor); only
// the Executor calls may come without it. One thread at a time.
class DbApiExecutor final : public Executor {
 public:
  // InvalidArgument unless `cursor` has execute, fetchall and description;
  // ConfigError for a malformed schema name. `copy_in`, when not None, is
  // the driver's COPY: called as copy_in(sql: str, data: bytes) with a
  // `COPY ... FROM STDIN` statement and its data (payq.appconn makes it for
  // psycopg 3 and psycopg2); None leaves bulk writes to statements.
  DbApiExecutor(py::object cursor, std::string schema, py::object copy_in = py::none());

  DbApiExecutor(const DbApiExecutor&) = delete;
  DbApiExecutor& operator=(const DbApiExecutor&) = delete;

  Rows exec(const Statement& statement, const Params& params) override;
  bool copy_supported() const noexcept override { return copy_supported_; }
  void copy_in(const CopyTarget& target, std::string_view data) override;
  // The same savepoint names and statements as payq::Transaction.
  void savepoint_begin() override;
  void savepoint_release() override;
  void savepoint_rollback() override;
  const std::string& schema() const override { return schema_; }
  std::size_t savepoint_depth() const noexcept { return savepoint_depth_; }

 private:
  // A statement rewritten for the driver, the SQL already a Python str.
  struct FormatSql {
    py::object text;
    std::vector<std::size_t> param_order;
    std::size_t param_count = 0;
  };

  std::shared_ptr<const FormatSql> format_sql(const Statement& statement);
  void exec_script(const std::string& sql);

  py::object cursor_;
  py::object copy_in_;
  bool copy_supported_ = false;  // read without the GIL
  std::string schema_;
  std::unordered_map<std::string, std::shared_ptr<const FormatSql>> sql_by_name_;
  std::size_t savepoint_depth_ = 0;
};

// The qualified name of a Python value's type, for messages.
std::string type_name(py::handle value);

}  // namespace payq::appconn

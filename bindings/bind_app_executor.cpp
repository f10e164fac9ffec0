// The second implementation of payq::Executor: payq's SQL runs on an
// application's DB-API cursor (psycopg2, psycopg 3, Django, SQLAlchemy), so
// ledger and queue writes join the application's own transaction, which the
// application commits or rolls back.
//
// The core calls an executor with the GIL released; every step here that
// touches Python takes it back first. Results are turned into PostgreSQL's
// text format so that Rows behaves exactly as it does on libpqxx.
#include <pybind11/gil_safe_call_once.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "bind.hpp"
#include "payq/database.hpp"
#include "payq/db.hpp"
#include "payq/error.hpp"

namespace payq::bindings {
namespace {

// Statements are few and named; ad-hoc SQL from the test helper is keyed by
// its text, so the cache is emptied when it reaches this size.
constexpr std::size_t statement_cache_count_max = 512;
// Django re-raises its own class `from` the driver's error and SQLAlchemy
// keeps it in `orig`: the SQLSTATE is at most a few links down.
constexpr int exception_chain_depth_max = 8;
// PostgreSQL's MAXDIM.
constexpr int array_dimension_max = 6;
constexpr long long pg_oid_json = 114;
constexpr long long pg_oid_jsonb = 3802;
constexpr long long pg_oid_unknown = -1;

// Python callables and types used to recognise and convert values, imported
// once and kept for the life of the interpreter.
struct PythonValueTypes {
  py::object decimal;
  py::object datetime;
  py::object date;
  py::object time;
  py::object timedelta;
  py::object uuid;
  py::tuple ip_types;
  py::object json_dumps;
  py::object format;
};

const PythonValueTypes& value_types() {
  PYBIND11_CONSTINIT static py::gil_safe_call_once_and_store<PythonValueTypes> storage;
  return storage
      .call_once_and_store_result([] {
        py::module_ datetime = py::module_::import("datetime");
        py::module_ ipaddress = py::module_::import("ipaddress");
        PythonValueTypes types;
        types.decimal = py::module_::import("decimal").attr("Decimal");
        types.datetime = datetime.attr("datetime");
        types.date = datetime.attr("date");
        types.time = datetime.attr("time");
        types.timedelta = datetime.attr("timedelta");
        types.uuid = py::module_::import("uuid").attr("UUID");
        types.ip_types = py::make_tuple(ipaddress.attr("IPv4Address"), ipaddress.attr("IPv6Address"),
                                        ipaddress.attr("IPv4Interface"), ipaddress.attr("IPv6Interface"),
                                        ipaddress.attr("IPv4Network"), ipaddress.attr("IPv6Network"));
        // jsonb's own text output separates with ", " and ": " and keeps
        // non-ASCII characters as they are.
        types.json_dumps = py::cpp_function([dumps = py::module_::import("json").attr("dumps")](py::handle value) {
          return dumps(value, py::arg("separators") = py::make_tuple(", ", ": "), py::arg("ensure_ascii") = false);
        });
        types.format = py::module_::import("builtins").attr("format");
        return types;
      })
      .get_stored();
}

std::string type_name(py::handle value) { return py::str(py::type::handle_of(value).attr("__qualname__")); }

std::string utf8(py::handle text) {
  Py_ssize_t size = 0;
  const char* data = PyUnicode_AsUTF8AndSize(text.ptr(), &size);
  if (data == nullptr) throw py::error_already_set();
  return std::string(data, static_cast<std::size_t>(size));
}

// ---- Python values to PostgreSQL text

std::string int_text(py::handle value) {
  int overflow = 0;
  const long long small = PyLong_AsLongLongAndOverflow(value.ptr(), &overflow);
  if (overflow == 0) {
    if (small == -1 && PyErr_Occurred()) throw py::error_already_set();
    return std::to_string(small);
  }
  return utf8(py::str(value));
}

// float8out's shortest exact form: Python's repr has the same digits, but
// PostgreSQL drops a trailing ".0" and switches to an exponent from 1e15 on,
// where Python waits until 1e16.
std::string float_text(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "Infinity" : "-Infinity";
  char* repr = PyOS_double_to_string(value, 'r', 0, 0, nullptr);
  if (repr == nullptr) throw py::error_already_set();
  std::string text(repr);
  PyMem_Free(repr);
  if (text.size() > 2 && text.compare(text.size() - 2, 2, ".0") == 0) text.resize(text.size() - 2);
  if (text.find('e') != std::string::npos || std::fabs(value) < 1e15) return text;
  const std::string sign = value < 0 ? "-" : "";
  const std::string unsigned_text = value < 0 ? text.substr(1) : text;
  const std::size_t point = unsigned_text.find('.');
  const std::string integer_part = unsigned_text.substr(0, point);
  std::string digits = integer_part + (point == std::string::npos ? "" : unsigned_text.substr(point + 1));
  while (digits.size() > 1 && digits.back() == '0') digits.pop_back();
  const std::string mantissa = digits.size() == 1 ? digits : digits.substr(0, 1) + "." + digits.substr(1);
  return sign + mantissa + "e+" + std::to_string(integer_part.size() - 1);
}

// numeric_out never uses an exponent; str(Decimal) does for small values.
std::string decimal_text(py::handle value, const PythonValueTypes& types) {
  if (value.attr("is_finite")().cast<bool>()) return utf8(types.format(value, "f"));
  if (value.attr("is_nan")().cast<bool>()) return "NaN";
  return value.attr("is_signed")().cast<bool>() ? "-Infinity" : "Infinity";
}

// isoformat() writes microseconds as six digits and a whole-hour offset as
// "+01:00"; PostgreSQL drops trailing zeros of the fraction and writes "+01".
std::string postgres_time_text(std::string text, py::handle value) {
  const std::size_t point = text.find('.');
  if (point != std::string::npos) {
    std::size_t end = point + 1;
    while (end < text.size() && std::isdigit(static_cast<unsigned char>(text[end]))) ++end;
    std::size_t keep = end;
    while (keep > point + 1 && text[keep - 1] == '0') --keep;
    if (keep == point + 1) keep = point;  // all zeros: the point goes too
    text.erase(keep, end - keep);
  }
  py::object offset = value.attr("utcoffset")();
  if (offset.is_none()) return text;
  const bool whole_hours = offset.attr("seconds").cast<long long>() % 3600 == 0 &&
                           offset.attr("microseconds").cast<long long>() == 0;
  if (whole_hours && text.size() > 3 && text.compare(text.size() - 3, 3, ":00") == 0) text.resize(text.size() - 3);
  return text;
}

std::string two_digits(long long value) { return (value < 10 ? "0" : "") + std::to_string(value); }

// interval_out's "postgres" style: "3 days", "-1 days -01:00:00", "00:00:01.5".
std::string interval_text(py::handle value) {
  const bool negative = value.attr("days").cast<long long>() < 0;
  py::object magnitude = negative ? value.attr("__neg__")() : py::reinterpret_borrow<py::object>(value);
  const long long days = magnitude.attr("days").cast<long long>();
  const long long seconds = magnitude.attr("seconds").cast<long long>();
  const long long microseconds = magnitude.attr("microseconds").cast<long long>();
  const std::string sign = negative ? "-" : "";
  std::string out;
  if (days != 0) out = sign + std::to_string(days) + (days == 1 && !negative ? " day" : " days");
  if (days == 0 || seconds != 0 || microseconds != 0) {
    if (!out.empty()) out += " ";
    out += sign + two_digits(seconds / 3600) + ":" + two_digits(seconds / 60 % 60) + ":" + two_digits(seconds % 60);
    if (microseconds != 0) {
      std::string fraction = std::to_string(microseconds);
      fraction.insert(0, 6 - fraction.size(), '0');
      while (fraction.back() == '0') fraction.pop_back();
      out += "." + fraction;
    }
  }
  return out;
}

Value value_text(py::handle value, long long type_oid, const std::string& column, int depth);

// array_out: elements quoted when empty, NULL-like, or holding a delimiter,
// brace, quote, backslash or white space.
std::string array_text(py::handle list, const std::string& column, int depth) {
  if (depth >= array_dimension_max) throw DatabaseError("column '" + column + "' nests arrays too deep");
  std::string out = "{";
  bool first = true;
  for (py::handle element : list) {
    if (!first) out += ",";
    first = false;
    if (PyList_Check(element.ptr())) {
      out += array_text(element, column, depth + 1);
      continue;
    }
    const Value text = value_text(element, pg_oid_unknown, column, depth + 1);
    if (!text) {
      out += "NULL";
      continue;
    }
    bool quote = text->empty() || (text->size() == 4 && PyOS_stricmp(text->c_str(), "null") == 0);
    for (char c : *text) {
      quote = quote || c == '"' || c == '\\' || c == '{' || c == '}' || c == ',' ||
              std::isspace(static_cast<unsigned char>(c));
    }
    if (!quote) {
      out += *text;
      continue;
    }
    out += '"';
    for (char c : *text) {
      if (c == '"' || c == '\\') out += '\\';
      out += c;
    }
    out += '"';
  }
  return out + "}";
}

Value value_text(py::handle value, long long type_oid, const std::string& column, int depth) {
  const PythonValueTypes& types = value_types();
  if (value.is_none()) return std::nullopt;
  if (PyUnicode_Check(value.ptr())) return utf8(value);
  // A driver that parses json hands back dicts, lists and scalars; a driver
  // configured to leave it alone (Django does) hands back the text above.
  if (type_oid == pg_oid_json || type_oid == pg_oid_jsonb) return utf8(types.json_dumps(value));
  if (PyBool_Check(value.ptr())) return std::string(value.ptr() == Py_True ? "t" : "f");
  if (PyLong_Check(value.ptr())) return int_text(value);
  if (PyFloat_Check(value.ptr())) return float_text(PyFloat_AS_DOUBLE(value.ptr()));
  if (py::isinstance(value, types.decimal)) return decimal_text(value, types);
  // datetime before date: a datetime is a date.
  if (py::isinstance(value, types.datetime)) return postgres_time_text(utf8(value.attr("isoformat")(" ")), value);
  if (py::isinstance(value, types.date)) return utf8(value.attr("isoformat")());
  if (py::isinstance(value, types.time)) return postgres_time_text(utf8(value.attr("isoformat")()), value);
  if (py::isinstance(value, types.timedelta)) return interval_text(value);
  if (py::isinstance(value, types.uuid) || py::isinstance(value, types.ip_types)) return utf8(py::str(value));
  if (PyList_Check(value.ptr())) return array_text(value, column, depth);
  if (PyDict_Check(value.ptr())) return utf8(types.json_dumps(value));
  if (PyBytes_Check(value.ptr()) || PyByteArray_Check(value.ptr()) || PyMemoryView_Check(value.ptr())) {
    throw DatabaseError("column '" + column +
                        "' is binary; payq's executor carries text only (select encode(column, 'hex'))");
  }
  throw DatabaseError("column '" + column + "' came back as a Python " + type_name(value) +
                      ", which payq cannot turn into PostgreSQL text (cast the column to text in SQL)");
}

struct ResultColumn {
  std::string name;
  long long type_oid;
};

std::vector<ResultColumn> result_columns(py::handle description) {
  std::vector<ResultColumn> columns;
  for (py::handle item : description) {
    // DB-API: (name, type_code, ...); psycopg 2 and 3 give the type's OID
    // as type_code, other drivers something else.
    py::sequence column = py::reinterpret_borrow<py::sequence>(item);
    py::object type_code = column[1];
    long long type_oid = pg_oid_unknown;
    if (PyLong_Check(type_code.ptr()) && !PyBool_Check(type_code.ptr())) type_oid = type_code.cast<long long>();
    columns.push_back({utf8(py::str(column[0])), type_oid});
  }
  return columns;
}

Rows rows_from_python(py::handle description, py::handle fetched) {
  const std::vector<ResultColumn> columns = result_columns(description);
  std::vector<std::vector<Value>> values;
  for (py::handle row_object : fetched) {
    std::vector<Value> row;
    row.reserve(columns.size());
    if (PyDict_Check(row_object.ptr())) {
      // A dict row factory the application chose for its own cursors.
      py::dict by_name = py::reinterpret_borrow<py::dict>(row_object);
      for (const ResultColumn& column : columns) {
        row.push_back(value_text(by_name[py::str(column.name)], column.type_oid, column.name, 0));
      }
    } else {
      py::sequence sequence = py::reinterpret_borrow<py::sequence>(row_object);
      if (sequence.size() != columns.size()) throw DatabaseError("result row does not match its description");
      for (std::size_t i = 0; i < columns.size(); ++i) {
        row.push_back(value_text(sequence[i], columns[i].type_oid, columns[i].name, 0));
      }
    }
    values.push_back(std::move(row));
  }
  std::vector<std::string> names;
  names.reserve(columns.size());
  for (const ResultColumn& column : columns) names.push_back(column.name);
  return Rows(std::move(names), std::move(values));
}

// ---- Driver errors to payq errors

// The first SQLSTATE along the chain: psycopg 3 names it `sqlstate`,
// psycopg2 `pgcode`; wrappers keep the driver's error in `orig` or as
// `__cause__`.
std::pair<std::string, py::object> sqlstate_and_source(py::object error) {
  for (int depth = 0; depth < exception_chain_depth_max && !error.is_none(); ++depth) {
    for (const char* name : {"sqlstate", "pgcode"}) {
      py::object code = py::getattr(error, name, py::none());
      if (PyUnicode_Check(code.ptr()) && PyUnicode_GetLength(code.ptr()) == 5) return {utf8(code), error};
    }
    py::object orig = py::getattr(error, "orig", py::none());
    error = orig.is_none() ? py::getattr(error, "__cause__", py::none()) : orig;
  }
  return {std::string(), py::none()};
}

std::string trimmed(std::string text) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
  return text;
}

// Called with the GIL held, inside the catch of the driver's error.
[[noreturn]] void throw_as_payq_error(const py::error_already_set& error) {
  py::object raised = error.value();
  auto [sqlstate, source] = sqlstate_and_source(raised);
  if (sqlstate.empty()) {
    throw DatabaseError(type_name(raised) + ": " + trimmed(py::str(raised)));
  }
  std::string message = trimmed(py::str(source));
  if (sqlstate == "40001" || sqlstate == "40P01") throw TransientError(message, sqlstate);
  throw DatabaseError(message, sqlstate);
}

// ---- The executor

// Created and owned by Python (as _core.AppExecutor), so it is built and
// destroyed with the GIL held; only the Executor calls come without it.
class DbApiExecutor final : public Executor {
 public:
  DbApiExecutor(py::object cursor, std::string schema) : cursor_(std::move(cursor)), schema_(std::move(schema)) {
    schema_name_validate(schema_);
    for (const char* name : {"execute", "fetchall", "description"}) {
      if (!py::hasattr(cursor_, name)) {
        throw InvalidArgument("AppExecutor needs a DB-API cursor; a " + type_name(cursor_) + " has no '" + name +
                              "'");
      }
    }
  }

  DbApiExecutor(const DbApiExecutor&) = delete;
  DbApiExecutor& operator=(const DbApiExecutor&) = delete;

  Rows exec(const Statement& statement, const Params& params) override {
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

  // The same savepoint names and statements as payq::Transaction.
  void savepoint_begin() override {
    const std::size_t depth = savepoint_depth_ + 1;
    exec_script("SAVEPOINT payq_sp_" + std::to_string(depth));
    savepoint_depth_ = depth;
  }

  void savepoint_release() override {
    if (savepoint_depth_ == 0) throw DatabaseError("no savepoint to release");
    const std::size_t depth = savepoint_depth_--;
    exec_script("RELEASE SAVEPOINT payq_sp_" + std::to_string(depth));
  }

  // Two statements, because psycopg 3 sends one statement per call.
  void savepoint_rollback() override {
    if (savepoint_depth_ == 0) throw DatabaseError("no savepoint to roll back");
    const std::size_t depth = savepoint_depth_--;
    exec_script("ROLLBACK TO SAVEPOINT payq_sp_" + std::to_string(depth));
    exec_script("RELEASE SAVEPOINT payq_sp_" + std::to_string(depth));
  }

  const std::string& schema() const override { return schema_; }
  std::size_t savepoint_depth() const noexcept { return savepoint_depth_; }

 private:
  // A statement rewritten for the driver, the SQL already a Python str.
  struct FormatSql {
    py::object text;
    std::vector<std::size_t> param_order;
    std::size_t param_count = 0;
  };

  // Shared, so an entry outlives a cache reset made by another thread while
  // the driver runs it without the GIL.
  std::shared_ptr<const FormatSql> format_sql(const Statement& statement) {
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

  static py::object python_text(const std::string& text, const std::string& what) {
    PyObject* decoded = PyUnicode_DecodeUTF8(text.data(), static_cast<Py_ssize_t>(text.size()), "strict");
    if (decoded == nullptr) {
      PyErr_Clear();
      throw InvalidArgument(what + " is not valid UTF-8");
    }
    return py::reinterpret_steal<py::object>(decoded);
  }

  static py::object param_object(const Params& params, std::size_t index) {
    const Value& value = params[index];
    if (!value) return py::none();
    return python_text(*value, "SQL parameter $" + std::to_string(index + 1));
  }

  void exec_script(const std::string& sql) {
    py::gil_scoped_acquire gil;
    try {
      cursor_.attr("execute")(sql);
    } catch (py::error_already_set& error) {
      if (!error.matches(PyExc_Exception)) throw;
      throw_as_payq_error(error);
    }
  }

  py::object cursor_;
  std::string schema_;
  std::unordered_map<std::string, std::shared_ptr<const FormatSql>> sql_by_name_;
  std::size_t savepoint_depth_ = 0;
};

}  // namespace

Executor& executor_from(py::handle obj) {
  if (py::isinstance<DbApiExecutor>(obj)) return obj.cast<DbApiExecutor&>();
  if (py::isinstance<PooledTransaction>(obj)) return obj.cast<PooledTransaction&>().transaction();
  throw InvalidArgument("expected a payq executor (payq.appconn.app_executor(...) or a payq transaction), got a " +
                        type_name(obj));
}

void bind_app_executor(py::module_& m) {
  py::class_<DbApiExecutor>(m, "AppExecutor",
                            "Runs payq's SQL on an application's DB-API cursor, inside the application's "
                            "transaction. The application commits or rolls back. One thread at a time.")
      .def(py::init<py::object, std::string>(), py::arg("cursor"), py::arg("schema") = "payq")
      .def_property_readonly("schema", &DbApiExecutor::schema)
      .def_property_readonly("savepoint_depth", &DbApiExecutor::savepoint_depth)
      .def("savepoint_begin", &DbApiExecutor::savepoint_begin, py::call_guard<py::gil_scoped_release>())
      .def("savepoint_release", &DbApiExecutor::savepoint_release, py::call_guard<py::gil_scoped_release>())
      .def("savepoint_rollback", &DbApiExecutor::savepoint_rollback, py::call_guard<py::gil_scoped_release>());

  // Test hooks: run a statement through Executor the way core code does,
  // with the GIL released.
  m.def(
      "_executor_exec",
      [](py::handle executor, const std::string& sql, const Params& params) {
        Executor& target = executor_from(executor);
        const Statement statement{sql.c_str(), sql.c_str()};
        Rows rows;
        {
          py::gil_scoped_release release;
          rows = target.exec(statement, params);
        }
        return rows_to_python(rows);
      },
      py::arg("executor"), py::arg("sql"), py::arg("params"));
  m.def(
      "_executor_savepoint",
      [](py::handle executor, const std::string& action) {
        Executor& target = executor_from(executor);
        if (action != "begin" && action != "release" && action != "rollback") {
          throw InvalidArgument("savepoint action must be begin, release or rollback, not '" + action + "'");
        }
        py::gil_scoped_release release;
        if (action == "begin") target.savepoint_begin();
        if (action == "release") target.savepoint_release();
        if (action == "rollback") target.savepoint_rollback();
      },
      py::arg("executor"), py::arg("action"));
}

}  // namespace payq::bindings

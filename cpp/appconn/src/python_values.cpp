// Values between Python and PostgreSQL's text format (python_values.hpp).
#include "python_values.hpp"

#include <pybind11/gil_safe_call_once.h>

#include <cctype>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "payq/appconn.hpp"
#include "payq/error.hpp"

namespace payq::appconn {

std::string type_name(py::handle value) { return py::str(py::type::handle_of(value).attr("__qualname__")); }

std::string utf8(py::handle text) {
  Py_ssize_t size = 0;
  const char* data = PyUnicode_AsUTF8AndSize(text.ptr(), &size);
  if (data == nullptr) throw py::error_already_set();
  return std::string(data, static_cast<std::size_t>(size));
}

py::object python_text(const std::string& text, const std::string& what) {
  PyObject* decoded = PyUnicode_DecodeUTF8(text.data(), static_cast<Py_ssize_t>(text.size()), "strict");
  if (decoded == nullptr) {
    PyErr_Clear();
    throw InvalidArgument(what + " is not valid UTF-8");
  }
  return py::reinterpret_steal<py::object>(decoded);
}

namespace {

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

}  // namespace

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

}  // namespace payq::appconn

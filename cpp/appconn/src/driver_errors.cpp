// Driver errors to payq errors (driver_errors.hpp).
#include "driver_errors.hpp"

#include <cctype>
#include <string>
#include <utility>

#include "payq/appconn.hpp"
#include "payq/error.hpp"
#include "payq/vocabulary.hpp"
#include "python_values.hpp"

namespace payq::appconn {
namespace {

// Django re-raises its own class `from` the driver's error and SQLAlchemy
// keeps it in `orig`: the SQLSTATE is at most a few links down.
constexpr int exception_chain_depth_max = 8;

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

}  // namespace

void throw_as_payq_error(const py::error_already_set& error) {
  py::object raised = error.value();
  auto [sqlstate, source] = sqlstate_and_source(raised);
  if (sqlstate.empty()) {
    throw DatabaseError(type_name(raised) + ": " + trimmed(py::str(raised)));
  }
  std::string message = trimmed(py::str(source));
  if (std::string(error_class_for_sqlstate(sqlstate)) == "TransientError") throw TransientError(message, sqlstate);
  throw DatabaseError(message, sqlstate);
}

}  // namespace payq::appconn

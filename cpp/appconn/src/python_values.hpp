// Values between Python and PostgreSQL's text format. Call with the GIL held.
#pragma once

#include <pybind11/pybind11.h>

#include <string>

#include "payq/db.hpp"

namespace payq::appconn {

namespace py = pybind11;

// UTF-8 of a Python str.
std::string utf8(py::handle text);

// A Python str of UTF-8 `text`; InvalidArgument, naming `what`, if it is not
// valid UTF-8.
py::object python_text(const std::string& text, const std::string& what);

// A driver's result (its cursor.description and fetchall()) as Rows, each
// value in the text PostgreSQL itself would have sent; DatabaseError for a
// value that has no such text (bytes, an unknown type).
Rows rows_from_python(py::handle description, py::handle fetched);

}  // namespace payq::appconn

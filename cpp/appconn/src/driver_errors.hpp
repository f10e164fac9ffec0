// A driver's exception as the payq error libpqxx's would have been.
#pragma once

#include <pybind11/pybind11.h>

namespace payq::appconn {

namespace py = pybind11;

// Called with the GIL held, inside the catch of the driver's error: throws
// the payq error for it (payq::error_class_for_sqlstate decides the class,
// as for payq's own connections).
[[noreturn]] void throw_as_payq_error(const py::error_already_set& error);

}  // namespace payq::appconn

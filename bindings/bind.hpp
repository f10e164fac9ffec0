// One bind_<concept> per file; module.cpp calls them in order.
#pragma once

#include <pybind11/pybind11.h>

namespace payq::bindings {

namespace py = pybind11;

void bind_error(py::module_& m);
void bind_database(py::module_& m);
void bind_embedded(py::module_& m);

}  // namespace payq::bindings

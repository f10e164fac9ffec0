// One bind_<concept> per file; module.cpp calls them in order.
#pragma once

#include <pybind11/pybind11.h>

#include "payq/db.hpp"

namespace payq::bindings {

namespace py = pybind11;

void bind_error(py::module_& m);
void bind_money(py::module_& m);
void bind_database(py::module_& m);
void bind_embedded(py::module_& m);
void bind_app_executor(py::module_& m);
void bind_ledger(py::module_& m);
void bind_outbox(py::module_& m);
void bind_inbox(py::module_& m);
void bind_worker(py::module_& m);

// Rows as (column names, list of tuples of str | None); call with the GIL held.
py::tuple rows_to_python(const Rows& rows);

// The Executor behind a Python object: an AppExecutor or a payq _core.Transaction;
// InvalidArgument otherwise. The object must outlive the use of the reference.
Executor& executor_from(py::handle obj);

}  // namespace payq::bindings

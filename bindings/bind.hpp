// One bind_<concept> per file; module.cpp calls them in order.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <optional>

#include "payq/backoff.hpp"
#include "payq/db.hpp"

namespace payq::bindings {

namespace py = pybind11;

void bind_error(py::module_& m);
void bind_vocabulary(py::module_& m);
void bind_money(py::module_& m);
void bind_database(py::module_& m);
void bind_embedded(py::module_& m);
void bind_app_executor(py::module_& m);
void bind_ledger(py::module_& m);
void bind_outbox(py::module_& m);
void bind_inbox(py::module_& m);
void bind_worker(py::module_& m);
void bind_async_handler(py::module_& m);  // after bind_worker: extends HandlerRegistry
void bind_http(py::module_& m);
void bind_keyring(py::module_& m);  // after bind_outbox and bind_worker: extends TaskSpec, HandlerRegistry
void bind_tracing(py::module_& m);  // after bind_outbox: extends TaskSpec, Task
void bind_versions(py::module_& m);

// A kind's backoff from the Python registry's optional fields: nullopt when
// none is given (the registry's default applies); InvalidArgument if bad.
std::optional<BackoffPolicy> backoff_from(std::optional<std::int64_t> delay_ms_base,
                                          std::optional<std::int64_t> delay_ms_max, std::optional<int> multiplier);

// Rows as (column names, list of tuples of str | None); call with the GIL held.
py::tuple rows_to_python(const Rows& rows);

// The Executor behind a Python object: an AppExecutor or a payq _core.Transaction;
// InvalidArgument otherwise. The object must outlive the use of the reference.
Executor& executor_from(py::handle obj);

}  // namespace payq::bindings

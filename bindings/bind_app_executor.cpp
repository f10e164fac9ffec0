// payq._core.AppExecutor: registers payq_appconn's DbApiExecutor (payq's SQL
// on an application's DB-API cursor; cpp/appconn/), and the test hooks that
// drive any executor the way core code does.
#include <pybind11/stl.h>

#include <string>

#include "bind.hpp"
#include "payq/appconn.hpp"
#include "payq/database.hpp"
#include "payq/error.hpp"

namespace payq::bindings {

using appconn::DbApiExecutor;

Executor& executor_from(py::handle obj) {
  if (py::isinstance<DbApiExecutor>(obj)) return obj.cast<DbApiExecutor&>();
  if (py::isinstance<PooledTransaction>(obj)) return obj.cast<PooledTransaction&>().transaction();
  throw InvalidArgument("expected a payq executor (payq.appconn.app_executor(...) or a payq transaction), got a " +
                        appconn::type_name(obj));
}

void bind_app_executor(py::module_& m) {
  py::class_<DbApiExecutor>(m, "AppExecutor",
                            "Runs payq's SQL on an application's DB-API cursor, inside the application's "
                            "transaction. The application commits or rolls back. One thread at a time.")
      .def(py::init<py::object, std::string, py::object>(), py::arg("cursor"), py::arg("schema") = "payq",
           py::arg("copy_in") = py::none())
      .def_property_readonly("copy_supported", &DbApiExecutor::copy_supported)
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

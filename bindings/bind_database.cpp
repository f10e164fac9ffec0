#include <pybind11/stl.h>

#include <memory>

#include "bind.hpp"
#include "payq/database.hpp"
#include "payq/migrate.hpp"

namespace payq::bindings {
namespace {

const char* dsn_source_name(DsnSource source) {
  switch (source) {
    case DsnSource::argument: return "argument";
    case DsnSource::environment: return "environment";
    case DsnSource::embedded: return "embedded";
  }
  return "unknown";
}

}  // namespace

py::tuple rows_to_python(const Rows& rows) {
  py::list out;
  for (const auto& row : rows.values()) {
    py::tuple values(row.size());
    for (std::size_t i = 0; i < row.size(); ++i) {
      values[i] = row[i] ? py::object(py::str(*row[i])) : py::object(py::none());
    }
    out.append(std::move(values));
  }
  return py::make_tuple(rows.columns(), std::move(out));
}

void bind_database(py::module_& m) {
  py::class_<MigrateReport>(m, "MigrateReport")
      .def_readonly("applied", &MigrateReport::applied)
      .def_readonly("version_current", &MigrateReport::version_current);

  py::class_<PooledTransaction, std::unique_ptr<PooledTransaction>>(m, "Transaction")
      .def(
          "execute",
          [](PooledTransaction& self, const std::string& sql, const Params& params) {
            Rows rows;
            {
              py::gil_scoped_release release;
              rows = self.transaction().exec_sql(sql, params);
            }
            return rows_to_python(rows);
          },
          py::arg("sql"), py::arg("params"))
      .def("savepoint_begin", [](PooledTransaction& self) { self.transaction().savepoint_begin(); },
           py::call_guard<py::gil_scoped_release>())
      .def("savepoint_release", [](PooledTransaction& self) { self.transaction().savepoint_release(); },
           py::call_guard<py::gil_scoped_release>())
      .def("savepoint_rollback", [](PooledTransaction& self) { self.transaction().savepoint_rollback(); },
           py::call_guard<py::gil_scoped_release>())
      .def("commit", [](PooledTransaction& self) { self.transaction().commit(); },
           py::call_guard<py::gil_scoped_release>())
      .def("rollback", [](PooledTransaction& self) { self.transaction().rollback(); },
           py::call_guard<py::gil_scoped_release>())
      .def_property_readonly("is_open", [](PooledTransaction& self) { return self.transaction().is_open(); })
      .def_property_readonly("savepoint_depth",
                             [](PooledTransaction& self) { return self.transaction().savepoint_depth(); });

  py::class_<Database, std::shared_ptr<Database>>(m, "Database")
      .def(py::init([](std::optional<std::string> dsn, std::string schema, bool prepare_statements,
                       std::optional<std::string> pooler, std::optional<std::string> listen_dsn) {
             DatabaseOptions options;
             options.dsn = std::move(dsn);
             options.schema = std::move(schema);
             options.prepare_statements = prepare_statements;
             if (pooler) options.pooler = pooler_parse(*pooler);
             options.listen_dsn = std::move(listen_dsn);
             return std::make_shared<Database>(std::move(options));
           }),
           py::arg("dsn") = py::none(), py::arg("schema") = "payq", py::arg("prepare_statements") = true,
           py::arg("pooler") = py::none(), py::arg("listen_dsn") = py::none(),
           py::call_guard<py::gil_scoped_release>())
      .def_property_readonly("pooler", [](const Database& self) { return pooler_name(self.pooler()); })
      .def_property_readonly("listen_dsn", &Database::listen_dsn)
      .def_property_readonly("dsn", &Database::dsn)
      .def_property_readonly("dsn_source", [](const Database& self) { return dsn_source_name(self.dsn_source()); })
      .def_property_readonly("schema", &Database::schema)
      .def("migrate", [](Database& self) { return migrate(self); }, py::call_guard<py::gil_scoped_release>())
      .def("schema_version", [](Database& self) { return schema_version(self); },
           py::call_guard<py::gil_scoped_release>())
      .def("begin", [](Database& self) { return std::make_unique<PooledTransaction>(self); },
           py::call_guard<py::gil_scoped_release>(), py::keep_alive<0, 1>());

  m.def("migrations_known", [] {
    std::vector<std::pair<int, std::string>> out;
    for (const auto& info : migrations_known()) out.emplace_back(info.version, info.name);
    return out;
  });
}

}  // namespace payq::bindings

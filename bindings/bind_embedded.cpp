#include <pybind11/stl.h>
#include <pybind11/stl/filesystem.h>

#include "bind.hpp"
#include "payq/embedded.hpp"

namespace payq::bindings {

void bind_embedded(py::module_& m) {
  py::class_<EmbeddedServer>(m, "EmbeddedServer")
      .def(py::init([](std::optional<std::string> home, bool durable, std::optional<std::string> server_user,
                       int port) {
             EmbeddedOptions options = EmbeddedServer::default_options();
             if (home) options.home = *home;
             if (server_user) options.server_user = server_user;
             options.durable = durable;
             options.port = port;
             return EmbeddedServer(options);
           }),
           py::arg("home") = py::none(), py::arg("durable") = true, py::arg("server_user") = py::none(),
           py::arg("port") = 5432)
      .def("up", &EmbeddedServer::up, py::call_guard<py::gil_scoped_release>())
      .def("down", &EmbeddedServer::down, py::call_guard<py::gil_scoped_release>())
      .def("remove_when_process_exits", &EmbeddedServer::remove_when_process_exits)
      .def_property_readonly("dsn", &EmbeddedServer::dsn)
      .def_property_readonly("home", [](const EmbeddedServer& self) { return self.options().home.string(); })
      .def("status", [](const EmbeddedServer& self) {
        EmbeddedStatus status;
        {
          py::gil_scoped_release release;
          status = self.status();
        }
        py::dict out;
        out["initialized"] = status.initialized;
        out["running"] = status.running;
        out["home"] = status.home.string();
        out["data_dir"] = status.data_dir.string();
        out["dsn"] = status.dsn;
        out["server_user"] = status.server_user;
        out["binaries"] = status.binaries.string();
        out["binaries_source"] = status.binaries_source;
        return out;
      });

  m.def("postgres_bin_dir", [] { return postgres_bin_dir().string(); });
  m.def("postgres_binaries", [] {
    const PostgresBinaries binaries = postgres_binaries();
    return py::make_tuple(binaries.dir.string(), binaries.source);
  });
  m.def("postgres_wheel_dir_set", [](const std::string& dir) { postgres_wheel_dir_set(dir); }, py::arg("dir"));
}

}  // namespace payq::bindings

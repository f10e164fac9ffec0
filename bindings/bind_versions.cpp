#include "bind.hpp"
#include "payq/versions.hpp"

namespace payq::bindings {

void bind_versions(py::module_& m) {
  m.def(
      "library_versions",
      [] {
        const LibraryVersions v = library_versions();
        py::dict out;
        out["payq"] = v.payq;
        out["libpqxx"] = v.libpqxx;
        out["libpq"] = v.libpq;
        out["libcurl"] = v.libcurl;
        out["libcurl_ssl"] = v.libcurl_ssl;
        out["libcurl_ca_file"] = v.libcurl_ca_file;
        out["ca_bundle"] = v.ca_bundle;
        return out;
      },
      "The versions of payq's core and of the libpqxx, libpq and libcurl it runs on.");
}

}  // namespace payq::bindings

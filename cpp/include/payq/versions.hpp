// The versions of the libraries payq was built with and runs on, for
// `payq doctor` and bug reports.
#pragma once

#include <string>

namespace payq {

struct LibraryVersions {
  std::string payq;           // this core's version
  std::string libpqxx;        // compiled in (libpqxx has no run-time query)
  std::string libpq;          // the loaded libpq, e.g. "15.13"
  std::string libcurl;        // the loaded libcurl, e.g. "7.88.1"
  std::string libcurl_ssl;    // libcurl's TLS library, e.g. "OpenSSL/3.0.17"
  std::string libcurl_ca_file;  // libcurl's built-in CA bundle path ("" if none)
  std::string ca_bundle;        // what https calls without ca_file trust ("" if none found)
};

LibraryVersions library_versions();

}  // namespace payq

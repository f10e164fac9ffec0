#include "payq/versions.hpp"

#include <curl/curl.h>
#include <libpq-fe.h>

#include <pqxx/version>

#include "payq/http_client.hpp"

namespace payq {
namespace {

// PQlibVersion() gives major*10000 + minor for PostgreSQL 10 and later.
std::string libpq_version_text(int number) {
  return std::to_string(number / 10000) + "." + std::to_string(number % 10000);
}

std::string or_empty(const char* text) { return text ? text : ""; }

}  // namespace

LibraryVersions library_versions() {
  LibraryVersions versions;
  versions.payq = PAYQ_VERSION_TEXT;
  versions.libpqxx = PQXX_VERSION;
  versions.libpq = libpq_version_text(PQlibVersion());
  const curl_version_info_data* curl = curl_version_info(CURLVERSION_NOW);
  versions.libcurl = or_empty(curl->version);
  versions.libcurl_ssl = or_empty(curl->ssl_version);
  // cainfo arrived with version info age 9 (libcurl 7.70).
  if (curl->age >= CURLVERSION_NINTH) versions.libcurl_ca_file = or_empty(curl->cainfo);
  versions.ca_bundle = http_ca_bundle_default();
  return versions;
}

}  // namespace payq

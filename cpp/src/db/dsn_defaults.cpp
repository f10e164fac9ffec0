#include "db/dsn_defaults.hpp"

#include <libpq-fe.h>

#include <cstdlib>
#include <cstring>
#include <memory>

#include "payq/error.hpp"

namespace payq::db_detail {
namespace {

// libpq's key=value quoting: single quotes, with \ and ' escaped.
std::string quoted(const char* value) {
  std::string out = "'";
  for (const char* c = value; *c != '\0'; ++c) {
    if (*c == '\\' || *c == '\'') out += '\\';
    out += *c;
  }
  out += '\'';
  return out;
}

}  // namespace

std::string dsn_with_defaults(const std::string& dsn) {
  char* message = nullptr;
  std::unique_ptr<PQconninfoOption, decltype(&PQconninfoFree)> parsed(PQconninfoParse(dsn.c_str(), &message),
                                                                      &PQconninfoFree);
  if (!parsed) {
    if (message) PQfreemem(message);
    throw ConfigError("invalid DSN");
  }
  std::string out;
  auto append = [&](const char* keyword, const char* value) {
    if (!out.empty()) out += ' ';
    out += keyword;
    out += '=';
    out += quoted(value);
  };
  for (PQconninfoOption* option = parsed.get(); option->keyword != nullptr; ++option) {
    if (option->val != nullptr) append(option->keyword, option->val);
  }
  for (const DsnDefault& fallback : dsn_defaults) {
    bool set = false;
    for (PQconninfoOption* option = parsed.get(); option->keyword != nullptr; ++option) {
      if (std::strcmp(option->keyword, fallback.keyword) == 0 && option->val != nullptr) set = true;
    }
    if (fallback.environment != nullptr && std::getenv(fallback.environment) != nullptr) set = true;
    if (!set) append(fallback.keyword, fallback.value);
  }
  return out;
}

}  // namespace payq::db_detail

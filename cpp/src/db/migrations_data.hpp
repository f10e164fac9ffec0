// The migrations of cpp/sql/, compiled into the library.
#pragma once

#include <vector>

namespace payq::detail {

struct EmbeddedMigration {
  int version;
  const char* name;
  const char* sql;
};

// Sorted by version.
const std::vector<EmbeddedMigration>& embedded_migrations();

}  // namespace payq::detail

// Versioned schema migrations, embedded in the library. Applying them is
// idempotent and safe when several processes do it at once.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace payq {

class Database;

struct MigrationInfo {
  int version;
  std::string name;
  std::uint64_t checksum;  // FNV-1a 64 of the SQL text
};

struct MigrateReport {
  std::vector<int> applied;  // versions applied by this call, in order
  int version_current = 0;   // the schema's version afterwards
};

// Every migration this library carries, in order.
std::vector<MigrationInfo> migrations_known();

// Applies what is missing, in order, in one transaction under an advisory
// lock. Throws MigrationError if a recorded migration differs from the one
// carried here, or the schema is newer than this library.
MigrateReport migrate(Database& database);
// The same, stopping after `version_target` (for staged upgrades, and for
// testing what a migration does to data written by the versions before it).
MigrateReport migrate(Database& database, int version_target);

// The highest version recorded in the schema; 0 when payq was never
// migrated there.
int schema_version(Database& database);

}  // namespace payq

#include "payq/migrate.hpp"

#include <algorithm>
#include <limits>
#include <set>

#include "db/migrations_data.hpp"
#include "payq/database.hpp"
#include "payq/error.hpp"

namespace payq {
namespace {

std::uint64_t fnv1a_64(const char* text) {
  std::uint64_t hash = 14695981039346656037ull;
  for (const char* p = text; *p; ++p) {
    hash ^= static_cast<unsigned char>(*p);
    hash *= 1099511628211ull;
  }
  return hash;
}

const Statement lock_statement{
    "payq_migrate_lock", "SELECT pg_advisory_xact_lock(hashtextextended('payq.migrate:' || $1, 0))"};
const Statement schema_exists_statement{"payq_migrate_schema_exists",
                                        "SELECT to_regclass($1 || '.schema_migrations') IS NOT NULL AS present"};
const Statement recorded_statement{"payq_migrate_recorded",
                                   "SELECT version, checksum FROM @schema@.schema_migrations ORDER BY version"};
const Statement record_statement{
    "payq_migrate_record", "INSERT INTO @schema@.schema_migrations (version, name, checksum) VALUES ($1, $2, $3)"};

constexpr const char* bootstrap_sql = R"sql(
CREATE SCHEMA IF NOT EXISTS @schema@;
CREATE TABLE IF NOT EXISTS @schema@.schema_migrations (
  version    integer PRIMARY KEY,
  name       text NOT NULL,
  checksum   text NOT NULL,
  applied_at timestamptz NOT NULL DEFAULT now()
);
)sql";

}  // namespace

std::vector<MigrationInfo> migrations_known() {
  std::vector<MigrationInfo> out;
  for (const auto& m : detail::embedded_migrations()) out.push_back({m.version, m.name, fnv1a_64(m.sql)});
  return out;
}

MigrateReport migrate(Database& database) { return migrate(database, std::numeric_limits<int>::max()); }

MigrateReport migrate(Database& database, int version_target) {
  if (version_target < 1) throw InvalidArgument("a migration target is a version of at least 1");
  return database.transact([&](Transaction& tx) {
    // The lock serialises concurrent migrators; it is released at commit.
    tx.exec(lock_statement, {database.schema()});
    tx.exec_script(bootstrap_sql);
    std::set<int> recorded;
    const auto known = migrations_known();
    Rows rows = tx.exec(recorded_statement, {});
    for (std::size_t i = 0; i < rows.size(); ++i) {
      const int version = static_cast<int>(rows.i64(i, "version"));
      recorded.insert(version);
      auto match = std::find_if(known.begin(), known.end(), [&](const auto& m) { return m.version == version; });
      if (match == known.end()) {
        throw MigrationError("schema '" + database.schema() + "' has migration " + std::to_string(version) +
                             ", which this payq does not know: the database is newer than this library");
      }
      if (std::to_string(match->checksum) != rows.text(i, "checksum")) {
        throw MigrationError("migration " + match->name + " differs from the one applied to schema '" +
                             database.schema() + "': landed migrations must never be edited");
      }
    }
    MigrateReport report;
    for (const auto& m : detail::embedded_migrations()) {
      if (recorded.count(m.version)) continue;
      if (m.version > version_target) break;
      try {
        tx.exec_script(m.sql);
      } catch (const TransientError&) {
        throw;  // transact() runs the whole migration again
      } catch (const ConnectionLost&) {
        throw;  // likewise
      } catch (const DatabaseError& e) {
        // A migration that refuses the data it finds (or fails for any other
        // reason) changes nothing: the transaction rolls back.
        throw MigrationError("migration " + std::string(m.name) + " stopped; nothing was changed: " + e.what());
      }
      tx.exec(record_statement, {std::to_string(m.version), std::string(m.name), std::to_string(fnv1a_64(m.sql))});
      report.applied.push_back(m.version);
      recorded.insert(m.version);
    }
    report.version_current = recorded.empty() ? 0 : *recorded.rbegin();
    return report;
  });
}

int schema_version(Database& database) {
  return database.transact([&](Transaction& tx) {
    Rows present = tx.exec(schema_exists_statement, {"\"" + database.schema() + "\""});
    if (!present.boolean(0, "present")) return 0;
    Rows rows = tx.exec(recorded_statement, {});
    return rows.empty() ? 0 : static_cast<int>(rows.i64(rows.size() - 1, "version"));
  });
}

}  // namespace payq

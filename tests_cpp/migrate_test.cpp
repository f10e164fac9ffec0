#include "payq/migrate.hpp"

#include <gtest/gtest.h>

#include <thread>

#include "harness.hpp"
#include "payq/error.hpp"

namespace payq {
namespace {

class Migrate : public testing::DbTest {};

int recorded_count(Database& db) {
  return db.transact(
      [](Transaction& tx) { return static_cast<int>(tx.exec_sql("SELECT count(*) AS n FROM @schema@.schema_migrations").i64(0, "n")); });
}

TEST_F(Migrate, AppliesEveryKnownMigrationOnce) {
  const auto known = migrations_known();
  ASSERT_FALSE(known.empty());
  EXPECT_EQ(recorded_count(*db), static_cast<int>(known.size()));
  EXPECT_EQ(schema_version(*db), known.back().version);
}

TEST_F(Migrate, RerunIsANoOp) {
  auto report = migrate(*db);
  EXPECT_TRUE(report.applied.empty());
  EXPECT_EQ(report.version_current, migrations_known().back().version);
  EXPECT_EQ(recorded_count(*db), static_cast<int>(migrations_known().size()));
}

TEST_F(Migrate, FreshSchemaReportsVersionZeroThenMigrates) {
  DatabaseOptions options;
  options.dsn = testing::cluster_dsn();
  options.schema = testing::schema_unique("fresh");
  Database fresh(options);
  EXPECT_EQ(schema_version(fresh), 0);
  auto report = migrate(fresh);
  EXPECT_EQ(report.applied.size(), migrations_known().size());
  fresh.transact([](Transaction& tx) { tx.exec_sql("DROP SCHEMA @schema@ CASCADE"); });
}

TEST_F(Migrate, ConcurrentMigratorsAreSafe) {
  const std::string target = testing::schema_unique("race");
  constexpr int migrator_count = 8;
  std::vector<std::thread> threads;
  std::vector<std::size_t> applied(migrator_count);
  std::vector<std::string> errors(migrator_count);
  for (int i = 0; i < migrator_count; ++i) {
    threads.emplace_back([&, i] {
      try {
        DatabaseOptions options;
        options.dsn = testing::cluster_dsn();
        options.schema = target;
        Database database(options);
        applied[i] = migrate(database).applied.size();
      } catch (const std::exception& e) {
        errors[i] = e.what();
      }
    });
  }
  for (auto& t : threads) t.join();
  std::size_t total = 0;
  for (int i = 0; i < migrator_count; ++i) {
    EXPECT_EQ(errors[i], "") << "migrator " << i;
    total += applied[i];
  }
  // Exactly one migrator applied everything; the others found it done.
  EXPECT_EQ(total, migrations_known().size());
  DatabaseOptions options;
  options.dsn = testing::cluster_dsn();
  options.schema = target;
  Database check(options);
  EXPECT_EQ(recorded_count(check), static_cast<int>(migrations_known().size()));
  check.transact([](Transaction& tx) { tx.exec_sql("DROP SCHEMA @schema@ CASCADE"); });
}

TEST_F(Migrate, EditedMigrationIsRefused) {
  db->transact([](Transaction& tx) { tx.exec_sql("UPDATE @schema@.schema_migrations SET checksum = '1' WHERE version = 1"); });
  EXPECT_THROW(migrate(*db), MigrationError);
}

TEST_F(Migrate, NewerDatabaseIsRefused) {
  db->transact([](Transaction& tx) {
    tx.exec_sql("INSERT INTO @schema@.schema_migrations (version, name, checksum) VALUES (99999, 'future', '0')");
  });
  EXPECT_THROW(migrate(*db), MigrationError);
}

}  // namespace
}  // namespace payq

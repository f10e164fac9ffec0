// The harness itself: each DbTest has a migrated database of its own, so
// tests in parallel processes (ctest -j) cannot see each other's rows.
#include <string>

#include "harness.hpp"
#include "payq/migrate.hpp"

namespace payq {
namespace {

class Harness : public testing::DbTest {};

std::string current_database(Database& database) {
  return database.transact(
      [](Transaction& tx) { return tx.exec_sql("SELECT current_database() AS d").text(0, "d"); });
}

TEST_F(Harness, EachTestHasAMigratedDatabaseOfItsOwn) {
  if (database.empty()) GTEST_SKIP() << "this server's role may not create databases";
  EXPECT_EQ(current_database(*db), database);
  EXPECT_EQ(current_database(*open_database()), database);
  EXPECT_EQ(schema_version(*db), migrations_known().back().version);

  DatabaseOptions cluster;
  cluster.dsn = testing::cluster_dsn();
  cluster.schema = schema;
  Database main(cluster);
  EXPECT_NE(current_database(main), database);
  EXPECT_EQ(schema_version(main), 0) << "the test's schema leaked into the cluster's main database";
}

}  // namespace
}  // namespace payq

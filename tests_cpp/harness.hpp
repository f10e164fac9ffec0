// The C++ test harness: a throwaway PostgreSQL cluster (in a temp directory,
// unix socket only) and a fresh migrated database per test, copied from a
// template that is migrated once per cluster.
//
// Where the cluster comes from, in this order:
//   PAYQ_TEST_DSN           an existing server (its role needs CREATEDB for
//                           the per-test databases; without it each test
//                           gets a fresh migrated schema instead)
//   PAYQ_TEST_CLUSTER_FILE  the cluster that ctest's fixture test started
//                           for all test processes of the run (the file
//                           holds its DSN and home; see CMakeLists.txt)
//   neither                 this process starts its own and removes it at
//                           exit (a direct run of payq_tests, tools/sanitize)
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "payq/database.hpp"

namespace payq::testing {

// The DSN of the run's cluster, on its maintenance database (or
// PAYQ_TEST_DSN when set). Tests that make schemas of their own use it.
const std::string& cluster_dsn();
// The home directory of the run's embedded cluster; empty with PAYQ_TEST_DSN.
const std::string& cluster_home();

// A schema name unique to this process and call.
std::string schema_unique(const std::string& prefix = "t");

// Base fixture: `db` is a Database on a fresh, migrated schema in a database
// of this test's own (`dsn`), dropped after the test.
class DbTest : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;
  // Another Database (its own connection pool) on this test's schema.
  std::unique_ptr<Database> open_database() const;

  std::string dsn;       // this test's database
  std::string database;  // its name; empty when it is a schema in cluster_dsn()
  std::string schema;
  std::unique_ptr<Database> db;
};

}  // namespace payq::testing

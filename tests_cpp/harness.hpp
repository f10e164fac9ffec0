// The C++ test harness: one throwaway PostgreSQL cluster per test run (in a
// temp directory, unix socket only), a fresh migrated schema per test.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "payq/database.hpp"

namespace payq::testing {

// The DSN of the run's cluster (or of PAYQ_TEST_DSN when set).
const std::string& cluster_dsn();
// The home directory of the run's embedded cluster; empty with PAYQ_TEST_DSN.
const std::string& cluster_home();

// A schema name unique to this process and call.
std::string schema_unique(const std::string& prefix = "t");

// Base fixture: `db` is a Database on a fresh, migrated schema, dropped after
// the test.
class DbTest : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;
  std::unique_ptr<Database> open_database() const;

  std::string schema;
  std::unique_ptr<Database> db;
};

}  // namespace payq::testing

#include <gtest/gtest.h>
#include <libpq-fe.h>

#include <cstdlib>
#include <map>
#include <memory>
#include <string>

#include "db/dsn_defaults.hpp"
#include "harness.hpp"
#include "payq/connection.hpp"

namespace payq {
namespace {

using db_detail::dsn_with_defaults;

// What libpq reads from a connection string: keyword -> value.
std::map<std::string, std::string> parsed(const std::string& dsn) {
  std::unique_ptr<PQconninfoOption, decltype(&PQconninfoFree)> options(PQconninfoParse(dsn.c_str(), nullptr),
                                                                       &PQconninfoFree);
  EXPECT_NE(options, nullptr) << dsn;
  std::map<std::string, std::string> out;
  if (!options) return out;
  for (PQconninfoOption* o = options.get(); o->keyword != nullptr; ++o) {
    if (o->val != nullptr) out[o->keyword] = o->val;
  }
  return out;
}

TEST(DsnDefaults, UnsetNetworkSettingsGetPayqsDefaults) {
  unsetenv("PGCONNECT_TIMEOUT");
  auto got = parsed(dsn_with_defaults("host=db1,db2 dbname=shop user=payq"));
  EXPECT_EQ(got["host"], "db1,db2");
  EXPECT_EQ(got["dbname"], "shop");
  EXPECT_EQ(got["user"], "payq");
  EXPECT_EQ(got["tcp_user_timeout"], "30000");
  EXPECT_EQ(got["keepalives_idle"], "30");
  EXPECT_EQ(got["keepalives_interval"], "10");
  EXPECT_EQ(got["keepalives_count"], "3");
  EXPECT_EQ(got["connect_timeout"], "10");
}

TEST(DsnDefaults, WhatTheDsnSaysWins) {
  unsetenv("PGCONNECT_TIMEOUT");
  auto got = parsed(dsn_with_defaults("dbname=shop tcp_user_timeout=5000 keepalives_idle=7 connect_timeout=2"));
  EXPECT_EQ(got["tcp_user_timeout"], "5000");
  EXPECT_EQ(got["keepalives_idle"], "7");
  EXPECT_EQ(got["connect_timeout"], "2");
  EXPECT_EQ(got["keepalives_count"], "3");
}

TEST(DsnDefaults, UrisAndQuotedValuesSurviveTheRewrite) {
  auto got = parsed(dsn_with_defaults("postgresql://pay%20user:it's%5Csecret@db1:6432,db2/shop?sslmode=require"));
  EXPECT_EQ(got["user"], "pay user");
  EXPECT_EQ(got["password"], "it's\\secret");
  EXPECT_EQ(got["host"], "db1,db2");
  EXPECT_EQ(got["port"], "6432,");
  EXPECT_EQ(got["dbname"], "shop");
  EXPECT_EQ(got["sslmode"], "require");
  EXPECT_EQ(got["tcp_user_timeout"], "30000");
}

TEST(DsnDefaults, LibpqsEnvironmentCountsAsSet) {
  setenv("PGCONNECT_TIMEOUT", "4", 1);
  auto got = parsed(dsn_with_defaults("dbname=shop"));
  unsetenv("PGCONNECT_TIMEOUT");
  EXPECT_EQ(got.count("connect_timeout"), 0u);  // libpq reads the variable itself
}

class DsnDefaultsLive : public testing::DbTest {};

// The rewritten string is what payq connects with: a URI form of the test
// database's DSN still reaches it.
TEST_F(DsnDefaultsLive, AConnectionOpensWithTheRewrittenDsn) {
  auto got = parsed(dsn);
  std::string uri = "postgresql:///" + got["dbname"] + "?host=" + got["host"];
  if (got.count("port")) uri += "&port=" + got["port"];
  if (got.count("user")) uri += "&user=" + got["user"];
  ConnectionOptions options;
  options.dsn = uri;
  Connection connection(options);
  EXPECT_TRUE(connection.is_open());
}

}  // namespace
}  // namespace payq

#include <gtest/gtest.h>

#include <string>

#include "harness.hpp"
#include "payq/connection.hpp"
#include "payq/error.hpp"

namespace payq {
namespace {

class DeadSession : public testing::DbTest {};

// A session the server ended while idle, on a connection that does not
// reconnect (the listener's): the error is ConnectionLost and says what
// happened, not libpqxx's "Could not obtain client encoding".
TEST_F(DeadSession, StartingATransactionOnItSaysTheSessionIsGone) {
  ConnectionOptions options;
  options.dsn = dsn;
  options.reconnect_when_dead = false;
  Connection victim(options);
  std::string pid;
  {
    Transaction tx(victim);
    pid = tx.exec_sql("SELECT pg_backend_pid()::text AS pid").text(0, "pid");
    tx.commit();
  }
  ConnectionOptions killer_options;
  killer_options.dsn = dsn;
  Connection killer(killer_options);
  {
    Transaction tx(killer);
    tx.exec_sql("SELECT pg_terminate_backend(" + pid + ")");
    tx.commit();
  }
  try {
    for (int i = 0; i < 50; ++i) {  // the termination lands asynchronously
      Transaction tx(victim);
      tx.exec_sql("SELECT 1");
      tx.commit();
    }
    FAIL() << "the dead session kept working";
  } catch (const ConnectionLost& e) {
    EXPECT_EQ(std::string(e.what()).find("client encoding"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("connection to the database lost"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace payq

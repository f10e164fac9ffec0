#include "harness.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>

#include "payq/embedded.hpp"
#include "payq/migrate.hpp"

namespace payq::testing {
namespace {

std::string g_dsn;
std::string g_home;

class ClusterEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    if (const char* dsn = std::getenv("PAYQ_TEST_DSN"); dsn && *dsn) {
      g_dsn = dsn;
      return;
    }
    char templ[] = "/tmp/payq-test-XXXXXX";
    const char* dir = mkdtemp(templ);
    ASSERT_NE(dir, nullptr);
    // The server may run as another user (when we are root): let it in.
    chmod(dir, 0755);
    g_home = dir;
    EmbeddedOptions options;
    options.home = g_home;
    options.durable = false;
    server_ = std::make_unique<EmbeddedServer>(options);
    // Cleans up even if this process is killed.
    server_->remove_when_process_exits();
    g_dsn = server_->up();
  }

  void TearDown() override {
    if (!server_) return;
    server_->down();
    std::error_code ec;
    std::filesystem::remove_all(g_home, ec);
  }

 private:
  std::unique_ptr<EmbeddedServer> server_;
};

}  // namespace

const std::string& cluster_dsn() { return g_dsn; }
const std::string& cluster_home() { return g_home; }

std::string schema_unique(const std::string& prefix) {
  static std::atomic<int> counter{0};
  return prefix + "_" + std::to_string(getpid()) + "_" + std::to_string(counter.fetch_add(1));
}

std::unique_ptr<Database> DbTest::open_database() const {
  DatabaseOptions options;
  options.dsn = cluster_dsn();
  options.schema = schema;
  return std::make_unique<Database>(options);
}

void DbTest::SetUp() {
  schema = schema_unique();
  db = open_database();
  migrate(*db);
}

void DbTest::TearDown() {
  if (!db) return;
  db->transact([&](Transaction& tx) { tx.exec_sql("DROP SCHEMA IF EXISTS @schema@ CASCADE"); });
  db.reset();
}

}  // namespace payq::testing

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  ::testing::AddGlobalTestEnvironment(new payq::testing::ClusterEnvironment);
  return RUN_ALL_TESTS();
}

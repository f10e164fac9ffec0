#include "payq/embedded.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "harness.hpp"
#include "payq/database.hpp"
#include "payq/error.hpp"

namespace payq {
namespace {

// Sets an environment variable for the scope of one test.
class EnvGuard {
 public:
  EnvGuard(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value) {
      setenv(name, value, 1);
    } else {
      unsetenv(name);
    }
  }
  ~EnvGuard() {
    if (old_) {
      setenv(name_, old_->c_str(), 1);
    } else {
      unsetenv(name_);
    }
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

std::string postmaster_pid(const std::filesystem::path& home) {
  std::ifstream in(home / "data" / "postmaster.pid");
  std::string pid;
  std::getline(in, pid);
  return pid;
}

TEST(Embedded, StartsIsReusedStopsAndIsFoundAgain) {
  char templ[] = "/tmp/payq-emb-XXXXXX";
  ASSERT_NE(mkdtemp(templ), nullptr);
  chmod(templ, 0755);
  EmbeddedOptions options;
  options.home = std::string(templ) + "/home";
  options.durable = false;
  EmbeddedServer server(options);
  server.remove_when_process_exits();

  EXPECT_FALSE(server.status().initialized);
  const std::string dsn = server.up();
  EXPECT_TRUE(server.status().running);
  const std::string pid = postmaster_pid(options.home);
  ASSERT_FALSE(pid.empty());

  // A second up (another object, as another process would) reuses it.
  EmbeddedServer again(options);
  EXPECT_EQ(again.up(), dsn);
  EXPECT_EQ(postmaster_pid(options.home), pid);

  {
    DatabaseOptions db_options;
    db_options.dsn = dsn;
    Database db(db_options);
    db.transact([](Transaction& tx) { tx.exec_script("CREATE TABLE public.kept (v int); INSERT INTO public.kept VALUES (5)"); });
  }

  server.down();
  EXPECT_FALSE(server.status().running);
  EXPECT_TRUE(server.status().initialized);
  server.down();  // stopping a stopped server is fine

  // Found again, with its data.
  EXPECT_EQ(server.up(), dsn);
  DatabaseOptions db_options;
  db_options.dsn = dsn;
  Database db(db_options);
  EXPECT_EQ(db.transact([](Transaction& tx) { return tx.exec_sql("SELECT v FROM public.kept").i64(0, "v"); }), 5);
  server.down();
  std::filesystem::remove_all(templ);
}

TEST(Embedded, SocketPathTooLongIsConfigError) {
  EmbeddedOptions options;
  options.home = "/tmp/" + std::string(120, 'x');
  EXPECT_THROW(EmbeddedServer{options}, ConfigError);
}

TEST(Embedded, DefaultHomeFollowsPayqHome) {
  EnvGuard home("PAYQ_HOME", "/tmp/some-payq-home");
  EXPECT_EQ(EmbeddedServer::default_options().home, "/tmp/some-payq-home");
}

TEST(Embedded, MissingBinariesNameThePackage) {
  EnvGuard path("PATH", "/nonexistent");
  // /usr/lib/postgresql is still searched; only check the message when it is absent.
  if (!std::filesystem::exists("/usr/lib/postgresql")) {
    try {
      postgres_bin_dir();
      FAIL();
    } catch (const ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find("apt-get install postgresql"), std::string::npos);
    }
  } else {
    EXPECT_NO_THROW(postgres_bin_dir());
  }
}

TEST(DsnResolve, ArgumentBeatsEnvironmentBeatsEmbedded) {
  if (testing::cluster_home().empty()) GTEST_SKIP() << "runs against PAYQ_TEST_DSN";
  EnvGuard home("PAYQ_HOME", testing::cluster_home().c_str());
  {
    EnvGuard env("PAYQ_DSN", "host=/from-env");
    auto resolved = dsn_resolve(std::string("host=/from-argument"));
    EXPECT_EQ(resolved.dsn, "host=/from-argument");
    EXPECT_EQ(resolved.source, DsnSource::argument);
    resolved = dsn_resolve(std::nullopt);
    EXPECT_EQ(resolved.dsn, "host=/from-env");
    EXPECT_EQ(resolved.source, DsnSource::environment);
  }
  EnvGuard no_env("PAYQ_DSN", nullptr);
  auto resolved = dsn_resolve(std::nullopt);
  EXPECT_EQ(resolved.source, DsnSource::embedded);
  EXPECT_EQ(resolved.dsn, testing::cluster_dsn());
}

TEST(DsnResolve, MalformedDsnIsConfigError) {
  DatabaseOptions options;
  options.dsn = "this is not a dsn";
  EXPECT_THROW(Database{options}, ConfigError);
}

TEST(DsnResolve, UnreachableServerIsDatabaseError) {
  DatabaseOptions options;
  options.dsn = "host=/nonexistent-payq-socket-dir port=5432 dbname=x connect_timeout=2";
  EXPECT_THROW(Database{options}, DatabaseError);
}

TEST(DsnResolve, BadSchemaIsConfigError) {
  DatabaseOptions options;
  options.dsn = testing::cluster_dsn();
  options.schema = "Robert'); DROP";
  EXPECT_THROW(Database{options}, ConfigError);
}

}  // namespace
}  // namespace payq

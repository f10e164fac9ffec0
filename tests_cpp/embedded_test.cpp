#include "payq/embedded.hpp"

#include <grp.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "harness.hpp"
#include "payq/database.hpp"
#include "payq/error.hpp"
#include "db/process_internal.hpp"

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

unsigned permissions_of(const std::filesystem::path& path) {
  struct stat info {};
  if (stat(path.c_str(), &info) != 0) return 0xFFFF;
  return info.st_mode & 0777u;
}

// connect() to the unix socket at `path` as user `uid` (a forked child);
// 0 when it connects, else the errno.
int connect_errno_as(uid_t uid, gid_t gid, const std::string& path) {
  const pid_t pid = fork();
  if (pid == 0) {
    if (setgroups(0, nullptr) != 0 || setgid(gid) != 0 || setuid(uid) != 0) _exit(100);
    const int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::strncpy(address.sun_path, path.c_str(), sizeof address.sun_path - 1);
    _exit(connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0 ? 0 : errno);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// Authentication on the socket is `trust`: whoever reaches the socket is
// the payq superuser, so only the server's user and root may reach it,
// also in a cluster made before this rule (up() closes it again).
TEST(Embedded, SocketIsReachableOnlyByTheServerUserAndRoot) {
  if (testing::cluster_home().empty()) GTEST_SKIP() << "runs against PAYQ_TEST_DSN";
  const std::filesystem::path home = testing::cluster_home();
  std::string socket_path;
  for (const auto& entry : std::filesystem::directory_iterator(home / "run")) {
    const std::string name = entry.path().filename().string();
    if (name.rfind(".s.PGSQL.", 0) == 0 && name.find(".lock") == std::string::npos) socket_path = entry.path();
  }
  ASSERT_FALSE(socket_path.empty());
  EXPECT_EQ(permissions_of(home / "run"), 0700u);
  EXPECT_EQ(permissions_of(home / "log"), 0700u);
  EXPECT_EQ(permissions_of(socket_path), 0700u);

  // A cluster left open by an older payq is closed by the next up().
  ASSERT_EQ(chmod((home / "run").c_str(), 0755), 0);
  EmbeddedOptions options;
  options.home = home;
  options.durable = false;
  EmbeddedServer(options).up();
  EXPECT_EQ(permissions_of(home / "run"), 0700u);

  if (geteuid() != 0) GTEST_SKIP() << "trying as another user needs root";
  const auto nobody = detail::user_lookup("nobody");
  ASSERT_TRUE(nobody.has_value());
  EXPECT_EQ(connect_errno_as(nobody->uid, nobody->gid, socket_path), EACCES);
  EXPECT_EQ(connect_errno_as(0, 0, socket_path), 0);  // root, who runs payq here
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

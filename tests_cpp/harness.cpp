#include "harness.hpp"

#include <fcntl.h>
#include <libpq-fe.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <pqxx/connection>
#include <pqxx/except>
#include <pqxx/nontransaction>
#include <thread>

#include "payq/embedded.hpp"
#include "payq/migrate.hpp"

namespace payq::testing {
namespace {

namespace fs = std::filesystem;

constexpr const char* cluster_file_env = "PAYQ_TEST_CLUSTER_FILE";
// Where a failed run that started its own cluster keeps the server's log.
constexpr const char* failed_logs_dir = "/tmp/payq-test-logs";
// The schema payq lives in inside every per-test database.
constexpr const char* template_schema = "payq_test";
// Keys of the advisory lock under which one process builds the template.
constexpr int template_lock_key_1 = 0x70617971;  // "payq"
constexpr int template_lock_key_2 = 1;
// How long the keeper of ctest's shared cluster waits for ctest to end
// before it stops the cluster anyway.
constexpr auto keeper_wait_max = std::chrono::hours(24);
constexpr auto keeper_poll_interval = std::chrono::seconds(1);

std::string g_dsn;
std::string g_home;

// A libpq DSN (key=value or URI) as key=value text with `dbname` replaced.
std::string dsn_with_dbname(const std::string& dsn, const std::string& dbname) {
  char* error = nullptr;
  PQconninfoOption* options = PQconninfoParse(dsn.c_str(), &error);
  if (options == nullptr) {
    const std::string message = error ? error : "out of memory";
    PQfreemem(error);
    throw std::runtime_error("cannot parse the test DSN: " + message);
  }
  std::string out;
  const auto append = [&](const char* key, const std::string& value) {
    std::string quoted;
    for (const char c : value) {
      if (c == '\\' || c == '\'') quoted += '\\';
      quoted += c;
    }
    out += (out.empty() ? "" : " ") + std::string(key) + "='" + quoted + "'";
  };
  for (const PQconninfoOption* option = options; option->keyword != nullptr; ++option) {
    if (std::strcmp(option->keyword, "dbname") == 0 || option->val == nullptr) continue;
    append(option->keyword, option->val);
  }
  PQconninfoFree(options);
  append("dbname", dbname);
  return out;
}

// The template's name carries a fingerprint of every migration this build
// knows, so a server that outlives a run (PAYQ_TEST_DSN) never hands out a
// copy migrated by other code.
std::string template_name() {
  std::uint64_t hash = 1469598103934665603ull;  // FNV-1a 64 over versions and checksums
  const auto mix = [&](std::uint64_t value) {
    for (int byte = 0; byte < 8; ++byte) {
      hash ^= (value >> (8 * byte)) & 0xff;
      hash *= 1099511628211ull;
    }
  };
  for (const MigrationInfo& info : migrations_known()) {
    mix(static_cast<std::uint64_t>(info.version));
    mix(info.checksum);
  }
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(hash));
  return std::string("payq_template_") + hex;
}

bool template_ready(pqxx::nontransaction& work, const std::string& name) {
  return !work.exec_params("SELECT 1 FROM pg_database WHERE datname = $1 AND datistemplate", name).empty();
}

// Makes sure the migrated template exists; returns false if this role may
// not create databases. Several processes may call it at once: one builds
// the template under an advisory lock while the others wait for it.
bool template_ensure(const std::string& dsn, const std::string& name) {
  pqxx::connection admin(dsn);
  pqxx::nontransaction work(admin);
  if (template_ready(work, name)) return true;
  work.exec_params("SELECT pg_advisory_lock($1, $2)", template_lock_key_1, template_lock_key_2);
  try {
    if (!template_ready(work, name)) {
      // A half-built template is one whose builder died: start it again.
      work.exec("DROP DATABASE IF EXISTS " + work.quote_name(name));
      work.exec("CREATE DATABASE " + work.quote_name(name));
      {
        DatabaseOptions options;
        options.dsn = dsn_with_dbname(dsn, name);
        options.schema = template_schema;
        Database database(options);
        migrate(database);
      }
      // No connections from now on: CREATE DATABASE ... TEMPLATE refuses a
      // template that someone is connected to.
      work.exec("ALTER DATABASE " + work.quote_name(name) + " WITH IS_TEMPLATE true ALLOW_CONNECTIONS false");
    }
  } catch (const pqxx::insufficient_privilege&) {
    work.exec_params("SELECT pg_advisory_unlock($1, $2)", template_lock_key_1, template_lock_key_2);
    return false;
  }
  work.exec_params("SELECT pg_advisory_unlock($1, $2)", template_lock_key_1, template_lock_key_2);
  return true;
}

// The template's name, or "" when each test must migrate a schema of its
// own instead (a server whose role may not create databases). Decided once
// per process.
const std::string& template_for_run() {
  static std::once_flag once;
  static std::string name;
  std::call_once(once, [] {
    name = template_name();
    if (!template_ensure(cluster_dsn(), name)) {
      std::cerr << "payq_tests: this role may not create databases; every test migrates a schema of its own\n";
      name.clear();
    }
  });
  return name;
}

// "CREATE DATABASE ... TEMPLATE" with the copy strategy that suits a small
// template: FILE_COPY copies its files (about 30 ms here) where PostgreSQL
// 15's default WAL_LOG writes every page to the WAL (about 180 ms).
void database_create_from(const std::string& dsn, const std::string& name, const std::string& template_db) {
  pqxx::connection admin(dsn);
  pqxx::nontransaction work(admin);
  const bool file_copy_option = admin.server_version() >= 150000;
  work.exec("CREATE DATABASE " + work.quote_name(name) + " TEMPLATE " + work.quote_name(template_db) +
            (file_copy_option ? " STRATEGY FILE_COPY" : ""));
}

void database_drop(const std::string& dsn, const std::string& name) {
  pqxx::connection admin(dsn);
  pqxx::nontransaction work(admin);
  // FORCE: a backend whose client has just closed may still be exiting.
  const bool force_option = admin.server_version() >= 130000;
  work.exec("DROP DATABASE IF EXISTS " + work.quote_name(name) + (force_option ? " WITH (FORCE)" : ""));
}

std::string database_unique() {
  static std::atomic<int> counter{0};
  return "payq_t_" + std::to_string(getpid()) + "_" + std::to_string(counter.fetch_add(1));
}

// The file ctest's fixture writes: the shared cluster's DSN, then its home.
struct SharedCluster {
  std::string dsn;
  std::string home;
};

SharedCluster shared_cluster_read(const std::string& path) {
  std::ifstream in(path);
  SharedCluster cluster;
  if (!std::getline(in, cluster.dsn) || !std::getline(in, cluster.home) || cluster.dsn.empty()) {
    throw std::runtime_error(std::string(cluster_file_env) + "=" + path +
                             " names no running cluster: run the tests through ctest, whose fixture test "
                             "payq_cluster_up starts it, or unset it so that this process starts its own");
  }
  return cluster;
}

EmbeddedOptions throwaway_options(const std::string& home) {
  EmbeddedOptions options;
  options.home = home;
  options.durable = false;
  return options;
}

// Where throwaway clusters go: /dev/shm when it has room, else /tmp. In
// memory, CREATE DATABASE and migrations do not queue behind other disk
// writers: measured on the 2-core VM while other builds ran, a copy of the
// template took 15-20 ms there against 360-460 ms in /tmp.
std::string throwaway_base() {
  constexpr unsigned long long room_min_bytes = 2ull << 30;
  struct statvfs shm {};
  if (statvfs("/dev/shm", &shm) == 0 && access("/dev/shm", W_OK) == 0 &&
      static_cast<unsigned long long>(shm.f_bavail) * shm.f_frsize >= room_min_bytes) {
    return "/dev/shm";
  }
  return "/tmp";
}

// A new directory for a throwaway cluster, reachable by the server's user
// (as root the server runs as another user).
std::string throwaway_home(const char* prefix) {
  std::string templ = throwaway_base() + "/" + prefix + "-XXXXXX";
  if (mkdtemp(templ.data()) == nullptr) throw std::runtime_error(std::string("mkdtemp: ") + std::strerror(errno));
  chmod(templ.c_str(), 0755);
  return templ;
}

// A failed run keeps its own cluster's server log, which would go with the
// cluster's home.
void server_log_keep() {
  std::error_code ec;
  const fs::path kept = fs::path(failed_logs_dir) / ("server-" + std::to_string(getpid()) + ".log");
  fs::create_directories(kept.parent_path(), ec);
  fs::copy_file(fs::path(g_home) / "log" / "server.log", kept, fs::copy_options::overwrite_existing, ec);
  if (!ec) std::cerr << "payq_tests: tests failed; the test cluster's server log is kept in " << kept << "\n";
}

class ClusterEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    if (const char* dsn = std::getenv("PAYQ_TEST_DSN"); dsn && *dsn) {
      g_dsn = dsn;
      return;
    }
    if (const char* file = std::getenv(cluster_file_env); file && *file) {
      const SharedCluster cluster = shared_cluster_read(file);
      g_dsn = cluster.dsn;
      g_home = cluster.home;
      return;
    }
    g_home = throwaway_home("payq-test");
    server_ = std::make_unique<EmbeddedServer>(throwaway_options(g_home));
    // Cleans up even if this process is killed.
    server_->remove_when_process_exits();
    g_dsn = server_->up();
  }

  void TearDown() override {
    if (!server_) return;
    server_->down();
    if (::testing::UnitTest::GetInstance()->Failed()) server_log_keep();
    std::error_code ec;
    fs::remove_all(g_home, ec);
  }


 private:
  std::unique_ptr<EmbeddedServer> server_;
};

// Waits until process `pid` has ended, at most `keeper_wait_max`: on its
// pidfd where the kernel has them, else by checking it every second.
void wait_for_exit_of(pid_t pid) {
  const auto deadline = std::chrono::steady_clock::now() + keeper_wait_max;
  const long pidfd = syscall(SYS_pidfd_open, pid, 0);
  while (std::chrono::steady_clock::now() < deadline) {
    if (pidfd >= 0) {
      pollfd waiting{static_cast<int>(pidfd), POLLIN, 0};
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      const int ready = poll(&waiting, 1, static_cast<int>(std::min<long long>(left.count(), 3'600'000)));
      if (ready > 0) return;
      if (ready < 0 && errno != EINTR) break;
    } else {
      if (kill(pid, 0) != 0 && errno == ESRCH) return;
      std::this_thread::sleep_for(keeper_poll_interval);
    }
  }
}

// ctest's cleanup test (payq_cluster_down) stops the shared cluster after
// the run. For a ctest that is killed first, a keeper process lives as long
// as ctest does; when it ends, the watchdog that
// remove_when_process_exits() left behind stops the server and deletes its
// home. The keeper lets go of ctest's output pipe, or ctest would wait for it.
void keeper_start(const EmbeddedServer& server) {
  const pid_t ctest = getppid();
  std::cout.flush();
  std::cerr.flush();
  const pid_t pid = fork();
  if (pid < 0) throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
  if (pid > 0) return;
  setsid();
  const int null_fd = open("/dev/null", O_RDWR);
  for (int fd = 0; fd <= 2; ++fd) dup2(null_fd, fd);
  const long fd_max = sysconf(_SC_OPEN_MAX);
  for (int fd = 3; fd < fd_max && fd < 65536; ++fd) close(fd);
  try {
    server.remove_when_process_exits();
  } catch (...) {
    _exit(1);
  }
  wait_for_exit_of(ctest);
  _exit(0);
}

// payq_tests --payq_cluster=up: ctest's fixture test. Starts a cluster for
// every test process of the run, builds the template, and writes the DSN
// and home to PAYQ_TEST_CLUSTER_FILE.
int cluster_up(const std::string& file) {
  const std::string home = throwaway_home("payq-ctest");
  EmbeddedServer server(throwaway_options(home));
  const std::string dsn = server.up();
  keeper_start(server);
  template_ensure(dsn, template_name());
  const std::string partial = file + ".partial";
  {
    std::ofstream out(partial, std::ios::trunc);
    out << dsn << '\n' << home << '\n';
    if (!out) throw std::runtime_error("cannot write " + partial);
  }
  fs::rename(partial, file);
  std::cout << "payq test cluster up: " << home << " (server log: " << home << "/log)\n";
  return 0;
}

// payq_tests --payq_cluster=down: ctest's cleanup test. Keeps the server's
// log next to the cluster file (the home goes), then stops and removes it.
int cluster_down(const std::string& file) {
  std::ifstream in(file);
  std::string dsn, home;
  if (!std::getline(in, dsn) || !std::getline(in, home) || home.empty()) {
    std::cout << "no payq test cluster to stop\n";
    return 0;
  }
  in.close();
  std::error_code ec;
  const fs::path logs = fs::path(file).parent_path() / "payq-test-cluster-log";
  fs::remove_all(logs, ec);
  fs::copy(fs::path(home) / "log", logs, fs::copy_options::recursive, ec);
  EmbeddedServer(throwaway_options(home)).down();
  fs::remove_all(home, ec);
  fs::remove(file, ec);
  std::cout << "payq test cluster down; its server log is in " << logs.string() << "\n";
  return 0;
}

}  // namespace

const std::string& cluster_dsn() { return g_dsn; }
const std::string& cluster_home() { return g_home; }

std::string schema_unique(const std::string& prefix) {
  static std::atomic<int> counter{0};
  return prefix + "_" + std::to_string(getpid()) + "_" + std::to_string(counter.fetch_add(1));
}

std::unique_ptr<Database> DbTest::open_database() const {
  DatabaseOptions options;
  options.dsn = dsn;
  options.schema = schema;
  return std::make_unique<Database>(options);
}

void DbTest::SetUp() {
  const std::string& template_db = template_for_run();
  if (template_db.empty()) {
    dsn = cluster_dsn();
    schema = schema_unique();
    db = open_database();
    migrate(*db);
    return;
  }
  database = database_unique();
  database_create_from(cluster_dsn(), database, template_db);
  dsn = dsn_with_dbname(cluster_dsn(), database);
  schema = template_schema;
  db = open_database();
}

void DbTest::TearDown() {
  if (!db) return;
  if (database.empty()) {
    db->transact([&](Transaction& tx) { tx.exec_sql("DROP SCHEMA IF EXISTS @schema@ CASCADE"); });
    db.reset();
    return;
  }
  db.reset();
  database_drop(cluster_dsn(), database);
}

}  // namespace payq::testing

namespace {

// --payq_cluster=up|down, for ctest's fixture tests; anything else: the tests.
bool cluster_command(const std::string& argument, int& status) {
  const std::string prefix = "--payq_cluster=";
  if (argument.rfind(prefix, 0) != 0) return false;
  const char* file = std::getenv("PAYQ_TEST_CLUSTER_FILE");
  if (file == nullptr || *file == '\0') {
    std::cerr << argument << " needs PAYQ_TEST_CLUSTER_FILE\n";
    status = 64;
    return true;
  }
  const std::string verb = argument.substr(prefix.size());
  try {
    if (verb == "up") {
      status = payq::testing::cluster_up(file);
    } else if (verb == "down") {
      status = payq::testing::cluster_down(file);
    } else {
      std::cerr << "unknown " << argument << " (up or down)\n";
      status = 64;
    }
  } catch (const std::exception& e) {
    std::cerr << argument << ": " << e.what() << "\n";
    status = 1;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (int status = 0; argc == 2 && cluster_command(argv[1], status)) return status;
  ::testing::InitGoogleTest(&argc, argv);
  ::testing::AddGlobalTestEnvironment(new payq::testing::ClusterEnvironment);
  return RUN_ALL_TESTS();
}

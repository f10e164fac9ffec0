// Running PostgreSQL's command-line tools, optionally as another user.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

namespace payq::detail {

struct UserIdentity {
  std::string name;
  uid_t uid;
  gid_t gid;
};

std::optional<UserIdentity> user_lookup(const std::string& name);

struct CommandResult {
  int exit_code;       // -1 when the command died from a signal
  std::string output;  // stdout and stderr together
};

// Runs argv[0] (an absolute path) with cwd "/", stdin from /dev/null, and
// collects its output. As root with `as_user`, drops to that user first.
CommandResult command_run(const std::vector<std::string>& argv, const std::optional<UserIdentity>& as_user);

}  // namespace payq::detail

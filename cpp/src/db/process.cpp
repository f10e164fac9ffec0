#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "payq/error.hpp"
#include "db/process_internal.hpp"

namespace payq::detail {

std::optional<UserIdentity> user_lookup(const std::string& name) {
  std::vector<char> buffer(16384);
  passwd entry{};
  passwd* found = nullptr;
  if (getpwnam_r(name.c_str(), &entry, buffer.data(), buffer.size(), &found) != 0 || found == nullptr) {
    return std::nullopt;
  }
  return UserIdentity{name, found->pw_uid, found->pw_gid};
}

CommandResult command_run(const std::vector<std::string>& argv, const std::optional<UserIdentity>& as_user) {
  // Everything the child needs is built before fork: after fork in a
  // threaded process only async-signal-safe calls are allowed.
  std::vector<char*> args;
  args.reserve(argv.size() + 1);
  for (const auto& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);

  int pipe_fds[2];
  if (pipe2(pipe_fds, O_CLOEXEC) != 0) throw Error(std::string("pipe failed: ") + std::strerror(errno));

  const pid_t pid = fork();
  if (pid < 0) {
    close(pipe_fds[0]);
    close(pipe_fds[1]);
    throw Error(std::string("fork failed: ") + std::strerror(errno));
  }
  if (pid == 0) {
    int null_fd = open("/dev/null", O_RDONLY);
    if (null_fd >= 0) dup2(null_fd, 0);
    dup2(pipe_fds[1], 1);
    dup2(pipe_fds[1], 2);
    if (chdir("/") != 0) _exit(126);
    if (as_user) {
      if (setgroups(0, nullptr) != 0 || setgid(as_user->gid) != 0 || setuid(as_user->uid) != 0) _exit(126);
    }
    execv(args[0], args.data());
    _exit(127);
  }
  close(pipe_fds[1]);
  std::string output;
  char chunk[4096];
  while (true) {
    ssize_t n = read(pipe_fds[0], chunk, sizeof chunk);
    if (n > 0) {
      output.append(chunk, static_cast<std::size_t>(n));
    } else if (n == 0 || errno != EINTR) {
      break;
    }
  }
  close(pipe_fds[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  int exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  if (exit_code == 127) output += "\n(could not execute " + argv[0] + ")";
  return {exit_code, output};
}

}  // namespace payq::detail

// A small real HTTP server for the HTTP tests: POSIX sockets on 127.0.0.1,
// a thread per connection, one request per connection (every answer says
// "Connection: close"), each request answered as the test's handler says:
// a response, a closed connection, or silence until the server stops.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace payq::testing {

// Every wait on the server ends after this long, failing the test.
inline constexpr std::chrono::milliseconds http_test_wait_bound{30'000};

struct TestRequest {
  std::string method;
  std::string target;
  std::vector<std::pair<std::string, std::string>> headers;  // names in lower case
  std::string body;

  std::string header(const std::string& name_lower) const {
    for (const auto& [name, value] : headers) {
      if (name == name_lower) return value;
    }
    return {};
  }
};

struct TestReply {
  enum class Action { respond, close, stall };
  Action action = Action::respond;
  int status = 200;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  // When non-zero, the body is this many bytes of 'x', streamed in chunks
  // (never held in memory at once) for as long as the client reads.
  std::size_t body_filler_bytes = 0;

  static TestReply json(int status, std::string body, std::vector<std::pair<std::string, std::string>> headers = {}) {
    TestReply r;
    r.status = status;
    r.body = std::move(body);
    r.headers = std::move(headers);
    r.headers.emplace_back("Content-Type", "application/json");
    return r;
  }
  // Reads the request, then closes the connection without a word.
  static TestReply close_without_reply() {
    TestReply r;
    r.action = Action::close;
    return r;
  }
  // Reads the request, then says nothing until the server stops.
  static TestReply stall() {
    TestReply r;
    r.action = Action::stall;
    return r;
  }
};

class TestHttpServer {
 public:
  using Handler = std::function<TestReply(const TestRequest&)>;
  // silent: accept connections but never read or write (a TLS handshake
  // that never completes).
  enum class Mode { http, silent };

  explicit TestHttpServer(Handler handler, Mode mode = Mode::http) : handler_(std::move(handler)), mode_(mode) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (listen_fd_ < 0) throw std::runtime_error("socket() failed");
    const int on = 1;
    ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = 0;
    if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
        ::listen(listen_fd_, 128) != 0) {
      ::close(listen_fd_);
      throw std::runtime_error("bind()/listen() on 127.0.0.1 failed");
    }
    socklen_t length = sizeof address;
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&address), &length);
    port_ = ntohs(address.sin_port);
    if (::pipe2(wake_, O_CLOEXEC) != 0) throw std::runtime_error("pipe2() failed");
    accept_thread_ = std::thread([this] { accept_loop(); });
  }

  ~TestHttpServer() {
    {
      std::lock_guard<std::mutex> guard(mutex_);
      stopping_ = true;
      for (int fd : open_fds_) ::shutdown(fd, SHUT_RDWR);
    }
    cv_.notify_all();
    const char byte = 0;
    [[maybe_unused]] const auto written = ::write(wake_[1], &byte, 1);
    accept_thread_.join();
    std::vector<std::thread> threads;
    {
      std::lock_guard<std::mutex> guard(mutex_);
      threads = std::move(threads_);
    }
    for (auto& thread : threads) thread.join();
    ::close(listen_fd_);
    ::close(wake_[0]);
    ::close(wake_[1]);
  }

  TestHttpServer(const TestHttpServer&) = delete;
  TestHttpServer& operator=(const TestHttpServer&) = delete;

  int port() const { return port_; }
  std::string url(const std::string& path = "/") const { return "http://127.0.0.1:" + std::to_string(port_) + path; }
  std::string https_url(const std::string& path = "/") const {
    return "https://127.0.0.1:" + std::to_string(port_) + path;
  }

  std::vector<TestRequest> requests() const {
    std::lock_guard<std::mutex> guard(mutex_);
    return requests_;
  }
  std::size_t request_count(const std::string& method = {}) const {
    std::lock_guard<std::mutex> guard(mutex_);
    return static_cast<std::size_t>(std::count_if(requests_.begin(), requests_.end(), [&](const TestRequest& r) {
      return method.empty() || r.method == method;
    }));
  }
  bool wait_requests(std::size_t count, std::chrono::milliseconds bound = http_test_wait_bound) {
    std::unique_lock<std::mutex> lock(mutex_);
    return cv_.wait_for(lock, bound, [&] { return requests_.size() >= count; });
  }
  bool wait_connections(std::size_t count, std::chrono::milliseconds bound = http_test_wait_bound) {
    std::unique_lock<std::mutex> lock(mutex_);
    return cv_.wait_for(lock, bound, [&] { return connection_count_ >= count; });
  }

 private:
  void accept_loop() {
    for (;;) {
      pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_[0], POLLIN, 0}};
      if (::poll(fds, 2, -1) < 0) continue;
      if (fds[1].revents != 0) return;
      const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      std::lock_guard<std::mutex> guard(mutex_);
      if (stopping_) {
        ::close(fd);
        return;
      }
      open_fds_.insert(fd);
      ++connection_count_;
      cv_.notify_all();
      threads_.emplace_back([this, fd] { connection_run(fd); });
    }
  }

  void connection_run(int fd) {
    if (mode_ == Mode::silent) {
      stall_until_stop();
    } else {
      TestRequest request;
      if (request_read(fd, request)) {
        {
          std::lock_guard<std::mutex> guard(mutex_);
          requests_.push_back(request);
        }
        cv_.notify_all();
        reply(fd, handler_(request));
      }
    }
    std::lock_guard<std::mutex> guard(mutex_);
    open_fds_.erase(fd);
    ::close(fd);
  }

  void stall_until_stop() {
    std::unique_lock<std::mutex> lock(mutex_);
    cv_.wait_for(lock, 2 * http_test_wait_bound, [&] { return stopping_; });
  }

  static bool request_read(int fd, TestRequest& request) {
    std::string data;
    std::size_t header_end = std::string::npos;
    char buffer[16 * 1024];
    while (header_end == std::string::npos) {
      const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
      if (n <= 0) return false;
      data.append(buffer, static_cast<std::size_t>(n));
      header_end = data.find("\r\n\r\n");
      if (data.size() > 1024 * 1024) return false;
    }
    std::size_t line_end = data.find("\r\n");
    const std::string request_line = data.substr(0, line_end);
    const std::size_t space1 = request_line.find(' ');
    const std::size_t space2 = request_line.find(' ', space1 + 1);
    request.method = request_line.substr(0, space1);
    request.target = request_line.substr(space1 + 1, space2 - space1 - 1);
    std::size_t content_length = 0;
    for (std::size_t at = line_end + 2; at < header_end;) {
      const std::size_t end = data.find("\r\n", at);
      const std::string line = data.substr(at, end - at);
      at = end + 2;
      const std::size_t colon = line.find(':');
      if (colon == std::string::npos) continue;
      std::string name = line.substr(0, colon);
      std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
      std::string value = line.substr(colon + 1);
      value.erase(0, value.find_first_not_of(' '));
      if (name == "content-length") content_length = std::stoul(value);
      request.headers.emplace_back(std::move(name), std::move(value));
    }
    request.body = data.substr(header_end + 4);
    while (request.body.size() < content_length) {
      const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
      if (n <= 0) return false;
      request.body.append(buffer, static_cast<std::size_t>(n));
    }
    return true;
  }

  static bool send_all(int fd, const char* data, std::size_t size) {
    while (size > 0) {
      const ssize_t n = ::send(fd, data, size, MSG_NOSIGNAL);
      if (n <= 0) return false;
      data += n;
      size -= static_cast<std::size_t>(n);
    }
    return true;
  }

  void reply(int fd, const TestReply& r) {
    if (r.action == TestReply::Action::close) return;
    if (r.action == TestReply::Action::stall) {
      stall_until_stop();
      return;
    }
    const std::size_t body_bytes = r.body_filler_bytes > 0 ? r.body_filler_bytes : r.body.size();
    std::string head = "HTTP/1.1 " + std::to_string(r.status) + " Test\r\n";
    for (const auto& [name, value] : r.headers) head += name + ": " + value + "\r\n";
    head += "Content-Length: " + std::to_string(body_bytes) + "\r\nConnection: close\r\n\r\n";
    if (!send_all(fd, head.data(), head.size())) return;
    if (r.body_filler_bytes == 0) {
      send_all(fd, r.body.data(), r.body.size());
      return;
    }
    const std::string chunk(64 * 1024, 'x');
    for (std::size_t sent = 0; sent < body_bytes; sent += chunk.size()) {
      if (!send_all(fd, chunk.data(), std::min(chunk.size(), body_bytes - sent))) return;
    }
  }

  Handler handler_;
  Mode mode_;
  int listen_fd_ = -1;
  int wake_[2] = {-1, -1};
  int port_ = 0;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::set<int> open_fds_;
  std::size_t connection_count_ = 0;
  std::vector<TestRequest> requests_;
  std::vector<std::thread> threads_;
  std::thread accept_thread_;
};

// A port on 127.0.0.1 where nothing listens: bound, then closed, so a
// connection there is refused.
inline int closed_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address);
  socklen_t length = sizeof address;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  ::close(fd);
  return ntohs(address.sin_port);
}

}  // namespace payq::testing

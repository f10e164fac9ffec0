#include "bench_support.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <thread>
#include <vector>

namespace payq::bench {

Cluster::Cluster(bool durable) {
  char templ[] = "/tmp/payq-bench-XXXXXX";
  if (mkdtemp(templ) == nullptr) throw std::runtime_error("mkdtemp failed");
  chmod(templ, 0755);
  home_ = templ;
  EmbeddedOptions options;
  options.home = home_;
  options.durable = durable;
  server_ = std::make_unique<EmbeddedServer>(options);
  server_->remove_when_process_exits();
  dsn_ = server_->up();
}

Cluster::~Cluster() {
  try {
    server_->down();
  } catch (...) {
  }
  std::error_code ec;
  std::filesystem::remove_all(home_, ec);
}

RunResult run_clients(int client_count, std::chrono::milliseconds duration,
                      const std::function<std::function<bool()>(int)>& make_client) {
  std::atomic<bool> stop{false};
  std::atomic<std::int64_t> operations{0}, business_errors{0};
  std::vector<std::function<bool()>> clients;
  for (int i = 0; i < client_count; ++i) clients.push_back(make_client(i));
  std::vector<std::thread> threads;
  const auto started = std::chrono::steady_clock::now();
  for (int i = 0; i < client_count; ++i) {
    threads.emplace_back([&, i] {
      std::int64_t done = 0, errors = 0;
      while (!stop.load(std::memory_order_relaxed)) {
        if (clients[static_cast<std::size_t>(i)]()) {
          ++done;
        } else {
          ++errors;
        }
      }
      operations += done;
      business_errors += errors;
    });
  }
  std::this_thread::sleep_for(duration);
  stop = true;
  for (auto& t : threads) t.join();
  RunResult result;
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  result.operations = operations;
  result.business_errors = business_errors;
  return result;
}

std::int64_t resident_kib() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6));
  }
  return -1;
}

double rounded(double value, int digits) {
  const double scale = std::pow(10.0, digits);
  return std::round(value * scale) / scale;
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const std::size_t middle = values.size() / 2;
  return values.size() % 2 ? values[middle] : (values[middle - 1] + values[middle]) / 2;
}

}  // namespace payq::bench

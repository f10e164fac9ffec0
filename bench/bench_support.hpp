// Shared by payq's C++ benchmarks: a throwaway cluster, clients on threads,
// and resident-memory readings.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "payq/embedded.hpp"

namespace payq::bench {

// A private cluster in a temp directory, removed at exit (even on a kill).
class Cluster {
 public:
  explicit Cluster(bool durable);
  ~Cluster();
  const std::string& dsn() const { return dsn_; }

 private:
  std::string home_;
  std::unique_ptr<EmbeddedServer> server_;
  std::string dsn_;
};

struct RunResult {
  std::int64_t operations = 0;
  std::int64_t business_errors = 0;  // e.g. insufficient funds, counted, not fatal
  double seconds = 0;
  double per_second() const { return seconds > 0 ? static_cast<double>(operations) / seconds : 0; }
};

// Runs `client(index, stop)` on `client_count` threads for `duration`; each
// call of `operation(client_index)` is one operation; returns true when it
// succeeded, false for a business error.
RunResult run_clients(int client_count, std::chrono::milliseconds duration,
                      const std::function<std::function<bool()>(int)>& make_client);

std::int64_t resident_kib();

// `value` rounded to `digits` decimals, for the JSON figures.
double rounded(double value, int digits);

// The median of `values` (the mean of the middle two for an even count).
double median(std::vector<double> values);

}  // namespace payq::bench

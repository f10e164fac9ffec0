#include "worker/reconnect_policy.hpp"

#include <string>

#include "payq/error.hpp"

namespace payq {

std::chrono::milliseconds ReconnectPolicy::delay(int failure_count) const {
  std::chrono::milliseconds delay = min;
  // Bounded twice: by the failure count and by reaching `max` (at most 22
  // doublings between the bounds' 1 ms and one hour).
  for (int doubling = 1; doubling < failure_count && delay < max; ++doubling) delay *= 2;
  return delay < max ? delay : max;
}

int ReconnectPolicy::failure_count_max() const {
  int count = 1;
  for (std::chrono::milliseconds delay = min; delay < max; delay *= 2) ++count;
  return count;
}

void ReconnectPolicy::validate(const char* owner) const {
  auto fail = [owner](const std::string& message) {
    throw InvalidArgument(std::string(owner) + " reconnect policy: " + message);
  };
  if (min < reconnect_delay_min) fail("min must be at least " + std::to_string(reconnect_delay_min.count()) + " ms");
  if (max < min) fail("max must not be below min");
  if (max > reconnect_delay_max) fail("max must be at most " + std::to_string(reconnect_delay_max.count()) + " ms");
}

}  // namespace payq

// How long a part of the worker waits before it tries the database again:
// one policy shared by the claim loop, the listener and maintenance.
#pragma once

#include <chrono>

namespace payq {

// After the n-th failure in a row the delay is `min` doubled n-1 times, at
// most `max`: an outage is not hammered, and a recovery is noticed within
// `max`.
struct ReconnectPolicy {
  std::chrono::milliseconds min{100};
  std::chrono::milliseconds max{30'000};

  // The delay after `failure_count` failures in a row (below 1 counts as 1).
  std::chrono::milliseconds delay(int failure_count) const;
  // The count past which the delay stays at `max`: callers cap their
  // failure counts there, so a long outage cannot overflow them.
  int failure_count_max() const;
  // Throws InvalidArgument naming `owner` when min is below 1 ms, max below
  // min, or max above reconnect_delay_max.
  void validate(const char* owner) const;
};

// Bounds, named once: a policy is checked against them.
inline constexpr std::chrono::milliseconds reconnect_delay_min{1};
inline constexpr std::chrono::milliseconds reconnect_delay_max{3'600'000};

}  // namespace payq

// Retry delays for tasks: exponential backoff with full jitter and a cap.
// The ceiling of attempt n is base * multiplier^(n-1), capped at
// delay_ms_max; the delay is drawn uniformly from [0, ceiling]. Full jitter
// (rather than a fixed or half-jittered delay) spreads the retries of tasks
// that failed together, say during a provider outage, so they do not return
// together and fail together again.
#pragma once

#include <cstdint>

namespace payq {

// A retry delay longer than a year is a misconfiguration, not a policy, and
// keeping every delay this small keeps "now + delay" far from overflowing a
// millisecond or microsecond timestamp.
inline constexpr std::int64_t backoff_delay_ms_max_limit = 366LL * 24 * 60 * 60 * 1000;

struct BackoffPolicy {
  // The ceiling of the first retry.
  std::int64_t delay_ms_base = 1000;
  // The ceiling no retry exceeds, however many attempts came before.
  std::int64_t delay_ms_max = 3'600'000;
  // How much the ceiling grows per attempt; 1 keeps it at delay_ms_base.
  int multiplier = 2;
};

// InvalidArgument for delay_ms_base <= 0, delay_ms_max < delay_ms_base,
// delay_ms_max > backoff_delay_ms_max_limit, or multiplier < 1.
void backoff_validate(const BackoffPolicy& policy);

// min(delay_ms_max, delay_ms_base * multiplier^(attempt - 1)), exact and
// without overflow for every attempt. `attempt` counts from 1 (the first
// retry follows attempt 1). InvalidArgument for attempt < 1 or an invalid
// policy.
std::int64_t backoff_ceiling_ms(const BackoffPolicy& policy, int attempt);

// The delay before retrying after `attempt`: uniform in [0, ceiling],
// chosen by `random_value`, which should be uniform over all 64-bit values.
// The mapping is monotonic: 0 gives 0 and UINT64_MAX gives the ceiling.
// Deterministic, so tests and callers with their own randomness can use it.
std::int64_t backoff_delay_ms(const BackoffPolicy& policy, int attempt, std::uint64_t random_value);

// As above, with the random value drawn from a per-thread generator seeded
// from std::random_device, so threads neither share state nor lock.
std::int64_t backoff_delay_ms(const BackoffPolicy& policy, int attempt);

}  // namespace payq

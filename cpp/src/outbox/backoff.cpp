#include "payq/backoff.hpp"

#include <algorithm>
#include <random>
#include <stdexcept>
#include <string>

#include "payq/error.hpp"

namespace payq {
namespace {

// GCC and Clang's 128-bit integer; __extension__ keeps -Wpedantic quiet.
__extension__ typedef unsigned __int128 UInt128;

// A positive ceiling at least doubles on every step that does not reach the
// cap, and 2^63 passes any int64 cap, so no more steps than this are needed.
constexpr int ceiling_growth_steps_max = 63;

void attempt_validate(int attempt) {
  if (attempt < 1) throw InvalidArgument("backoff attempt counts from 1, got " + std::to_string(attempt));
}

std::mt19937_64& thread_generator() {
  thread_local std::mt19937_64 generator = [] {
    std::random_device device;
    std::seed_seq seed{device(), device(), device(), device()};
    return std::mt19937_64(seed);
  }();
  return generator;
}

}  // namespace

void backoff_validate(const BackoffPolicy& policy) {
  if (policy.delay_ms_base <= 0) {
    throw InvalidArgument("backoff delay_ms_base must be positive, got " + std::to_string(policy.delay_ms_base));
  }
  if (policy.delay_ms_max < policy.delay_ms_base) {
    throw InvalidArgument("backoff delay_ms_max " + std::to_string(policy.delay_ms_max) +
                          " is below delay_ms_base " + std::to_string(policy.delay_ms_base));
  }
  if (policy.delay_ms_max > backoff_delay_ms_max_limit) {
    throw InvalidArgument("backoff delay_ms_max " + std::to_string(policy.delay_ms_max) + " exceeds the limit of " +
                          std::to_string(backoff_delay_ms_max_limit) + " ms (a year)");
  }
  if (policy.multiplier < 1) {
    throw InvalidArgument("backoff multiplier must be at least 1, got " + std::to_string(policy.multiplier));
  }
}

std::int64_t backoff_ceiling_ms(const BackoffPolicy& policy, int attempt) {
  backoff_validate(policy);
  attempt_validate(attempt);
  if (policy.multiplier == 1) return policy.delay_ms_base;
  std::int64_t ceiling_ms = policy.delay_ms_base;
  const int growth_steps = std::min(attempt - 1, ceiling_growth_steps_max);
  for (int step = 0; step < growth_steps; ++step) {
    // Dividing first asks "would the product pass the cap?" without forming it.
    if (ceiling_ms > policy.delay_ms_max / policy.multiplier) return policy.delay_ms_max;
    ceiling_ms *= policy.multiplier;
  }
  return std::min(ceiling_ms, policy.delay_ms_max);
}

std::int64_t backoff_delay_ms(const BackoffPolicy& policy, int attempt, std::uint64_t random_value) {
  const std::int64_t ceiling_ms = backoff_ceiling_ms(policy, attempt);
  // Scaling by multiply-and-shift rather than `%` uses the high bits, which
  // are the good ones of weak generators, and keeps the mapping monotonic.
  // The bias is at most (ceiling + 1) / 2^64: nothing for delays that fit
  // in a year of milliseconds.
  const auto outcome_count = static_cast<UInt128>(ceiling_ms) + 1;
  const auto delay_ms = static_cast<std::int64_t>((UInt128{random_value} * outcome_count) >> 64);
  if (delay_ms < 0 || delay_ms > ceiling_ms) throw std::logic_error("backoff delay left [0, ceiling]");
  return delay_ms;
}

std::int64_t backoff_delay_ms(const BackoffPolicy& policy, int attempt) {
  return backoff_delay_ms(policy, attempt, thread_generator()());
}

}  // namespace payq

#include "payq/backoff.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "payq/error.hpp"

namespace payq {
namespace {

constexpr std::uint64_t uint64_max = std::numeric_limits<std::uint64_t>::max();
constexpr int int_max = std::numeric_limits<int>::max();

BackoffPolicy policy_of(std::int64_t delay_ms_base, std::int64_t delay_ms_max, int multiplier) {
  BackoffPolicy policy;
  policy.delay_ms_base = delay_ms_base;
  policy.delay_ms_max = delay_ms_max;
  policy.multiplier = multiplier;
  return policy;
}

void expect_invalid_policy(const BackoffPolicy& policy, const std::string& fragment) {
  try {
    backoff_validate(policy);
    ADD_FAILURE() << "accepted a policy that should fail with \"" << fragment << "\"";
  } catch (const InvalidArgument& error) {
    EXPECT_NE(std::string(error.what()).find(fragment), std::string::npos) << error.what();
  }
}

// Policies at the edges of what validation allows.
std::vector<BackoffPolicy> edge_policies() {
  return {
      BackoffPolicy{},
      policy_of(1, 1, 1),
      policy_of(1, backoff_delay_ms_max_limit, 2),
      policy_of(backoff_delay_ms_max_limit, backoff_delay_ms_max_limit, int_max),
      policy_of(1, backoff_delay_ms_max_limit, int_max),
      policy_of(7, 1'000'003, 3),
      policy_of(250, 60'000, 10),
  };
}

// ---- validation

TEST(Backoff, DefaultPolicyIsValid) { EXPECT_NO_THROW(backoff_validate(BackoffPolicy{})); }

TEST(Backoff, ValidateRejectsEachBadField) {
  expect_invalid_policy(policy_of(0, 1000, 2), "delay_ms_base must be positive");
  expect_invalid_policy(policy_of(-5, 1000, 2), "delay_ms_base must be positive");
  expect_invalid_policy(policy_of(1000, 999, 2), "delay_ms_max 999 is below delay_ms_base 1000");
  expect_invalid_policy(policy_of(1000, backoff_delay_ms_max_limit + 1, 2), "exceeds the limit");
  expect_invalid_policy(policy_of(1000, 2000, 0), "multiplier must be at least 1");
  expect_invalid_policy(policy_of(1000, 2000, -2), "multiplier must be at least 1");
}

TEST(Backoff, EveryEntryPointValidates) {
  const BackoffPolicy bad = policy_of(0, 1000, 2);
  EXPECT_THROW(backoff_ceiling_ms(bad, 1), InvalidArgument);
  EXPECT_THROW(backoff_delay_ms(bad, 1, 0), InvalidArgument);
  EXPECT_THROW(backoff_delay_ms(bad, 1), InvalidArgument);
}

TEST(Backoff, AttemptCountsFromOne) {
  const BackoffPolicy policy;
  EXPECT_THROW(backoff_ceiling_ms(policy, 0), InvalidArgument);
  EXPECT_THROW(backoff_ceiling_ms(policy, -1), InvalidArgument);
  EXPECT_THROW(backoff_delay_ms(policy, 0, 0), InvalidArgument);
  EXPECT_THROW(backoff_delay_ms(policy, std::numeric_limits<int>::min()), InvalidArgument);
}

// ---- the ceiling

TEST(Backoff, CeilingGrowsThenCaps) {
  const BackoffPolicy policy;  // 1 s doubling, capped at an hour
  EXPECT_EQ(backoff_ceiling_ms(policy, 1), 1000);
  EXPECT_EQ(backoff_ceiling_ms(policy, 2), 2000);
  EXPECT_EQ(backoff_ceiling_ms(policy, 3), 4000);
  EXPECT_EQ(backoff_ceiling_ms(policy, 12), 2'048'000);
  EXPECT_EQ(backoff_ceiling_ms(policy, 13), 3'600'000);
  EXPECT_EQ(backoff_ceiling_ms(policy, 200), 3'600'000);
}

TEST(Backoff, CeilingIsMonotonicAndBoundedForEveryAttempt) {
  for (const BackoffPolicy& policy : edge_policies()) {
    std::int64_t previous_ms = 0;
    for (int attempt = 1; attempt <= 200; ++attempt) {
      const std::int64_t ceiling_ms = backoff_ceiling_ms(policy, attempt);
      EXPECT_GE(ceiling_ms, previous_ms) << attempt;
      EXPECT_GE(ceiling_ms, policy.delay_ms_base) << attempt;
      EXPECT_LE(ceiling_ms, policy.delay_ms_max) << attempt;
      previous_ms = ceiling_ms;
    }
    EXPECT_EQ(backoff_ceiling_ms(policy, int_max), policy.multiplier == 1 ? policy.delay_ms_base : policy.delay_ms_max);
  }
}

TEST(Backoff, CeilingIsExactJustBelowTheCap) {
  const BackoffPolicy policy = policy_of(1, std::int64_t{1} << 34, 2);
  EXPECT_EQ(backoff_ceiling_ms(policy, 34), std::int64_t{1} << 33);
  EXPECT_EQ(backoff_ceiling_ms(policy, 35), std::int64_t{1} << 34);
  EXPECT_EQ(backoff_ceiling_ms(policy, 36), std::int64_t{1} << 34);
  const BackoffPolicy thrice = policy_of(7, 1'000'003, 3);
  EXPECT_EQ(backoff_ceiling_ms(thrice, 11), 7 * 59049);    // 413'343
  EXPECT_EQ(backoff_ceiling_ms(thrice, 12), 1'000'003);  // 7 * 3^11 passes the cap
}

TEST(Backoff, MultiplierOneKeepsTheBase) {
  const BackoffPolicy policy = policy_of(500, 60'000, 1);
  for (int attempt : {1, 2, 50, int_max}) EXPECT_EQ(backoff_ceiling_ms(policy, attempt), 500);
}

TEST(Backoff, HugeMultipliersAndAttemptsDoNotOverflow) {
  EXPECT_EQ(backoff_ceiling_ms(policy_of(1, backoff_delay_ms_max_limit, int_max), 2), int_max);
  EXPECT_EQ(backoff_ceiling_ms(policy_of(1, backoff_delay_ms_max_limit, int_max), 3), backoff_delay_ms_max_limit);
  EXPECT_EQ(backoff_ceiling_ms(policy_of(3, backoff_delay_ms_max_limit, int_max), int_max),
            backoff_delay_ms_max_limit);
  EXPECT_EQ(backoff_ceiling_ms(policy_of(1, backoff_delay_ms_max_limit, 2), int_max), backoff_delay_ms_max_limit);
}

// ---- the delay

TEST(Backoff, DelayStaysWithinZeroAndTheCeiling) {
  const std::uint64_t extremes[] = {0, 1, 2, uint64_max / 2, uint64_max / 2 + 1, uint64_max - 1, uint64_max};
  std::mt19937_64 random(7);
  for (const BackoffPolicy& policy : edge_policies()) {
    for (int attempt = 1; attempt <= 200; ++attempt) {
      const std::int64_t ceiling_ms = backoff_ceiling_ms(policy, attempt);
      for (std::uint64_t value : extremes) {
        const std::int64_t delay_ms = backoff_delay_ms(policy, attempt, value);
        ASSERT_GE(delay_ms, 0);
        ASSERT_LE(delay_ms, ceiling_ms);
      }
      for (int draw = 0; draw < 20; ++draw) {
        const std::int64_t delay_ms = backoff_delay_ms(policy, attempt, random());
        ASSERT_GE(delay_ms, 0);
        ASSERT_LE(delay_ms, ceiling_ms);
      }
    }
  }
}

TEST(Backoff, DelayReachesBothEnds) {
  for (const BackoffPolicy& policy : edge_policies()) {
    for (int attempt : {1, 2, 10, 200}) {
      EXPECT_EQ(backoff_delay_ms(policy, attempt, 0), 0);
      EXPECT_EQ(backoff_delay_ms(policy, attempt, uint64_max), backoff_ceiling_ms(policy, attempt));
    }
  }
}

TEST(Backoff, DelayIsMonotonicInTheRandomValue) {
  const BackoffPolicy policy;
  std::int64_t previous_ms = 0;
  constexpr int steps = 1000;
  for (int i = 0; i <= steps; ++i) {
    const std::uint64_t value = uint64_max / steps * static_cast<std::uint64_t>(i);
    const std::int64_t delay_ms = backoff_delay_ms(policy, 4, value);
    EXPECT_GE(delay_ms, previous_ms);
    previous_ms = delay_ms;
  }
}

TEST(Backoff, DelayIsDeterministicForAGivenRandomValue) {
  const BackoffPolicy policy;
  EXPECT_EQ(backoff_delay_ms(policy, 3, 0x123456789abcdefULL), backoff_delay_ms(policy, 3, 0x123456789abcdefULL));
  // A quarter of the way through the 64-bit range is a quarter of [0, 4000].
  EXPECT_EQ(backoff_delay_ms(policy, 3, std::uint64_t{1} << 62), 1000);
}

TEST(Backoff, DelaysSpreadUniformlyUpToTheCeiling) {
  const BackoffPolicy policy;
  constexpr int attempt = 5;  // ceiling 16 s
  constexpr int draws = 100'000;
  constexpr int buckets = 10;
  const std::int64_t ceiling_ms = backoff_ceiling_ms(policy, attempt);
  std::mt19937_64 random(42);
  double total_ms = 0;
  std::vector<int> bucket_counts(buckets, 0);
  for (int i = 0; i < draws; ++i) {
    const std::int64_t delay_ms = backoff_delay_ms(policy, attempt, random());
    total_ms += static_cast<double>(delay_ms);
    ++bucket_counts[static_cast<std::size_t>(std::min<std::int64_t>(delay_ms * buckets / ceiling_ms, buckets - 1))];
  }
  const double mean_ms = total_ms / draws;
  EXPECT_NEAR(mean_ms, static_cast<double>(ceiling_ms) / 2, static_cast<double>(ceiling_ms) * 0.02);
  for (int count : bucket_counts) EXPECT_NEAR(count, draws / buckets, draws / buckets / 10);
}

TEST(Backoff, ThreadLocalDrawsAreBoundedAndVary) {
  const BackoffPolicy policy;
  constexpr int thread_count = 4;
  constexpr int draws_per_thread = 2000;
  std::vector<std::set<std::int64_t>> seen(thread_count);
  std::vector<std::thread> threads;
  for (int t = 0; t < thread_count; ++t) {
    threads.emplace_back([&policy, &seen, t] {
      for (int i = 0; i < draws_per_thread; ++i) {
        const int attempt = 1 + i % 20;
        const std::int64_t delay_ms = backoff_delay_ms(policy, attempt);
        // Out-of-range draws are recorded as -1 and caught below; gtest
        // assertions are not used off the main thread.
        const bool in_range = delay_ms >= 0 && delay_ms <= backoff_ceiling_ms(policy, attempt);
        seen[static_cast<std::size_t>(t)].insert(in_range ? delay_ms : -1);
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (const auto& values : seen) {
    EXPECT_EQ(values.count(-1), 0u);
    // 2000 draws from ranges of at least 1000 values: far more than 100
    // distinct ones unless the generator is broken.
    EXPECT_GT(values.size(), 100u);
  }
}

}  // namespace
}  // namespace payq

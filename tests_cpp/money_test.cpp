#include "payq/money.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "payq/error.hpp"

namespace payq {
namespace {

constexpr std::int64_t int64_max = std::numeric_limits<std::int64_t>::max();
constexpr std::int64_t int64_min = std::numeric_limits<std::int64_t>::min();

std::int64_t sum_of(const std::vector<std::int64_t>& parts) {
  return std::accumulate(parts.begin(), parts.end(), std::int64_t{0});
}

// ---- checked arithmetic

TEST(Money, AddAndSubAreExactUpToTheInt64Edges) {
  EXPECT_EQ(amount_add(int64_max - 1, 1), int64_max);
  EXPECT_EQ(amount_sub(int64_min + 1, 1), int64_min);
  EXPECT_EQ(amount_add(int64_max, int64_min), -1);
  EXPECT_EQ(amount_sub(-1, int64_max), int64_min);
}

TEST(Money, AddRejectsOverflowInBothDirections) {
  EXPECT_THROW(amount_add(int64_max, 1), InvalidAmount);
  EXPECT_THROW(amount_add(int64_min, -1), InvalidAmount);
}

TEST(Money, SubRejectsOverflowInBothDirections) {
  EXPECT_THROW(amount_sub(int64_min, 1), InvalidAmount);
  EXPECT_THROW(amount_sub(int64_max, -1), InvalidAmount);
  EXPECT_THROW(amount_sub(0, int64_min), InvalidAmount);
}

TEST(Money, NegRejectsInt64MinAndNegatesEverythingElse) {
  EXPECT_THROW(amount_neg(int64_min), InvalidAmount);
  EXPECT_EQ(amount_neg(int64_max), int64_min + 1);
  EXPECT_EQ(amount_neg(-5), 5);
  EXPECT_EQ(amount_neg(0), 0);
}

// ---- parse

TEST(Money, ParseReadsMajorUnitsAsMinorUnits) {
  EXPECT_EQ(amount_parse("12.34", 2), 1234);
  EXPECT_EQ(amount_parse("12", 2), 1200);
  EXPECT_EQ(amount_parse("12.3", 2), 1230);
  EXPECT_EQ(amount_parse("0.01", 2), 1);
  EXPECT_EQ(amount_parse("-0.05", 2), -5);
  EXPECT_EQ(amount_parse("7", 0), 7);
  EXPECT_EQ(amount_parse("1.234", 3), 1234);
  EXPECT_EQ(amount_parse("0.000000000000000001", 18), 1);
}

TEST(Money, ParseAcceptsTrailingZerosBeyondTheExponent) {
  EXPECT_EQ(amount_parse("1.500", 2), 150);
  EXPECT_EQ(amount_parse("7.000", 0), 7);
  EXPECT_EQ(amount_parse("1.50000000000000000000000000000000", 2), 150);
}

TEST(Money, ParseRejectsTooManyDecimals) {
  EXPECT_THROW(amount_parse("1.505", 2), InvalidAmount);
  EXPECT_THROW(amount_parse("1.001", 2), InvalidAmount);
  EXPECT_THROW(amount_parse("7.5", 0), InvalidAmount);
  EXPECT_THROW(amount_parse("0.0000000000000000001", 18), InvalidAmount);
  EXPECT_THROW(amount_parse("1.5000000000000000000000001", 2), InvalidAmount);
}

TEST(Money, ParseTreatsNegativeZeroAsZero) {
  EXPECT_EQ(amount_parse("-0", 2), 0);
  EXPECT_EQ(amount_parse("-0.00", 2), 0);
}

TEST(Money, ParseAcceptsLeadingZeros) {
  EXPECT_EQ(amount_parse("007", 0), 7);
  EXPECT_EQ(amount_parse("-00.10", 2), -10);
  EXPECT_EQ(amount_parse("0000000000000000000000000000000000001", 0), 1);
}

TEST(Money, ParseRejectsMalformedText) {
  for (const char* text : {"", "-", ".", "1.", ".5", "-.5", "+1", " 1", "1 ", "1\n", "1,000", "1_000", "1e3", "1E3",
                           "NaN", "nan", "Infinity", "inf", "-inf", "1.2.3", "--1", "0x10", "１", "1.-2", "12a",
                           "1 000"}) {
    EXPECT_THROW(amount_parse(text, 2), InvalidAmount) << "'" << text << "'";
  }
}

TEST(Money, ParseRejectsEmbeddedNul) {
  EXPECT_THROW(amount_parse(std::string_view("1\0" "2", 3), 2), InvalidAmount);
}

TEST(Money, ParseReachesExactlyTheInt64Edges) {
  EXPECT_EQ(amount_parse("9223372036854775807", 0), int64_max);
  EXPECT_EQ(amount_parse("-9223372036854775808", 0), int64_min);
  EXPECT_EQ(amount_parse("92233720368547758.07", 2), int64_max);
  EXPECT_EQ(amount_parse("-92233720368547758.08", 2), int64_min);
  EXPECT_EQ(amount_parse("9.223372036854775807", 18), int64_max);
}

TEST(Money, ParseRejectsOverflow) {
  EXPECT_THROW(amount_parse("9223372036854775808", 0), InvalidAmount);
  EXPECT_THROW(amount_parse("-9223372036854775809", 0), InvalidAmount);
  EXPECT_THROW(amount_parse("92233720368547758.08", 2), InvalidAmount);
  EXPECT_THROW(amount_parse("-92233720368547758.09", 2), InvalidAmount);
  // Overflow that appears only when the missing fraction digits are added.
  EXPECT_THROW(amount_parse("92233720368547759", 2), InvalidAmount);
  EXPECT_THROW(amount_parse("10", 18), InvalidAmount);
  EXPECT_THROW(amount_parse(std::string(100, '9'), 0), InvalidAmount);
}

TEST(Money, ParseRejectsExponentOutOfRange) {
  EXPECT_THROW(amount_parse("1", -1), InvalidArgument);
  EXPECT_THROW(amount_parse("1", 19), InvalidArgument);
  EXPECT_EQ(amount_parse("1", 18), 1000000000000000000);
}

TEST(Money, ParseErrorMessageIsCutShort) {
  try {
    amount_parse(std::string(100000, 'x'), 2);
    FAIL() << "expected InvalidAmount";
  } catch (const InvalidAmount& e) {
    EXPECT_LT(std::string(e.what()).size(), 200u);
  }
}

// ---- format

TEST(Money, FormatWritesExactlyExponentFractionDigits) {
  EXPECT_EQ(amount_format(1234, 2), "12.34");
  EXPECT_EQ(amount_format(-5, 2), "-0.05");
  EXPECT_EQ(amount_format(7, 0), "7");
  EXPECT_EQ(amount_format(0, 2), "0.00");
  EXPECT_EQ(amount_format(100, 2), "1.00");
  EXPECT_EQ(amount_format(1, 18), "0.000000000000000001");
  EXPECT_EQ(amount_format(-1234, 3), "-1.234");
}

TEST(Money, FormatHandlesTheInt64Edges) {
  EXPECT_EQ(amount_format(int64_min, 0), "-9223372036854775808");
  EXPECT_EQ(amount_format(int64_min, 2), "-92233720368547758.08");
  EXPECT_EQ(amount_format(int64_max, 18), "9.223372036854775807");
  EXPECT_EQ(amount_format(int64_min, 18), "-9.223372036854775808");
}

TEST(Money, FormatRejectsExponentOutOfRange) {
  EXPECT_THROW(amount_format(1, -1), InvalidArgument);
  EXPECT_THROW(amount_format(1, 19), InvalidArgument);
}

TEST(Money, FormatThenParseIsTheIdentity) {
  std::mt19937_64 random(20240601);
  for (int exponent = 0; exponent <= amount_exponent_max; ++exponent) {
    for (std::int64_t amount : {int64_min, int64_min + 1, std::int64_t{-1}, std::int64_t{0}, std::int64_t{1},
                                int64_max, static_cast<std::int64_t>(random())}) {
      EXPECT_EQ(amount_parse(amount_format(amount, exponent), exponent), amount) << amount << " e" << exponent;
    }
  }
}

// ---- rounding names

TEST(Money, RoundingNamesRoundTrip) {
  ASSERT_EQ(roundings_all().size(), 7u);
  for (Rounding rounding : roundings_all()) EXPECT_EQ(rounding_parse(rounding_name(rounding)), rounding);
  EXPECT_STREQ(rounding_name(Rounding::half_even), "half_even");
}

TEST(Money, RoundingParseRejectsUnknownNames) {
  for (const char* name : {"", "HALF_UP", "half-up", "bankers", "round_half_up", " half_up"}) {
    EXPECT_THROW(rounding_parse(name), InvalidArgument) << name;
  }
}

// ---- mul_div and each rounding rule

struct RoundingCase {
  Rounding rounding;
  // amount / 10 for these numerators: 25 (2.5), -25, 35 (3.5), -35, 21 (2.1), -21, 29 (2.9), -29, 20, -20.
  std::int64_t expected[10];
};

TEST(Money, MulDivAppliesEachRoundingRuleToTiesAndNonTies) {
  const std::int64_t numerators[10] = {25, -25, 35, -35, 21, -21, 29, -29, 20, -20};
  const RoundingCase cases[] = {
      {Rounding::half_up, {3, -3, 4, -4, 2, -2, 3, -3, 2, -2}},
      {Rounding::half_down, {2, -2, 3, -3, 2, -2, 3, -3, 2, -2}},
      {Rounding::half_even, {2, -2, 4, -4, 2, -2, 3, -3, 2, -2}},
      {Rounding::down, {2, -2, 3, -3, 2, -2, 2, -2, 2, -2}},
      {Rounding::up, {3, -3, 4, -4, 3, -3, 3, -3, 2, -2}},
      {Rounding::floor, {2, -3, 3, -4, 2, -3, 2, -3, 2, -2}},
      {Rounding::ceiling, {3, -2, 4, -3, 3, -2, 3, -2, 2, -2}},
  };
  for (const auto& c : cases) {
    for (int i = 0; i < 10; ++i) {
      EXPECT_EQ(amount_mul_div(numerators[i], 1, 10, c.rounding), c.expected[i])
          << rounding_name(c.rounding) << " of " << numerators[i] << "/10";
      // The sign may come from the numerator instead of the amount.
      EXPECT_EQ(amount_mul_div(1, numerators[i], 10, c.rounding), c.expected[i])
          << rounding_name(c.rounding) << " of 1*" << numerators[i] << "/10";
    }
  }
}

TEST(Money, MulDivHalfEvenRoundsTiesToEvenOnBothSidesOfZero) {
  EXPECT_EQ(amount_mul_div(1, 1, 2, Rounding::half_even), 0);
  EXPECT_EQ(amount_mul_div(3, 1, 2, Rounding::half_even), 2);
  EXPECT_EQ(amount_mul_div(-1, 1, 2, Rounding::half_even), 0);
  EXPECT_EQ(amount_mul_div(-3, 1, 2, Rounding::half_even), -2);
  EXPECT_EQ(amount_mul_div(-5, 1, 2, Rounding::half_even), -2);
}

TEST(Money, MulDivTellsNearTiesFromTies) {
  // 1/3 and 2/3 sit either side of the half with an odd denominator.
  EXPECT_EQ(amount_mul_div(1, 1, 3, Rounding::half_up), 0);
  EXPECT_EQ(amount_mul_div(2, 1, 3, Rounding::half_down), 1);
  EXPECT_EQ(amount_mul_div(-2, 1, 3, Rounding::half_down), -1);
  // Just below and just above a half with a large denominator.
  EXPECT_EQ(amount_mul_div(4999, 1, 10000, Rounding::half_up), 0);
  EXPECT_EQ(amount_mul_div(5001, 1, 10000, Rounding::half_down), 1);
}

TEST(Money, MulDivIsExactWhereInt64WouldOverflow) {
  // The product is far beyond int64 but the quotient is not.
  EXPECT_EQ(amount_mul_div(int64_max, int64_max, int64_max, Rounding::down), int64_max);
  EXPECT_EQ(amount_mul_div(int64_min, int64_max, int64_max, Rounding::down), int64_min);
  EXPECT_EQ(amount_mul_div(int64_max, 3, 3, Rounding::half_up), int64_max);
  EXPECT_EQ(amount_mul_div(int64_max, int64_max - 1, int64_max, Rounding::up), int64_max - 1);
  // (2^63 - 1) / 2 is a tie whose truncated quotient is odd.
  constexpr std::int64_t half_down_value = 4611686018427387903;
  EXPECT_EQ(amount_mul_div(int64_max, 1, 2, Rounding::half_up), half_down_value + 1);
  EXPECT_EQ(amount_mul_div(int64_max, 1, 2, Rounding::half_even), half_down_value + 1);
  EXPECT_EQ(amount_mul_div(int64_max, 1, 2, Rounding::half_down), half_down_value);
  EXPECT_EQ(amount_mul_div(int64_min, 1, 2, Rounding::half_up), int64_min / 2);
}

TEST(Money, MulDivRejectsResultsBeyondInt64) {
  EXPECT_THROW(amount_mul_div(int64_max, 2, 1, Rounding::down), InvalidAmount);
  EXPECT_THROW(amount_mul_div(int64_min, -1, 1, Rounding::down), InvalidAmount);
  // Rounding itself can push the result over the edge.
  EXPECT_THROW(amount_mul_div(int64_max, 2 * 3 + 1, 2 * 3, Rounding::down), InvalidAmount);
  EXPECT_EQ(amount_mul_div(int64_max, 1, 1, Rounding::up), int64_max);
}

TEST(Money, MulDivRejectsNonPositiveDenominator) {
  EXPECT_THROW(amount_mul_div(1, 1, 0, Rounding::half_up), InvalidArgument);
  EXPECT_THROW(amount_mul_div(1, 1, -3, Rounding::half_up), InvalidArgument);
}

// ---- fees

TEST(Money, FeeIsRoundedRatePlusFixed) {
  Fee fee;
  fee.rate_bps = 250;  // 2.5%
  fee.fixed_minor = 30;
  EXPECT_EQ(fee_compute(10000, fee), 250 + 30);
  // 2.5% of 1 is 0.025: rounds to 0 under half_up, then the fixed part.
  EXPECT_EQ(fee_compute(1, fee), 30);
  // 2.5% of 20 is 0.5: a tie.
  EXPECT_EQ(fee_compute(20, fee), 1 + 30);
  fee.rounding = Rounding::half_even;
  EXPECT_EQ(fee_compute(20, fee), 0 + 30);
  fee.rounding = Rounding::ceiling;
  EXPECT_EQ(fee_compute(1, fee), 1 + 30);
}

TEST(Money, FeeIsClampedToMinAndMax) {
  Fee fee;
  fee.rate_bps = 100;  // 1%
  fee.min_minor = 50;
  fee.max_minor = 500;
  EXPECT_EQ(fee_compute(1000, fee), 50);      // 10 raised to the minimum
  EXPECT_EQ(fee_compute(5000, fee), 50);      // exactly the minimum
  EXPECT_EQ(fee_compute(20000, fee), 200);    // inside the bounds
  EXPECT_EQ(fee_compute(50000, fee), 500);    // exactly the maximum
  EXPECT_EQ(fee_compute(1000000, fee), 500);  // 10000 lowered to the maximum
}

TEST(Money, FeeClampAppliesAfterTheFixedPart) {
  Fee fee;
  fee.rate_bps = 100;
  fee.fixed_minor = 450;
  fee.max_minor = 500;
  EXPECT_EQ(fee_compute(10000, fee), 500);  // 100 + 450 = 550, then lowered
}

TEST(Money, FeeWithMinEqualToMaxIsFlat) {
  Fee fee;
  fee.rate_bps = 9999;
  fee.min_minor = 7;
  fee.max_minor = 7;
  EXPECT_EQ(fee_compute(1, fee), 7);
  EXPECT_EQ(fee_compute(int64_max, fee), 7);
}

TEST(Money, FeeAtFullRateOfTheLargestAmountFits) {
  Fee fee;
  fee.rate_bps = fee_rate_bps_max;
  EXPECT_EQ(fee_compute(int64_max, fee), int64_max);
  fee.fixed_minor = 1;
  EXPECT_THROW(fee_compute(int64_max, fee), InvalidAmount);
}

TEST(Money, FeeRejectsNonPositiveAmount) {
  Fee fee;
  fee.rate_bps = 100;
  EXPECT_THROW(fee_compute(0, fee), InvalidAmount);
  EXPECT_THROW(fee_compute(-100, fee), InvalidAmount);
  EXPECT_THROW(fee_compute(int64_min, fee), InvalidAmount);
}

TEST(Money, FeeValidateRejectsMalformedFees) {
  const auto rejects = [](auto change) {
    Fee fee;
    change(fee);
    EXPECT_THROW(fee_validate(fee), InvalidArgument);
    EXPECT_THROW(fee_compute(100, fee), InvalidArgument);
  };
  rejects([](Fee& f) { f.rate_bps = -1; });
  rejects([](Fee& f) { f.rate_bps = fee_rate_bps_max + 1; });
  rejects([](Fee& f) { f.fixed_minor = -1; });
  rejects([](Fee& f) { f.min_minor = -1; });
  rejects([](Fee& f) { f.max_minor = -1; });
  rejects([](Fee& f) {
    f.min_minor = 10;
    f.max_minor = 9;
  });
  rejects([](Fee& f) { f.rounding = static_cast<Rounding>(99); });
}

TEST(Money, FeeValidateAcceptsTheEdges) {
  Fee fee;
  EXPECT_NO_THROW(fee_validate(fee));
  fee.rate_bps = fee_rate_bps_max;
  fee.min_minor = 0;
  fee.max_minor = 0;
  EXPECT_NO_THROW(fee_validate(fee));
}

// ---- splits

TEST(Money, SplitGivesLeftoverUnitsToLargestRemainders) {
  // 100 * (1, 1, 1) / 3 = 33.33 each: the one leftover unit goes to the first.
  EXPECT_EQ(amount_split(100, {1, 1, 1}), (std::vector<std::int64_t>{34, 33, 33}));
  // 10 * (1, 2, 3) / 6 = 1.67, 3.33, 5: the 0.67 remainder wins.
  EXPECT_EQ(amount_split(10, {1, 2, 3}), (std::vector<std::int64_t>{2, 3, 5}));
  // 7 * (3, 3, 4) / 10 = 2.1, 2.1, 2.8: the last part has the largest remainder.
  EXPECT_EQ(amount_split(7, {3, 3, 4}), (std::vector<std::int64_t>{2, 2, 3}));
}

TEST(Money, SplitBreaksRemainderTiesTowardTheEarlierPart) {
  EXPECT_EQ(amount_split(2, {1, 1, 1}), (std::vector<std::int64_t>{1, 1, 0}));
  EXPECT_EQ(amount_split(5, {1, 1, 1, 1}), (std::vector<std::int64_t>{2, 1, 1, 1}));
  // Equal remainders behind a larger one: the larger first, then order.
  EXPECT_EQ(amount_split(3, {1, 1, 2}), (std::vector<std::int64_t>{1, 1, 1}));
}

TEST(Money, SplitOfNegativeAmountMirrorsThePositiveSplit) {
  EXPECT_EQ(amount_split(-100, {1, 1, 1}), (std::vector<std::int64_t>{-34, -33, -33}));
  EXPECT_EQ(amount_split(-10, {1, 2, 3}), (std::vector<std::int64_t>{-2, -3, -5}));
}

TEST(Money, SplitGivesZeroWeightsNothing) {
  EXPECT_EQ(amount_split(1, {0, 1, 0}), (std::vector<std::int64_t>{0, 1, 0}));
  EXPECT_EQ(amount_split(7, {0, 3, 0, 3}), (std::vector<std::int64_t>{0, 4, 0, 3}));
  EXPECT_EQ(amount_split(0, {1, 2}), (std::vector<std::int64_t>{0, 0}));
}

TEST(Money, SplitHandlesTheInt64Edges) {
  EXPECT_EQ(amount_split(int64_min, {1}), (std::vector<std::int64_t>{int64_min}));
  EXPECT_EQ(amount_split(int64_max, {1}), (std::vector<std::int64_t>{int64_max}));
  EXPECT_EQ(sum_of(amount_split(int64_min, {1, 1, 1})), int64_min);
  EXPECT_EQ(amount_split(int64_max, {int64_max / 2, int64_max / 2, 1}),
            (std::vector<std::int64_t>{int64_max / 2, int64_max / 2, 1}));
  EXPECT_EQ(sum_of(amount_split(int64_min, {int64_max / 3, int64_max / 3, 5})), int64_min);
  EXPECT_EQ(amount_split(int64_max, {int64_max - 1, 1}), (std::vector<std::int64_t>{int64_max - 1, 1}));
}

TEST(Money, SplitAlwaysSumsToTheAmountAndStaysWithinOneUnitOfTheShare) {
  std::mt19937_64 random(7);
  std::uniform_int_distribution<std::int64_t> amounts(-1000000000, 1000000000);
  std::uniform_int_distribution<std::int64_t> weights_small(0, 1000);
  std::uniform_int_distribution<std::size_t> counts(1, 12);
  for (int round = 0; round < 2000; ++round) {
    const std::int64_t amount = amounts(random);
    std::vector<std::int64_t> weights(counts(random));
    for (auto& w : weights) w = weights_small(random);
    weights[0] += 1;  // At least one non-zero weight.
    const auto parts = amount_split(amount, weights);
    ASSERT_EQ(parts.size(), weights.size());
    ASSERT_EQ(sum_of(parts), amount);
    const long double weight_total = static_cast<long double>(sum_of(weights));
    for (std::size_t i = 0; i < parts.size(); ++i) {
      const long double share = static_cast<long double>(amount) * static_cast<long double>(weights[i]) / weight_total;
      ASSERT_LT(std::abs(static_cast<long double>(parts[i]) - share), 1.0L) << "part " << i;
      if (weights[i] == 0) {
        ASSERT_EQ(parts[i], 0);
      }
    }
  }
}

TEST(Money, SplitRejectsBadWeights) {
  EXPECT_THROW(amount_split(100, {}), InvalidArgument);
  EXPECT_THROW(amount_split(100, {0, 0}), InvalidArgument);
  EXPECT_THROW(amount_split(100, {1, -1}), InvalidArgument);
  EXPECT_THROW(amount_split(100, {int64_max, 1}), InvalidArgument);
  EXPECT_THROW(amount_split(100, std::vector<std::int64_t>(amount_split_parts_max + 1, 1)), InvalidArgument);
  EXPECT_NO_THROW(amount_split(100, std::vector<std::int64_t>(amount_split_parts_max, 1)));
}

}  // namespace
}  // namespace payq

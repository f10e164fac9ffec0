// Exact money: amounts are signed 64-bit integers of minor units (cents,
// yen, satoshi). Every helper here is exact or names its rounding rule, and
// every overflow is an InvalidAmount rather than a wrapped number. The
// exponent of an amount (2 for CNY, 0 for JPY) comes from the currency
// registry in currency.hpp; these functions take it as a plain int.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace payq {

// The largest exponent any currency may have (ETH has 18). 10^18 is the
// largest power of ten that fits in int64.
inline constexpr int amount_exponent_max = 18;

// Checked arithmetic on minor units; InvalidAmount on overflow.
std::int64_t amount_add(std::int64_t a_minor, std::int64_t b_minor);
std::int64_t amount_sub(std::int64_t a_minor, std::int64_t b_minor);
// INT64_MIN has no positive twin, so negating it is an InvalidAmount.
std::int64_t amount_neg(std::int64_t amount_minor);

// Exact decimal text in major units to minor units: "12.34" with exponent 2
// is 1234. Grammar: ['-'] DIGIT+ ['.' DIGIT+]. Fraction digits beyond the
// exponent are allowed only when they are zeros ("1.500" is 150 at exponent
// 2, "1.505" is an InvalidAmount). Rejected as InvalidAmount: empty text,
// whitespace, '+', "1." and ".5", exponent notation, NaN/Infinity,
// thousands separators, anything beyond int64. "-0" is 0. Leading zeros are
// accepted ("007" is 7). InvalidArgument if exponent is outside
// 0..amount_exponent_max.
std::int64_t amount_parse(std::string_view text, int exponent);

// The inverse of amount_parse, always with exactly `exponent` fraction
// digits: (1234, 2) is "12.34", (-5, 2) is "-0.05", (7, 0) is "7".
std::string amount_format(std::int64_t amount_minor, int exponent);

// How an inexact quotient becomes minor units. Directions are about the
// sign of the exact value, so each rule is symmetric around zero except
// floor and ceiling:
//   down      toward zero (truncate)           2.5 -> 2,  -2.5 -> -2
//   up        away from zero                   2.1 -> 3,  -2.1 -> -3
//   floor     toward negative infinity         2.5 -> 2,  -2.1 -> -3
//   ceiling   toward positive infinity         2.1 -> 3,  -2.5 -> -2
//   half_up   nearest; ties away from zero     2.5 -> 3,  -2.5 -> -3
//   half_down nearest; ties toward zero        2.5 -> 2,  -2.5 -> -2
//   half_even nearest; ties to the even digit  2.5 -> 2,  3.5 -> 4
// These match Python's decimal.ROUND_* of the same names.
enum class Rounding { half_up, half_even, half_down, down, up, floor, ceiling };

// The rule named by its lowercase name ("half_up"); InvalidArgument otherwise.
Rounding rounding_parse(std::string_view name);
const char* rounding_name(Rounding rounding);
// Every rule, in declaration order.
const std::vector<Rounding>& roundings_all();

// amount * numerator / denominator, computed exactly in 128 bits and then
// rounded once by `rounding`. InvalidArgument if denominator <= 0;
// InvalidAmount if the rounded result does not fit in int64.
std::int64_t amount_mul_div(std::int64_t amount_minor, std::int64_t numerator, std::int64_t denominator,
                            Rounding rounding);

// One basis point is 1/10000; a rate above 100% is refused.
inline constexpr std::int64_t fee_rate_bps_max = 10000;
inline constexpr std::int64_t fee_bps_per_unit = 10000;

// A percentage-plus-fixed fee, clamped to optional bounds. All amounts are
// minor units of the transfer's currency.
struct Fee {
  std::int64_t rate_bps = 0;
  std::int64_t fixed_minor = 0;
  std::optional<std::int64_t> min_minor;
  std::optional<std::int64_t> max_minor;
  Rounding rounding = Rounding::half_up;
};

// InvalidArgument for a negative or >100% rate, a negative fixed part or
// bound, or min > max.
void fee_validate(const Fee& fee);

// round(amount * rate_bps / 10000, fee.rounding) + fixed_minor, then raised
// to min_minor and lowered to max_minor. The fee may exceed the amount (a
// fixed fee on a tiny transfer); whether that is allowed is the caller's
// policy. InvalidAmount if amount_minor <= 0 or on overflow.
std::int64_t fee_compute(std::int64_t amount_minor, const Fee& fee);

// A bound on the number of parts, so a split's cost is bounded too.
inline constexpr std::size_t amount_split_parts_max = 10000;

// Splits amount_minor in proportion to weights so the parts always sum to
// exactly amount_minor. Rule "largest remainder": each part first gets the
// floor of its exact share of |amount|; the units left over go one each to
// the parts with the largest remainders, ties to the earlier part. A
// negative amount is split as its magnitude and every part negated, so the
// rule is symmetric around zero. A zero weight always gets 0.
// InvalidArgument for no weights, more than amount_split_parts_max, a
// negative weight, or weights summing to 0 or beyond int64.
std::vector<std::int64_t> amount_split(std::int64_t amount_minor, const std::vector<std::int64_t>& weights);

}  // namespace payq

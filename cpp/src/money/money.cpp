#include "payq/money.hpp"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <numeric>
#include <stdexcept>

#include "payq/error.hpp"

namespace payq {
namespace {

// GCC and Clang's 128-bit integers; __extension__ keeps -Wpedantic quiet.
// Every product of two int64 values fits, which is what makes mul_div and
// split exact.
__extension__ typedef __int128 Int128;
__extension__ typedef unsigned __int128 UInt128;

constexpr std::int64_t int64_max = std::numeric_limits<std::int64_t>::max();
constexpr std::int64_t int64_min = std::numeric_limits<std::int64_t>::min();

// Echoed input is cut short so a hostile megabyte string does not become a
// megabyte error message.
constexpr std::size_t quoted_bytes_max = 48;

std::string quoted(std::string_view text) {
  if (text.size() <= quoted_bytes_max) return "'" + std::string(text) + "'";
  return "'" + std::string(text.substr(0, quoted_bytes_max)) + "...'";
}

void exponent_validate(int exponent) {
  if (exponent < 0 || exponent > amount_exponent_max) {
    throw InvalidArgument("currency exponent must be 0.." + std::to_string(amount_exponent_max) + ", got " +
                          std::to_string(exponent));
  }
}

bool digits_only(std::string_view text) {
  return std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
}

std::int64_t int64_checked(Int128 value, const char* what) {
  if (value > int64_max || value < int64_min) {
    throw InvalidAmount(std::string(what) + " does not fit in 64-bit minor units");
  }
  return static_cast<std::int64_t>(value);
}

// Appends decimal digits to a magnitude, refusing to pass `limit`. The
// check after every digit keeps the magnitude far below the 128-bit range
// however many (leading-zero) digits the text has.
UInt128 magnitude_append(UInt128 magnitude, std::string_view digits, UInt128 limit, std::string_view text) {
  for (char c : digits) {
    magnitude = magnitude * 10 + static_cast<unsigned>(c - '0');
    if (magnitude > limit) throw InvalidAmount("amount " + quoted(text) + " does not fit in 64-bit minor units");
  }
  return magnitude;
}

// Whether a truncated, inexact quotient must step one unit away from zero.
// `twice_remainder` is 2 * |remainder|, compared with the denominator to
// tell below, at and above the half.
bool rounds_away(Rounding rounding, bool negative, bool quotient_odd, Int128 twice_remainder, Int128 denominator) {
  switch (rounding) {
    case Rounding::down: return false;
    case Rounding::up: return true;
    case Rounding::floor: return negative;
    case Rounding::ceiling: return !negative;
    case Rounding::half_up: return twice_remainder >= denominator;
    case Rounding::half_down: return twice_remainder > denominator;
    case Rounding::half_even:
      return twice_remainder > denominator || (twice_remainder == denominator && quotient_odd);
  }
  throw InvalidArgument("unknown rounding rule " + std::to_string(static_cast<int>(rounding)));
}

struct RoundingEntry {
  Rounding rounding;
  const char* name;
};

constexpr RoundingEntry rounding_table[] = {
    {Rounding::half_up, "half_up"}, {Rounding::half_even, "half_even"}, {Rounding::half_down, "half_down"},
    {Rounding::down, "down"},       {Rounding::up, "up"},               {Rounding::floor, "floor"},
    {Rounding::ceiling, "ceiling"},
};

// Returns the weights' sum after checking what amount_split promises to refuse.
std::int64_t split_weights_validate(const std::vector<std::int64_t>& weights) {
  if (weights.empty()) throw InvalidArgument("amount_split needs at least one weight");
  if (weights.size() > amount_split_parts_max) {
    throw InvalidArgument("amount_split takes at most " + std::to_string(amount_split_parts_max) + " weights, got " +
                          std::to_string(weights.size()));
  }
  std::int64_t weight_total = 0;
  for (std::int64_t weight : weights) {
    if (weight < 0) throw InvalidArgument("split weights must be non-negative, got " + std::to_string(weight));
    if (__builtin_add_overflow(weight_total, weight, &weight_total)) {
      throw InvalidArgument("split weights sum beyond 64 bits");
    }
  }
  if (weight_total == 0) throw InvalidArgument("split weights must not all be zero");
  return weight_total;
}

}  // namespace

std::int64_t amount_add(std::int64_t a_minor, std::int64_t b_minor) {
  std::int64_t sum_minor = 0;
  if (__builtin_add_overflow(a_minor, b_minor, &sum_minor)) {
    throw InvalidAmount(std::to_string(a_minor) + " + " + std::to_string(b_minor) + " overflows 64-bit minor units");
  }
  return sum_minor;
}

std::int64_t amount_sub(std::int64_t a_minor, std::int64_t b_minor) {
  std::int64_t difference_minor = 0;
  if (__builtin_sub_overflow(a_minor, b_minor, &difference_minor)) {
    throw InvalidAmount(std::to_string(a_minor) + " - " + std::to_string(b_minor) + " overflows 64-bit minor units");
  }
  return difference_minor;
}

std::int64_t amount_neg(std::int64_t amount_minor) { return amount_sub(0, amount_minor); }

std::int64_t amount_parse(std::string_view text, int exponent) {
  exponent_validate(exponent);
  const bool negative = !text.empty() && text.front() == '-';
  const std::string_view unsigned_text = negative ? text.substr(1) : text;
  const std::size_t dot = unsigned_text.find('.');
  const std::string_view whole = unsigned_text.substr(0, dot);
  const std::string_view fraction = dot == std::string_view::npos ? std::string_view{} : unsigned_text.substr(dot + 1);
  // Digits are required on both sides of a dot: "1." and ".5" are more
  // likely a truncated or mangled value than a deliberate one.
  const bool well_formed = !whole.empty() && digits_only(whole) &&
                           (dot == std::string_view::npos || (!fraction.empty() && digits_only(fraction)));
  if (!well_formed) throw InvalidAmount("not a decimal amount: " + quoted(text));

  const auto fraction_digits_max = static_cast<std::size_t>(exponent);
  const std::string_view fraction_kept = fraction.substr(0, fraction_digits_max);
  // Digits past the exponent are fine only as zeros: they change nothing.
  if (fraction.substr(fraction_kept.size()).find_first_not_of('0') != std::string_view::npos) {
    throw InvalidAmount("amount " + quoted(text) + " has more than " + std::to_string(exponent) +
                        " decimal places");
  }
  // The negative range reaches one further than the positive: -2^63.
  const UInt128 limit = negative ? UInt128{1} << 63 : UInt128{int64_max};
  UInt128 magnitude = magnitude_append(0, whole, limit, text);
  magnitude = magnitude_append(magnitude, fraction_kept, limit, text);
  for (std::size_t i = fraction_kept.size(); i < fraction_digits_max; ++i) {
    magnitude = magnitude_append(magnitude, "0", limit, text);
  }
  const Int128 value = negative ? -static_cast<Int128>(magnitude) : static_cast<Int128>(magnitude);
  return static_cast<std::int64_t>(value);
}

std::string amount_format(std::int64_t amount_minor, int exponent) {
  exponent_validate(exponent);
  const bool negative = amount_minor < 0;
  // Unsigned negation is defined for INT64_MIN, whose magnitude int64 lacks.
  const std::uint64_t magnitude =
      negative ? 0 - static_cast<std::uint64_t>(amount_minor) : static_cast<std::uint64_t>(amount_minor);
  std::string digits = std::to_string(magnitude);
  const auto fraction_digits = static_cast<std::size_t>(exponent);
  if (fraction_digits > 0) {
    if (digits.size() <= fraction_digits) digits.insert(0, fraction_digits + 1 - digits.size(), '0');
    digits.insert(digits.size() - fraction_digits, 1, '.');
  }
  return negative ? "-" + digits : digits;
}

Rounding rounding_parse(std::string_view name) {
  for (const auto& entry : rounding_table) {
    if (name == entry.name) return entry.rounding;
  }
  std::string known;
  for (const auto& entry : rounding_table) known += std::string(known.empty() ? "" : ", ") + entry.name;
  throw InvalidArgument("unknown rounding rule " + quoted(name) + "; known: " + known);
}

const char* rounding_name(Rounding rounding) {
  for (const auto& entry : rounding_table) {
    if (entry.rounding == rounding) return entry.name;
  }
  throw InvalidArgument("unknown rounding rule " + std::to_string(static_cast<int>(rounding)));
}

const std::vector<Rounding>& roundings_all() {
  static const std::vector<Rounding> all = [] {
    std::vector<Rounding> out;
    for (const auto& entry : rounding_table) out.push_back(entry.rounding);
    return out;
  }();
  return all;
}

std::int64_t amount_mul_div(std::int64_t amount_minor, std::int64_t numerator, std::int64_t denominator,
                            Rounding rounding) {
  if (denominator <= 0) throw InvalidArgument("denominator must be positive, got " + std::to_string(denominator));
  const Int128 product = Int128{amount_minor} * numerator;
  // C++ division truncates toward zero; the remainder takes the product's sign.
  Int128 quotient = product / denominator;
  const Int128 remainder = product % denominator;
  if (remainder != 0) {
    const bool negative = product < 0;
    const Int128 twice_remainder = 2 * (negative ? -remainder : remainder);
    if (rounds_away(rounding, negative, quotient % 2 != 0, twice_remainder, denominator)) {
      quotient += negative ? -1 : 1;
    }
  }
  return int64_checked(quotient, "amount * numerator / denominator");
}

void fee_validate(const Fee& fee) {
  if (fee.rate_bps < 0 || fee.rate_bps > fee_rate_bps_max) {
    throw InvalidArgument("fee rate_bps must be 0.." + std::to_string(fee_rate_bps_max) + ", got " +
                          std::to_string(fee.rate_bps));
  }
  if (fee.fixed_minor < 0) throw InvalidArgument("fee fixed_minor must not be negative");
  if (fee.min_minor && *fee.min_minor < 0) throw InvalidArgument("fee min_minor must not be negative");
  if (fee.max_minor && *fee.max_minor < 0) throw InvalidArgument("fee max_minor must not be negative");
  if (fee.min_minor && fee.max_minor && *fee.min_minor > *fee.max_minor) {
    throw InvalidArgument("fee min_minor " + std::to_string(*fee.min_minor) + " exceeds max_minor " +
                          std::to_string(*fee.max_minor));
  }
  rounding_name(fee.rounding);  // Throws for a value outside the enum.
}

std::int64_t fee_compute(std::int64_t amount_minor, const Fee& fee) {
  fee_validate(fee);
  if (amount_minor <= 0) {
    throw InvalidAmount("a fee is computed on a positive amount, got " + std::to_string(amount_minor));
  }
  const std::int64_t rate_part_minor = amount_mul_div(amount_minor, fee.rate_bps, fee_bps_per_unit, fee.rounding);
  std::int64_t fee_minor = amount_add(rate_part_minor, fee.fixed_minor);
  if (fee.min_minor) fee_minor = std::max(fee_minor, *fee.min_minor);
  if (fee.max_minor) fee_minor = std::min(fee_minor, *fee.max_minor);
  return fee_minor;
}

std::vector<std::int64_t> amount_split(std::int64_t amount_minor, const std::vector<std::int64_t>& weights) {
  const std::int64_t weight_total = split_weights_validate(weights);
  const std::size_t part_count = weights.size();
  const bool negative = amount_minor < 0;
  const Int128 magnitude = negative ? -Int128{amount_minor} : Int128{amount_minor};

  std::vector<Int128> parts(part_count);
  std::vector<Int128> remainders(part_count);
  Int128 leftover = magnitude;
  for (std::size_t i = 0; i < part_count; ++i) {
    const Int128 share = magnitude * weights[i];  // < 2^63 * 2^63: fits.
    parts[i] = share / weight_total;
    remainders[i] = share % weight_total;
    leftover -= parts[i];
  }
  // The remainders sum to leftover * weight_total and each is below
  // weight_total, so more than `leftover` parts have one: the units run out
  // before the non-zero remainders do, and a zero weight never gets a unit.
  std::vector<std::size_t> order(part_count);
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t a, std::size_t b) { return remainders[a] > remainders[b]; });
  for (std::size_t k = 0; k < part_count && leftover > 0; ++k, --leftover) parts[order[k]] += 1;
  if (leftover != 0) throw std::logic_error("amount_split left units unassigned");

  std::vector<std::int64_t> parts_minor(part_count);
  for (std::size_t i = 0; i < part_count; ++i) {
    parts_minor[i] = static_cast<std::int64_t>(negative ? -parts[i] : parts[i]);
  }
  return parts_minor;
}

}  // namespace payq

// Money text: amount_parse and amount_format (money.hpp) with exponents
// from the currency registry (currency.hpp).
//
// Input: byte 0 picks the exponent (a registered currency, or a raw
// exponent including the invalid -1 and 19); the rest is the text to parse
// (and to look up as a currency code), and its first 8 bytes are also read
// as an int64 amount to format.
//
// Properties:
//   - amount_parse accepts exactly what a reference reading of the grammar
//     (['-'] DIGIT+ ['.' DIGIT+], zeros only past the exponent, int64 range)
//     accepts, with the same value; it refuses with InvalidAmount, or with
//     InvalidArgument for an exponent outside 0..18, and never otherwise;
//   - format(parse(x)) parses to the same minor units, and the formatted
//     text is canonical (formatting its parse gives it back);
//   - every int64 formats to text with exactly `exponent` fraction digits
//     that parses back to it, INT64_MIN and INT64_MAX included;
//   - currency_get of any text is that currency, exactly, with an exponent
//     in range, or an UnknownCurrency.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

#include "fuzz_check.hpp"
#include "payq/currency.hpp"
#include "payq/error.hpp"
#include "payq/money.hpp"

namespace {

using payq::fuzz::printable;

__extension__ typedef __int128 Int128;

constexpr const char* currency_codes[] = {"JPY", "USD", "BHD", "CLF", "BTC", "ETH", "UYW", "KWD"};
constexpr std::size_t currency_code_count = sizeof currency_codes / sizeof currency_codes[0];

bool exponent_valid(int exponent) { return exponent >= 0 && exponent <= payq::amount_exponent_max; }

bool all_digits(std::string_view text) {
  for (char c : text) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

// The grammar of money.hpp read the plain way, as an oracle: nullopt where
// amount_parse must refuse.
std::optional<std::int64_t> reference_parse(std::string_view text, int exponent) {
  const bool negative = !text.empty() && text.front() == '-';
  if (negative) text.remove_prefix(1);
  const std::size_t dot = text.find('.');
  const std::string_view whole = text.substr(0, dot);
  std::string_view fraction = dot == std::string_view::npos ? std::string_view{} : text.substr(dot + 1);
  if (whole.empty() || !all_digits(whole)) return std::nullopt;
  if (dot != std::string_view::npos && (fraction.empty() || !all_digits(fraction))) return std::nullopt;
  const auto kept = static_cast<std::size_t>(exponent);
  if (fraction.size() > kept) {
    if (fraction.substr(kept).find_first_not_of('0') != std::string_view::npos) return std::nullopt;
    fraction = fraction.substr(0, kept);
  }
  std::string digits = std::string(whole) + std::string(fraction) + std::string(kept - fraction.size(), '0');
  const std::size_t first = digits.find_first_not_of('0');
  digits = first == std::string::npos ? "0" : digits.substr(first);
  if (digits.size() > 19) return std::nullopt;  // 10^19 > 2^63
  Int128 magnitude = 0;
  for (char c : digits) magnitude = magnitude * 10 + (c - '0');
  const Int128 limit = negative ? (Int128{1} << 63) : (Int128{1} << 63) - 1;
  if (magnitude > limit) return std::nullopt;
  return static_cast<std::int64_t>(negative ? -magnitude : magnitude);
}

void check_formatted_shape(const std::string& text, std::int64_t amount_minor, int exponent) {
  const std::size_t dot = text.find('.');
  if (exponent == 0) {
    PAYQ_FUZZ_CHECK(dot == std::string::npos, "exponent 0 formats without a dot: " + text);
  } else {
    PAYQ_FUZZ_CHECK(dot != std::string::npos && text.size() - dot - 1 == static_cast<std::size_t>(exponent),
                    "formatted " + std::to_string(amount_minor) + " at exponent " + std::to_string(exponent) +
                        " as '" + text + "'");
  }
  PAYQ_FUZZ_CHECK((amount_minor < 0) == (!text.empty() && text.front() == '-'),
                  "sign of " + std::to_string(amount_minor) + " formatted as '" + text + "'");
}

// Formats and parses back; returns the text.
std::string check_format_round_trip(std::int64_t amount_minor, int exponent) {
  const std::string text = payq::amount_format(amount_minor, exponent);
  check_formatted_shape(text, amount_minor, exponent);
  std::int64_t back = 0;
  try {
    back = payq::amount_parse(text, exponent);
  } catch (const payq::Error& e) {
    PAYQ_FUZZ_CHECK(false, "formatted '" + text + "' does not parse: " + e.what());
  }
  PAYQ_FUZZ_CHECK(back == amount_minor, "'" + text + "' parses to " + std::to_string(back) + ", not " +
                                            std::to_string(amount_minor));
  return text;
}

void check_parse(const std::string& text, int exponent) {
  const std::optional<std::int64_t> expected =
      exponent_valid(exponent) ? reference_parse(text, exponent) : std::nullopt;
  std::optional<std::int64_t> parsed;
  try {
    parsed = payq::amount_parse(text, exponent);
  } catch (const payq::InvalidAmount&) {
    PAYQ_FUZZ_CHECK(exponent_valid(exponent), "an invalid exponent is an InvalidArgument, not InvalidAmount");
    PAYQ_FUZZ_CHECK(!expected, "refused '" + printable(text) + "' at exponent " + std::to_string(exponent) +
                                   ", which is " + std::to_string(expected.value_or(0)));
    return;
  } catch (const payq::InvalidArgument&) {
    PAYQ_FUZZ_CHECK(!exponent_valid(exponent), "InvalidArgument for a valid exponent");
    return;
  } catch (...) {
    payq::fuzz::unexpected_exception("amount_parse");
  }
  PAYQ_FUZZ_CHECK(exponent_valid(exponent), "accepted an exponent outside 0..18");
  PAYQ_FUZZ_CHECK(expected.has_value(), "accepted '" + printable(text) + "' at exponent " +
                                            std::to_string(exponent) + " as " + std::to_string(*parsed));
  PAYQ_FUZZ_CHECK(*parsed == *expected, "'" + printable(text) + "' parsed to " + std::to_string(*parsed) +
                                            ", expected " + std::to_string(*expected));
  // format(parse(x)) parses to the same minor units, and is canonical.
  const std::string canonical = check_format_round_trip(*parsed, exponent);
  PAYQ_FUZZ_CHECK(payq::amount_format(payq::amount_parse(canonical, exponent), exponent) == canonical,
                  "formatted text is not a fixed point: " + canonical);
}

void check_format(std::int64_t amount_minor, int exponent) {
  try {
    check_format_round_trip(amount_minor, exponent);
    PAYQ_FUZZ_CHECK(exponent_valid(exponent), "amount_format accepted exponent " + std::to_string(exponent));
  } catch (const payq::InvalidArgument&) {
    PAYQ_FUZZ_CHECK(!exponent_valid(exponent), "amount_format refused valid exponent " + std::to_string(exponent));
  } catch (...) {
    payq::fuzz::unexpected_exception("amount_format");
  }
}

// Any text may arrive as a currency code: it is known, exactly, or an
// UnknownCurrency.
void check_currency_lookup(const std::string& code) {
  try {
    const payq::Currency& currency = payq::currency_get(code);
    PAYQ_FUZZ_CHECK(currency.code == code, "currency_get('" + printable(code) + "') gave " + currency.code);
    PAYQ_FUZZ_CHECK(exponent_valid(currency.exponent), "currency " + currency.code + " has a bad exponent");
    PAYQ_FUZZ_CHECK(payq::currency_known(code), "currency_known disagrees with currency_get");
  } catch (const payq::UnknownCurrency&) {
    PAYQ_FUZZ_CHECK(!payq::currency_known(code), "currency_known disagrees with currency_get");
  } catch (...) {
    payq::fuzz::unexpected_exception("currency_get");
  }
}

int exponent_pick(std::uint8_t selector) {
  // The low half of the byte values name a currency, the rest a raw exponent.
  if (selector < 128) {
    const payq::Currency& currency = payq::currency_get(currency_codes[selector % currency_code_count]);
    return currency.exponent;
  }
  return selector % (payq::amount_exponent_max + 3) - 1;  // -1 .. 19
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const int exponent = exponent_pick(data[0]);
  const std::string text(reinterpret_cast<const char*>(data + 1), size - 1);
  check_parse(text, exponent);
  check_currency_lookup(text);
  if (text.size() >= sizeof(std::int64_t)) {
    std::int64_t amount_minor = 0;
    std::memcpy(&amount_minor, text.data(), sizeof amount_minor);
    check_format(amount_minor, exponent);
  }
  // The edges, whatever the input: the cheapest place for them to break.
  check_format(INT64_MIN, exponent);
  check_format(INT64_MAX, exponent);
  return 0;
}

// The currency registry: which codes payq knows and how many minor-unit
// digits (the exponent) each has. Built in are the ISO 4217 currencies with
// a defined minor unit, BTC (8) and ETH (18); applications add their own
// (points, vouchers, tokens) with currency_register. Entries are never
// removed or changed, so a reference from currency_get stays valid for the
// life of the process. All functions are safe to call from any thread.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace payq {

struct Currency {
  std::string code;
  int exponent;
};

// Limits on a custom code: 3..12 characters of A-Z, 0-9 and '_'.
inline constexpr std::size_t currency_code_bytes_min = 3;
inline constexpr std::size_t currency_code_bytes_max = 12;

// The currency with this exact (upper-case) code; UnknownCurrency otherwise.
const Currency& currency_get(std::string_view code);

// Adds a custom currency. Registering a known code again with the same
// exponent is a no-op, so every process can register at start-up; with a
// different exponent it is an InvalidArgument, because amounts already
// stored would change meaning. InvalidArgument also for a malformed code or
// an exponent outside 0..amount_exponent_max.
void currency_register(std::string code, int exponent);

bool currency_known(std::string_view code);

// An amount as people read it, for messages: "10.00 USD", "-0.05 CNY",
// "7 JPY". A code not registered in this process (a custom currency not
// loaded here) cannot be scaled, so it says so: "1000 minor units of POINTS".
std::string money_text(std::int64_t amount_minor, std::string_view code);

}  // namespace payq

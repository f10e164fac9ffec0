#include "payq/currency.hpp"

#include <algorithm>
#include <map>
#include <mutex>
#include <shared_mutex>

#include "payq/error.hpp"
#include "payq/money.hpp"

namespace payq {
namespace {

struct CurrencyEntry {
  const char* code;
  int exponent;
};

// ISO 4217 list one: every currency and fund code with a defined minor unit.
// Codes whose minor unit ISO gives as "N.A." (gold XAU, silver XAG, XDR,
// the bond-market units XBA..XBD, XTS, XXX, ...) have no exponent and are
// left out; register them if you need them. Codes withdrawn since 2021
// (CUC, HRK, SLL, ZWL, ANG) stay, so ledgers holding old balances still load.
constexpr CurrencyEntry iso_4217[] = {
    {"AED", 2}, {"AFN", 2}, {"ALL", 2}, {"AMD", 2}, {"ANG", 2}, {"AOA", 2}, {"ARS", 2}, {"AUD", 2},
    {"AWG", 2}, {"AZN", 2}, {"BAM", 2}, {"BBD", 2}, {"BDT", 2}, {"BGN", 2}, {"BHD", 3}, {"BIF", 0},
    {"BMD", 2}, {"BND", 2}, {"BOB", 2}, {"BOV", 2}, {"BRL", 2}, {"BSD", 2}, {"BTN", 2}, {"BWP", 2},
    {"BYN", 2}, {"BZD", 2}, {"CAD", 2}, {"CDF", 2}, {"CHE", 2}, {"CHF", 2}, {"CHW", 2}, {"CLF", 4},
    {"CLP", 0}, {"CNY", 2}, {"COP", 2}, {"COU", 2}, {"CRC", 2}, {"CUC", 2}, {"CUP", 2}, {"CVE", 2},
    {"CZK", 2}, {"DJF", 0}, {"DKK", 2}, {"DOP", 2}, {"DZD", 2}, {"EGP", 2}, {"ERN", 2}, {"ETB", 2},
    {"EUR", 2}, {"FJD", 2}, {"FKP", 2}, {"GBP", 2}, {"GEL", 2}, {"GHS", 2}, {"GIP", 2}, {"GMD", 2},
    {"GNF", 0}, {"GTQ", 2}, {"GYD", 2}, {"HKD", 2}, {"HNL", 2}, {"HRK", 2}, {"HTG", 2}, {"HUF", 2},
    {"IDR", 2}, {"ILS", 2}, {"INR", 2}, {"IQD", 3}, {"IRR", 2}, {"ISK", 0}, {"JMD", 2}, {"JOD", 3},
    {"JPY", 0}, {"KES", 2}, {"KGS", 2}, {"KHR", 2}, {"KMF", 0}, {"KPW", 2}, {"KRW", 0}, {"KWD", 3},
    {"KYD", 2}, {"KZT", 2}, {"LAK", 2}, {"LBP", 2}, {"LKR", 2}, {"LRD", 2}, {"LSL", 2}, {"LYD", 3},
    {"MAD", 2}, {"MDL", 2}, {"MGA", 2}, {"MKD", 2}, {"MMK", 2}, {"MNT", 2}, {"MOP", 2}, {"MRU", 2},
    {"MUR", 2}, {"MVR", 2}, {"MWK", 2}, {"MXN", 2}, {"MXV", 2}, {"MYR", 2}, {"MZN", 2}, {"NAD", 2},
    {"NGN", 2}, {"NIO", 2}, {"NOK", 2}, {"NPR", 2}, {"NZD", 2}, {"OMR", 3}, {"PAB", 2}, {"PEN", 2},
    {"PGK", 2}, {"PHP", 2}, {"PKR", 2}, {"PLN", 2}, {"PYG", 0}, {"QAR", 2}, {"RON", 2}, {"RSD", 2},
    {"RUB", 2}, {"RWF", 0}, {"SAR", 2}, {"SBD", 2}, {"SCR", 2}, {"SDG", 2}, {"SEK", 2}, {"SGD", 2},
    {"SHP", 2}, {"SLE", 2}, {"SLL", 2}, {"SOS", 2}, {"SRD", 2}, {"SSP", 2}, {"STN", 2}, {"SVC", 2},
    {"SYP", 2}, {"SZL", 2}, {"THB", 2}, {"TJS", 2}, {"TMT", 2}, {"TND", 3}, {"TOP", 2}, {"TRY", 2},
    {"TTD", 2}, {"TWD", 2}, {"TZS", 2}, {"UAH", 2}, {"UGX", 0}, {"USD", 2}, {"USN", 2}, {"UYI", 0},
    {"UYU", 2}, {"UYW", 4}, {"UZS", 2}, {"VED", 2}, {"VES", 2}, {"VND", 0}, {"VUV", 0}, {"WST", 2},
    {"XAF", 0}, {"XCD", 2}, {"XCG", 2}, {"XOF", 0}, {"XPF", 0}, {"YER", 2}, {"ZAR", 2}, {"ZMW", 2},
    {"ZWG", 2}, {"ZWL", 2},
};

// Not ISO, but common enough in payments to be built in: the exponents are
// the chains' own base units (satoshi, wei).
constexpr CurrencyEntry crypto[] = {
    {"BTC", 8},
    {"ETH", 18},
};

// std::map never moves its values, so references handed out stay valid as
// custom currencies are added; std::less<> lets string_views look up.
class Registry {
 public:
  Registry() {
    for (const auto& entry : iso_4217) insert(entry);
    for (const auto& entry : crypto) insert(entry);
  }

  const Currency* find(std::string_view code) const {
    std::shared_lock lock(mutex_);
    auto it = currencies_.find(code);
    return it == currencies_.end() ? nullptr : &it->second;
  }

  void add(std::string code, int exponent) {
    std::unique_lock lock(mutex_);
    auto it = currencies_.find(code);
    if (it == currencies_.end()) {
      currencies_.emplace(code, Currency{code, exponent});
      return;
    }
    if (it->second.exponent != exponent) {
      throw InvalidArgument("currency " + code + " is registered with exponent " +
                            std::to_string(it->second.exponent) + ", not " + std::to_string(exponent));
    }
  }

 private:
  void insert(const CurrencyEntry& entry) { currencies_.emplace(entry.code, Currency{entry.code, entry.exponent}); }

  mutable std::shared_mutex mutex_;
  std::map<std::string, Currency, std::less<>> currencies_;
};

Registry& registry() {
  static Registry instance;
  return instance;
}

void code_validate(const std::string& code) {
  const bool allowed_chars = std::all_of(code.begin(), code.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
  });
  if (code.size() < currency_code_bytes_min || code.size() > currency_code_bytes_max || !allowed_chars) {
    throw InvalidArgument("currency code must be " + std::to_string(currency_code_bytes_min) + " to " +
                          std::to_string(currency_code_bytes_max) + " characters of A-Z, 0-9 and '_', got '" +
                          code.substr(0, currency_code_bytes_max + 1) + "'");
  }
}

}  // namespace

const Currency& currency_get(std::string_view code) {
  const Currency* currency = registry().find(code);
  if (!currency) {
    // Cut short: the code may be arbitrary user input.
    throw UnknownCurrency("unknown currency '" + std::string(code.substr(0, currency_code_bytes_max + 1)) + "'");
  }
  return *currency;
}

void currency_register(std::string code, int exponent) {
  code_validate(code);
  if (exponent < 0 || exponent > amount_exponent_max) {
    throw InvalidArgument("currency exponent must be 0.." + std::to_string(amount_exponent_max) + ", got " +
                          std::to_string(exponent));
  }
  registry().add(std::move(code), exponent);
}

bool currency_known(std::string_view code) { return registry().find(code) != nullptr; }

std::string money_text(std::int64_t amount_minor, std::string_view code) {
  const Currency* currency = registry().find(code);
  if (!currency) return std::to_string(amount_minor) + " minor units of " + std::string(code);
  return amount_format(amount_minor, currency->exponent) + " " + currency->code;
}

}  // namespace payq

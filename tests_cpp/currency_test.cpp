#include "payq/currency.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "payq/error.hpp"
#include "payq/money.hpp"

namespace payq {
namespace {

TEST(Currency, BuiltInIsoCurrenciesHaveTheirIsoExponents) {
  const std::pair<const char*, int> expected[] = {
      {"CNY", 2}, {"USD", 2}, {"EUR", 2}, {"GBP", 2}, {"JPY", 0}, {"KRW", 0}, {"VND", 0}, {"ISK", 0},
      {"CLP", 0}, {"XOF", 0}, {"BHD", 3}, {"KWD", 3}, {"JOD", 3}, {"OMR", 3}, {"TND", 3}, {"IQD", 3},
      {"LYD", 3}, {"CLF", 4}, {"UYW", 4}, {"UYI", 0}, {"HKD", 2}, {"INR", 2},
  };
  for (const auto& [code, exponent] : expected) {
    EXPECT_EQ(currency_get(code).exponent, exponent) << code;
    EXPECT_EQ(currency_get(code).code, code);
  }
}

TEST(Currency, BuiltInCryptoCurrenciesUseTheirBaseUnits) {
  EXPECT_EQ(currency_get("BTC").exponent, 8);
  EXPECT_EQ(currency_get("ETH").exponent, 18);
}

TEST(Currency, UnitsWithoutAMinorUnitAreNotBuiltIn) {
  for (const char* code : {"XAU", "XAG", "XDR", "XXX", "XTS"}) EXPECT_FALSE(currency_known(code)) << code;
}

TEST(Currency, GetRejectsUnknownAndWrongCaseCodes) {
  EXPECT_THROW(currency_get("ZZZ"), UnknownCurrency);
  EXPECT_THROW(currency_get("cny"), UnknownCurrency);
  EXPECT_THROW(currency_get(""), UnknownCurrency);
  EXPECT_THROW(currency_get("CNY "), UnknownCurrency);
  EXPECT_FALSE(currency_known("cny"));
  EXPECT_TRUE(currency_known("CNY"));
}

TEST(Currency, UnknownCurrencyMessageIsCutShort) {
  try {
    currency_get(std::string(100000, 'Q'));
    FAIL() << "expected UnknownCurrency";
  } catch (const UnknownCurrency& e) {
    EXPECT_LT(std::string(e.what()).size(), 100u);
  }
}

TEST(Currency, RegisterAddsACustomCurrency) {
  EXPECT_FALSE(currency_known("TEST_POINTS"));
  currency_register("TEST_POINTS", 0);
  EXPECT_TRUE(currency_known("TEST_POINTS"));
  EXPECT_EQ(currency_get("TEST_POINTS").exponent, 0);
  EXPECT_EQ(currency_get("TEST_POINTS").code, "TEST_POINTS");
}

TEST(Currency, RegisterAgainWithTheSameExponentIsANoOp) {
  currency_register("TEST_AGAIN", 4);
  const Currency* first = &currency_get("TEST_AGAIN");
  EXPECT_NO_THROW(currency_register("TEST_AGAIN", 4));
  EXPECT_EQ(&currency_get("TEST_AGAIN"), first);
  EXPECT_NO_THROW(currency_register("CNY", 2));
}

TEST(Currency, RegisterRejectsADifferentExponentForAKnownCode) {
  currency_register("TEST_FIXED", 2);
  EXPECT_THROW(currency_register("TEST_FIXED", 3), InvalidArgument);
  EXPECT_EQ(currency_get("TEST_FIXED").exponent, 2);
  EXPECT_THROW(currency_register("JPY", 2), InvalidArgument);
  EXPECT_EQ(currency_get("JPY").exponent, 0);
}

TEST(Currency, RegisterRejectsMalformedCodes) {
  for (const char* code : {"", "AB", "ABCDEFGHIJKLM", "abc", "AB-C", "AB C", "ÄBC", "AB.C", " ABC"}) {
    EXPECT_THROW(currency_register(code, 2), InvalidArgument) << "'" << code << "'";
    EXPECT_FALSE(currency_known(code)) << "'" << code << "'";
  }
}

TEST(Currency, RegisterAcceptsCodesAtTheLengthLimits) {
  EXPECT_NO_THROW(currency_register("T_3", 1));
  EXPECT_NO_THROW(currency_register("TEST_12CHARS", 1));
  EXPECT_TRUE(currency_known("TEST_12CHARS"));
}

TEST(Currency, RegisterRejectsExponentOutOfRange) {
  EXPECT_THROW(currency_register("TEST_NEG", -1), InvalidArgument);
  EXPECT_THROW(currency_register("TEST_BIG", amount_exponent_max + 1), InvalidArgument);
  EXPECT_FALSE(currency_known("TEST_NEG"));
  EXPECT_NO_THROW(currency_register("TEST_MAX", amount_exponent_max));
}

TEST(Currency, ReferencesStayValidWhileOthersRegister) {
  const Currency& cny = currency_get("CNY");
  for (int i = 0; i < 200; ++i) currency_register("TEST_REF" + std::to_string(i), i % 19);
  EXPECT_EQ(&currency_get("CNY"), &cny);
  EXPECT_EQ(cny.code, "CNY");
  EXPECT_EQ(cny.exponent, 2);
}

TEST(Currency, ConcurrentRegisterAndGetAgree) {
  constexpr int thread_count = 8;
  constexpr int codes_per_thread = 100;
  std::atomic<int> disagreements{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < thread_count; ++t) {
    threads.emplace_back([t, &disagreements] {
      for (int i = 0; i < codes_per_thread; ++i) {
        // Every thread registers the same codes, so same-exponent
        // re-registration races with first registration.
        const std::string code = "TEST_CC" + std::to_string(i);
        currency_register(code, i % 19);
        if (currency_get(code).exponent != i % 19) ++disagreements;
        if (currency_get("USD").exponent != 2) ++disagreements;
        if (t % 2 == 0 && currency_known("TEST_NEVER")) ++disagreements;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(disagreements.load(), 0);
}

TEST(Currency, ExponentFromTheRegistryDrivesParseAndFormat) {
  EXPECT_EQ(amount_parse("12.34", currency_get("CNY").exponent), 1234);
  EXPECT_EQ(amount_parse("1234", currency_get("JPY").exponent), 1234);
  EXPECT_THROW(amount_parse("12.5", currency_get("KRW").exponent), InvalidAmount);
  EXPECT_EQ(amount_format(1234, currency_get("BHD").exponent), "1.234");
  EXPECT_EQ(amount_parse("0.00000001", currency_get("BTC").exponent), 1);
}

}  // namespace
}  // namespace payq

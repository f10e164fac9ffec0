// money_text: amounts in messages as people read them (issue 21).
#include <gtest/gtest.h>

#include <cstdint>
#include <limits>

#include "payq/currency.hpp"

namespace payq {
namespace {

TEST(MoneyText, ShowsTheCurrencysNotation) {
  EXPECT_EQ(money_text(1000, "USD"), "10.00 USD");
  EXPECT_EQ(money_text(99900, "USD"), "999.00 USD");
  EXPECT_EQ(money_text(-5, "CNY"), "-0.05 CNY");
  EXPECT_EQ(money_text(0, "CNY"), "0.00 CNY");
  EXPECT_EQ(money_text(500, "JPY"), "500 JPY");
  EXPECT_EQ(money_text(1, "BHD"), "0.001 BHD");
  EXPECT_EQ(money_text(150000000, "BTC"), "1.50000000 BTC");
  EXPECT_EQ(money_text(std::numeric_limits<std::int64_t>::min(), "JPY"), "-9223372036854775808 JPY");
}

TEST(MoneyText, SaysMinorUnitsForACurrencyItCannotScale) {
  EXPECT_EQ(money_text(1000, "POINTS_NOT_HERE"), "1000 minor units of POINTS_NOT_HERE");
}

}  // namespace
}  // namespace payq

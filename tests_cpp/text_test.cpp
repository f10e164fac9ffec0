// Bounded text: cut without splitting a UTF-8 sequence.
#include "text_internal.hpp"

#include <gtest/gtest.h>

#include "payq/error.hpp"

namespace payq::detail {
namespace {

TEST(Text, TruncationKeepsUtf8SequencesWhole) {
  EXPECT_EQ(text_truncated("short", 10), "short");
  EXPECT_EQ(text_truncated("abcdef", 3), "abc...");
  const std::string e_acute = "\xC3\xA9";              // 2 bytes
  const std::string yuan = "\xE5\x85\x83";              // 3 bytes
  EXPECT_EQ(text_truncated("a" + e_acute, 2), "a...");  // the cut would fall inside é
  EXPECT_EQ(text_truncated(yuan + yuan, 4), yuan + "...");
  EXPECT_EQ(text_truncated(yuan + yuan, 5), yuan + "...");
  EXPECT_EQ(text_truncated(yuan + yuan, 6), yuan + yuan);
}

TEST(Text, ArrayElementsUnquoteAndUnescape) {
  EXPECT_EQ(array_elements("{}"), std::vector<std::string>{});
  EXPECT_EQ(array_elements("{daily_count=5,per_transaction_max=-1}"),
            (std::vector<std::string>{"daily_count=5", "per_transaction_max=-1"}));
  EXPECT_EQ(array_elements(R"({a,"b c","d,e","f\"g",""})"),
            (std::vector<std::string>{"a", "b c", "d,e", "f\"g", ""}));
  EXPECT_THROW(array_elements(""), DatabaseError);
  EXPECT_THROW(array_elements("a,b"), DatabaseError);
}

TEST(Text, BoundedRefusesEmptyLongAndControlCharacters) {
  EXPECT_NO_THROW(text_bounded("ok", 2, "x"));
  EXPECT_THROW(text_bounded("", 2, "x"), InvalidArgument);
  EXPECT_THROW(text_bounded("abc", 2, "x"), InvalidArgument);
  EXPECT_THROW(text_bounded("a\nb", 5, "x"), InvalidArgument);
}

}  // namespace
}  // namespace payq::detail

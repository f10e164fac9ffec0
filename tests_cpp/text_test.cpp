// Bounded text: cut without splitting a UTF-8 sequence.
#include "common/text_internal.hpp"

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

TEST(Text, JsonInputRefusesNulDeepNestingAndNeverRepeatsTheText) {
  EXPECT_EQ(json_input_parse(R"({"a":[1,"x"]})", "payload")["a"][1], "x");
  // An escaped backslash before u0000 is text, not a NUL.
  EXPECT_EQ(json_input_parse(R"(["\\u0000"])", "payload")[0], "\\u0000");
  EXPECT_THROW(json_input_parse(R"({"a":"x\u0000"})", "payload"), InvalidArgument);
  EXPECT_THROW(json_input_parse(R"({"a\u0000":1})", "payload"), InvalidArgument);
  const std::string deep = std::string(json_depth_max + 1, '[') + std::string(json_depth_max + 1, ']');
  EXPECT_THROW(json_input_parse(deep, "payload"), InvalidArgument);
  const std::string deepest = std::string(json_depth_max, '[') + std::string(json_depth_max, ']');
  EXPECT_NO_THROW(json_input_parse(deepest, "payload"));
  try {
    json_input_parse(R"({"card":"4111 1111 1111 1111)", "payload");
    FAIL() << "not JSON was accepted";
  } catch (const InvalidArgument& e) {
    EXPECT_EQ(std::string(e.what()).find("4111"), std::string::npos) << e.what();
  }
  EXPECT_THROW(json_input_canonical("[1]", "payload", 2), InvalidArgument);
  EXPECT_EQ(json_input_canonical(R"({"b":1, "a":2})", "payload", 100), R"({"a":2,"b":1})");
}

}  // namespace
}  // namespace payq::detail

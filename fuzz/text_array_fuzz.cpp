// PostgreSQL's array text, as read by detail::array_elements
// (cpp/src/text_internal.hpp).
//
// Input: read twice. Once whole, as array text straight from the database.
// Once as a list of element strings (libFuzzer's FuzzedDataProvider), which
// are written the way PostgreSQL writes a text[] and read back.
//
// Properties:
//   - text in braces is read, anything else is a DatabaseError, and nothing
//     else is ever thrown; the elements together are never longer than the
//     text;
//   - reading what PostgreSQL writes gives back the elements: every element
//     quoted with '"' and '\' escaped, and bare where PostgreSQL leaves an
//     element bare.
#include <fuzzer/FuzzedDataProvider.h>

#include <cctype>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "fuzz_check.hpp"
#include "payq/error.hpp"
#include "common/text_internal.hpp"

namespace {

using payq::fuzz::printable;

// Elements per input, so one run stays quick.
constexpr std::size_t elements_max = 64;

std::string quoted_element(const std::string& element) {
  std::string out = "\"";
  for (char c : element) {
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  return out + "\"";
}

// What array_out in PostgreSQL leaves unquoted: not empty, not NULL, and no
// brace, quote, comma, backslash or white space.
bool bare_in_postgres(const std::string& element) {
  if (element.empty()) return false;
  std::string upper;
  for (char c : element) upper.push_back(static_cast<char>(std::toupper(static_cast<unsigned char>(c))));
  if (upper == "NULL") return false;
  for (unsigned char c : element) {
    if (c == '{' || c == '}' || c == '"' || c == ',' || c == '\\' || std::isspace(c)) return false;
  }
  return true;
}

std::string joined(const std::vector<std::string>& elements) {
  std::string out;
  for (const std::string& element : elements) out += (out.empty() ? "[" : ", ") + printable(element);
  return out + "]";
}

void check_any_text(const std::string& text) {
  const bool braced = text.size() >= 2 && text.front() == '{' && text.back() == '}';
  std::vector<std::string> elements;
  try {
    elements = payq::detail::array_elements(text);
  } catch (const payq::DatabaseError&) {
    PAYQ_FUZZ_CHECK(!braced, "refused braced text " + printable(text));
    return;
  } catch (...) {
    payq::fuzz::unexpected_exception("array_elements");
  }
  PAYQ_FUZZ_CHECK(braced, "read text without braces " + printable(text));
  std::size_t bytes = 0;
  for (const std::string& element : elements) bytes += element.size();
  PAYQ_FUZZ_CHECK(bytes + 2 <= text.size(), "elements longer than the text " + printable(text));
  if (text == "{}") PAYQ_FUZZ_CHECK(elements.empty(), "{} is not empty");
}

void check_round_trip(const std::vector<std::string>& elements, bool bare_where_possible) {
  std::string text = "{";
  for (std::size_t i = 0; i < elements.size(); ++i) {
    if (i > 0) text += ",";
    text += bare_where_possible && bare_in_postgres(elements[i]) ? elements[i] : quoted_element(elements[i]);
  }
  text += "}";
  std::vector<std::string> back;
  try {
    back = payq::detail::array_elements(text);
  } catch (...) {
    payq::fuzz::unexpected_exception("array_elements (round trip)");
  }
  PAYQ_FUZZ_CHECK(back == elements, printable(text) + " read as " + joined(back) + ", written from " +
                                        joined(elements));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  check_any_text(std::string(reinterpret_cast<const char*>(data), size));

  FuzzedDataProvider provider(data, size);
  std::vector<std::string> elements;
  while (provider.remaining_bytes() > 0 && elements.size() < elements_max) {
    elements.push_back(provider.ConsumeRandomLengthString(64));
  }
  // "{}" is the empty array; a single empty element is written {""}.
  check_round_trip(elements, false);
  check_round_trip(elements, true);
  return 0;
}

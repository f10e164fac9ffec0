#include "text_internal.hpp"

#include "payq/error.hpp"

namespace payq::detail {

void text_bounded(const std::string& value, std::size_t bytes_max, const char* what) {
  if (value.empty() || value.size() > bytes_max) {
    throw InvalidArgument(std::string(what) + " must be 1 to " + std::to_string(bytes_max) + " bytes");
  }
  for (unsigned char c : value) {
    if (c < 0x20 || c == 0x7f) throw InvalidArgument(std::string(what) + " contains a control character");
  }
}

std::string_view utf8_prefix(std::string_view text, std::size_t bytes_max) {
  if (text.size() <= bytes_max) return text;
  std::size_t end = bytes_max;
  // Back off continuation bytes (10xxxxxx) to the start of the sequence.
  while (end > 0 && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) --end;
  return text.substr(0, end);
}

std::string text_truncated(const std::string& value, std::size_t bytes_max) {
  if (value.size() <= bytes_max) return value;
  return std::string(utf8_prefix(value, bytes_max)) + "...";
}

}  // namespace payq::detail

#include "text_internal.hpp"

#include <cstdint>
#include <cstdio>

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

std::vector<std::string> array_elements(std::string_view array_text) {
  if (array_text.size() < 2 || array_text.front() != '{' || array_text.back() != '}') {
    throw DatabaseError("not an array from the database: " + std::string(array_text));
  }
  std::vector<std::string> out;
  if (array_text.size() == 2) return out;
  std::string current;
  bool quoted = false;
  for (std::size_t i = 1; i + 1 < array_text.size(); ++i) {
    const char c = array_text[i];
    if (c == '"') {
      quoted = !quoted;
    } else if (c == '\\' && i + 2 < array_text.size()) {
      current.push_back(array_text[++i]);
    } else if (c == ',' && !quoted) {
      out.push_back(std::move(current));
      current.clear();
    } else {
      current.push_back(c);
    }
  }
  out.push_back(std::move(current));
  return out;
}

std::string request_hash(const std::string& canonical) {
  std::uint64_t hash = 14695981039346656037ull;
  for (unsigned char c : canonical) {
    hash ^= c;
    hash *= 1099511628211ull;
  }
  char text[17];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(hash));
  return text;
}

}  // namespace payq::detail

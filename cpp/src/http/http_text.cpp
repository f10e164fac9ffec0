#include "http/http_text_internal.hpp"

#include <cctype>
#include <cstdint>

namespace payq::http_detail {
namespace {

constexpr const char* replacement_character = "\xEF\xBF\xBD";  // U+FFFD

bool path_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_' || c == '-';
}

bool all_digits(const std::string& text) {
  if (text.empty()) return false;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

bool continuation(unsigned char c) { return (c & 0xC0) == 0x80; }

// The length of the valid UTF-8 sequence at text[i], 0 if invalid.
std::size_t utf8_sequence_length(std::string_view text, std::size_t i) {
  const auto c = static_cast<unsigned char>(text[i]);
  std::size_t length = 0;
  std::uint32_t minimum = 0;
  std::uint32_t code = 0;
  if (c < 0x80) return 1;
  if ((c & 0xE0) == 0xC0) {
    length = 2;
    minimum = 0x80;
    code = c & 0x1Fu;
  } else if ((c & 0xF0) == 0xE0) {
    length = 3;
    minimum = 0x800;
    code = c & 0x0Fu;
  } else if ((c & 0xF8) == 0xF0) {
    length = 4;
    minimum = 0x10000;
    code = c & 0x07u;
  } else {
    return 0;
  }
  if (i + length > text.size()) return 0;
  for (std::size_t k = 1; k < length; ++k) {
    const auto next = static_cast<unsigned char>(text[i + k]);
    if (!continuation(next)) return 0;
    code = (code << 6) | (next & 0x3Fu);
  }
  // Overlong forms, surrogates and code points past U+10FFFF are invalid.
  if (code < minimum || code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF)) return 0;
  return length;
}

}  // namespace

std::vector<std::string> json_path_split(std::string_view dotted) {
  std::vector<std::string> out;
  std::string segment;
  for (char c : dotted) {
    if (c == '.') {
      if (segment.empty()) return {};
      out.push_back(std::move(segment));
      segment.clear();
    } else if (path_char(c)) {
      segment.push_back(c);
    } else {
      return {};
    }
  }
  if (segment.empty()) return {};
  out.push_back(std::move(segment));
  return out;
}

const nlohmann::json* json_path_find(const nlohmann::json& root, const std::vector<std::string>& path) {
  const nlohmann::json* at = &root;
  for (const std::string& segment : path) {
    if (at->is_object()) {
      auto found = at->find(segment);
      if (found == at->end()) return nullptr;
      at = &*found;
    } else if (at->is_array() && all_digits(segment) && segment.size() < 10) {
      const std::size_t index = std::stoul(segment);
      if (index >= at->size()) return nullptr;
      at = &(*at)[index];
    } else {
      return nullptr;
    }
  }
  return at;
}

std::string percent_encoded(std::string_view text) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (std::isalnum(byte) != 0 || c == '-' || c == '.' || c == '_' || c == '~' || c == ':' || c == '@') {
      out.push_back(c);
    } else {
      out.push_back('%');
      out.push_back(hex[byte >> 4]);
      out.push_back(hex[byte & 0x0F]);
    }
  }
  return out;
}

std::string utf8_sanitized(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  std::size_t i = 0;
  while (i < text.size()) {
    const std::size_t length = utf8_sequence_length(text, i);
    if (length == 0 || text[i] == '\0') {
      out += replacement_character;
      ++i;
    } else {
      out.append(text.substr(i, length));
      i += length;
    }
  }
  return out;
}

}  // namespace payq::http_detail

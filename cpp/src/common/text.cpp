#include "common/text_internal.hpp"

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

namespace {

// nlohmann's message without its "last read: '...'" tail, which repeats the
// input, and without the exception's id prefix.
std::string json_error_reason(const nlohmann::json::parse_error& e) {
  std::string message = e.what();
  const std::size_t tail = message.find("; last read");
  if (tail != std::string::npos) message.resize(tail);
  const std::size_t prefix_end = message.find("] ");
  if (message.rfind("[json.exception", 0) == 0 && prefix_end != std::string::npos) message.erase(0, prefix_end + 2);
  return message;
}

bool hex4_zero(std::string_view text, std::size_t at) {
  return at + 4 <= text.size() && text.compare(at, 4, "0000") == 0;
}

// One pass over the text before it is parsed: the nesting depth and
// escaped NULs (in JSON text a NUL can only arrive as the escape u0000).
void json_text_scan(std::string_view text, const char* what) {
  int depth = 0;
  bool in_string = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '"') {
        in_string = false;
      } else if (c == '\\' && i + 1 < text.size()) {
        ++i;
        if (text[i] == 'u' && hex4_zero(text, i + 1)) {
          throw InvalidArgument(std::string(what) +
                                " contains a NUL character (\\u0000), which PostgreSQL cannot store");
        }
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > json_depth_max) {
        throw InvalidArgument(std::string(what) + " is nested deeper than " + std::to_string(json_depth_max) +
                              " levels");
      }
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
}

}  // namespace

nlohmann::json json_input_parse(const std::string& text, const char* what) {
  json_text_scan(text, what);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    throw InvalidArgument(std::string(what) + " is not valid JSON: " + json_error_reason(e));
  }
}

void json_input_check(const std::string& text, const char* what) {
  json_text_scan(text, what);
  // Only a refusal builds the value, for the parser's reason.
  if (!nlohmann::json::accept(text)) json_input_parse(text, what);
}

std::string json_input_canonical(const std::string& text, const char* what, std::size_t bytes_max) {
  if (text.size() > bytes_max) {
    throw InvalidArgument(std::string(what) + " is larger than " + std::to_string(bytes_max) + " bytes");
  }
  return json_input_parse(text, what).dump();
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

#include "payq/http_secret.hpp"

#include <algorithm>
#include <cstdlib>

#include "payq/error.hpp"

namespace payq {

std::string HttpSecrets::from_env(const std::string& variable) {
  if (variable.empty()) throw ConfigError("a secret's environment variable name is empty");
  const char* found = std::getenv(variable.c_str());
  if (found == nullptr) throw ConfigError("environment variable " + variable + " (a secret) is not set");
  std::string value(found);
  if (value.size() < http_secret_bytes_min || value.size() > http_secret_bytes_max) {
    throw ConfigError("environment variable " + variable + " (a secret) must hold " +
                      std::to_string(http_secret_bytes_min) + " to " + std::to_string(http_secret_bytes_max) +
                      " bytes");
  }
  for (unsigned char c : value) {
    if (c < 0x20 || c == 0x7f) throw ConfigError("environment variable " + variable + " (a secret) contains a control character");
  }
  if (std::find(values_.begin(), values_.end(), value) == values_.end()) values_.push_back(value);
  return value;
}

namespace {

// How far the text from some byte on stands for the start of a secret.
struct SecretMatch {
  std::size_t text_end = 0;      // one past the last byte of text read
  std::size_t secret_bytes = 0;  // bytes of the secret matched
  bool text_ended = false;       // the text ran out (maybe mid-escape) first
};

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// The UTF-16 code unit of the four hex digits at text[at]; -1 when they are
// not hex, -2 when the text ends first.
long code_unit_at(std::string_view text, std::size_t at) {
  long unit = 0;
  for (std::size_t i = at; i < at + 4; ++i) {
    if (i >= text.size()) return -2;
    const int digit = hex_value(text[i]);
    if (digit < 0) return -1;
    unit = unit * 16 + digit;
  }
  return unit;
}

void utf8_append(std::string& out, unsigned long code) {
  if (code < 0x80) {
    out += static_cast<char>(code);
  } else if (code < 0x800) {
    out += static_cast<char>(0xC0 | (code >> 6));
    out += static_cast<char>(0x80 | (code & 0x3F));
  } else if (code < 0x10000) {
    out += static_cast<char>(0xE0 | (code >> 12));
    out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (code & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (code >> 18));
    out += static_cast<char>(0x80 | ((code >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (code & 0x3F));
  }
}

// The JSON escape at text[at] (a backslash) decoded into `bytes`, and its
// length in the text: 0 when it is no valid escape, npos when the text ends
// inside it. A surrogate pair (\ud83d\udd11) is one character.
std::size_t escape_decoded(std::string_view text, std::size_t at, std::string& bytes) {
  if (at + 1 >= text.size()) return std::string_view::npos;
  const char kind = text[at + 1];
  const std::string_view simple = "\"/\\bfnrt";
  const std::string_view meant = "\"/\\\b\f\n\r\t";
  if (const std::size_t which = simple.find(kind); which != std::string_view::npos) {
    bytes.assign(1, meant[which]);
    return 2;
  }
  if (kind != 'u') return 0;
  const long high = code_unit_at(text, at + 2);
  if (high < 0) return high == -2 ? std::string_view::npos : 0;
  bytes.clear();
  if (high < 0xD800 || high > 0xDFFF) {
    utf8_append(bytes, static_cast<unsigned long>(high));
    return 6;
  }
  if (high > 0xDBFF) return 0;  // a lone low surrogate stands for nothing
  if (at + 6 >= text.size() || (text[at + 6] == '\\' && at + 7 >= text.size())) return std::string_view::npos;
  if (text[at + 6] != '\\' || text[at + 7] != 'u') return 0;
  const long low = code_unit_at(text, at + 8);
  if (low < 0) return low == -2 ? std::string_view::npos : 0;
  if (low < 0xDC00 || low > 0xDFFF) return 0;
  utf8_append(bytes, 0x10000 + ((static_cast<unsigned long>(high) - 0xD800) << 10) + (static_cast<unsigned long>(low) - 0xDC00));
  return 12;
}

// Matches `secret` against the text from `at` on, reading each character
// either as itself or as any JSON escape of it (\/, \", \\, \u0074, a
// surrogate pair), in any mix: what a provider's JSON encoder may make of
// an echoed header. Bounded by the secret: every step matches at least one
// byte of it or stops.
SecretMatch secret_match(std::string_view text, std::size_t at, std::string_view secret) {
  SecretMatch m;
  m.text_end = at;
  std::string decoded;
  while (m.secret_bytes < secret.size()) {
    if (m.text_end >= text.size()) {
      m.text_ended = true;
      return m;
    }
    if (text[m.text_end] == '\\') {
      const std::size_t length = escape_decoded(text, m.text_end, decoded);
      if (length == std::string_view::npos) {
        m.text_ended = true;
        return m;
      }
      if (length > 0 && secret.substr(m.secret_bytes, decoded.size()) == decoded) {
        m.text_end += length;
        m.secret_bytes += decoded.size();
        continue;
      }
    }
    if (text[m.text_end] != secret[m.secret_bytes]) return m;
    ++m.text_end;
    ++m.secret_bytes;
  }
  return m;
}

// `text` with every whole occurrence of `secret`, in any escaped form,
// replaced; with `tail`, also a start of the secret of at least
// `tail_bytes_min` bytes that the text ends with.
std::string secret_replaced(const std::string& text, std::string_view secret, bool tail, std::size_t tail_bytes_min) {
  std::string out;
  out.reserve(text.size());
  std::size_t at = 0;
  // Bounded by the text: each turn moves past at least one byte of it.
  while (at < text.size()) {
    const char c = text[at];
    if (c == secret.front() || c == '\\') {
      const SecretMatch m = secret_match(text, at, secret);
      const bool whole = m.secret_bytes == secret.size();
      if (whole || (tail && m.text_ended && m.secret_bytes >= tail_bytes_min)) {
        out += http_redacted_text;
        at = m.text_end;
        if (!whole) at = text.size();
        continue;
      }
    }
    out += c;
    ++at;
  }
  return out;
}

}  // namespace

std::string HttpSecrets::redacted(std::string text) const {
  for (const std::string& secret : values_) {
    // Bounded by the text: every replacement moves past the secret it hid.
    for (std::size_t at = text.find(secret); at != std::string::npos; at = text.find(secret, at)) {
      text.replace(at, secret.size(), http_redacted_text);
      at += std::char_traits<char>::length(http_redacted_text);
    }
  }
  // The same secrets as a JSON encoder may have written them.
  for (const std::string& secret : values_) text = secret_replaced(text, secret, false, 0);
  // A text cut off inside a secret, in whichever form, loses that start too.
  for (const std::string& secret : values_) text = secret_replaced(text, secret, true, http_secret_bytes_min / 2);
  return text;
}

}  // namespace payq

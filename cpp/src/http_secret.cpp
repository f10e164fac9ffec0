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

std::string HttpSecrets::redacted(std::string text) const {
  for (const std::string& secret : values_) {
    // Bounded by the text: every replacement moves past the secret it hid.
    for (std::size_t at = text.find(secret); at != std::string::npos; at = text.find(secret, at)) {
      text.replace(at, secret.size(), http_redacted_text);
      at += std::char_traits<char>::length(http_redacted_text);
    }
  }
  for (const std::string& secret : values_) {
    // The longest tail of the text that is a proper start of the secret.
    for (std::size_t length = std::min(text.size(), secret.size() - 1); length >= http_secret_bytes_min / 2;
         --length) {
      if (text.compare(text.size() - length, length, secret, 0, length) == 0) {
        text.replace(text.size() - length, length, http_redacted_text);
        break;
      }
    }
  }
  return text;
}

}  // namespace payq

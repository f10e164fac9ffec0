// Secrets for HTTP calls (an API token in a header): read from the
// environment once, when a kind is configured, and kept out of everything
// payq writes down. The handler passes every error text and stored result
// through redacted() before it leaves the handler.
#pragma once

#include <string>
#include <vector>

namespace payq {

// Bounds, named once. A shorter secret would be too easy to guess and,
// redacted wherever it occurs, would mangle ordinary text.
inline constexpr std::size_t http_secret_bytes_min = 8;
inline constexpr std::size_t http_secret_bytes_max = 8 * 1024;
inline constexpr const char* http_redacted_text = "[redacted]";

class HttpSecrets {
 public:
  // The value of environment variable `variable`, remembered for
  // redaction. ConfigError (naming the variable, never the value) when it
  // is unset, shorter than http_secret_bytes_min or longer than
  // http_secret_bytes_max, or contains a control character.
  std::string from_env(const std::string& variable);

  // `text` with every secret replaced by http_redacted_text, whether it
  // stands there as itself or JSON-escaped, character by character in any
  // mix (tok\/ABC, \u0074ok, \"; a surrogate pair for a character
  // beyond U+FFFF): a provider's JSON encoder may echo a header either way.
  // A text that ends with the start of a secret, in any such form (a body
  // cut off mid-secret, even mid-escape), loses that start too, from half
  // of http_secret_bytes_min bytes on.
  std::string redacted(std::string text) const;

  bool empty() const noexcept { return values_.empty(); }

 private:
  std::vector<std::string> values_;
};

}  // namespace payq

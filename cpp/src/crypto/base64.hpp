// Standard base64 (RFC 4648, with padding) for keys and ciphertexts.
#pragma once

#include <optional>
#include <string>

namespace payq::crypto {

std::string base64_encode(const std::string& bytes);
// nullopt unless `text` is canonical padded base64 (no whitespace).
std::optional<std::string> base64_decode(const std::string& text);

}  // namespace payq::crypto

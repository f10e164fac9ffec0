// Text helpers shared by the HTTP handler's parts: dotted JSON paths,
// percent-encoding, and making a provider's bytes safe to store.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/text_internal.hpp"

namespace payq::http_detail {

// "a.b.0" -> {"a", "b", "0"}; empty when the path is malformed (empty, an
// empty segment, a character outside [A-Za-z0-9_-]).
std::vector<std::string> json_path_split(std::string_view dotted);

// The value at `path` below `root` (an all-digits segment also indexes an
// array), or nullptr.
const nlohmann::json* json_path_find(const nlohmann::json& root, const std::vector<std::string>& path);

// Everything but unreserved characters (RFC 3986) and ':' '@' escaped as
// %XX, so a value stays inside its path segment or query value.
std::string percent_encoded(std::string_view text);

// Valid UTF-8 without NUL, as PostgreSQL text and jsonb need: invalid
// sequences and NUL become U+FFFD.
std::string utf8_sanitized(std::string_view text);

using detail::utf8_prefix;

}  // namespace payq::http_detail

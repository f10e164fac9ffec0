// Checks on text that payq stores (identifiers, keys, names), and the
// reading of PostgreSQL's array text.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace payq::detail {

// InvalidArgument unless `value` is 1..bytes_max bytes without control
// characters; `what` names it in the message.
void text_bounded(const std::string& value, std::size_t bytes_max, const char* what);

// The longest prefix of UTF-8 `text` of at most `bytes_max` bytes that does
// not split a character.
std::string_view utf8_prefix(std::string_view text, std::size_t bytes_max);

// `value` cut to at most `bytes_max` bytes (plus "..." if cut) without
// splitting a UTF-8 sequence, which PostgreSQL would refuse to store.
std::string text_truncated(const std::string& value, std::size_t bytes_max);

// The elements of a one-dimensional PostgreSQL array in text form, as in
// {a,b,"c d","e\\"f"}: quotes and backslash escapes removed. DatabaseError
// unless `array_text` is enclosed in braces.
std::vector<std::string> array_elements(std::string_view array_text);

// The identity of a request under an idempotency key: FNV-1a (64 bits, hex)
// of its canonical text. Equal texts give equal hashes; a key reused with a
// different request is told apart by it.
std::string request_hash(const std::string& canonical);

}  // namespace payq::detail

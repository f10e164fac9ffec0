// Checks on text that payq stores (identifiers, keys, names), and the
// reading of PostgreSQL's array text.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

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

// How deeply a caller's JSON (a payload, metadata) may nest: far beyond any
// real document, and shallow enough that no recursive reader or writer of it
// (nlohmann's dump, PostgreSQL's jsonb) runs out of stack.
inline constexpr int json_depth_max = 512;

// The JSON value of `text`, a caller's input (a task payload, a follow-up,
// ledger metadata). InvalidArgument, naming `what`, unless it is JSON nested
// at most json_depth_max deep with no NUL character (escape u0000) in any string
// or key: PostgreSQL's jsonb cannot store one, and refusing it here keeps the
// caller's transaction usable. The messages never repeat the text, which
// may hold personal data.
nlohmann::json json_input_parse(const std::string& text, const char* what);
// What json_input_parse checks, without building the value (the COPY path
// of enqueue sends the text as it came).
void json_input_check(const std::string& text, const char* what);

// json_input_parse's value as canonical text; InvalidArgument beyond
// `bytes_max` bytes.
std::string json_input_canonical(const std::string& text, const char* what, std::size_t bytes_max);

// The elements of a one-dimensional PostgreSQL array in text form, as in
// {a,b,"c d","e\\"f"}: quotes and backslash escapes removed. DatabaseError
// unless `array_text` is enclosed in braces.
std::vector<std::string> array_elements(std::string_view array_text);

// The identity of a request under an idempotency key: FNV-1a (64 bits, hex)
// of its canonical text. Equal texts give equal hashes; a key reused with a
// different request is told apart by it.
std::string request_hash(const std::string& canonical);

}  // namespace payq::detail

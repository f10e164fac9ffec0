// Response classification (http_classify.hpp): a provider's status, body
// and headers against a kind's rules, built from the input too.
//
// Input: 8 bytes of control (status, transport failure, which rules exist
// and their verdicts), then NUL-separated texts: body, success_when path,
// success_when value (JSON; other text is taken as a JSON string),
// error_code_field, two error codes, Retry-After, Location, libcurl's error.
//
// Properties:
//   - http_rules_validate refuses only with ConfigError; http_classify and
//     http_retry_after_ms never throw: a provider's bytes always classify;
//   - the verdict is the one the rules in http_classify.hpp give, computed
//     here the plain way (status rules, then the defaults; an error code
//     overrides; a success needs every success_when field; transport
//     failures by request_sent);
//   - body_json is the body's JSON exactly when the body is complete JSON;
//   - the reason starts with "HTTP <status>" (or the failure's name), is
//     valid UTF-8 (it is stored in PostgreSQL text) and stays short;
//   - Retry-After is absent or within 0..cap, and delta-seconds are exact.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "fuzz_check.hpp"
#include "payq/error.hpp"
#include "payq/http_classify.hpp"
#include "payq/http_client.hpp"

namespace {

using Json = nlohmann::json;
using payq::HttpVerdict;
using payq::fuzz::printable;

constexpr std::size_t control_bytes = 8;
constexpr std::size_t text_count = 9;
// Rules quote at most 100 bytes of a value and 300 of a Location header or
// libcurl error; paths are validated names. Anything longer is a leak of
// the body into the reason.
constexpr std::size_t reason_bytes_max = 1500;
constexpr std::int64_t retry_after_cap_ms = 600'000;

HttpVerdict verdict_from(unsigned bits) {
  static constexpr HttpVerdict verdicts[] = {HttpVerdict::success, HttpVerdict::retry, HttpVerdict::fail,
                                             HttpVerdict::unknown};
  return verdicts[bits % 4];
}

bool utf8_valid(const std::string& text) {
  std::size_t i = 0;
  while (i < text.size()) {
    const auto c = static_cast<unsigned char>(text[i]);
    std::size_t length = 0;
    std::uint32_t code = 0;
    std::uint32_t minimum = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      length = 2, code = c & 0x1Fu, minimum = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
      length = 3, code = c & 0x0Fu, minimum = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
      length = 4, code = c & 0x07u, minimum = 0x10000;
    } else {
      return false;
    }
    if (i + length > text.size()) return false;
    for (std::size_t k = 1; k < length; ++k) {
      const auto next = static_cast<unsigned char>(text[i + k]);
      if ((next & 0xC0) != 0x80) return false;
      code = (code << 6) | (next & 0x3Fu);
    }
    if (code < minimum || code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF)) return false;
    i += length;
  }
  return true;
}

// The dotted path of http_classify.hpp, read the plain way.
const Json* path_find(const Json& root, const std::string& dotted) {
  const Json* at = &root;
  std::size_t start = 0;
  while (start <= dotted.size()) {
    const std::size_t dot = dotted.find('.', start);
    const std::string segment = dotted.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (at->is_object()) {
      const auto it = at->find(segment);
      if (it == at->end()) return nullptr;
      at = &*it;
    } else if (at->is_array() && !segment.empty() && segment.size() < 10 &&
               segment.find_first_not_of("0123456789") == std::string::npos) {
      const std::size_t index = std::stoul(segment);
      if (index >= at->size()) return nullptr;
      at = &(*at)[index];
    } else {
      return nullptr;
    }
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return at;
}

HttpVerdict status_expected(const payq::HttpRules& rules, int status) {
  for (const payq::HttpStatusRule& rule : rules.status_rules) {
    if (status >= rule.status_min && status <= rule.status_max) return rule.verdict;
  }
  if (status >= 200 && status <= 299) return HttpVerdict::success;
  if (status >= 300 && status <= 399) return HttpVerdict::fail;
  if (status == 429) return HttpVerdict::retry;
  if (status >= 400 && status <= 499) return HttpVerdict::fail;
  return HttpVerdict::unknown;
}

HttpVerdict verdict_expected(const payq::HttpRules& rules, const payq::HttpResponse& response, const Json& body) {
  if (response.failure != payq::HttpFailure::none) {
    return response.request_sent ? HttpVerdict::unknown : HttpVerdict::retry;
  }
  const HttpVerdict by_status = status_expected(rules, response.status);
  if (!body.is_object()) {
    return by_status == HttpVerdict::success && !rules.success_when.empty() ? rules.success_mismatch : by_status;
  }
  if (!rules.error_codes.empty()) {
    const Json* field = path_find(body, rules.error_code_field);
    std::optional<std::string> code;
    if (field && field->is_string()) code = field->get<std::string>();
    if (field && (field->is_number_integer() || field->is_number_unsigned())) code = field->dump();
    for (const payq::HttpErrorCode& e : rules.error_codes) {
      if (code && e.code == *code) return e.verdict;
    }
  }
  if (by_status != HttpVerdict::success) return by_status;
  for (const payq::HttpFieldMatch& match : rules.success_when) {
    const Json* field = path_find(body, match.path);
    if (field == nullptr || *field != match.value) return rules.success_mismatch;
  }
  return HttpVerdict::success;
}

std::vector<std::string> texts_split(const std::uint8_t* data, std::size_t size) {
  std::vector<std::string> texts;
  std::string current;
  for (std::size_t i = 0; i < size; ++i) {
    if (data[i] == 0 && texts.size() + 1 < text_count) {
      texts.push_back(std::move(current));
      current.clear();
    } else {
      current.push_back(static_cast<char>(data[i]));
    }
  }
  texts.push_back(std::move(current));
  texts.resize(text_count);
  return texts;
}

payq::HttpRules rules_build(const std::uint8_t* control, const std::vector<std::string>& texts) {
  payq::HttpRules rules;
  const unsigned shape = control[3];
  if (shape & 1u) {
    const int status_min = 100 + control[4] * 2;
    rules.status_rules.push_back({status_min, status_min + (control[5] % 8) * 10, verdict_from(control[6])});
  }
  if (shape & 2u) {
    Json value = Json::parse(texts[2], nullptr, false);
    if (value.is_discarded()) value = texts[2];
    rules.success_when.push_back({texts[1], value});
  }
  if (shape & 4u) {
    rules.error_codes.push_back({texts[4], verdict_from(control[6] >> 2)});
    if (shape & 8u) rules.error_codes.push_back({texts[5], verdict_from(control[6] >> 4)});
  }
  if (shape & 16u) rules.error_code_field = texts[3];
  rules.success_mismatch = verdict_from(shape >> 5);
  return rules;
}

payq::HttpResponse response_build(const std::uint8_t* control, const std::vector<std::string>& texts) {
  payq::HttpResponse response;
  response.status = (control[0] << 8 | control[1]) % 700;
  const unsigned flags = control[2];
  response.body_truncated = (flags & 1u) != 0;
  response.request_sent = (flags & 2u) != 0;
  response.failure = static_cast<payq::HttpFailure>((flags >> 2) % 9);
  response.body = texts[0];
  response.error = texts[8];
  if (flags & 0x40u) response.headers.push_back({"retry-after", texts[6]});
  if (flags & 0x80u) response.headers.push_back({"location", texts[7]});
  return response;
}

void check_classification(const payq::HttpRules& rules, const payq::HttpResponse& response) {
  payq::HttpClassification c;
  try {
    c = payq::http_classify(rules, response);
  } catch (...) {
    payq::fuzz::unexpected_exception("http_classify");
  }
  Json body(Json::value_t::discarded);
  if (response.failure == payq::HttpFailure::none && !response.body_truncated && !response.body.empty()) {
    body = Json::parse(response.body, nullptr, false);
  }
  PAYQ_FUZZ_CHECK(c.body_json.is_discarded() == body.is_discarded() && (body.is_discarded() || c.body_json == body),
                  "body_json differs from the body's JSON");
  const HttpVerdict expected = verdict_expected(rules, response, body);
  PAYQ_FUZZ_CHECK(c.verdict == expected, std::string("verdict ") + payq::http_verdict_name(c.verdict) +
                                             ", expected " + payq::http_verdict_name(expected) + "; reason: " +
                                             printable(c.reason));
  const std::string prefix = response.failure == payq::HttpFailure::none
                                 ? "HTTP " + std::to_string(response.status)
                                 : std::string(payq::http_failure_name(response.failure)) + " failure: ";
  PAYQ_FUZZ_CHECK(c.reason.compare(0, prefix.size(), prefix) == 0, "reason " + printable(c.reason));
  PAYQ_FUZZ_CHECK(utf8_valid(c.reason), "reason is not UTF-8: " + printable(c.reason));
  PAYQ_FUZZ_CHECK(c.reason.size() <= reason_bytes_max, "reason is " + std::to_string(c.reason.size()) + " bytes");
}

void check_retry_after(const payq::HttpResponse& response) {
  std::optional<std::int64_t> after;
  try {
    after = payq::http_retry_after_ms(response, retry_after_cap_ms);
  } catch (...) {
    payq::fuzz::unexpected_exception("http_retry_after_ms");
  }
  const std::string* header = response.header("retry-after");
  if (header == nullptr || header->empty()) {
    PAYQ_FUZZ_CHECK(!after, "Retry-After without the header");
    return;
  }
  if (after) PAYQ_FUZZ_CHECK(*after >= 0 && *after <= retry_after_cap_ms, "Retry-After " + std::to_string(*after));
  if (header->find_first_not_of("0123456789") == std::string::npos) {
    std::int64_t expected = retry_after_cap_ms;
    if (header->size() <= 9) expected = std::min<std::int64_t>(retry_after_cap_ms, std::stoll(*header) * 1000);
    PAYQ_FUZZ_CHECK(after == expected, "Retry-After '" + *header + "' gave " + std::to_string(after.value_or(-1)));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < control_bytes) return 0;
  const std::vector<std::string> texts = texts_split(data + control_bytes, size - control_bytes);
  payq::HttpRules rules = rules_build(data, texts);
  try {
    payq::http_rules_validate(rules);
  } catch (const payq::ConfigError&) {
    rules = payq::HttpRules{};  // A kind with bad rules is never configured; classify with none.
  } catch (...) {
    payq::fuzz::unexpected_exception("http_rules_validate");
  }
  const payq::HttpResponse response = response_build(data, texts);
  check_classification(rules, response);
  check_retry_after(response);
  return 0;
}

#include "payq/http_classify.hpp"

#include <curl/curl.h>

#include <algorithm>
#include <ctime>
#include <set>

#include "http/http_text_internal.hpp"
#include "payq/error.hpp"

namespace payq {
namespace {

using Json = nlohmann::json;

// A field value quoted in a reason is cut to this many bytes.
constexpr std::size_t reason_value_bytes_max = 100;
// Longer delta-seconds are treated as the cap.
constexpr std::size_t retry_after_digits_max = 9;

std::string quoted_value(const Json& value) {
  const std::string text = value.dump(-1, ' ', false, Json::error_handler_t::replace);
  if (text.size() <= reason_value_bytes_max) return text;
  return std::string(http_detail::utf8_prefix(text, reason_value_bytes_max)) + "...";
}

// An error code's text: a string as it is, a number in decimal; nullopt
// for anything else.
std::optional<std::string> code_text(const Json& value) {
  if (value.is_string()) return value.get<std::string>();
  if (value.is_number_integer() || value.is_number_unsigned()) return value.dump();
  return std::nullopt;
}

HttpVerdict status_verdict(const HttpRules& rules, int status) {
  for (const auto* list : {&rules.status_rules, &http_status_rules_default()}) {
    for (const HttpStatusRule& rule : *list) {
      if (status >= rule.status_min && status <= rule.status_max) return rule.verdict;
    }
  }
  return HttpVerdict::unknown;
}

std::string status_reason(const HttpResponse& response) {
  std::string reason = "HTTP " + std::to_string(response.status);
  if (response.status >= 300 && response.status < 400) {
    const std::string* location = response.header("location");
    reason += " redirect";
    if (location) reason += " to " + http_detail::utf8_sanitized(http_detail::utf8_prefix(*location, 300));
    reason += " (not followed)";
  }
  return reason;
}

HttpClassification transport_failure(const HttpResponse& response) {
  HttpClassification c;
  const std::string what = std::string(http_failure_name(response.failure)) + " failure: " +
                           http_detail::utf8_sanitized(http_detail::utf8_prefix(response.error, 300));
  if (response.request_sent) {
    c.verdict = HttpVerdict::unknown;
    c.reason = what + " (after the request may have been sent)";
  } else {
    c.verdict = HttpVerdict::retry;
    c.reason = what + " (nothing was sent)";
  }
  return c;
}

}  // namespace

const char* http_verdict_name(HttpVerdict verdict) {
  switch (verdict) {
    case HttpVerdict::success: return "success";
    case HttpVerdict::retry: return "retry";
    case HttpVerdict::fail: return "fail";
    case HttpVerdict::unknown: return "unknown";
  }
  return "unknown";
}

HttpVerdict http_verdict_parse(const std::string& name) {
  if (name == "success") return HttpVerdict::success;
  if (name == "retry") return HttpVerdict::retry;
  if (name == "fail") return HttpVerdict::fail;
  if (name == "unknown") return HttpVerdict::unknown;
  throw ConfigError("'" + name + "' is not an outcome (success, retry, fail or unknown)");
}

const std::vector<HttpStatusRule>& http_status_rules_default() {
  static const std::vector<HttpStatusRule> rules{
      {200, 299, HttpVerdict::success}, {300, 399, HttpVerdict::fail},    {429, 429, HttpVerdict::retry},
      {400, 499, HttpVerdict::fail},    {500, 599, HttpVerdict::unknown},
  };
  return rules;
}

void http_rules_validate(HttpRules& rules) {
  for (const HttpStatusRule& rule : rules.status_rules) {
    if (rule.status_min < 100 || rule.status_max > 599 || rule.status_min > rule.status_max) {
      throw ConfigError("status rule " + std::to_string(rule.status_min) + "-" + std::to_string(rule.status_max) +
                        ": a status range lies within 100-599, lowest first");
    }
  }
  for (const HttpFieldMatch& match : rules.success_when) {
    if (http_detail::json_path_split(match.path).empty()) {
      throw ConfigError("success_when: '" + match.path + "' is not a dotted path of [A-Za-z0-9_-] names");
    }
    if (match.value.is_discarded()) throw ConfigError("success_when: '" + match.path + "' has no value");
  }
  if (rules.success_mismatch == HttpVerdict::success) {
    throw ConfigError("success_mismatch cannot be success: a mismatch would count as paid");
  }
  std::set<std::string> codes;
  for (const HttpErrorCode& code : rules.error_codes) {
    if (code.code.empty()) throw ConfigError("error_codes: an error code is not empty");
    if (!codes.insert(code.code).second) throw ConfigError("error_codes: '" + code.code + "' is listed twice");
  }
  if (!rules.error_codes.empty() && rules.error_code_field.empty()) {
    if (rules.success_when.size() != 1) {
      throw ConfigError("error_codes need error_code_field (or exactly one success_when field to default to)");
    }
    rules.error_code_field = rules.success_when[0].path;
  }
  if (!rules.error_code_field.empty() && http_detail::json_path_split(rules.error_code_field).empty()) {
    throw ConfigError("error_code_field: '" + rules.error_code_field + "' is not a dotted path of [A-Za-z0-9_-] names");
  }
}

HttpClassification http_classify(const HttpRules& rules, const HttpResponse& response) {
  if (response.failure != HttpFailure::none) return transport_failure(response);
  HttpClassification c;
  c.verdict = status_verdict(rules, response.status);
  c.reason = status_reason(response);
  if (!response.body_truncated && !response.body.empty()) {
    c.body_json = Json::parse(response.body, nullptr, false);
  }
  if (!c.body_json.is_object()) {
    if (c.verdict == HttpVerdict::success && !rules.success_when.empty()) {
      c.verdict = rules.success_mismatch;
      c.reason += response.body_truncated ? ", body truncated: success_when cannot be checked"
                                          : ", body is not a JSON object: success_when cannot be checked";
    }
    return c;
  }
  if (!rules.error_codes.empty()) {
    const Json* field = http_detail::json_path_find(c.body_json, http_detail::json_path_split(rules.error_code_field));
    const std::optional<std::string> code = field ? code_text(*field) : std::nullopt;
    if (code) {
      auto found = std::find_if(rules.error_codes.begin(), rules.error_codes.end(),
                                [&](const HttpErrorCode& e) { return e.code == *code; });
      if (found != rules.error_codes.end()) {
        c.verdict = found->verdict;
        c.reason += ", " + rules.error_code_field + " is " + quoted_value(*field);
        return c;
      }
    }
  }
  if (c.verdict != HttpVerdict::success) return c;
  for (const HttpFieldMatch& match : rules.success_when) {
    const Json* field = http_detail::json_path_find(c.body_json, http_detail::json_path_split(match.path));
    if (field == nullptr || *field != match.value) {
      c.verdict = rules.success_mismatch;
      c.reason += ", " + match.path + " is " + (field ? quoted_value(*field) : std::string("missing")) +
                  ", not " + quoted_value(match.value);
      return c;
    }
  }
  return c;
}

std::optional<std::int64_t> http_retry_after_ms(const HttpResponse& response, std::int64_t cap_ms) {
  const std::string* header = response.header("retry-after");
  if (header == nullptr || header->empty()) return std::nullopt;
  const std::string& text = *header;
  if (std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    if (text.size() > retry_after_digits_max) return cap_ms;
    return std::min<std::int64_t>(cap_ms, static_cast<std::int64_t>(std::stoll(text)) * 1000);
  }
  const std::time_t when = curl_getdate(text.c_str(), nullptr);
  if (when == -1) return std::nullopt;
  const std::time_t now = std::time(nullptr);
  if (when <= now) return 0;
  // A date far enough ahead ("Sun, 06 Nov 2147483647 ...") would overflow
  // int64 as milliseconds; any wait past the cap is the cap.
  const std::int64_t wait_s = static_cast<std::int64_t>(when - now);
  if (wait_s > cap_ms / 1000) return cap_ms;
  return std::min<std::int64_t>(cap_ms, wait_s * 1000);
}

}  // namespace payq

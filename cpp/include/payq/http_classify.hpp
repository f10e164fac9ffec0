// How a provider's answer becomes an outcome. Transport failures are fixed
// by what they prove: a request that certainly never left (refused
// connection, DNS or TLS failure, a timeout before the connection was
// ready) is `retry`; one that may have reached the provider (a timeout or a
// dropped connection after sending) is `unknown`. A response is classified
// by rules, in this order:
//
//   1. the status code, by the kind's own ranges first, then the defaults:
//        2xx success, 3xx fail (a redirect not followed), 429 retry,
//        other 4xx fail, 5xx unknown (the provider may have applied it),
//        anything else unknown;
//   2. a provider error code: the value of error_code_field (a dotted path
//      into the JSON body) looked up in error_codes overrides step 1;
//   3. for a success so far, every success_when field must equal its value,
//      else the verdict is success_mismatch (default unknown: an answer we
//      do not understand is not proof either way).
//
// A truncated or non-JSON body matches no field rule.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "payq/http_client.hpp"

namespace payq {

enum class HttpVerdict { success, retry, fail, unknown };
const char* http_verdict_name(HttpVerdict verdict);
// ConfigError for anything but "success", "retry", "fail" and "unknown".
HttpVerdict http_verdict_parse(const std::string& name);

// Status codes status_min..status_max (inclusive).
struct HttpStatusRule {
  int status_min = 0;
  int status_max = 0;
  HttpVerdict verdict = HttpVerdict::unknown;
};

// The JSON body's field at `path` (dotted, e.g. "result.code") equals `value`.
struct HttpFieldMatch {
  std::string path;
  nlohmann::json value;
};

struct HttpErrorCode {
  std::string code;  // a string field's value, or a number's decimal form
  HttpVerdict verdict = HttpVerdict::unknown;
};

struct HttpRules {
  // Checked before http_status_rules_default(); the first match wins.
  std::vector<HttpStatusRule> status_rules;
  // All must hold for a success.
  std::vector<HttpFieldMatch> success_when;
  HttpVerdict success_mismatch = HttpVerdict::unknown;
  // Where the provider's error code is. Empty with error codes given:
  // success_when's path, if it has exactly one.
  std::string error_code_field;
  std::vector<HttpErrorCode> error_codes;
};

const std::vector<HttpStatusRule>& http_status_rules_default();

// Checks the rules and fills in error_code_field's default. ConfigError
// naming the first problem: a status outside 100-599 or a reversed range, a
// malformed path, an empty or repeated error code, error codes without a
// field to read them from, a success_mismatch of success.
void http_rules_validate(HttpRules& rules);

struct HttpClassification {
  HttpVerdict verdict = HttpVerdict::unknown;
  // Why, in a few words ("HTTP 503", "return_code is \"NOTENOUGH\""). A
  // field value quoted here is cut short; the body itself never is here.
  std::string reason;
  // The parsed body; discarded (is_discarded()) when it was not JSON,
  // truncated, or there was no response.
  nlohmann::json body_json = nlohmann::json(nlohmann::json::value_t::discarded);
};

HttpClassification http_classify(const HttpRules& rules, const HttpResponse& response);

// The Retry-After header in milliseconds from now (delta-seconds or an HTTP
// date; a date in the past is 0), capped at `cap_ms`; nullopt when absent or
// malformed.
std::optional<std::int64_t> http_retry_after_ms(const HttpResponse& response, std::int64_t cap_ms);

}  // namespace payq

// Classification rules: the defaults, a kind's own rules, and the order in
// which they apply. Pure: responses are built by hand.
#include <gtest/gtest.h>

#include "payq/error.hpp"
#include "payq/http_classify.hpp"

namespace payq {
namespace {

HttpResponse answer(int status, std::string body = {}, std::vector<HttpHeader> headers = {}) {
  HttpResponse r;
  r.status = status;
  r.body = std::move(body);
  r.headers = std::move(headers);
  r.request_sent = true;
  return r;
}

HttpResponse transport(HttpFailure failure, bool request_sent) {
  HttpResponse r;
  r.failure = failure;
  r.request_sent = request_sent;
  r.error = "simulated";
  return r;
}

HttpVerdict verdict(const HttpRules& rules, const HttpResponse& response) {
  return http_classify(rules, response).verdict;
}

HttpRules payout_rules() {
  HttpRules rules;
  rules.success_when = {{"return_code", "SUCCESS"}};
  rules.error_codes = {{"NOTENOUGH", HttpVerdict::fail}, {"SYSTEMERROR", HttpVerdict::unknown},
                       {"FREQUENCY_LIMITED", HttpVerdict::retry}};
  http_rules_validate(rules);
  return rules;
}

TEST(HttpClassify, DefaultsForAPayout) {
  const HttpRules rules;
  EXPECT_EQ(verdict(rules, answer(200)), HttpVerdict::success);
  EXPECT_EQ(verdict(rules, answer(204)), HttpVerdict::success);
  EXPECT_EQ(verdict(rules, answer(301)), HttpVerdict::fail);
  EXPECT_EQ(verdict(rules, answer(400)), HttpVerdict::fail);
  EXPECT_EQ(verdict(rules, answer(404)), HttpVerdict::fail);
  EXPECT_EQ(verdict(rules, answer(409)), HttpVerdict::fail);
  EXPECT_EQ(verdict(rules, answer(429)), HttpVerdict::retry);
  EXPECT_EQ(verdict(rules, answer(500)), HttpVerdict::unknown);
  EXPECT_EQ(verdict(rules, answer(503)), HttpVerdict::unknown);
  EXPECT_EQ(verdict(rules, answer(600)), HttpVerdict::unknown);
}

TEST(HttpClassify, RedirectNotFollowedSaysWhereItPointed) {
  const HttpClassification c = http_classify(HttpRules{}, answer(307, "", {{"location", "https://elsewhere/x"}}));
  EXPECT_EQ(c.verdict, HttpVerdict::fail);
  EXPECT_NE(c.reason.find("HTTP 307 redirect to https://elsewhere/x (not followed)"), std::string::npos) << c.reason;
}

TEST(HttpClassify, NothingSentIsRetryAndMaybeSentIsUnknown) {
  const HttpRules rules;
  for (HttpFailure f : {HttpFailure::connect, HttpFailure::resolve, HttpFailure::tls, HttpFailure::timeout,
                        HttpFailure::overloaded, HttpFailure::aborted, HttpFailure::other}) {
    EXPECT_EQ(verdict(rules, transport(f, false)), HttpVerdict::retry) << http_failure_name(f);
  }
  for (HttpFailure f : {HttpFailure::timeout, HttpFailure::connection, HttpFailure::aborted, HttpFailure::other}) {
    EXPECT_EQ(verdict(rules, transport(f, true)), HttpVerdict::unknown) << http_failure_name(f);
  }
  // A kind's rules never apply to a transport failure.
  HttpRules lenient;
  lenient.status_rules = {{100, 599, HttpVerdict::success}};
  EXPECT_EQ(verdict(lenient, transport(HttpFailure::timeout, true)), HttpVerdict::unknown);
}

TEST(HttpClassify, KindStatusRulesComeBeforeTheDefaults) {
  HttpRules rules;
  rules.status_rules = {{409, 409, HttpVerdict::unknown}, {500, 599, HttpVerdict::retry}, {400, 499, HttpVerdict::retry}};
  http_rules_validate(rules);
  EXPECT_EQ(verdict(rules, answer(409)), HttpVerdict::unknown);  // first match wins
  EXPECT_EQ(verdict(rules, answer(404)), HttpVerdict::retry);
  EXPECT_EQ(verdict(rules, answer(503)), HttpVerdict::retry);
  EXPECT_EQ(verdict(rules, answer(200)), HttpVerdict::success);  // the defaults still apply
}

TEST(HttpClassify, SuccessNeedsEverySuccessWhenField) {
  HttpRules rules;
  rules.success_when = {{"result.code", 0}, {"status", "SUCCESS"}};
  http_rules_validate(rules);
  EXPECT_EQ(verdict(rules, answer(200, R"({"status":"SUCCESS","result":{"code":0}})")), HttpVerdict::success);
  const HttpClassification wrong = http_classify(rules, answer(200, R"({"status":"SUCCESS","result":{"code":7}})"));
  EXPECT_EQ(wrong.verdict, HttpVerdict::unknown);
  EXPECT_NE(wrong.reason.find("result.code is 7, not 0"), std::string::npos) << wrong.reason;
  EXPECT_EQ(verdict(rules, answer(200, R"({"status":"SUCCESS"})")), HttpVerdict::unknown);
  EXPECT_EQ(verdict(rules, answer(200, "<html>ok</html>")), HttpVerdict::unknown);
  rules.success_mismatch = HttpVerdict::fail;
  EXPECT_EQ(verdict(rules, answer(200, R"({"status":"FAIL","result":{"code":0}})")), HttpVerdict::fail);
  // success_when refines only a success: a 500 stays unknown, a 400 fail.
  EXPECT_EQ(verdict(rules, answer(500, R"({"status":"SUCCESS","result":{"code":0}})")), HttpVerdict::unknown);
  EXPECT_EQ(verdict(rules, answer(400, "{}")), HttpVerdict::fail);
}

TEST(HttpClassify, ProviderErrorCodesOverrideTheStatus) {
  const HttpRules rules = payout_rules();
  EXPECT_EQ(rules.error_code_field, "return_code");  // defaulted from success_when
  EXPECT_EQ(verdict(rules, answer(200, R"({"return_code":"SUCCESS"})")), HttpVerdict::success);
  const HttpClassification broke = http_classify(rules, answer(200, R"({"return_code":"NOTENOUGH"})"));
  EXPECT_EQ(broke.verdict, HttpVerdict::fail);
  EXPECT_NE(broke.reason.find("return_code is \"NOTENOUGH\""), std::string::npos) << broke.reason;
  EXPECT_EQ(verdict(rules, answer(500, R"({"return_code":"SYSTEMERROR"})")), HttpVerdict::unknown);
  EXPECT_EQ(verdict(rules, answer(400, R"({"return_code":"FREQUENCY_LIMITED"})")), HttpVerdict::retry);
  // An unlisted code falls through to the other rules.
  EXPECT_EQ(verdict(rules, answer(200, R"({"return_code":"ODD"})")), HttpVerdict::unknown);
  EXPECT_EQ(verdict(rules, answer(400, R"({"return_code":"ODD"})")), HttpVerdict::fail);
}

TEST(HttpClassify, NumericErrorCodesMatchTheirDecimalForm) {
  HttpRules rules;
  rules.error_code_field = "err.no";
  rules.error_codes = {{"1001", HttpVerdict::fail}};
  http_rules_validate(rules);
  EXPECT_EQ(verdict(rules, answer(200, R"({"err":{"no":1001}})")), HttpVerdict::fail);
  EXPECT_EQ(verdict(rules, answer(200, R"({"err":{"no":"1001"}})")), HttpVerdict::fail);
  EXPECT_EQ(verdict(rules, answer(200, R"({"err":{"no":1002}})")), HttpVerdict::success);
}

TEST(HttpClassify, TruncatedBodyMatchesNoFieldRule) {
  const HttpRules rules = payout_rules();
  HttpResponse r = answer(200, R"({"return_code":"SUCCESS"})");
  r.body_truncated = true;
  const HttpClassification c = http_classify(rules, r);
  EXPECT_EQ(c.verdict, HttpVerdict::unknown);
  EXPECT_NE(c.reason.find("truncated"), std::string::npos);
  r.body = R"({"return_code":"NOTENOUGH"})";
  EXPECT_EQ(verdict(rules, r), HttpVerdict::unknown);
}

TEST(HttpClassify, BadRulesAreConfigErrors) {
  auto invalid = [](HttpRules rules) {
    EXPECT_THROW(http_rules_validate(rules), ConfigError);
  };
  HttpRules r1;
  r1.status_rules = {{500, 400, HttpVerdict::retry}};
  invalid(r1);
  HttpRules r2;
  r2.status_rules = {{99, 200, HttpVerdict::retry}};
  invalid(r2);
  HttpRules r3;
  r3.error_codes = {{"X", HttpVerdict::fail}};  // no field, no single success_when
  invalid(r3);
  HttpRules r4;
  r4.error_code_field = "code";
  r4.error_codes = {{"X", HttpVerdict::fail}, {"X", HttpVerdict::retry}};
  invalid(r4);
  HttpRules r5;
  r5.success_when = {{"a..b", 1}};
  invalid(r5);
  HttpRules r6;
  r6.success_mismatch = HttpVerdict::success;
  invalid(r6);
  HttpRules r7;
  r7.error_code_field = "code";
  r7.error_codes = {{"", HttpVerdict::fail}};
  invalid(r7);
  EXPECT_THROW(http_verdict_parse("maybe"), ConfigError);
  EXPECT_EQ(http_verdict_parse("retry"), HttpVerdict::retry);
}

TEST(HttpClassify, RetryAfterInSecondsOrAsADate) {
  auto with = [](const std::string& value) { return answer(429, "", {{"retry-after", value}}); };
  EXPECT_EQ(http_retry_after_ms(with("7"), 600'000), 7'000);
  EXPECT_EQ(http_retry_after_ms(with("0"), 600'000), 0);
  EXPECT_EQ(http_retry_after_ms(with("999999"), 600'000), 600'000);            // capped
  EXPECT_EQ(http_retry_after_ms(with("99999999999999"), 600'000), 600'000);    // no overflow
  EXPECT_EQ(http_retry_after_ms(with("Wed, 21 Oct 2099 07:28:00 GMT"), 600'000), 600'000);
  EXPECT_EQ(http_retry_after_ms(with("Sun, 06 Nov 1994 08:49:37 GMT"), 600'000), 0);  // past: now
  EXPECT_EQ(http_retry_after_ms(with("soon"), 600'000), std::nullopt);
  EXPECT_EQ(http_retry_after_ms(answer(429), 600'000), std::nullopt);
}

TEST(HttpClassify, RetryAfterDateCenturiesAheadIsTheCapNotAnOverflow) {
  // Found by fuzz/http_classify_fuzz.cpp: libcurl reads this year, and its
  // seconds from now times 1000 overflowed int64 (UBSan: signed overflow).
  auto with = [](const std::string& value) { return answer(503, "", {{"retry-after", value}}); };
  EXPECT_EQ(http_retry_after_ms(with("Sun, 06 Nov 2147483647 08:49:37 GMT"), 600'000), 600'000);
  EXPECT_EQ(http_retry_after_ms(with("Fri, 31 Dec 9999 23:59:59 GMT"), 600'000), 600'000);
}

}  // namespace
}  // namespace payq

// Templates: placeholders filled from the task, escaped for where they land.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "payq/error.hpp"
#include "payq/http_template.hpp"

namespace payq {
namespace {

using Json = nlohmann::json;

Task task_with(const Json& payload) {
  Task t;
  t.id = 42;
  t.kind = "payout";
  t.queue = "provider-a";
  t.attempt = 3;
  t.idempotency_key = "wd/7 ü";
  t.payload_json = payload.dump();
  return t;
}

std::string render(const std::string& text, HttpTemplateContext context, const Json& payload) {
  return HttpTemplate::parse(text, context, "test").render(task_with(payload), payload);
}

TEST(HttpTemplate, BodyStringsAreJsonEscapedAndOtherValuesWrittenAsJson) {
  const Json payload = {{"account", "a\"b\\c\nd"}, {"amount_minor", 500}, {"vip", true}, {"meta", {{"k", 1}}},
                        {"items", {"x", "y"}}, {"none", nullptr}};
  const std::string body = render(
      R"({"account":"{{payload.account}}","amount":{{ payload.amount_minor }},"vip":{{payload.vip}},)"
      R"("meta":{{payload.meta}},"second":"{{payload.items.1}}","none":{{payload.none}}})",
      HttpTemplateContext::body, payload);
  const Json parsed = Json::parse(body);  // still valid JSON
  EXPECT_EQ(parsed["account"], "a\"b\\c\nd");
  EXPECT_EQ(parsed["amount"], 500);
  EXPECT_EQ(parsed["vip"], true);
  EXPECT_EQ(parsed["meta"], Json({{"k", 1}}));
  EXPECT_EQ(parsed["second"], "y");
  EXPECT_TRUE(parsed["none"].is_null());
}

TEST(HttpTemplate, TaskFieldsAndTheWholePayload) {
  const Json payload = {{"a", 1}};
  const std::string body = render(R"({"key":"{{task.idempotency_key}}","id":{{task.id}},"kind":"{{task.kind}}",)"
                                  R"("queue":"{{task.queue}}","attempt":{{task.attempt}},"p":{{payload}}})",
                                  HttpTemplateContext::body, payload);
  EXPECT_EQ(Json::parse(body), Json({{"key", "wd/7 ü"}, {"id", 42}, {"kind", "payout"}, {"queue", "provider-a"},
                                     {"attempt", 3}, {"p", payload}}));
}

TEST(HttpTemplate, UrlValuesArePercentEncoded) {
  const Json payload = {{"account", "alipay:1/2?x=y&z"}, {"n", 7}};
  EXPECT_EQ(render("https://p.example/payouts/{{task.idempotency_key}}?acct={{payload.account}}&n={{payload.n}}",
                   HttpTemplateContext::url, payload),
            "https://p.example/payouts/wd%2F7%20%C3%BC?acct=alipay:1%2F2%3Fx%3Dy%26z&n=7");
  EXPECT_THROW(render("https://p.example/{{payload}}", HttpTemplateContext::url, payload), InvalidArgument);
}

TEST(HttpTemplate, HeaderValuesRefuseControlCharacters) {
  EXPECT_EQ(render("order-{{payload.n}}", HttpTemplateContext::header, {{"n", 7}}), "order-7");
  EXPECT_THROW(render("{{payload.s}}", HttpTemplateContext::header, {{"s", "a\r\nX-Evil: 1"}}), InvalidArgument);
}

TEST(HttpTemplate, MissingPayloadFieldCannotRender) {
  try {
    render(R"({"a":"{{payload.account.id}}"})", HttpTemplateContext::body, {{"account", {{"name", "x"}}}});
    FAIL() << "rendered without the field";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("account.id"), std::string::npos) << e.what();
  }
  EXPECT_THROW(render("{{payload.items.5}}", HttpTemplateContext::body, {{"items", {1, 2}}}), InvalidArgument);
}

TEST(HttpTemplate, MalformedTemplatesAreConfigErrors) {
  for (const std::string text : {"{{payload.a", "{{}}", "{{ secret.token }}", "{{task.lease_token}}", "{{task}}",
                                 "{{payload..a}}", "{{payload.a b}}"}) {
    EXPECT_THROW(HttpTemplate::parse(text, HttpTemplateContext::body, "body"), ConfigError) << text;
  }
  EXPECT_THROW(HttpTemplate::parse(std::string(http_template_bytes_max + 1, 'x'), HttpTemplateContext::body, "body"),
               ConfigError);
}

TEST(HttpTemplate, LiteralTextPassesThrough) {
  const HttpTemplate t = HttpTemplate::parse(R"({"fixed":true})", HttpTemplateContext::body, "body");
  EXPECT_FALSE(t.has_placeholders());
  EXPECT_EQ(t.render(task_with({}), Json::object()), R"({"fixed":true})");
}

}  // namespace
}  // namespace payq

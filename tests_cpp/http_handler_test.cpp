// The HTTP handler against a real server: configuration checked when the
// kind is compiled, the request it builds, the outcome it reports for each
// kind of answer, back-pressure, the status check, and secrets kept out of
// everything it reports.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>

#include <nlohmann/json.hpp>

#include "http_test_server.hpp"
#include "payq/error.hpp"
#include "payq/http_handler.hpp"

namespace payq {
namespace {

using testing::TestHttpServer;
using testing::TestReply;
using testing::TestRequest;
using Json = nlohmann::json;

constexpr const char* token_variable = "PAYQ_HTTP_TEST_TOKEN";
constexpr const char* token_value = "tok_live_5up3r-s3cr3t-v4lu3";

class HttpHandlerTest : public ::testing::Test {
 protected:
  void SetUp() override { ::setenv(token_variable, token_value, 1); }

  // The payout kind of these tests, against `server`.
  HttpKindConfig payout(const TestHttpServer& server) const { return payout_to(server.url("/payouts")); }
  HttpKindConfig payout_to(const std::string& url) const {
    HttpKindConfig c;
    c.url = url;
    c.headers = {{"Authorization", "Bearer ", std::string(token_variable)}, {"X-Order", "order-{{payload.order}}", {}}};
    c.body = R"({"account":"{{payload.account}}","amount_minor":{{payload.amount_minor}}})";
    c.timeout_ms = 10'000;
    c.rules.success_when = {{"return_code", "SUCCESS"}};
    c.rules.error_codes = {{"NOTENOUGH", HttpVerdict::fail}, {"SYSTEMERROR", HttpVerdict::unknown}};
    return c;
  }

  static Task task(int attempt = 1) {
    Task t;
    t.id = 7;
    t.kind = "payout";
    t.queue = "default";
    t.attempt = attempt;
    t.idempotency_key = "wd-7";
    t.payload_json = R"({"account":"alipay:1","amount_minor":500,"order":99})";
    t.lease_token = 1;
    return t;
  }

  // Runs one attempt; `earlier` are the outcomes of the task's earlier attempts.
  HandlerResult run(HttpHandler& handler, const Task& t, std::vector<std::string> earlier = {}) {
    const std::string worker_id = "test-worker";
    TaskContext context{worker_id, 1, [] { return false; }, [earlier] {
                          std::vector<TaskAttempt> out;
                          for (std::size_t i = 0; i < earlier.size(); ++i) {
                            TaskAttempt a;
                            a.attempt = static_cast<int>(i) + 1;
                            a.outcome = earlier[i];
                            out.push_back(a);
                          }
                          return out;
                        }};
    return handler.handle(t, context);
  }

  HandlerResult run_once(const HttpKindConfig& config, const Task& t = task()) {
    HttpHandler handler(HttpKind::compile(config), client);
    return run(handler, t);
  }

  std::shared_ptr<HttpClient> client = std::make_shared<HttpClient>();
};

// ---------------------------------------------------------------- configuration

TEST_F(HttpHandlerTest, BadConfigurationIsAConfigErrorAtCompileTime) {
  TestHttpServer server([](const TestRequest&) { return TestReply::json(200, "{}"); });
  auto refused = [&](const std::function<void(HttpKindConfig&)>& change) {
    HttpKindConfig c = payout(server);
    change(c);
    EXPECT_THROW(HttpKind::compile(c), ConfigError);
  };
  refused([](HttpKindConfig& c) { c.method = "post"; });
  refused([](HttpKindConfig& c) { c.method = "TRACE"; });
  refused([](HttpKindConfig& c) { c.url = "ftp://example/x"; });
  refused([](HttpKindConfig& c) { c.url = "http://example/{{payload.a"; });
  refused([](HttpKindConfig& c) { c.method = "GET"; });  // with a body
  refused([](HttpKindConfig& c) { c.follow_redirects = true; });  // a POST
  refused([](HttpKindConfig& c) { c.headers.push_back({"Bad Name", "x", {}}); });
  refused([](HttpKindConfig& c) { c.headers.push_back({"Content-Length", "1", {}}); });
  refused([](HttpKindConfig& c) { c.headers.push_back({"authorization", "again", {}}); });
  refused([](HttpKindConfig& c) { c.headers.push_back({"Idempotency-Key", "mine", {}}); });
  refused([](HttpKindConfig& c) { c.headers.push_back({"X-Key", "", std::string("PAYQ_HTTP_TEST_UNSET")}); });
  refused([](HttpKindConfig& c) { c.timeout_ms = 0; });
  refused([](HttpKindConfig& c) { c.connect_timeout_ms = http_timeout_ms_max + 1; });
  refused([](HttpKindConfig& c) { c.response_body_bytes_max = http_response_body_bytes_max_limit + 1; });
  refused([](HttpKindConfig& c) { c.ca_file = "/nonexistent/ca.pem"; });
  refused([](HttpKindConfig& c) { c.rules.error_codes.push_back({"NOTENOUGH", HttpVerdict::retry}); });
  refused([](HttpKindConfig& c) { c.rate_limited_pause_ms = 0; });
  refused([](HttpKindConfig& c) { c.status_query = HttpStatusQueryConfig{"mailto:x", {404}}; });
  refused([&](HttpKindConfig& c) { c.status_query = HttpStatusQueryConfig{server.url("/p/{{task.idempotency_key}}"), {}}; });

  ::setenv("PAYQ_HTTP_TEST_SHORT", "abc", 1);
  refused([](HttpKindConfig& c) { c.headers.push_back({"X-Key", "", std::string("PAYQ_HTTP_TEST_SHORT")}); });
  try {
    HttpKindConfig c = payout(server);
    c.headers.push_back({"X-Key", "", std::string("PAYQ_HTTP_TEST_SHORT")});
    HttpKind::compile(c);
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("PAYQ_HTTP_TEST_SHORT"), std::string::npos);
    EXPECT_EQ(std::string(e.what()).find("abc"), std::string::npos) << "a secret's value in an error";
  }

  HttpKindConfig with_url = payout(server);
  with_url.status_query = HttpStatusQueryConfig{server.url("/p/{{task.idempotency_key}}"), {404}};
  EXPECT_THROW(HttpHandler(HttpKind::compile(with_url), client, [](const Task&) { return HttpStatusAnswer{}; }),
               ConfigError);
}

// ---------------------------------------------------------------- the request

TEST_F(HttpHandlerTest, RequestCarriesRenderedBodyHeadersSecretAndIdempotencyKey) {
  TestHttpServer server([](const TestRequest&) { return TestReply::json(200, R"({"return_code":"SUCCESS"})"); });
  const HandlerResult result = run_once(payout(server));
  ASSERT_TRUE(result.outcome);
  EXPECT_EQ(result.outcome->kind, OutcomeKind::success) << result.outcome->error;
  ASSERT_EQ(server.request_count(), 1u);
  const TestRequest seen = server.requests()[0];
  EXPECT_EQ(seen.method, "POST");
  EXPECT_EQ(seen.target, "/payouts");
  EXPECT_EQ(seen.header("authorization"), std::string("Bearer ") + token_value);
  EXPECT_EQ(seen.header("idempotency-key"), "wd-7");
  EXPECT_EQ(seen.header("x-order"), "order-99");
  EXPECT_EQ(seen.header("content-type"), "application/json");
  EXPECT_EQ(Json::parse(seen.body), Json({{"account", "alipay:1"}, {"amount_minor", 500}}));
  EXPECT_EQ(Json::parse(result.outcome->result_json),
            Json({{"status", 200}, {"body", {{"return_code", "SUCCESS"}}}, {"truncated", false}}));
}

TEST_F(HttpHandlerTest, WithoutABodyTemplateThePayloadIsTheBody) {
  TestHttpServer server([](const TestRequest&) { return TestReply::json(200, R"({"return_code":"SUCCESS"})"); });
  HttpKindConfig c = payout(server);
  c.body.reset();
  c.idempotency_header = "X-Request-Key";
  run_once(c);
  ASSERT_EQ(server.request_count(), 1u);
  EXPECT_EQ(Json::parse(server.requests()[0].body), Json::parse(task().payload_json));
  EXPECT_EQ(server.requests()[0].header("x-request-key"), "wd-7");
  EXPECT_EQ(server.requests()[0].header("idempotency-key"), "");
}

TEST_F(HttpHandlerTest, UnbuildableRequestFailsWithoutSending) {
  TestHttpServer server([](const TestRequest&) { return TestReply::json(200, "{}"); });
  Task t = task();
  t.payload_json = R"({"amount_minor":500,"order":1})";  // no account
  const HandlerResult result = run_once(payout(server), t);
  EXPECT_EQ(result.outcome->kind, OutcomeKind::fail);
  EXPECT_NE(result.outcome->error.find("account"), std::string::npos) << result.outcome->error;
  EXPECT_EQ(server.request_count(), 0u);
}

// ---------------------------------------------------------------- outcomes

TEST_F(HttpHandlerTest, EachAnswerBecomesItsOutcome) {
  struct Case {
    TestReply reply;
    OutcomeKind expected;
  };
  const std::vector<Case> cases = {
      {TestReply::json(200, R"({"return_code":"SUCCESS"})"), OutcomeKind::success},
      {TestReply::json(200, R"({"return_code":"NOTENOUGH"})"), OutcomeKind::fail},
      {TestReply::json(200, R"({"return_code":"SYSTEMERROR"})"), OutcomeKind::unknown},
      {TestReply::json(200, R"({"return_code":"WHAT"})"), OutcomeKind::unknown},
      {TestReply::json(400, R"({"return_code":"BAD_REQUEST"})"), OutcomeKind::fail},
      {TestReply::json(500, R"({"return_code":"SYSTEM_ERROR"})"), OutcomeKind::unknown},
      {TestReply::close_without_reply(), OutcomeKind::unknown},
  };
  for (const Case& c : cases) {
    TestHttpServer server([&](const TestRequest&) { return c.reply; });
    const HandlerResult result = run_once(payout(server));
    EXPECT_EQ(result.outcome->kind, c.expected) << c.reply.body << " -> " << result.outcome->error;
  }
  const HandlerResult refused =
      run_once(payout_to("http://127.0.0.1:" + std::to_string(testing::closed_port()) + "/payouts"));
  EXPECT_EQ(refused.outcome->kind, OutcomeKind::retry) << refused.outcome->error;
}

TEST_F(HttpHandlerTest, TimeoutsOnEitherSideOfSending) {
  TestHttpServer stalls([](const TestRequest&) { return TestReply::stall(); });
  HttpKindConfig after = payout(stalls);
  after.timeout_ms = 300;
  const HandlerResult late = run_once(after);
  EXPECT_EQ(late.outcome->kind, OutcomeKind::unknown) << late.outcome->error;

  TestHttpServer silent([](const TestRequest&) { return TestReply::stall(); }, TestHttpServer::Mode::silent);
  HttpKindConfig before = payout(silent);
  before.url = silent.https_url("/payouts");
  before.connect_timeout_ms = 300;
  const HandlerResult never_sent = run_once(before);
  EXPECT_EQ(never_sent.outcome->kind, OutcomeKind::retry) << never_sent.outcome->error;
}

TEST_F(HttpHandlerTest, RedirectIsAFailureUnlessFollowedByAGetKind) {
  TestHttpServer server([](const TestRequest& r) {
    if (r.target == "/elsewhere") return TestReply::json(200, R"({"return_code":"SUCCESS"})");
    return TestReply::json(307, "{}", {{"Location", "/elsewhere"}});
  });
  const HandlerResult post = run_once(payout(server));
  EXPECT_EQ(post.outcome->kind, OutcomeKind::fail);
  EXPECT_NE(post.outcome->error.find("redirect to /elsewhere (not followed)"), std::string::npos)
      << post.outcome->error;
  EXPECT_EQ(server.request_count(), 1u);

  HttpKindConfig get = payout(server);
  get.method = "GET";
  get.body.reset();
  get.follow_redirects = true;
  const HandlerResult followed = run_once(get);
  EXPECT_EQ(followed.outcome->kind, OutcomeKind::success) << followed.outcome->error;
  EXPECT_EQ(server.request_count(), 3u);
}

TEST_F(HttpHandlerTest, HugeBodyIsStoredTruncated) {
  TestHttpServer server([](const TestRequest&) {
    TestReply r = TestReply::json(200, "");
    r.body_filler_bytes = 32 * 1024 * 1024;
    return r;
  });
  HttpKindConfig c = payout(server);
  c.rules = HttpRules{};  // a 2xx is a success whatever the body
  c.response_body_bytes_max = 4096;
  const HandlerResult result = run_once(c);
  ASSERT_EQ(result.outcome->kind, OutcomeKind::success) << result.outcome->error;
  const Json stored = Json::parse(result.outcome->result_json);
  EXPECT_EQ(stored["truncated"], true);
  EXPECT_EQ(stored["body"], std::string(4096, 'x'));

  // With a success_when rule, a cut body proves nothing.
  HttpKindConfig strict = payout(server);
  strict.response_body_bytes_max = 4096;
  EXPECT_EQ(run_once(strict).outcome->kind, OutcomeKind::unknown);
}

// ---------------------------------------------------------------- back-pressure

TEST_F(HttpHandlerTest, RateLimitPausesTheQueueForTheRetryAfterTime) {
  TestHttpServer server([](const TestRequest&) {
    return TestReply::json(429, R"({"return_code":"RATE_LIMITED"})", {{"Retry-After", "7"}});
  });
  const HandlerResult result = run_once(payout(server));
  EXPECT_EQ(result.outcome->kind, OutcomeKind::retry);
  EXPECT_EQ(result.outcome->retry_after_ms, 7'000);
  EXPECT_EQ(result.queue_pause_ms, 7'000);
}

TEST_F(HttpHandlerTest, RateLimitWithoutRetryAfterPausesTheDefault) {
  TestHttpServer server([](const TestRequest&) { return TestReply::json(429, "{}"); });
  HttpKindConfig c = payout(server);
  c.rate_limited_pause_ms = 1'500;
  const HandlerResult result = run_once(c);
  EXPECT_EQ(result.outcome->kind, OutcomeKind::retry);
  EXPECT_EQ(result.queue_pause_ms, 1'500);
}

TEST_F(HttpHandlerTest, RetryAfterOnAnyFailureIsBackPressureButNotOnSuccess) {
  TestHttpServer unavailable([](const TestRequest&) { return TestReply::json(503, "{}", {{"Retry-After", "3"}}); });
  const HandlerResult busy = run_once(payout(unavailable));
  EXPECT_EQ(busy.outcome->kind, OutcomeKind::unknown);  // a 5xx may have been applied
  EXPECT_EQ(busy.queue_pause_ms, 3'000);
  EXPECT_EQ(busy.outcome->retry_after_ms, 3'000);

  TestHttpServer ok([](const TestRequest&) {
    return TestReply::json(200, R"({"return_code":"SUCCESS"})", {{"Retry-After", "3"}});
  });
  const HandlerResult paid = run_once(payout(ok));
  EXPECT_EQ(paid.outcome->kind, OutcomeKind::success);
  EXPECT_FALSE(paid.queue_pause_ms);
}

// ---------------------------------------------------------------- status check

class HttpStatusCheckTest : public HttpHandlerTest {
 protected:
  // The provider: GET /payouts/<key> answers `status_reply`; POST pays.
  void serve(TestReply status_reply) {
    status_reply_ = std::move(status_reply);
    server_ = std::make_unique<TestHttpServer>([this](const TestRequest& r) {
      if (r.method == "GET") return status_reply_;
      return TestReply::json(200, R"({"return_code":"SUCCESS","paid":"now"})");
    });
  }
  HttpHandler handler() {
    HttpKindConfig c = payout(*server_);
    c.status_query = HttpStatusQueryConfig{server_->url("/payouts/{{task.idempotency_key}}"), {404}};
    return HttpHandler(HttpKind::compile(c), client);
  }
  TestReply status_reply_;
  std::unique_ptr<TestHttpServer> server_;
};

TEST_F(HttpStatusCheckTest, AppliedEarlierMeansSuccessWithoutPayingAgain) {
  serve(TestReply::json(200, R"({"return_code":"SUCCESS","paid":"before"})"));
  HttpHandler h = handler();
  const HandlerResult result = run(h, task(2), {"unknown"});
  ASSERT_EQ(result.outcome->kind, OutcomeKind::success) << result.outcome->error;
  const Json stored = Json::parse(result.outcome->result_json);
  EXPECT_EQ(stored["via"], "status_query");
  EXPECT_EQ(stored["body"]["paid"], "before");
  EXPECT_EQ(server_->request_count("POST"), 0u);
  ASSERT_EQ(server_->request_count("GET"), 1u);
  EXPECT_EQ(server_->requests()[0].target, "/payouts/wd-7");
  EXPECT_EQ(server_->requests()[0].header("authorization"), std::string("Bearer ") + token_value);
}

TEST_F(HttpStatusCheckTest, NotFoundMeansPayAgainWithTheSameKey) {
  serve(TestReply::json(404, R"({"status":"NOT_FOUND"})"));
  HttpHandler h = handler();
  const HandlerResult result = run(h, task(2), {"unknown"});
  ASSERT_EQ(result.outcome->kind, OutcomeKind::success) << result.outcome->error;
  EXPECT_EQ(Json::parse(result.outcome->result_json)["body"]["paid"], "now");
  EXPECT_EQ(server_->request_count("GET"), 1u);
  ASSERT_EQ(server_->request_count("POST"), 1u);
  EXPECT_EQ(server_->requests()[1].header("idempotency-key"), "wd-7");
}

TEST_F(HttpStatusCheckTest, DefinitelyFailedMeansFail) {
  serve(TestReply::json(200, R"({"return_code":"NOTENOUGH"})"));
  HttpHandler h = handler();
  const HandlerResult result = run(h, task(3), {"retry", "unknown"});
  EXPECT_EQ(result.outcome->kind, OutcomeKind::fail) << result.outcome->error;
  EXPECT_EQ(server_->request_count("POST"), 0u);
}

TEST_F(HttpStatusCheckTest, InconclusiveAnswerIsUnknownAndPaysNothing) {
  for (TestReply reply : {TestReply::json(500, "{}"), TestReply::json(401, "{}"), TestReply::close_without_reply(),
                          TestReply::json(200, R"({"return_code":"WHAT"})")}) {
    serve(reply);
    HttpHandler h = handler();
    const HandlerResult result = run(h, task(2), {"unknown"});
    EXPECT_EQ(result.outcome->kind, OutcomeKind::unknown) << reply.status << ": " << result.outcome->error;
    EXPECT_EQ(server_->request_count("POST"), 0u);
  }
}

TEST_F(HttpStatusCheckTest, AskedOnlyAfterAnAttemptThatMayHaveBeenApplied) {
  serve(TestReply::json(200, R"({"return_code":"SUCCESS","paid":"before"})"));
  HttpHandler h = handler();
  run(h, task(1));
  run(h, task(3), {"retry", "retry"});
  EXPECT_EQ(server_->request_count("GET"), 0u);
  EXPECT_EQ(server_->request_count("POST"), 2u);
}

TEST_F(HttpHandlerTest, CallableStatusCheckDecidesBeforePaying) {
  TestHttpServer server([](const TestRequest&) { return TestReply::json(200, R"({"return_code":"SUCCESS"})"); });
  HttpStatusFinding finding = HttpStatusFinding::applied;
  int checks = 0;
  HttpHandler h(HttpKind::compile(payout(server)), client, [&](const Task& t) {
    ++checks;
    EXPECT_EQ(t.idempotency_key, "wd-7");
    return HttpStatusAnswer{finding, R"({"found":true})", "looked it up"};
  });
  const HandlerResult applied = run(h, task(2), {"unknown"});
  EXPECT_EQ(applied.outcome->kind, OutcomeKind::success);
  EXPECT_EQ(applied.outcome->result_json, R"({"found":true})");
  finding = HttpStatusFinding::failed;
  EXPECT_EQ(run(h, task(2), {"unknown"}).outcome->kind, OutcomeKind::fail);
  finding = HttpStatusFinding::unknown;
  EXPECT_EQ(run(h, task(2), {"unknown"}).outcome->kind, OutcomeKind::unknown);
  EXPECT_EQ(server.request_count(), 0u);
  finding = HttpStatusFinding::not_found;
  EXPECT_EQ(run(h, task(2), {"unknown"}).outcome->kind, OutcomeKind::success);
  EXPECT_EQ(server.request_count(), 1u);
  EXPECT_EQ(checks, 4);
}

// ---------------------------------------------------------------- secrets

// A provider that echoes the request's headers back: the token must not
// reach the error or the stored result.
TEST_F(HttpHandlerTest, SecretsNeverReachErrorsOrResults) {
  auto echo = [](int status) {
    return [status](const TestRequest& r) {
      return TestReply::json(status, Json({{"return_code", status == 200 ? "SUCCESS" : "SYSTEMERROR"},
                                           {"you_sent", r.header("authorization")}})
                                         .dump());
    };
  };
  TestHttpServer failing(echo(500));
  const HandlerResult failed = run_once(payout(failing));
  ASSERT_EQ(failed.outcome->kind, OutcomeKind::unknown);
  EXPECT_EQ(failed.outcome->error.find(token_value), std::string::npos) << failed.outcome->error;
  EXPECT_NE(failed.outcome->error.find(std::string("Bearer ") + http_redacted_text), std::string::npos)
      << failed.outcome->error;

  TestHttpServer paying(echo(200));
  const HandlerResult paid = run_once(payout(paying));
  ASSERT_EQ(paid.outcome->kind, OutcomeKind::success);
  EXPECT_EQ(paid.outcome->result_json.find(token_value), std::string::npos) << paid.outcome->result_json;
  EXPECT_EQ(Json::parse(paid.outcome->result_json)["body"]["you_sent"], std::string("Bearer ") + http_redacted_text);
}

// Every character of `text` as a \uXXXX escape (the text is ASCII here).
std::string all_escaped(const std::string& text, bool upper_hex) {
  std::string out;
  for (unsigned char c : text) {
    char unit[8];
    std::snprintf(unit, sizeof unit, upper_hex ? "\\u%04X" : "\\u%04x", c);
    out += unit;
  }
  return out;
}

// What a provider's JSON encoder may make of an echoed secret
// "tok/ABCDEFGH12345678": each form must be redacted like the plain one.
std::vector<std::string> escaped_forms_of_slash_secret() {
  return {R"(tok\/ABCDEFGH12345678)",           // \/ (PHP, some Java encoders)
          R"(\u0074ok/ABCDEFGH12345678)",       // one character as \uXXXX
          all_escaped("tok/ABCDEFGH12345678", false),
          all_escaped("tok/ABCDEFGH12345678", true),
          R"(\u0074o\u006B\/ABCD\u0045FGH1234567\u0038)"};  // mixed
}

TEST(HttpSecrets, RedactsEveryJsonEscapedForm) {
  ::setenv("PAYQ_HTTP_TEST_SECRET", "tok/ABCDEFGH12345678", 1);
  HttpSecrets secrets;
  secrets.from_env("PAYQ_HTTP_TEST_SECRET");
  for (const std::string& form : escaped_forms_of_slash_secret()) {
    EXPECT_EQ(secrets.redacted("{\"you_sent\":\"Bearer " + form + "\"}"), R"({"you_sent":"Bearer [redacted]"})")
        << form;
    // Cut off inside the secret, even inside an escape.
    EXPECT_EQ(secrets.redacted("cut: Bearer " + form.substr(0, form.size() / 2)), "cut: Bearer [redacted]") << form;
  }
  EXPECT_EQ(secrets.redacted(R"(cut mid-escape: tok\/AB\u00)"), "cut mid-escape: [redacted]");
  // Close but not the secret: left alone.
  EXPECT_EQ(secrets.redacted(R"(tok\/ABCDEFGH1234567X and \u0074ok)"), R"(tok\/ABCDEFGH1234567X and \u0074ok)");

  // Quotes, backslashes and characters beyond ASCII (one beyond U+FFFF, a
  // surrogate pair), as an ASCII-only encoder writes them.
  const std::string wide = "p\xC3\xA4ss\"w\\rd\xF0\x9F\x94\x91-42";
  ::setenv("PAYQ_HTTP_TEST_SECRET", wide.c_str(), 1);
  HttpSecrets wide_secrets;
  wide_secrets.from_env("PAYQ_HTTP_TEST_SECRET");
  const std::string ascii_json = Json(wide).dump(-1, ' ', true);
  ASSERT_EQ(ascii_json, R"("p\u00e4ss\"w\\rd\ud83d\udd11-42")");
  EXPECT_EQ(wide_secrets.redacted("echo " + ascii_json), "echo \"[redacted]\"");
  EXPECT_EQ(wide_secrets.redacted("echo " + Json(wide).dump()), "echo \"[redacted]\"");
  EXPECT_EQ(wide_secrets.redacted("echo " + wide), "echo [redacted]");
  EXPECT_EQ(wide_secrets.redacted(R"(echo "p\u00C4ss)"), R"(echo "p\u00C4ss)");  // another character
  ::unsetenv("PAYQ_HTTP_TEST_SECRET");
}

// The provider echoes the header JSON-escaped: neither the stored result,
// nor the error of a refused call, nor a body cut off in the middle of the
// escaped secret shows any of it.
TEST_F(HttpHandlerTest, SecretsEchoedJsonEscapedNeverReachErrorsOrResults) {
  ::setenv(token_variable, "tok/ABCDEFGH12345678", 1);
  for (const std::string& form : escaped_forms_of_slash_secret()) {
    auto echo = [&form](int status, const char* code) {
      return [&form, status, code](const TestRequest& r) {
        EXPECT_EQ(r.header("authorization"), "Bearer tok/ABCDEFGH12345678");
        return TestReply::json(status, std::string(R"({"return_code":")") + code + R"(","you_sent":"Bearer )" +
                                           form + R"("})");
      };
    };
    auto shows_secret = [&form](const std::string& text) {
      return text.find("ABCD") != std::string::npos || text.find(form) != std::string::npos ||
             text.find("tok/") != std::string::npos;
    };
    TestHttpServer paying(echo(200, "SUCCESS"));
    const HandlerResult paid = run_once(payout(paying));
    ASSERT_EQ(paid.outcome->kind, OutcomeKind::success) << paid.outcome->error;
    EXPECT_FALSE(shows_secret(paid.outcome->result_json)) << paid.outcome->result_json;
    EXPECT_EQ(Json::parse(paid.outcome->result_json)["body"]["you_sent"], std::string("Bearer ") + http_redacted_text);

    TestHttpServer refusing(echo(400, "NOTENOUGH"));
    const HandlerResult refused = run_once(payout(refusing));
    ASSERT_EQ(refused.outcome->kind, OutcomeKind::fail);
    EXPECT_FALSE(shows_secret(refused.outcome->error)) << refused.outcome->error;
    EXPECT_NE(refused.outcome->error.find(std::string("Bearer ") + http_redacted_text), std::string::npos)
        << refused.outcome->error;

    // Cut off inside the escaped secret: stored as text, as an excerpt.
    HttpKindConfig cut = payout(paying);
    cut.response_body_bytes_max = std::string(R"({"return_code":"SUCCESS","you_sent":"Bearer )").size() + form.size() / 2;
    const HandlerResult truncated = run_once(cut);
    const std::string stored = truncated.outcome->result_json + truncated.outcome->error;
    EXPECT_FALSE(shows_secret(stored)) << stored;
    EXPECT_EQ(stored.find(form.substr(0, 8)), std::string::npos) << stored;
    EXPECT_NE(stored.find(std::string("Bearer ") + http_redacted_text), std::string::npos) << stored;
  }
}

TEST(HttpSecrets, RedactsWholeSecretsAndACutOffStart) {
  ::setenv("PAYQ_HTTP_TEST_SECRET", "0123456789abcdef", 1);
  HttpSecrets secrets;
  EXPECT_EQ(secrets.from_env("PAYQ_HTTP_TEST_SECRET"), "0123456789abcdef");
  EXPECT_EQ(secrets.redacted("a 0123456789abcdef b 0123456789abcdef"), "a [redacted] b [redacted]");
  EXPECT_EQ(secrets.redacted("body cut at 01234567"), "body cut at [redacted]");
  EXPECT_EQ(secrets.redacted("nothing here"), "nothing here");
  ::unsetenv("PAYQ_HTTP_TEST_SECRET");
  EXPECT_THROW(secrets.from_env("PAYQ_HTTP_TEST_SECRET"), ConfigError);
}

}  // namespace
}  // namespace payq

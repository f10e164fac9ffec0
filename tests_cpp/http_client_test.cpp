// The HTTP client against a real server on 127.0.0.1: what a response
// carries, and for every way a call fails, whether the request may have
// reached the server (the line between `retry` and `unknown`).
#include <gtest/gtest.h>

#include <condition_variable>
#include <future>
#include <mutex>

#include "http_test_server.hpp"
#include "payq/http_client.hpp"

namespace payq {
namespace {

using testing::TestHttpServer;
using testing::TestReply;
using testing::TestRequest;
using namespace std::chrono_literals;

HttpRequest get(const std::string& url) {
  HttpRequest r;
  r.url = url;
  r.connect_timeout_ms = 10'000;
  r.timeout_ms = 20'000;
  return r;
}

TEST(HttpClient, ResponseCarriesStatusHeadersAndBody) {
  TestHttpServer server([](const TestRequest&) {
    return TestReply::json(201, R"({"ok":true})", {{"X-Provider", "fake"}});
  });
  HttpClient client;
  HttpRequest request = get(server.url("/payouts?x=1"));
  request.method = "POST";
  request.body = R"({"amount_minor":5})";
  request.headers = {{"Idempotency-Key", "wd-1"}, {"Content-Type", "application/json"}};
  const HttpResponse response = client.send_and_wait(request);

  EXPECT_EQ(response.failure, HttpFailure::none) << response.error;
  EXPECT_EQ(response.status, 201);
  EXPECT_EQ(response.body, R"({"ok":true})");
  EXPECT_FALSE(response.body_truncated);
  ASSERT_NE(response.header("x-provider"), nullptr);
  EXPECT_EQ(*response.header("x-provider"), "fake");
  EXPECT_TRUE(response.request_sent);
  ASSERT_EQ(server.request_count(), 1u);
  const TestRequest seen = server.requests()[0];
  EXPECT_EQ(seen.method, "POST");
  EXPECT_EQ(seen.target, "/payouts?x=1");
  EXPECT_EQ(seen.body, R"({"amount_minor":5})");
  EXPECT_EQ(seen.header("idempotency-key"), "wd-1");
  EXPECT_EQ(seen.header("expect"), "");  // no 100-continue stall
}

TEST(HttpClient, RefusedConnectionWasNotSent) {
  HttpClient client;
  const HttpResponse response = client.send_and_wait(get("http://127.0.0.1:" + std::to_string(testing::closed_port()) + "/"));
  EXPECT_EQ(response.failure, HttpFailure::connect) << response.error;
  EXPECT_FALSE(response.request_sent);
  EXPECT_EQ(response.status, 0);
}

TEST(HttpClient, UnresolvableHostWasNotSent) {
  HttpClient client;
  HttpRequest request = get("http://payq-test-host.invalid/");
  request.connect_timeout_ms = 2'000;
  const HttpResponse response = client.send_and_wait(request);
  EXPECT_TRUE(response.failure == HttpFailure::resolve || response.failure == HttpFailure::timeout)
      << http_failure_name(response.failure) << ": " << response.error;
  EXPECT_FALSE(response.request_sent);
}

// A TLS handshake the server never answers: the connect timeout passes
// before the connection is ready for the request.
TEST(HttpClient, TimeoutBeforeSendingWasNotSent) {
  TestHttpServer silent([](const TestRequest&) { return TestReply::stall(); }, TestHttpServer::Mode::silent);
  HttpClient client;
  HttpRequest request = get(silent.https_url("/payouts"));
  request.method = "POST";
  request.body = "{}";
  request.connect_timeout_ms = 300;
  const HttpResponse response = client.send_and_wait(request);
  EXPECT_EQ(response.failure, HttpFailure::timeout) << response.error;
  EXPECT_FALSE(response.request_sent);
  EXPECT_TRUE(silent.wait_connections(1));
}

TEST(HttpClient, TimeoutAfterSendingMayHaveBeenSent) {
  TestHttpServer server([](const TestRequest&) { return TestReply::stall(); });
  HttpClient client;
  HttpRequest request = get(server.url("/payouts"));
  request.method = "POST";
  request.body = "{}";
  request.timeout_ms = 300;
  const HttpResponse response = client.send_and_wait(request);
  EXPECT_EQ(response.failure, HttpFailure::timeout) << response.error;
  EXPECT_TRUE(response.request_sent);
  EXPECT_EQ(server.request_count("POST"), 1u);
}

TEST(HttpClient, DropAfterSendingMayHaveBeenSent) {
  TestHttpServer server([](const TestRequest&) { return TestReply::close_without_reply(); });
  HttpClient client;
  HttpRequest request = get(server.url("/payouts"));
  request.method = "POST";
  request.body = "{}";
  const HttpResponse response = client.send_and_wait(request);
  EXPECT_EQ(response.failure, HttpFailure::connection) << response.error;
  EXPECT_TRUE(response.request_sent);
  EXPECT_EQ(server.request_count("POST"), 1u);
}

TEST(HttpClient, HugeBodyIsCutAtTheBound) {
  TestHttpServer server([](const TestRequest&) {
    TestReply r = TestReply::json(200, "");
    r.body_filler_bytes = 64 * 1024 * 1024;
    return r;
  });
  HttpClient client;
  HttpRequest request = get(server.url("/"));
  request.response_body_bytes_max = 10'000;
  const HttpResponse response = client.send_and_wait(request);
  EXPECT_EQ(response.failure, HttpFailure::none) << response.error;
  EXPECT_EQ(response.status, 200);
  EXPECT_TRUE(response.body_truncated);
  EXPECT_EQ(response.body, std::string(10'000, 'x'));
}

TEST(HttpClient, BodyExactlyAtTheBoundIsWhole) {
  TestHttpServer server([](const TestRequest&) { return TestReply::json(200, std::string(100, 'y')); });
  HttpClient client;
  HttpRequest request = get(server.url("/"));
  request.response_body_bytes_max = 100;
  const HttpResponse response = client.send_and_wait(request);
  EXPECT_EQ(response.failure, HttpFailure::none) << response.error;
  EXPECT_FALSE(response.body_truncated);
  EXPECT_EQ(response.body.size(), 100u);
}

TEST(HttpClient, RedirectIsNotFollowedByDefault) {
  TestHttpServer server([](const TestRequest& r) {
    if (r.target == "/target") return TestReply::json(200, "{}");
    TestReply reply = TestReply::json(307, "{}");
    reply.headers.emplace_back("Location", "/target");
    return reply;
  });
  HttpClient client;
  HttpRequest request = get(server.url("/start"));
  request.method = "POST";
  request.body = "{}";
  const HttpResponse response = client.send_and_wait(request);
  EXPECT_EQ(response.failure, HttpFailure::none) << response.error;
  EXPECT_EQ(response.status, 307);
  ASSERT_NE(response.header("location"), nullptr);
  EXPECT_EQ(*response.header("location"), "/target");
  EXPECT_EQ(server.request_count(), 1u);
}

TEST(HttpClient, RedirectIsFollowedWhenAsked) {
  TestHttpServer server([](const TestRequest& r) {
    if (r.target == "/target") return TestReply::json(200, R"({"at":"target"})");
    TestReply reply = TestReply::json(302, "{}");
    reply.headers.emplace_back("Location", "/target");
    return reply;
  });
  HttpClient client;
  HttpRequest request = get(server.url("/start"));
  request.follow_redirects = true;
  const HttpResponse response = client.send_and_wait(request);
  EXPECT_EQ(response.status, 200) << response.error;
  EXPECT_EQ(response.body, R"({"at":"target"})");
  EXPECT_EQ(server.request_count(), 2u);
}

// Every response waits until all calls have arrived, so they can only
// succeed if the single loop thread had all of them in flight at once.
TEST(HttpClient, ManyCallsAreInFlightAtOnce) {
  constexpr std::size_t call_count = 32;
  TestHttpServer* server_ref = nullptr;
  TestHttpServer server([&](const TestRequest&) {
    const bool all_arrived = server_ref->wait_requests(call_count);
    return TestReply::json(all_arrived ? 200 : 500, "{}");
  });
  server_ref = &server;
  HttpClient client;
  std::vector<std::future<HttpResponse>> responses;
  for (std::size_t i = 0; i < call_count; ++i) {
    auto promise = std::make_shared<std::promise<HttpResponse>>();
    responses.push_back(promise->get_future());
    client.send(get(server.url("/call/" + std::to_string(i))),
                [promise](HttpResponse response) { promise->set_value(std::move(response)); });
  }
  for (auto& future : responses) {
    const HttpResponse response = future.get();
    EXPECT_EQ(response.status, 200) << response.error;
  }
  EXPECT_EQ(client.transfer_count(), 0u);
}

TEST(HttpClient, ShutdownAbortsTransfersInFlight) {
  TestHttpServer server([](const TestRequest&) { return TestReply::stall(); });
  std::promise<HttpResponse> aborted;
  {
    HttpClient client;
    client.send(get(server.url("/")), [&aborted](HttpResponse response) { aborted.set_value(std::move(response)); });
    ASSERT_TRUE(server.wait_requests(1));
  }
  const HttpResponse response = aborted.get_future().get();
  EXPECT_EQ(response.failure, HttpFailure::aborted);
  EXPECT_TRUE(response.request_sent);
}

TEST(HttpClient, OverloadedClientRefusesAtOnceWithoutSending) {
  TestHttpServer server([](const TestRequest&) { return TestReply::stall(); });
  std::promise<HttpResponse> first;  // outlives the client, which answers it when it stops
  HttpClientOptions options;
  options.transfer_count_max = 1;
  HttpClient client(options);
  client.send(get(server.url("/first")), [&first](HttpResponse response) { first.set_value(std::move(response)); });
  const HttpResponse second = client.send_and_wait(get(server.url("/second")));
  EXPECT_EQ(second.failure, HttpFailure::overloaded);
  EXPECT_FALSE(second.request_sent);
  ASSERT_TRUE(server.wait_requests(1));
  EXPECT_EQ(server.requests()[0].target, "/first");
}

}  // namespace
}  // namespace payq

// The HTTP handler under the worker against a real PostgreSQL: a whole
// claimed batch in flight on one worker thread, back-pressure written to the
// queue for every worker, the status check fed by the task's attempt
// history, and asynchronous and synchronous handlers in one batch.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <set>

#include <nlohmann/json.hpp>

#include "harness.hpp"
#include "http_test_server.hpp"
#include "worker_test_support.hpp"
#include "payq/http_handler.hpp"
#include "payq/outbox.hpp"
#include "payq/worker.hpp"

namespace payq {
namespace {

using testing::LogCollector;
using testing::TestHttpServer;
using testing::TestReply;
using testing::TestRequest;
using Json = nlohmann::json;
using testing::Running;
using namespace std::chrono_literals;

class HttpWorkerTest : public testing::DbTest {
 protected:
  void SetUp() override {
    testing::DbTest::SetUp();
    BackoffPolicy fast;
    fast.delay_ms_base = 5;
    fast.delay_ms_max = 20;
    registry.default_backoff_set(fast);
  }

  WorkerOptions options(int concurrency, std::size_t batch) {
    WorkerOptions o;
    o.concurrency = concurrency;
    o.claim_batch_count_max = batch;
    o.poll_interval = 50ms;
    o.listen = false;
    o.maintenance = false;
    o.shutdown_grace = 10s;
    o.log_sink = logs.sink();
    return o;
  }

  void add_http(const std::string& kind, HttpKindConfig config) {
    registry.add(kind, std::make_shared<HttpHandler>(HttpKind::compile(std::move(config)), client));
  }

  static HttpKindConfig payout(const std::string& url) {
    HttpKindConfig c;
    c.url = url;
    c.timeout_ms = 10'000;
    c.rules.success_when = {{"return_code", "SUCCESS"}};
    return c;
  }

  std::vector<std::int64_t> enqueue(const std::string& kind, int count) {
    return db->transact([&](Transaction& tx) {
      std::vector<std::int64_t> ids;
      for (int i = 0; i < count; ++i) {
        TaskSpec spec;
        spec.kind = kind;
        spec.payload_json = Json{{"n", i}}.dump();
        spec.idempotency_key = kind + "-" + std::to_string(i);
        ids.push_back(Outbox(tx).enqueue(spec).task_id);
      }
      return ids;
    });
  }

  Task task_get(std::int64_t id) {
    return db->transact([&](Transaction& tx) { return Outbox(tx).task_get(id); });
  }
  std::vector<TaskAttempt> attempts(std::int64_t id) {
    return db->transact([&](Transaction& tx) { return Outbox(tx).attempts(id); });
  }

  bool wait_state(std::int64_t task_id, const std::string& state) { return logs.wait_task_state(task_id, state); }

  LogCollector logs;
  HandlerRegistry registry;
  std::shared_ptr<HttpClient> client = std::make_shared<HttpClient>();
};

// Every answer waits until the whole batch has arrived: with one worker
// thread, the tasks can only succeed if that thread had all of them in
// flight at once.
TEST_F(HttpWorkerTest, WholeBatchInFlightOnOneWorkerThread) {
  constexpr int batch = 8;
  TestHttpServer* server_ref = nullptr;
  TestHttpServer server([&](const TestRequest&) {
    const bool all_arrived = server_ref->wait_requests(batch);
    return TestReply::json(all_arrived ? 200 : 503, R"({"return_code":"SUCCESS"})");
  });
  server_ref = &server;
  add_http("payout", payout(server.url("/payouts")));
  const auto ids = enqueue("payout", batch);
  Running running(*db, registry, options(1, batch));
  for (const auto id : ids) ASSERT_TRUE(wait_state(id, "succeeded")) << "task " << id;
  running.worker.stop();  // joined: a counter moves only after its completion commits
  EXPECT_EQ(running.worker.stats().async_started, batch);
  EXPECT_EQ(running.worker.stats().succeeded, batch);
  std::set<std::string> keys;
  for (const auto& r : server.requests()) keys.insert(r.header("idempotency-key"));
  EXPECT_EQ(keys.size(), static_cast<std::size_t>(batch));
  for (const auto id : ids) {
    EXPECT_EQ(Json::parse(*task_get(id).result_json)["body"]["return_code"], "SUCCESS");
    EXPECT_EQ(attempts(id).size(), 1u);
  }
}

TEST_F(HttpWorkerTest, RateLimitPausesTheQueueForEveryWorker) {
  TestHttpServer server([](const TestRequest&) {
    return TestReply::json(429, R"({"return_code":"RATE_LIMITED"})", {{"Retry-After", "120"}});
  });
  add_http("payout", payout(server.url("/payouts")));
  const auto ids = enqueue("payout", 1);
  Running running(*db, registry, options(1, 1));
  ASSERT_TRUE(wait_state(ids[0], "pending"));
  ASSERT_TRUE(logs.wait_count("queue_paused", 1));
  const bool paused = db->transact([&](Transaction& tx) {
    return tx.exec_sql("SELECT paused_until > now() + interval '60 seconds' AS p FROM @schema@.queue WHERE name = $1",
                       {"default"})
               .text(0, "p") == "t";
  });
  EXPECT_TRUE(paused);
  const auto tried = attempts(ids[0]);
  ASSERT_EQ(tried.size(), 1u);
  EXPECT_EQ(tried[0].outcome, "retry");
  EXPECT_EQ(running.worker.stats().queue_pauses, 1);
  EXPECT_EQ(server.request_count(), 1u);
}

// The first call times out after sending (`unknown`); the retry asks the
// status query, which finds the payout, so it is never sent twice.
TEST_F(HttpWorkerTest, RetryAfterUnknownAsksTheStatusQueryFirst) {
  std::atomic<int> posts{0};
  TestHttpServer server([&](const TestRequest& r) {
    if (r.method == "GET") return TestReply::json(200, R"({"return_code":"SUCCESS","found":true})");
    ++posts;
    return TestReply::stall();
  });
  HttpKindConfig c = payout(server.url("/payouts"));
  c.timeout_ms = 300;
  c.status_query = HttpStatusQueryConfig{server.url("/payouts/{{task.idempotency_key}}"), {404}};
  add_http("payout", c);
  const auto ids = enqueue("payout", 1);
  Running running(*db, registry, options(1, 1));
  ASSERT_TRUE(wait_state(ids[0], "succeeded"));
  EXPECT_EQ(posts.load(), 1);
  EXPECT_EQ(server.request_count("GET"), 1u);
  const auto tried = attempts(ids[0]);
  ASSERT_EQ(tried.size(), 2u);
  EXPECT_EQ(tried[0].outcome, "unknown");
  EXPECT_EQ(tried[1].outcome, "success");
  EXPECT_EQ(Json::parse(*task_get(ids[0]).result_json)["via"], "status_query");
}

TEST_F(HttpWorkerTest, AsyncAndSyncHandlersShareABatch) {
  TestHttpServer server([](const TestRequest&) { return TestReply::json(200, R"({"return_code":"SUCCESS"})"); });
  add_http("payout", payout(server.url("/payouts")));
  std::atomic<int> local_calls{0};
  registry.add("local", [&](const Task&, const TaskContext&) -> HandlerResult {
    ++local_calls;
    return Outcome{};
  });
  auto ids = enqueue("payout", 3);
  for (const auto id : enqueue("local", 3)) ids.push_back(id);
  Running running(*db, registry, options(1, 6));
  for (const auto id : ids) ASSERT_TRUE(wait_state(id, "succeeded")) << "task " << id;
  EXPECT_EQ(local_calls.load(), 3);
  EXPECT_EQ(running.worker.stats().async_started, 3);
  EXPECT_EQ(server.request_count(), 3u);
}

// A provider that echoes the token JSON-escaped (tok\/..., \u0074...):
// neither the worker's log lines nor the stored task and attempt rows show
// it in any form.
TEST_F(HttpWorkerTest, SecretEchoedJsonEscapedStaysOutOfLogsAndRows) {
  constexpr const char* variable = "PAYQ_HTTP_WORKER_TEST_TOKEN";
  ::setenv(variable, "tok/ABCDEFGH12345678", 1);
  TestHttpServer server([](const TestRequest& r) {
    const bool paying = r.target.find("/ok") != std::string::npos;
    return TestReply::json(paying ? 200 : 400,
                           std::string(R"({"return_code":")") + (paying ? "SUCCESS" : "NOTENOUGH") +
                               R"(","you_sent":"Bearer \u0074ok\/ABCD\u0045FGH12345678","again":"tok\/ABCDEFGH12345678"})");
  });
  for (const char* path : {"/ok", "/refused"}) {
    HttpKindConfig c = payout(server.url(path));
    c.headers = {{"Authorization", "Bearer ", std::string(variable)}};
    c.rules.error_codes = {{"NOTENOUGH", HttpVerdict::fail}};
    add_http(std::string("echo.") + (path + 1), c);
  }
  const auto paid = enqueue("echo.ok", 1);
  const auto refused = enqueue("echo.refused", 1);
  Running running(*db, registry, options(1, 2));
  ASSERT_TRUE(wait_state(paid[0], "succeeded"));
  ASSERT_TRUE(wait_state(refused[0], "dead"));
  running.worker.stop();
  ::unsetenv(variable);

  auto shows_secret = [](const std::string& text) {
    for (const char* part : {"ABCD", "tok/", R"(tok\/)", R"(\u0074ok)", "FGH1234"}) {
      if (text.find(part) != std::string::npos) return true;
    }
    return false;
  };
  for (const Json& event : logs.events()) EXPECT_FALSE(shows_secret(event.dump())) << event.dump();
  const Task paid_task = task_get(paid[0]);
  EXPECT_FALSE(shows_secret(*paid_task.result_json)) << *paid_task.result_json;
  EXPECT_EQ(Json::parse(*paid_task.result_json)["body"]["again"], http_redacted_text);
  const Task refused_task = task_get(refused[0]);
  ASSERT_TRUE(refused_task.error.has_value());
  EXPECT_FALSE(shows_secret(*refused_task.error)) << *refused_task.error;
  EXPECT_NE(refused_task.error->find("Bearer [redacted]"), std::string::npos) << *refused_task.error;
  for (const auto id : {paid[0], refused[0]}) {
    for (const TaskAttempt& a : attempts(id)) EXPECT_FALSE(shows_secret(a.error.value_or(""))) << *a.error;
  }
  const std::string rows = db->transact([&](Transaction& tx) {
    return tx.exec_sql("SELECT string_agg(t::text, ' ') AS t FROM (SELECT t::text FROM @schema@.task t "
                       "UNION ALL SELECT a::text FROM @schema@.task_attempt a) t",
                       {})
        .text(0, "t");
  });
  EXPECT_FALSE(shows_secret(rows)) << rows;
}

// An asynchronous handler that never answers: the worker gives up on it
// once its lease is over, and maintenance may then rescue the attempt as
// `unknown`. The worker thread is free again for other work.
class SilentHandler final : public Handler {
 public:
  HandlerResult handle(const Task&, const TaskContext&) override { return Outcome{}; }
  bool asynchronous() const noexcept override { return true; }
  void handle_async(const Task&, const TaskContext&, HandlerCallback done) override {
    kept_.push_back(std::move(done));  // never called, kept alive on purpose
  }

 private:
  std::vector<HandlerCallback> kept_;
};

TEST_F(HttpWorkerTest, AnswerThatNeverComesIsAbandonedAfterTheLease) {
  registry.add("silent", std::make_shared<SilentHandler>());
  registry.add("after", [](const Task&, const TaskContext&) -> HandlerResult { return Outcome{}; });
  const std::int64_t silent_id = db->transact([&](Transaction& tx) {
    TaskSpec spec;
    spec.kind = "silent";
    spec.timeout_ms = 100;
    return Outbox(tx).enqueue(spec).task_id;
  });
  Running running(*db, registry, options(1, 1));
  ASSERT_TRUE(logs.wait_count("task_async_abandoned", 1));
  EXPECT_EQ(running.worker.stats().async_abandoned, 1);
  EXPECT_EQ(task_get(silent_id).state, TaskState::running);  // left for lease rescue
  const auto after = enqueue("after", 1);
  ASSERT_TRUE(wait_state(after[0], "succeeded"));
  // The gauge is read after the threads are joined: a task's log line is
  // written before its thread lets go of the in-flight count.
  running.worker.stop();
  EXPECT_EQ(running.worker.stats().in_flight, 0);
}

}  // namespace
}  // namespace payq

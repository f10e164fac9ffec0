#include "payq/tracing.hpp"

#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "outbox_test_support.hpp"
#include "payq/error.hpp"
#include "payq/outbox.hpp"

namespace payq {
namespace {

using testing::Outbox_;
using testing::Settlement_;

const std::string traceparent_a = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
const std::string traceparent_b = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";

// A tracer that keeps what it was told.
class RecordingTracer final : public tracing::Tracer {
 public:
  struct Recorded {
    std::string name;
    tracing::SpanId parent = 0;
    std::optional<TraceContext> remote_parent;
    std::map<std::string, tracing::Value> attributes;
    tracing::Status status = tracing::Status::unset;
    bool ended = false;
  };

  tracing::SpanId span_start(const tracing::SpanStart& start) noexcept override {
    std::lock_guard<std::mutex> guard(mutex);
    spans.push_back(Recorded{start.name, start.parent, start.remote_parent, {}, tracing::Status::unset, false});
    for (const auto& a : start.attributes) spans.back().attributes[a.key] = a.value;
    return spans.size();
  }
  void span_end(tracing::SpanId span, const tracing::Attributes& attributes, tracing::Status status,
                const std::string&, std::int64_t) noexcept override {
    std::lock_guard<std::mutex> guard(mutex);
    Recorded& r = spans.at(span - 1);
    for (const auto& a : attributes) r.attributes[a.key] = a.value;
    r.status = status;
    r.ended = true;
  }
  std::optional<TraceContext> span_context(tracing::SpanId span) noexcept override {
    return TraceContext{"00-0af7651916cd43dd8448eb211c80319c-" + std::string(15, '0') + std::to_string(span % 10) +
                            "-01",
                        ""};
  }

  std::vector<Recorded> named(const std::string& name) {
    std::lock_guard<std::mutex> guard(mutex);
    std::vector<Recorded> out;
    for (const Recorded& r : spans) {
      if (r.name == name) out.push_back(r);
    }
    return out;
  }
  tracing::SpanId id_of(const std::string& name) {
    std::lock_guard<std::mutex> guard(mutex);
    for (std::size_t i = 0; i < spans.size(); ++i) {
      if (spans[i].name == name) return i + 1;
    }
    return 0;
  }

  std::mutex mutex;
  std::vector<Recorded> spans;
};

// Installs a RecordingTracer for the test's duration.
class Installed {
 public:
  Installed() : tracer(std::make_shared<RecordingTracer>()) { tracing::tracer_set(tracer); }
  ~Installed() { tracing::tracer_set(nullptr); }
  std::shared_ptr<RecordingTracer> tracer;
};

TEST(Tracing, TraceContextValidateRefusesWhatIsNotW3c) {
  EXPECT_NO_THROW(trace_context_validate({traceparent_a, "congo=t61rcWkgMzE"}));
  const std::vector<std::string> bads{"", traceparent_a.substr(1), "01" + traceparent_a.substr(2),
                                      "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
                                      "00-" + std::string(32, '0') + "-b7ad6b7169203331-01",
                                      "00-0af7651916cd43dd8448eb211c80319c-" + std::string(16, '0') + "-01",
                                      "00-0af7651916cd43dd8448eb211c80319c_b7ad6b7169203331-01"};
  for (const std::string& bad : bads) {
    EXPECT_THROW(trace_context_validate({bad, ""}), InvalidArgument) << bad;
  }
  EXPECT_THROW(trace_context_validate({traceparent_a, std::string(tracestate_bytes_max + 1, 'a')}), InvalidArgument);
  EXPECT_THROW(trace_context_validate({traceparent_a, "a=\n"}), InvalidArgument);
}

TEST(Tracing, SpansAreInertWithoutATracer) {
  tracing::Span span("payq.test");
  EXPECT_FALSE(span.active());
  tracing::Scope scope(span);
  EXPECT_EQ(tracing::current(), nullptr);
  EXPECT_FALSE(tracing::current_context().has_value());
}

TEST(Tracing, ChildrenParentOnTheCurrentSpanAndEndsCarryAttributes) {
  Installed installed;
  {
    tracing::Span outer("outer");
    tracing::Scope scope(outer);
    {
      tracing::Span inner("inner", tracing::SpanKind::client);
      inner.set("payq.task.id", std::int64_t{7});
      inner.set("payq.queue", std::string("payouts"));
    }
    try {
      tracing::Span failing("failing");
      throw std::runtime_error("boom");
    } catch (const std::runtime_error&) {
    }
  }
  EXPECT_EQ(tracing::current(), nullptr);
  auto inner = installed.tracer->named("inner");
  ASSERT_EQ(inner.size(), 1u);
  EXPECT_EQ(inner[0].parent, installed.tracer->id_of("outer"));
  EXPECT_TRUE(inner[0].ended);
  EXPECT_EQ(std::get<std::int64_t>(inner[0].attributes.at("payq.task.id")), 7);
  EXPECT_EQ(std::get<std::string>(inner[0].attributes.at("payq.queue")), "payouts");
  // Ended by an exception: an error, without the exception's message.
  EXPECT_EQ(installed.tracer->named("failing").at(0).status, tracing::Status::error);
  EXPECT_TRUE(installed.tracer->named("outer").at(0).ended);
}

TEST(Tracing, DeferredEndsReachTheTracerOnlyAtTheNextFlush) {
  Installed installed;
  tracing::Span span("on.the.loop");
  span.set("http.response.status_code", std::int64_t{200});
  span.end_deferred();
  EXPECT_FALSE(span.active());
  EXPECT_FALSE(installed.tracer->named("on.the.loop").at(0).ended);
  tracing::flush();
  const auto ended = installed.tracer->named("on.the.loop").at(0);
  EXPECT_TRUE(ended.ended);
  EXPECT_EQ(std::get<std::int64_t>(ended.attributes.at("http.response.status_code")), 200);
}

TEST_F(Outbox_, TraceContextIsStoredWithTheTaskAndClaimedWithIt) {
  TaskSpec traced = spec();
  traced.trace_context = TraceContext{traceparent_a, "congo=t61rcWkgMzE"};
  traced.unique_key = "sms:traced";
  const auto created = enqueue(traced);
  const auto plain = enqueue(spec());
  ASSERT_TRUE(get(created.task_id).trace_context.has_value());
  EXPECT_EQ(get(created.task_id).trace_context->traceparent, traceparent_a);
  EXPECT_EQ(get(created.task_id).trace_context->tracestate, "congo=t61rcWkgMzE");
  EXPECT_FALSE(get(plain.task_id).trace_context.has_value());

  // The same request from another trace is a replay, not a conflict.
  traced.trace_context = TraceContext{traceparent_b, ""};
  const auto replay = enqueue(traced);
  EXPECT_FALSE(replay.created);
  EXPECT_EQ(replay.task_id, created.task_id);

  std::map<std::int64_t, std::optional<TraceContext>> claimed;
  for (const Task& t : claim()) claimed[t.id] = t.trace_context;
  ASSERT_EQ(claimed.size(), 2u);
  EXPECT_EQ(claimed.at(created.task_id)->traceparent, traceparent_a);
  EXPECT_FALSE(claimed.at(plain.task_id).has_value());
}

TEST_F(Outbox_, MalformedTraceContextIsRefusedWithNothingWritten) {
  TaskSpec bad = spec("sms.bad");
  bad.trace_context = TraceContext{"00-nothex-b7ad6b7169203331-01", ""};
  EXPECT_THROW(enqueue(bad), InvalidArgument);
  EXPECT_EQ(count_tasks("sms.bad"), 0);
}

TEST_F(Settlement_, SettlementAndItsCaptureAreSpansUnderTheCurrentSpan) {
  Installed installed;
  auto [hold, enqueued] = withdraw(500, "wd-traced");
  const std::vector<Task> tasks = claim("provider-a");
  ASSERT_EQ(tasks.size(), 1u);
  {
    tracing::Span attempt("attempt");
    tracing::Scope scope(attempt);
    complete(tasks[0], OutcomeKind::success);
  }
  auto settle = installed.tracer->named("payq.settle");
  ASSERT_EQ(settle.size(), 1u);
  EXPECT_EQ(settle[0].parent, installed.tracer->id_of("attempt"));
  EXPECT_EQ(std::get<std::string>(settle[0].attributes.at("payq.settle.side")), "success");
  EXPECT_EQ(std::get<std::int64_t>(settle[0].attributes.at("payq.task.id")), enqueued.task_id);
  auto capture = installed.tracer->named("payq.ledger.capture");
  ASSERT_EQ(capture.size(), 1u);
  EXPECT_EQ(capture[0].parent, installed.tracer->id_of("payq.settle"));
  EXPECT_EQ(std::get<std::string>(capture[0].attributes.at("payq.ledger.currency")), "CNY");
  EXPECT_EQ(std::get<std::int64_t>(capture[0].attributes.at("payq.ledger.hold_id")), hold.id);
  EXPECT_EQ(hold_status(hold), HoldStatus::captured);
}

}  // namespace
}  // namespace payq

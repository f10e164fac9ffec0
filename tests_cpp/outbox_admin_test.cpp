// Operator actions on queues (refusal of unknown queues, the queue action
// log) and the stack traces stored with attempts.
#include <gtest/gtest.h>

#include <string>

#include <nlohmann/json.hpp>

#include "outbox_test_support.hpp"
#include "payq/error.hpp"
#include "payq/outbox.hpp"

namespace payq {
namespace {

using testing::Outbox_;

class OutboxAdmin_ : public Outbox_ {
 protected:
  std::int64_t queue_rows(const std::string& name) {
    return db->transact([&](Transaction& tx) {
      return tx.exec_sql("SELECT count(*) AS n FROM @schema@.queue WHERE name = $1", {name}).i64(0, "n");
    });
  }
  std::vector<QueueAction> actions(const std::optional<std::string>& queue = std::nullopt) {
    return db->transact([&](Transaction& tx) { return Outbox(tx).queue_actions(queue, 100); });
  }
};

TEST_F(OutboxAdmin_, PausingAnUnknownQueueIsRefusedAndCreatesNothing) {
  for (bool paused : {true, false}) {
    EXPECT_THROW(db->transact([&](Transaction& tx) { Outbox(tx).queue_pause("payuots", paused, {"ops:ann", ""}); }),
                 UnknownQueue);
  }
  EXPECT_THROW(db->transact([&](Transaction& tx) { Outbox(tx).queue_pause_until("payuots", 1000); }), UnknownQueue);
  // UnknownQueue is an InvalidArgument: callers catching that keep working.
  EXPECT_THROW(db->transact([&](Transaction& tx) { Outbox(tx).queue_pause("payuots", true); }), InvalidArgument);
  EXPECT_EQ(queue_rows("payuots"), 0);
  EXPECT_TRUE(actions().empty());
}

TEST_F(OutboxAdmin_, QueuesWithTasksOrSettingsAndTheDefaultQueueArePaused) {
  enqueue(spec("x", "payouts"));
  db->transact([&](Transaction& tx) {
    Outbox outbox(tx);
    QueueConfig config;
    config.name = "sms";
    config.concurrency_max = 2;
    outbox.queue_configure(config);
    outbox.queue_pause("payouts", true);
    outbox.queue_pause("sms", true);
    outbox.queue_pause("default", true);  // enqueue's default: known before its first task
    outbox.queue_pause("payq.alerts", true);  // payq's own: known before its first alert
  });
  EXPECT_TRUE(claim("payouts").empty());
  EXPECT_EQ(queue_rows("default"), 1);
}

TEST_F(OutboxAdmin_, QueueActionsAreRecordedWithActorNoteAndDetailNewestFirst) {
  enqueue(spec("x", "payouts"));
  db->transact([&](Transaction& tx) {
    Outbox outbox(tx);
    outbox.queue_pause("payouts", true, {"ops:ann", "provider outage"});
    outbox.queue_pause_until("payouts", 60'000, {"ops:ann", "cool down"});
    QueueConfig config;
    config.name = "payouts";
    config.concurrency_max = 3;
    outbox.queue_configure(config, {"ops:bob", "provider asked for 3"});
    outbox.queue_pause("payouts", false, {"ops:bob", "provider is back"});
    outbox.queue_pause("payouts", true);  // no actor: not an operator's action, not recorded
  });
  const auto log = actions("payouts");
  ASSERT_EQ(log.size(), 4u);
  EXPECT_EQ(log[0].action, "resume");
  EXPECT_EQ(log[0].actor, "ops:bob");
  EXPECT_EQ(log[0].note, "provider is back");
  EXPECT_EQ(log[1].action, "configure");
  EXPECT_EQ(nlohmann::json::parse(log[1].detail_json).at("concurrency_max"), 3) << log[1].detail_json;
  EXPECT_EQ(log[2].action, "pause_for");
  EXPECT_EQ(nlohmann::json::parse(log[2].detail_json).at("pause_ms"), 60'000) << log[2].detail_json;
  EXPECT_EQ(log[3].action, "pause");
  EXPECT_EQ(log[3].note, "provider outage");
  EXPECT_GT(log[0].id, log[3].id);
  EXPECT_TRUE(actions("sms").empty());
  EXPECT_EQ(actions().size(), 4u);
}

TEST_F(OutboxAdmin_, QueueActionInputIsCheckedBeforeAnythingIsWritten) {
  enqueue(spec("x", "payouts"));
  auto refused = [&](const QueueActionBy& by) {
    EXPECT_THROW(db->transact([&](Transaction& tx) { Outbox(tx).queue_pause("payouts", true, by); }),
                 InvalidArgument);
  };
  refused({"", "a note without anyone taking it"});
  refused({std::string(201, 'a'), ""});
  refused({"ops:ann", std::string(2001, 'n')});
  EXPECT_TRUE(actions().empty());
  EXPECT_THROW(db->transact([&](Transaction& tx) { return Outbox(tx).queue_actions(std::nullopt, 0); }),
               InvalidArgument);
}

TEST_F(OutboxAdmin_, AnAttemptKeepsTheLastBytesOfItsTracebackFromALineStart) {
  enqueue(spec("x", "q"));
  Task task = claim("q").at(0);
  std::string trace = "Traceback (most recent call last):\n";
  for (int frame = 0; trace.size() < 3 * traceback_bytes_max; ++frame) {
    trace += "  File \"handler.py\", line " + std::to_string(frame) + ", in step\n    step()\n";
  }
  trace += "ValueError: the innermost fault\n";
  db->transact([&](Transaction& tx) {
    CompleteRequest r;
    r.task_id = task.id;
    r.lease_token = *task.lease_token;
    r.attempt = task.attempt;
    r.outcome.kind = OutcomeKind::retry;
    r.outcome.error = "ValueError: the innermost fault";
    r.outcome.traceback = trace;
    r.worker_id = "w1";
    return Outbox(tx).complete(r);
  });
  const auto attempts = db->transact([&](Transaction& tx) { return Outbox(tx).attempts(task.id); });
  ASSERT_EQ(attempts.size(), 1u);
  ASSERT_TRUE(attempts[0].traceback.has_value());
  const std::string& kept = *attempts[0].traceback;
  EXPECT_LE(kept.size(), traceback_bytes_max);
  EXPECT_GT(kept.size(), traceback_bytes_max - 200);
  EXPECT_EQ(kept.rfind("...\n  File ", 0), 0u) << kept.substr(0, 40);  // cut at a line's start
  EXPECT_NE(kept.find("ValueError: the innermost fault"), std::string::npos);
  EXPECT_EQ(attempts[0].error.value_or(""), "ValueError: the innermost fault");
}

TEST_F(OutboxAdmin_, AnAttemptWithoutTracebackStoresNone) {
  const std::int64_t id = enqueue(spec("x", "q")).task_id;
  complete(claim("q").at(0), OutcomeKind::retry, "provider 503");
  const auto attempts = db->transact([&](Transaction& tx) { return Outbox(tx).attempts(id); });
  ASSERT_EQ(attempts.size(), 1u);
  EXPECT_FALSE(attempts[0].traceback.has_value());
}

}  // namespace
}  // namespace payq

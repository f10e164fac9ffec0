// What operators read: queues with depth, lag and limits; filtered task lists.
#include <gtest/gtest.h>

#include "ledger_test_support.hpp"
#include "payq/error.hpp"
#include "payq/outbox.hpp"

namespace payq {
namespace {

class OutboxOverview_ : public testing::LedgerTest {
 protected:
  EnqueueResult enqueue(const std::string& kind, const std::string& queue, std::int64_t delay_ms = 0,
                        std::optional<std::string> unique_key = std::nullopt) {
    TaskSpec spec;
    spec.kind = kind;
    spec.queue = queue;
    spec.delay_ms = delay_ms;
    spec.unique_key = std::move(unique_key);
    return db->transact([&](Transaction& tx) { return Outbox(tx).enqueue(spec); });
  }
  std::vector<QueueOverview> overview() {
    return db->transact([&](Transaction& tx) { return Outbox(tx).queues_overview(); });
  }
  std::vector<Task> list(const TaskFilter& filter) {
    return db->transact([&](Transaction& tx) { return Outbox(tx).tasks_list(filter); });
  }
};

TEST_F(OutboxOverview_, QueuesShowDepthLagAndLimits) {
  enqueue("sms.send", "sms");
  enqueue("sms.send", "sms");
  enqueue("sms.send", "sms", 3'600'000);  // due in an hour: pending, not runnable
  enqueue("payout", "provider");
  db->transact([&](Transaction& tx) {
    Outbox outbox(tx);
    QueueConfig config;
    config.name = "provider";
    config.concurrency_max = 2;
    config.rate_count_max = 10;
    config.rate_window_ms = 1000;
    outbox.queue_configure(config);
    outbox.queue_pause_until("provider", 60'000);
    return outbox.claim({"sms", "w1", 1}).size();
  });

  const auto queues = overview();
  ASSERT_EQ(queues.size(), 2u);
  const QueueOverview& provider = queues[0];
  const QueueOverview& sms = queues[1];
  EXPECT_EQ(provider.name, "provider");
  EXPECT_FALSE(provider.paused);
  EXPECT_TRUE(provider.paused_until.has_value());  // back-pressure in force
  EXPECT_EQ(provider.concurrency_max, 2);
  EXPECT_EQ(provider.rate_count_max, 10);
  EXPECT_EQ(provider.rate_window_ms, 1000);
  EXPECT_EQ(provider.pending, 1);

  EXPECT_EQ(sms.name, "sms");
  EXPECT_EQ(sms.pending, 2);
  EXPECT_EQ(sms.runnable, 1);
  EXPECT_EQ(sms.running, 1);
  EXPECT_EQ(sms.dead, 0);
  ASSERT_TRUE(sms.oldest_runnable_age_ms.has_value());
  EXPECT_GE(*sms.oldest_runnable_age_ms, 0);
  EXPECT_FALSE(sms.paused_until.has_value());
  EXPECT_FALSE(sms.concurrency_max.has_value());
}

TEST_F(OutboxOverview_, TaskListNarrowsByEveryFilter) {
  const auto a = enqueue("sms.send", "sms", 0, std::string("order-7/sms"));
  enqueue("sms.send", "sms");
  const auto c = enqueue("crm.push", "crm");

  TaskFilter by_kind;
  by_kind.kind = "crm.push";
  ASSERT_EQ(list(by_kind).size(), 1u);
  EXPECT_EQ(list(by_kind)[0].id, c.task_id);

  TaskFilter by_key;
  by_key.key = "order-7/sms";
  ASSERT_EQ(list(by_key).size(), 1u);
  EXPECT_EQ(list(by_key)[0].id, a.task_id);
  by_key.key = "task:" + std::to_string(c.task_id);  // the default idempotency key
  ASSERT_EQ(list(by_key).size(), 1u);
  EXPECT_EQ(list(by_key)[0].id, c.task_id);

  TaskFilter old;
  old.created_before_ms_ago = 86'400'000;
  EXPECT_TRUE(list(old).empty());
  old.created_before_ms_ago = 0;
  EXPECT_EQ(list(old).size(), 3u);

  TaskFilter both;
  both.queue = "sms";
  both.kind = "crm.push";
  EXPECT_TRUE(list(both).empty());
}

TEST_F(OutboxOverview_, BadFiltersAreTypedErrors) {
  TaskFilter bad_state;
  bad_state.state = "finished";
  EXPECT_THROW(list(bad_state), InvalidArgument);
  TaskFilter bad_limit;
  bad_limit.limit = 0;
  EXPECT_THROW(list(bad_limit), InvalidArgument);
  TaskFilter negative_age;
  negative_age.created_before_ms_ago = -1;
  EXPECT_THROW(list(negative_age), InvalidArgument);
  TaskFilter long_kind;
  long_kind.kind = std::string(201, 'k');
  EXPECT_THROW(list(long_kind), InvalidArgument);
}

}  // namespace
}  // namespace payq

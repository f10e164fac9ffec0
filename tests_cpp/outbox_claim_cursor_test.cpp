// ClaimCursor (outbox_claim.cpp): a claimer claims after the last task it
// took, and scans from the front when its cursor runs dry and at least every
// full_scan_interval, so a task that sorts before the cursor is still taken.
#include <gtest/gtest.h>

#include <chrono>
#include <optional>
#include <vector>

#include "outbox_test_support.hpp"
#include "payq/error.hpp"
#include "payq/outbox.hpp"

namespace payq {
namespace {

using testing::Outbox_;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

class ClaimCursor_ : public Outbox_ {
 protected:
  // One claim as the claim loop makes it: from the cursor's start at `now`,
  // then recorded.
  std::vector<Task> claim_from(ClaimCursor& cursor, std::size_t count_max, Clock::time_point now) {
    const ClaimRequest request{"default", "w1", count_max};
    const std::optional<ClaimKey> after = cursor.start(now);
    std::vector<Task> tasks =
        db->transact([&](Transaction& tx) { return Outbox(tx).claim_plain(request, after); }).value();
    cursor.record(request, after, tasks, now);
    return tasks;
  }
  std::int64_t enqueue_priority(int priority) {
    TaskSpec s = spec();
    s.priority = priority;
    return enqueue(s).task_id;
  }
  static std::vector<std::int64_t> ids(const std::vector<Task>& tasks) {
    std::vector<std::int64_t> out;
    for (const Task& task : tasks) out.push_back(task.id);
    return out;
  }
};

TEST_F(ClaimCursor_, StartsAfterTheLastTaskOfAFullClaimOnly) {
  const std::int64_t a = enqueue_priority(0);
  const std::int64_t b = enqueue_priority(0);
  enqueue_priority(0);
  ClaimCursor cursor(milliseconds{1000});
  const auto t0 = Clock::now();
  EXPECT_FALSE(cursor.start(t0).has_value());  // nothing claimed yet: from the front
  EXPECT_EQ(ids(claim_from(cursor, 2, t0)), (std::vector<std::int64_t>{a, b}));
  const std::optional<ClaimKey> key = cursor.start(t0);
  ASSERT_TRUE(key.has_value());
  EXPECT_EQ(key->id, b);
  EXPECT_EQ(key->priority, 0);
  EXPECT_EQ(key->run_at, get(b).run_at);
  // One task left, fewer than asked: the cursor is dropped.
  EXPECT_EQ(claim_from(cursor, 2, t0).size(), 1u);
  EXPECT_FALSE(cursor.start(t0).has_value());
}

// A higher-priority task enqueued after the cursor passed its place is not
// seen from the cursor; once the cursor runs dry, the scan from the front
// takes it.
TEST_F(ClaimCursor_, HigherPriorityTaskIsTakenWhenTheCursorRunsDry) {
  for (int i = 0; i < 4; ++i) enqueue_priority(0);
  ClaimCursor cursor(milliseconds{60'000});
  const auto t0 = Clock::now();
  ASSERT_EQ(claim_from(cursor, 2, t0).size(), 2u);
  const std::int64_t urgent = enqueue_priority(5);
  const std::vector<Task> next = claim_from(cursor, 2, t0);
  ASSERT_EQ(next.size(), 2u);
  for (const Task& task : next) EXPECT_EQ(task.priority, 0);
  ASSERT_TRUE(cursor.start(t0).has_value());
  EXPECT_TRUE(claim_from(cursor, 2, t0).empty());  // dry, within the interval
  const std::vector<Task> front = claim_from(cursor, 2, t0);
  ASSERT_EQ(front.size(), 1u);
  EXPECT_EQ(front[0].id, urgent);
  EXPECT_EQ(get(urgent).state, TaskState::running);
}

// An enqueue whose transaction began first (so its run_at sorts before the
// cursor) but committed after the cursor passed its place is taken by the
// scan from the front once the cursor runs dry.
TEST_F(ClaimCursor_, EarlierRunAtCommittedLateIsTaken) {
  // The queue's row first: otherwise the other enqueues wait for the late
  // transaction's insert of it.
  db->transact([](Transaction& tx) { Outbox(tx).queue_pause("default", false); });
  auto lease = db->acquire();
  Transaction late_tx(*lease);
  const std::int64_t late = Outbox(late_tx).enqueue(spec()).task_id;
  std::vector<std::int64_t> early;
  for (int i = 0; i < 3; ++i) early.push_back(enqueue_priority(0));
  ClaimCursor cursor(milliseconds{60'000});
  const auto t0 = Clock::now();
  EXPECT_EQ(ids(claim_from(cursor, 2, t0)), (std::vector<std::int64_t>{early[0], early[1]}));
  late_tx.commit();
  EXPECT_EQ(ids(claim_from(cursor, 2, t0)), (std::vector<std::int64_t>{early[2]}));
  EXPECT_EQ(ids(claim_from(cursor, 2, t0)), (std::vector<std::int64_t>{late}));
}

// A cursor that keeps finding full batches still scans from the front once
// full_scan_interval has passed since its last such scan: that is the bound
// on how long a task before the cursor waits.
TEST_F(ClaimCursor_, FullScanIntervalBoundsHowLongATaskIsPassedOver) {
  for (int i = 0; i < 8; ++i) enqueue_priority(0);
  const milliseconds interval{250};
  ClaimCursor cursor(interval);
  const auto t0 = Clock::now();
  ASSERT_EQ(claim_from(cursor, 2, t0).size(), 2u);
  const std::int64_t urgent = enqueue_priority(5);
  // Within the interval, from the cursor: the urgent task is passed over.
  ASSERT_TRUE(cursor.start(t0 + interval - milliseconds{1}).has_value());
  const std::vector<Task> within = claim_from(cursor, 2, t0 + interval - milliseconds{1});
  ASSERT_EQ(within.size(), 2u);
  for (const Task& task : within) EXPECT_NE(task.id, urgent);
  // At the interval's end the claim starts from the front, urgent first.
  EXPECT_FALSE(cursor.start(t0 + interval).has_value());
  const std::vector<Task> front = claim_from(cursor, 2, t0 + interval);
  ASSERT_EQ(front.size(), 2u);
  EXPECT_EQ(front[0].id, urgent);
  // That scan restarts the interval and leaves the cursor after its batch.
  ASSERT_TRUE(cursor.start(t0 + interval).has_value());
  EXPECT_EQ(cursor.start(t0 + interval)->id, front[1].id);
}

// The cursor claim keeps the plain claim's rules: nothing from a paused
// queue, and a limited queue goes to the locked path.
TEST_F(ClaimCursor_, CursorClaimKeepsPauseAndLimitChecks) {
  for (int i = 0; i < 4; ++i) enqueue_priority(0);
  ClaimCursor cursor(milliseconds{60'000});
  const auto t0 = Clock::now();
  ASSERT_EQ(claim_from(cursor, 2, t0).size(), 2u);
  const std::optional<ClaimKey> after = cursor.start(t0);
  ASSERT_TRUE(after.has_value());
  const ClaimRequest request{"default", "w1", 2};
  db->transact([](Transaction& tx) { Outbox(tx).queue_pause("default", true); });
  const auto paused = db->transact([&](Transaction& tx) { return Outbox(tx).claim_plain(request, after); });
  ASSERT_TRUE(paused.has_value());
  EXPECT_TRUE(paused->empty());
  db->transact([](Transaction& tx) { Outbox(tx).queue_pause("default", false); });
  db->transact([](Transaction& tx) {
    QueueConfig limited;
    limited.name = "default";
    limited.concurrency_max = 5;
    Outbox(tx).queue_configure(limited);
  });
  EXPECT_FALSE(db->transact([&](Transaction& tx) { return Outbox(tx).claim_plain(request, after); }).has_value());
}

TEST(ClaimCursor, RejectsANegativeInterval) {
  EXPECT_THROW(ClaimCursor(milliseconds{-1}), InvalidArgument);
}

}  // namespace
}  // namespace payq

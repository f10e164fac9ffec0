// A finished task tells the truth (issue 21): its run_at is never after its
// finished_at, and a task resolved as applied carries no error.
#include <gtest/gtest.h>

#include "outbox_test_support.hpp"

namespace payq::testing {
namespace {

class OutboxFinish : public Outbox_ {};

// run_at moves only for a task that will run again: one that finished on
// its last attempt keeps the time it last ran for.
TEST_F(OutboxFinish, RunAtMovesOnlyForATaskThatWillRunAgain) {
  TaskSpec s = spec();
  s.attempt_max = 1;
  const std::int64_t last = enqueue(s).task_id;
  EXPECT_EQ(complete(claim().at(0), OutcomeKind::retry, "provider 500", 3'600'000).state, TaskState::dead);
  const Task dead = get(last);
  ASSERT_TRUE(dead.finished_at.has_value());
  // Both are fixed-width UTC text, so their order is the times' order.
  EXPECT_LE(dead.run_at, *dead.finished_at);

  s.attempt_max = 3;
  const std::int64_t again = enqueue(s).task_id;
  const Task claimed = claim().at(0);
  EXPECT_EQ(complete(claimed, OutcomeKind::retry, "provider 500", 3'600'000).state, TaskState::pending);
  EXPECT_GT(get(again).run_at, claimed.run_at);
}

TEST_F(OutboxFinish, AnUnknownOnTheLastAttemptKeepsRunAtBeforeFinishedAt) {
  TaskSpec s = spec();
  s.attempt_max = 1;
  const std::int64_t id = enqueue(s).task_id;
  EXPECT_EQ(complete(claim().at(0), OutcomeKind::unknown, "timeout after sending", 3'600'000).state,
            TaskState::needs_review);
  const Task task = get(id);
  ASSERT_TRUE(task.finished_at.has_value());
  EXPECT_LE(task.run_at, *task.finished_at);
}

// Resolved as applied, the task succeeded: it has no error, while its
// attempt keeps what happened. Resolved as not applied, it keeps the error.
TEST_F(OutboxFinish, OnlyAnAppliedResolutionClearsTheError) {
  TaskSpec s = spec();
  s.attempt_max = 1;
  const std::int64_t applied = enqueue(s).task_id;
  complete(claim().at(0), OutcomeKind::unknown, "timeout after sending");
  const std::int64_t not_applied = enqueue(s).task_id;
  complete(claim().at(0), OutcomeKind::unknown, "timeout after sending");
  ASSERT_EQ(get(applied).error, std::optional<std::string>("timeout after sending"));
  db->transact([&](Transaction& tx) {
    Outbox(tx).task_resolve(applied, true, "ops:lin", "provider shows it paid");
    Outbox(tx).task_resolve(not_applied, false, "ops:lin", "provider has no record");
  });

  const Task succeeded = get(applied);
  EXPECT_EQ(succeeded.state, TaskState::succeeded);
  EXPECT_FALSE(succeeded.error.has_value());
  const auto attempts = db->transact([&](Transaction& tx) { return Outbox(tx).attempts(applied); });
  ASSERT_EQ(attempts.size(), 1u);
  EXPECT_EQ(attempts[0].error, std::optional<std::string>("timeout after sending"));

  const Task dead = get(not_applied);
  EXPECT_EQ(dead.state, TaskState::dead);
  EXPECT_EQ(dead.error, std::optional<std::string>("timeout after sending"));
}

}  // namespace
}  // namespace payq::testing

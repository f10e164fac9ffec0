// The words that cross languages (vocabulary.hpp): one parse per list that
// refuses unknown text, the action table, the queue-name rule, the default
// worker id and the error table the binding translates with.
#include "payq/vocabulary.hpp"

#include <gtest/gtest.h>

#include <regex>
#include <set>
#include <string>

#include "payq/error.hpp"

namespace payq {
namespace {

TEST(Vocabulary, EveryNameParsesBackToItsValue) {
  for (TaskState state : task_states) EXPECT_EQ(task_state_parse(task_state_name(state)), state);
  for (OutcomeKind kind : outcome_kinds) EXPECT_EQ(outcome_kind_parse(outcome_kind_name(kind)), kind);
  for (OperatorAction action : operator_actions) {
    EXPECT_EQ(operator_action_parse(operator_action_name(action)), action);
  }
}

TEST(Vocabulary, UnknownTextIsRefusedNeverGuessed) {
  // An outcome payq cannot read must never pass for retry.
  for (const char* text : {"later", "Retry", "retry ", "", "returned"}) {
    EXPECT_THROW(outcome_kind_parse(text), InvalidArgument) << text;
  }
  EXPECT_THROW(task_state_parse("paused"), InvalidArgument);
  EXPECT_THROW(operator_action_parse("resolve_applied"), InvalidArgument);
  try {
    outcome_kind_parse("later");
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_EQ(std::string(e.what()), "unknown outcome 'later' (success, retry, fail, unknown)");
  }
}

TEST(Vocabulary, NamesAreDistinctAndAttemptOutcomesAddReturned) {
  std::set<std::string> states;
  for (TaskState state : task_states) states.insert(task_state_name(state));
  EXPECT_EQ(states.size(), task_states.size());
  const std::vector<std::string> attempts = attempt_outcome_names();
  ASSERT_EQ(attempts.size(), outcome_kinds.size() + 1);
  EXPECT_EQ(attempts.back(), attempt_outcome_returned);
}

TEST(Vocabulary, ActionsNeedTheStatesOfTheTable) {
  EXPECT_TRUE(operator_action_allowed(OperatorAction::release, TaskState::held));
  EXPECT_FALSE(operator_action_allowed(OperatorAction::release, TaskState::pending));
  EXPECT_TRUE(operator_action_allowed(OperatorAction::cancel, TaskState::pending));
  EXPECT_FALSE(operator_action_allowed(OperatorAction::cancel, TaskState::running));
  EXPECT_TRUE(operator_action_allowed(OperatorAction::retry, TaskState::cancelled));
  EXPECT_FALSE(operator_action_allowed(OperatorAction::retry, TaskState::needs_review));
  EXPECT_TRUE(operator_action_allowed(OperatorAction::resolve, TaskState::needs_review));
  // Nothing may be done to a running or a succeeded task.
  for (OperatorAction action : operator_actions) {
    EXPECT_FALSE(operator_action_allowed(action, TaskState::running));
    EXPECT_FALSE(operator_action_allowed(action, TaskState::succeeded));
  }
}

TEST(Vocabulary, QueueNameRuleIsItsPattern) {
  const std::regex pattern(queue_name_pattern);
  for (const std::string& name : {std::string("default"), std::string("payouts.cny:fast-1_x"),
                                 std::string(queue_name_bytes_max, 'q'), std::string(), std::string(101, 'q'),
                                 std::string("pay outs"), std::string("a/b"), std::string("\xc3\xa4"),
                                 std::string("a\nb")}) {
    const bool valid = std::regex_match(name, pattern);
    EXPECT_EQ(queue_name_valid(name), valid) << name;
    if (valid) {
      EXPECT_NO_THROW(queue_name_validate(name));
    } else {
      EXPECT_THROW(queue_name_validate(name), InvalidArgument) << name;
    }
  }
}

TEST(Vocabulary, DefaultWorkerIdIsHostPidAndSixHexDigits) {
  const std::string id = worker_id_default();
  EXPECT_LE(id.size(), worker_id_bytes_max);
  EXPECT_TRUE(std::regex_match(id, std::regex("^.+:[0-9]+:[0-9a-f]{6}$"))) << id;
}

TEST(Vocabulary, EachErrorSampleIsClassifiedAsItsOwnClass) {
  std::set<std::string> seen;
  for (const ErrorClass& c : error_classes()) {
    // Every base is listed before the class that derives from it.
    if (c.base) {
      EXPECT_TRUE(seen.count(c.base)) << c.name;
    }
    EXPECT_TRUE(seen.insert(c.name).second) << c.name;
    try {
      c.throw_sample();
      ADD_FAILURE() << c.name << " did not throw";
    } catch (const Error& e) {
      EXPECT_STREQ(error_class_of(e).name, c.name);
    }
  }
  EXPECT_EQ(error_classes().front().base, nullptr);
}

TEST(Vocabulary, OnlyTransactionRollbacksAreTransient) {
  for (const char* sqlstate : {"40000", "40001", "40003", "40P01"}) {
    EXPECT_STREQ(error_class_for_sqlstate(sqlstate), "TransientError") << sqlstate;
  }
  for (const char* sqlstate : {"40002", "22012", "23505", "08006", "", "4"}) {
    EXPECT_STREQ(error_class_for_sqlstate(sqlstate), "DatabaseError") << sqlstate;
  }
}

}  // namespace
}  // namespace payq

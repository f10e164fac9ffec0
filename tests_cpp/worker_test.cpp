// The worker engine against a real PostgreSQL: outcomes, concurrency
// (exactly-once handling, no overlap across workers, partition
// serialisation), weighted queues, options and graceful stop. NOTIFY wakeup,
// maintenance and reconnection: worker_maintenance_test.cpp.
// Tests wait on the worker's log events and on condition variables, each
// wait with a bound that fails the test rather than hanging it.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>

#include "harness.hpp"
#include "worker_test_support.hpp"
#include "payq/error.hpp"
#include "payq/inbox.hpp"
#include "payq/outbox.hpp"
#include "payq/worker.hpp"

#include <pthread.h>

namespace payq {
namespace {

using testing::Gate;
using testing::LogCollector;
using testing::outcome_of;
using testing::Running;
using testing::WorkerTest;
using namespace std::chrono_literals;
using Json = nlohmann::json;

// Every wait in this file ends after this long, failing the test.
constexpr auto wait_bound = testing::worker_wait_bound;

// Starts in the constructor, stops (gracefully) in the destructor.
TEST_F(WorkerTest, TasksRunAndSucceed) {
  registry.add("echo", [](const Task& task, const TaskContext&) -> HandlerResult {
    Outcome outcome;
    outcome.result_json = task.payload_json;
    return outcome;
  });
  const auto ids = enqueue_many("echo", 5);
  Running running(*db, registry, options());
  ASSERT_TRUE(wait_done(5));
  for (const auto id : ids) {
    const Task task = task_get(id);
    EXPECT_EQ(task.state, TaskState::succeeded);
    ASSERT_TRUE(task.result_json);
    EXPECT_EQ(Json::parse(*task.result_json), Json::parse(task.payload_json));
    ASSERT_EQ(attempts(id).size(), 1u);
    EXPECT_EQ(attempts(id)[0].outcome, "success");
    EXPECT_EQ(attempts(id)[0].worker_id, running.worker.worker_id());
  }
  running.worker.stop();  // joined: a counter moves only after its completion commits
  EXPECT_EQ(running.worker.stats().succeeded, 5);
  EXPECT_EQ(running.worker.stats().claimed, 5);
}

TEST_F(WorkerTest, RetryThenSuccess) {
  std::atomic<int> calls{0};
  registry.add("flaky", [&](const Task&, const TaskContext&) -> HandlerResult {
    if (calls++ == 0) return outcome_of(OutcomeKind::retry, "provider busy");
    return Outcome{};
  });
  const auto id = enqueue_many("flaky", 1)[0];
  Running running(*db, registry, options());
  ASSERT_TRUE(wait_state(id, "succeeded"));
  const auto tried = attempts(id);
  ASSERT_EQ(tried.size(), 2u);
  EXPECT_EQ(tried[0].outcome, "retry");
  EXPECT_EQ(tried[0].error.value_or(""), "provider busy");
  EXPECT_EQ(tried[1].outcome, "success");
  EXPECT_EQ(task_get(id).attempt, 2);
  EXPECT_EQ(running.worker.stats().retried, 1);
  EXPECT_EQ(running.worker.stats().succeeded, 1);
}

TEST_F(WorkerTest, FailGoesDead) {
  registry.add("decline", [](const Task&, const TaskContext&) -> HandlerResult {
    return outcome_of(OutcomeKind::fail, "card declined");
  });
  const auto id = enqueue_many("decline", 1)[0];
  Running running(*db, registry, options());
  ASSERT_TRUE(wait_state(id, "dead"));
  const Task task = task_get(id);
  EXPECT_EQ(task.state, TaskState::dead);
  EXPECT_EQ(task.error.value_or(""), "card declined");
  ASSERT_EQ(attempts(id).size(), 1u);
  running.worker.stop();  // joined: a counter moves only after its completion commits
  EXPECT_EQ(running.worker.stats().failed, 1);
}

// A handler far quicker than a millisecond still adds its time to the sum:
// whole milliseconds would count it as nothing. The handler sleeps at least
// 300 microseconds, so only a lower bound is asserted.
TEST_F(WorkerTest, AttemptDurationsKeepSubMillisecondPrecision) {
  constexpr int task_count = 3;
  constexpr auto nap = 300us;
  registry.add("nap", [&](const Task&, const TaskContext&) -> HandlerResult {
    std::this_thread::sleep_for(nap);
    return Outcome{};
  });
  enqueue_many("nap", task_count);
  Running running(*db, registry, options());
  ASSERT_TRUE(wait_done(task_count));
  running.worker.stop();
  const WorkerStats stats = running.worker.stats();
  EXPECT_GE(stats.attempt_duration_seconds_sum, task_count * std::chrono::duration<double>(nap).count());
  // What whole milliseconds drop (each attempt's fraction) is kept: equal
  // only if every attempt took an exact number of milliseconds, to the
  // nanosecond.
  EXPECT_GT(stats.attempt_duration_seconds_sum, static_cast<double>(stats.attempt_duration_ms_sum) / 1000);
  ASSERT_EQ(stats.attempt_duration_counts.size(), attempt_duration_bounds_seconds.size() + 1);
  std::int64_t counted = 0;
  for (const auto count : stats.attempt_duration_counts) counted += count;
  EXPECT_EQ(counted, task_count);
  EXPECT_DOUBLE_EQ(attempt_duration_bounds_seconds.front(), 0.005);
  EXPECT_DOUBLE_EQ(attempt_duration_bounds_seconds.back(), 30.0);
}

// Log lines are written directly, not built as JSON trees: every value is
// escaped, and the record's own keys are never overridden by a field.
TEST_F(WorkerTest, LogLinesEscapeTextAndKeepTheirOwnKeys) {
  const std::string error = "declined: \"quoted\", back\\slash,\nnew line, tab\t, \u00e9\u20ac, \x01";
  registry.add("decline", [&](const Task&, const TaskContext&) -> HandlerResult {
    return outcome_of(OutcomeKind::fail, error);
  });
  const auto id = enqueue_many("decline", 1)[0];
  WorkerOptions o = options();
  o.worker_id = "host \"a\"/7";
  Running running(*db, registry, o);
  ASSERT_TRUE(logs.wait_task_state(id, "dead"));
  for (const auto& e : logs.events()) {
    EXPECT_EQ(e.at("worker"), "host \"a\"/7");
    EXPECT_TRUE(e.at("ts").is_string());
    EXPECT_TRUE(e.at("level").is_string());
    if (e.at("event") == "task_done") {
      EXPECT_EQ(e.at("level"), "warning");
      EXPECT_EQ(e.at("error"), error);
      EXPECT_EQ(e.at("kind"), "decline");
      EXPECT_EQ(e.at("task_id"), id);
    }
  }
}

TEST_F(WorkerTest, UnknownRetriesWithTheSameIdempotencyKeyUntilNeedsReview) {
  std::mutex mutex;
  std::vector<std::string> keys_seen;
  registry.add("payout", [&](const Task& task, const TaskContext&) -> HandlerResult {
    std::lock_guard<std::mutex> guard(mutex);
    keys_seen.push_back(task.idempotency_key);
    return outcome_of(OutcomeKind::unknown, "timeout after sending");
  });
  TaskSpec spec;
  spec.kind = "payout";
  spec.attempt_max = 3;
  spec.idempotency_key = "payout-42";
  const auto id = enqueue(spec);
  Running running(*db, registry, options());
  ASSERT_TRUE(wait_state(id, "needs_review"));
  EXPECT_EQ(task_get(id).state, TaskState::needs_review);
  {
    std::lock_guard<std::mutex> guard(mutex);
    ASSERT_EQ(keys_seen.size(), 3u);
    for (const auto& key : keys_seen) EXPECT_EQ(key, "payout-42");
  }
  const auto tried = attempts(id);
  ASSERT_EQ(tried.size(), 3u);
  for (const auto& a : tried) EXPECT_EQ(a.outcome, "unknown");
  running.worker.stop();  // joined: a counter moves only after its completion commits
  EXPECT_EQ(running.worker.stats().unknown, 3);
}

TEST_F(WorkerTest, HandlerExceptionIsRetry) {
  std::atomic<int> calls{0};
  registry.add("throws", [&](const Task&, const TaskContext&) -> HandlerResult {
    const int call = calls++;
    if (call == 0) throw InsufficientFunds("float account is short");
    if (call == 1) throw std::runtime_error("socket reset");
    return Outcome{};
  });
  const auto id = enqueue_many("throws", 1)[0];
  Running running(*db, registry, options());
  ASSERT_TRUE(wait_state(id, "succeeded"));
  const auto tried = attempts(id);
  ASSERT_EQ(tried.size(), 3u);
  EXPECT_EQ(tried[0].outcome, "retry");
  EXPECT_EQ(tried[0].error.value_or(""), "float account is short");
  EXPECT_EQ(tried[1].outcome, "retry");
  EXPECT_EQ(tried[1].error.value_or(""), "socket reset");
  EXPECT_EQ(tried[2].outcome, "success");
  EXPECT_EQ(running.worker.stats().handler_exceptions, 2);
}

TEST_F(WorkerTest, UnknownKindGoesDeadForAnOperator) {
  const auto id = enqueue_many("nobody.handles.this", 1)[0];
  Running running(*db, registry, options());
  ASSERT_TRUE(wait_state(id, "dead"));
  EXPECT_EQ(task_get(id).error.value_or(""), unknown_task_kind_error);
  EXPECT_EQ(running.worker.stats().unknown_kind, 1);
}

TEST_F(WorkerTest, HandlerMayCompleteTheTaskItself) {
  registry.add("self", [&](const Task& task, const TaskContext& context) -> HandlerResult {
    db->transact([&](Transaction& tx) {
      // The business write and the completion commit together.
      tx.exec_sql("CREATE TABLE IF NOT EXISTS @schema@.business_write (task_id bigint)");
      tx.exec_sql("INSERT INTO @schema@.business_write VALUES ($1::bigint)", {std::to_string(task.id)});
      CompleteRequest request;
      request.task_id = task.id;
      request.lease_token = context.lease_token;
      request.attempt = task.attempt;
      request.worker_id = context.worker_id;
      Outbox(tx).complete(request);
    });
    return HandlerResult::completed_by_handler();
  });
  const auto id = enqueue_many("self", 1)[0];
  Running running(*db, registry, options());
  ASSERT_TRUE(logs.wait_count("task_completed_by_handler", 1));
  EXPECT_EQ(task_get(id).state, TaskState::succeeded);
  EXPECT_EQ(attempts(id).size(), 1u);
  EXPECT_EQ(running.worker.stats().completed_by_handler, 1);
  EXPECT_EQ(running.worker.stats().lease_lost, 0);
}

TEST_F(WorkerTest, LostLeaseIsLoggedAndDropped) {
  registry.add("zombie", [&](const Task& task, const TaskContext&) -> HandlerResult {
    // Another worker took the task over while this attempt ran.
    db->transact([&](Transaction& tx) {
      tx.exec_sql("UPDATE @schema@.task SET lease_token = lease_token + 1000000 WHERE id = $1::bigint",
                  {std::to_string(task.id)});
    });
    return Outcome{};
  });
  const auto id = enqueue_many("zombie", 1)[0];
  Running running(*db, registry, options());
  ASSERT_TRUE(logs.wait_count("task_lease_lost", 1));
  EXPECT_EQ(task_get(id).state, TaskState::running);  // still the other attempt's
  EXPECT_TRUE(attempts(id).empty());
  EXPECT_EQ(running.worker.stats().lease_lost, 1);
  EXPECT_EQ(running.worker.stats().succeeded, 0);
}

TEST_F(WorkerTest, ManyTasksWithConcurrencyEightAreEachHandledOnce) {
  constexpr int task_count = 400;
  std::mutex mutex;
  std::map<std::int64_t, int> handled;
  registry.add("count", [&](const Task& task, const TaskContext&) -> HandlerResult {
    std::lock_guard<std::mutex> guard(mutex);
    ++handled[task.id];
    return Outcome{};
  });
  const auto ids = enqueue_many("count", task_count);
  WorkerOptions o = options();
  o.concurrency = 8;
  o.claim_batch_count_max = 7;
  Running running(*db, registry, o);
  ASSERT_TRUE(wait_done(task_count));
  running.worker.stop();
  std::lock_guard<std::mutex> guard(mutex);
  ASSERT_EQ(handled.size(), static_cast<std::size_t>(task_count));
  for (const auto id : ids) EXPECT_EQ(handled[id], 1) << "task " << id;
  EXPECT_EQ(count_in_state("succeeded"), task_count);
  EXPECT_EQ(running.worker.stats().succeeded, task_count);
}

TEST_F(WorkerTest, TwoWorkersNeverRunATaskTwiceConcurrently) {
  constexpr int task_count = 200;
  std::mutex mutex;
  std::set<std::int64_t> in_flight;
  std::map<std::int64_t, int> successes;
  std::atomic<int> overlaps{0};
  Gate all_succeeded;
  registry.add("shared", [&](const Task& task, const TaskContext&) -> HandlerResult {
    {
      std::lock_guard<std::mutex> guard(mutex);
      if (!in_flight.insert(task.id).second) ++overlaps;
    }
    // Widen the window in which an overlap would show (not a synchronisation).
    std::this_thread::sleep_for(1ms);
    std::lock_guard<std::mutex> guard(mutex);
    in_flight.erase(task.id);
    // Every third task needs a second attempt, so tasks are claimed again.
    if (task.id % 3 == 0 && task.attempt == 1) return outcome_of(OutcomeKind::retry, "again");
    ++successes[task.id];
    if (successes.size() == static_cast<std::size_t>(task_count)) all_succeeded.open();
    return Outcome{};
  });
  const auto ids = enqueue_many("shared", task_count);
  auto second_db = open_database();
  LogCollector second_logs;
  WorkerOptions first_options = options();
  first_options.concurrency = 4;
  WorkerOptions second_options = first_options;
  second_options.log_sink = second_logs.sink();
  {
    Running first(*db, registry, first_options);
    Running second(*second_db, registry, second_options);
    ASSERT_TRUE(all_succeeded.wait());
  }  // both stop gracefully: the last completions are recorded
  EXPECT_EQ(overlaps.load(), 0);
  for (const auto id : ids) EXPECT_EQ(successes[id], 1) << "task " << id;
  EXPECT_EQ(count_in_state("succeeded"), task_count);
  EXPECT_EQ(count_in_state("running"), 0);
}

TEST_F(WorkerTest, PartitionKeySerializesTasks) {
  constexpr int task_count = 60;
  constexpr int partition_count = 3;
  std::mutex mutex;
  std::map<std::string, int> running_by_partition;
  std::atomic<int> violations{0};
  int parallel = 0;
  int max_parallel = 0;
  registry.add("ordered", [&](const Task& task, const TaskContext&) -> HandlerResult {
    const std::string partition = task.partition_key.value_or("");
    {
      std::lock_guard<std::mutex> guard(mutex);
      if (++running_by_partition[partition] > 1) ++violations;
      max_parallel = std::max(max_parallel, ++parallel);
    }
    std::this_thread::sleep_for(2ms);  // widens the window, synchronises nothing
    std::lock_guard<std::mutex> guard(mutex);
    --parallel;
    --running_by_partition[partition];
    return Outcome{};
  });
  enqueue_many("ordered", task_count, [](TaskSpec& spec, int i) {
    spec.partition_key = "account-" + std::to_string(i % partition_count);
  });
  WorkerOptions o = options();
  o.concurrency = 8;
  Running running(*db, registry, o);
  ASSERT_TRUE(wait_done(task_count));
  EXPECT_EQ(violations.load(), 0);
  std::lock_guard<std::mutex> guard(mutex);
  EXPECT_LE(max_parallel, partition_count);
  EXPECT_EQ(count_in_state("succeeded"), task_count);
}

// Disabled: fails against the current Outbox::claim, which scans only the
// first 4 x count_max pending tasks of a limited queue; when they all belong
// to a busy partition, tasks of other partitions further down are never
// claimed until that backlog shrinks (head-of-line blocking). Reported to
// the lead; enable once the claim looks past busy partitions.
TEST_F(WorkerTest, PartitionBacklogDoesNotBlockOtherPartitions) {
  Gate backlog_release, other_done;
  registry.add("hol", [&](const Task& task, const TaskContext&) -> HandlerResult {
    if (task.partition_key == std::optional<std::string>("merchant-b")) {
      other_done.open();
    } else {
      backlog_release.wait();
    }
    return Outcome{};
  });
  enqueue_many("hol", 100, [](TaskSpec& spec, int) { spec.partition_key = "merchant-a"; });
  enqueue_many("hol", 1, [](TaskSpec& spec, int) { spec.partition_key = "merchant-b"; });
  WorkerOptions o = options();
  o.concurrency = 2;
  Running running(*db, registry, o);
  const bool other_ran = other_done.wait(10s);
  backlog_release.open();
  EXPECT_TRUE(other_ran) << "merchant-b waited behind merchant-a's backlog";
}

TEST_F(WorkerTest, GracefulStopGivesBackUnstartedTasks) {
  Gate handler_started, handler_release;
  std::atomic<bool> saw_stopping{false};
  std::atomic<int> calls{0};
  registry.add("slow", [&](const Task&, const TaskContext& context) -> HandlerResult {
    ++calls;
    handler_started.open();
    if (!handler_release.wait()) return outcome_of(OutcomeKind::retry, "test bound");
    saw_stopping = context.stopping();
    return Outcome{};
  });
  const auto ids = enqueue_many("slow", 5);
  WorkerOptions o = options();
  o.concurrency = 1;
  o.claim_batch_count_max = 10;
  Worker worker(*db, registry, o);
  worker.start();
  ASSERT_TRUE(handler_started.wait());
  worker.request_stop();
  handler_release.open();
  worker.stop();
  EXPECT_TRUE(saw_stopping.load());
  EXPECT_EQ(calls.load(), 1);
  EXPECT_EQ(worker.stats().given_back, 4);
  EXPECT_EQ(worker.stats().succeeded, 1);
  EXPECT_EQ(worker.stats().in_flight, 0);
  EXPECT_EQ(count_in_state("running"), 0);
  EXPECT_EQ(count_in_state("succeeded"), 1);
  EXPECT_EQ(count_in_state("pending"), 4);
  for (const auto id : ids) {
    const Task task = task_get(id);
    if (task.state == TaskState::pending) {
      EXPECT_EQ(task.attempt, 0) << "a given-back task has not used an attempt";
      EXPECT_FALSE(task.lease_token);
    }
  }
}

TEST_F(WorkerTest, WeightedQueuesAreServedInProportion) {
  std::mutex mutex;
  std::vector<std::string> order;
  registry.add("weighed", [&](const Task& task, const TaskContext&) -> HandlerResult {
    std::lock_guard<std::mutex> guard(mutex);
    order.push_back(task.queue);
    return Outcome{};
  });
  enqueue_many("weighed", 60, [](TaskSpec& spec, int) { spec.queue = "heavy"; });
  enqueue_many("weighed", 60, [](TaskSpec& spec, int) { spec.queue = "light"; });
  WorkerOptions o = options();
  o.queues = {{"heavy", 3}, {"light", 1}};
  o.concurrency = 1;
  o.claim_batch_count_max = 1;
  Running running(*db, registry, o);
  ASSERT_TRUE(wait_done(40));
  running.worker.stop();
  std::lock_guard<std::mutex> guard(mutex);
  ASSERT_GE(order.size(), 40u);
  int heavy = 0;
  for (std::size_t i = 0; i < 40; ++i) heavy += order[i] == "heavy" ? 1 : 0;
  EXPECT_EQ(heavy, 30);  // 3:1, exactly, with one thread and both queues full
}

TEST_F(WorkerTest, EmptyQueueGivesItsTurnAway) {
  registry.add("lonely", [](const Task&, const TaskContext&) -> HandlerResult { return Outcome{}; });
  enqueue_many("lonely", 20, [](TaskSpec& spec, int) { spec.queue = "light"; });
  WorkerOptions o = options();
  o.queues = {{"heavy", 100}, {"light", 1}};
  o.concurrency = 1;
  o.claim_batch_count_max = 1;
  o.poll_interval = 30s;  // an idle wait would blow the bound: turns must pass on at once
  Running running(*db, registry, o);
  EXPECT_TRUE(logs.wait_count("task_done", 20, 20s));
}

TEST_F(WorkerTest, OptionsAreValidated) {
  auto rejects = [&](const std::function<void(WorkerOptions&)>& change) {
    WorkerOptions o = options();
    change(o);
    EXPECT_THROW({ Worker worker(*db, registry, o); }, InvalidArgument);
  };
  rejects([](WorkerOptions& o) { o.queues.clear(); });
  rejects([](WorkerOptions& o) { o.queues = {{"a", 1}, {"a", 2}}; });
  rejects([](WorkerOptions& o) { o.queues = {{"a", 0}}; });
  rejects([](WorkerOptions& o) { o.queues = {{"bad name", 1}}; });
  rejects([](WorkerOptions& o) { o.concurrency = 0; });
  rejects([](WorkerOptions& o) { o.concurrency = worker_concurrency_max + 1; });
  rejects([](WorkerOptions& o) { o.claim_batch_count_max = 0; });
  rejects([](WorkerOptions& o) { o.poll_interval = 0ms; });
  rejects([](WorkerOptions& o) { o.shutdown_grace = -1ms; });
  rejects([](WorkerOptions& o) { o.maintenance_batch_count_max = 0; });
  rejects([](WorkerOptions& o) { o.prune_after_ms = -1; });
  rejects([](WorkerOptions& o) { o.worker_id = std::string(worker_id_bytes_max + 1, 'w'); });
  Worker fine(*db, registry, options());
  EXPECT_FALSE(fine.worker_id().empty());
}

TEST_F(WorkerTest, StartTwiceIsRejectedAndStopIsIdempotent) {
  Worker worker(*db, registry, options());
  worker.start();
  EXPECT_THROW(worker.start(), InvalidState);
  worker.stop();
  worker.stop();
}

TEST(WorkerRegistry, RejectsDuplicateEmptyAndNullRegistrations) {
  HandlerRegistry registry;
  auto ok = [](const Task&, const TaskContext&) -> HandlerResult { return Outcome{}; };
  registry.add("a", ok);
  EXPECT_THROW(registry.add("a", ok), InvalidArgument);
  EXPECT_THROW(registry.add("", ok), InvalidArgument);
  EXPECT_THROW(registry.add("b", std::shared_ptr<Handler>()), InvalidArgument);
  EXPECT_THROW(registry.add(std::string(task_kind_bytes_max + 1, 'k'), ok), InvalidArgument);
  EXPECT_EQ(registry.kinds(), std::vector<std::string>{"a"});
  EXPECT_FALSE(registry.find("b"));
  EXPECT_TRUE(registry.remove("a"));
  EXPECT_FALSE(registry.find("a"));
}

// The system refuses the worker a thread (here: every new thread asks for a
// 64 TiB stack): start() says so with a typed error, and the worker stops
// and is destroyed without waiting for a thread that never existed.
TEST_F(WorkerTest, RefusedThreadIsATypedErrorAndACleanStop) {
  pthread_attr_t saved;
  ASSERT_EQ(pthread_getattr_default_np(&saved), 0);
  pthread_attr_t huge;
  pthread_attr_init(&huge);
  ASSERT_EQ(pthread_attr_setstacksize(&huge, std::size_t{1} << 46), 0);
  ASSERT_EQ(pthread_setattr_default_np(&huge), 0);
  bool refused = false;
  {
    Worker worker(*db, registry, options());
    try {
      worker.start();
    } catch (const ResourceExhausted& e) {
      refused = true;
      EXPECT_NE(std::string(e.what()).find("could not start a thread"), std::string::npos) << e.what();
    }
    ASSERT_EQ(pthread_setattr_default_np(&saved), 0);
    worker.stop();  // returns: nothing is left to wait for
  }
  pthread_attr_destroy(&huge);
  pthread_attr_destroy(&saved);
  EXPECT_TRUE(refused);
  EXPECT_TRUE(logs.wait_count("worker_thread_refused", 1, 1s));
  EXPECT_TRUE(logs.wait_count("worker_stopped", 1, 1s));
}

TEST(WorkerRegistry, PerKindBackoffFallsBackToTheDefault) {
  HandlerRegistry registry;
  auto ok = [](const Task&, const TaskContext&) -> HandlerResult { return Outcome{}; };
  BackoffPolicy fast;
  fast.delay_ms_base = 10;
  fast.delay_ms_max = 100;
  BackoffPolicy slow;
  slow.delay_ms_base = 5000;
  registry.default_backoff_set(slow);
  registry.add("fast", ok, HandlerOptions{fast});
  registry.add("plain", ok);
  EXPECT_EQ(registry.find("fast")->backoff.delay_ms_base, 10);
  EXPECT_EQ(registry.find("plain")->backoff.delay_ms_base, 5000);
  BackoffPolicy broken;
  broken.delay_ms_base = 0;
  EXPECT_THROW(registry.add("broken", ok, HandlerOptions{broken}), InvalidArgument);
}

TEST(WorkerNotify, ChannelFitsPostgresIdentifiers) {
  EXPECT_EQ(queue_notify_channel("payq"), "payq_payq");
  const std::string long_schema(63, 's');
  const std::string channel = queue_notify_channel(long_schema);
  EXPECT_LE(channel.size(), 63u);
  EXPECT_EQ(channel, queue_notify_channel(long_schema));
  EXPECT_NE(channel, queue_notify_channel(std::string(62, 's') + "t"));
}

}  // namespace
}  // namespace payq

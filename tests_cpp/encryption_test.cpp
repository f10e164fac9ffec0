// Encrypted payloads against a real PostgreSQL: enqueue, the worker's
// decorator (clear payload in, encrypted result and error out, nothing
// clear in its log), unreadable tasks sent to needs_review without calling
// the handler, and rotation beside a running worker.
#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <set>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "harness.hpp"
#include "http_test_server.hpp"
#include "worker_test_support.hpp"
#include "payq/database.hpp"
#include "payq/encryption.hpp"
#include "payq/error.hpp"
#include "payq/http_handler.hpp"
#include "payq/keyring.hpp"
#include "payq/outbox.hpp"
#include "payq/worker.hpp"

namespace payq {
namespace {

using testing::Gate;
using testing::Running;
using testing::WorkerTest;
using Json = nlohmann::json;

// What must never appear in a row outside a ciphertext, nor in a log line.
const std::string secret = "DE89370400440532013000";

std::shared_ptr<Keyring> keyring_of(std::vector<std::pair<std::string, char>> keys, const std::string& current) {
  auto keyring = std::make_shared<Keyring>();
  for (const auto& [id, fill] : keys) keyring->add(id, std::string(32, fill));
  keyring->current_set(current);
  return keyring;
}

class EncryptionTest : public WorkerTest {
 protected:
  TaskSpec encrypted_spec(const std::string& kind, int n, std::shared_ptr<const Keyring> keys) {
    TaskSpec spec;
    spec.kind = kind;
    spec.payload_json = Json{{"n", n}, {"iban", secret}}.dump();
    spec.encrypt = true;
    spec.keyring = std::move(keys);
    return spec;
  }

  std::int64_t tasks_count() {
    return db->transact([](Transaction& tx) { return tx.exec_sql("SELECT count(*) AS n FROM @schema@.task").i64(0, "n"); });
  }

  std::string stored_row(std::int64_t id) {
    return db->transact([&](Transaction& tx) {
      return tx.exec_sql("SELECT row_to_json(t)::text AS r FROM @schema@.task t WHERE id = $1::bigint",
                         {std::to_string(id)})
          .text(0, "r");
    });
  }

  void exec(const std::string& sql, const Params& params = {}) {
    db->transact([&](Transaction& tx) { tx.exec_sql(sql, params); });
  }

  std::shared_ptr<Keyring> k1 = keyring_of({{"k1", 'a'}}, "k1");
  std::shared_ptr<Keyring> k12 = keyring_of({{"k1", 'a'}, {"k2", 'b'}}, "k2");
};

TEST_F(EncryptionTest, EnqueueStoresOnlyAnEnvelopeBoundToTheTaskId) {
  const std::int64_t id = enqueue(encrypted_spec("payout", 1, k1));
  const Task task = task_get(id);
  EXPECT_EQ(json_sealed_key(task.payload_json), "k1");
  EXPECT_EQ(stored_row(id).find(secret), std::string::npos);
  EXPECT_EQ(Json::parse(json_open(*k1, EncryptedField::payload, id, "payout", task.payload_json)),
            (Json{{"n", 1}, {"iban", secret}}));
  // A clear task beside it keeps its clear payload and its own id.
  TaskSpec clear;
  clear.kind = "payout";
  clear.payload_json = R"({"n":2})";
  const std::int64_t clear_id = enqueue(clear);
  EXPECT_GT(clear_id, id);
  EXPECT_EQ(Json::parse(task_get(clear_id).payload_json), (Json{{"n", 2}}));
}

TEST_F(EncryptionTest, EncryptWithoutAKeyringIsKeyMissingAndNothingIsWritten) {
  TaskSpec good = encrypted_spec("payout", 1, k1);
  TaskSpec bad = encrypted_spec("payout", 2, nullptr);
  EXPECT_THROW(db->transact([&](Transaction& tx) { Outbox(tx).enqueue_batch({good, bad}); }), KeyMissing);
  TaskSpec no_current = encrypted_spec("payout", 3, std::make_shared<Keyring>());
  EXPECT_THROW(enqueue(no_current), KeyMissing);
  TaskSpec keyring_only;
  keyring_only.kind = "payout";
  keyring_only.keyring = k1;
  EXPECT_THROW(enqueue(keyring_only), InvalidArgument);
  // A clear payload shaped like an envelope would be refused by every worker.
  TaskSpec lookalike;
  lookalike.kind = "payout";
  lookalike.payload_json = R"({"payq_encrypted":{"v":1}})";
  EXPECT_THROW(enqueue(lookalike), InvalidArgument);
  lookalike.payload_json = R"({"payq_encrypted":1,"other":2})";  // two members: an ordinary payload
  enqueue(lookalike);
  EXPECT_EQ(tasks_count(), 1);
}

TEST_F(EncryptionTest, AReplayUnderTheSameKeyIsRecognisedDespiteFreshCiphertexts) {
  TaskSpec spec = encrypted_spec("payout", 1, k1);
  spec.unique_key = "withdrawal-1";
  const EnqueueResult first = db->transact([&](Transaction& tx) { return Outbox(tx).enqueue(spec); });
  const EnqueueResult again = db->transact([&](Transaction& tx) { return Outbox(tx).enqueue(spec); });
  EXPECT_TRUE(first.created);
  EXPECT_FALSE(again.created);
  EXPECT_EQ(again.task_id, first.task_id);
  spec.payload_json = Json{{"n", 1}, {"iban", "other"}}.dump();
  EXPECT_THROW(db->transact([&](Transaction& tx) { return Outbox(tx).enqueue(spec); }), IdempotencyConflict);
}

TEST_F(EncryptionTest, TheHandlerSeesTheClearPayloadAndItsResultAndErrorAreStoredEncrypted) {
  registry.keyring_set(k12);
  HandlerOptions encrypted;
  encrypted.encrypt = true;
  registry.add(
      "payout",
      [](const Task& task, const TaskContext&) -> HandlerResult {
        const Json payload = Json::parse(task.payload_json);
        if (payload.at("n") == 1) throw std::runtime_error("provider declined " + payload.at("iban").get<std::string>());
        Outcome outcome;
        outcome.result_json = Json{{"paid_to", payload.at("iban")}}.dump();
        return outcome;
      },
      encrypted);
  const std::int64_t ok = enqueue(encrypted_spec("payout", 0, k1));
  TaskSpec failing = encrypted_spec("payout", 1, k1);
  failing.attempt_max = 1;
  const std::int64_t declined = enqueue(failing);
  {
    Running running(*db, registry, options());
    ASSERT_TRUE(wait_state(ok, "succeeded"));
    ASSERT_TRUE(wait_state(declined, "dead"));
  }
  const Task done = task_get(ok);
  ASSERT_TRUE(done.result_json);
  EXPECT_EQ(json_sealed_key(*done.result_json), "k2");  // the worker's current key
  EXPECT_EQ(Json::parse(json_open(*k12, EncryptedField::result, ok, "payout", *done.result_json)),
            (Json{{"paid_to", secret}}));
  const Task dead = task_get(declined);
  ASSERT_TRUE(dead.error);
  EXPECT_EQ(text_open(*k12, EncryptedField::error, declined, "payout", *dead.error), "provider declined " + secret);
  const auto tried = attempts(declined);
  ASSERT_EQ(tried.size(), 1u);
  EXPECT_EQ(attempt_open(*k12, "payout", tried[0]).error, "provider declined " + secret);
  for (const std::int64_t id : {ok, declined}) EXPECT_EQ(stored_row(id).find(secret), std::string::npos);
  for (const Json& line : logs.events()) EXPECT_EQ(line.dump().find(secret), std::string::npos) << line.dump();
}

// The built-in HTTP handler is a Handler like any other: its templates see
// the clear payload, and the provider's answer (kept as the result or in
// the error) is stored encrypted.
TEST_F(EncryptionTest, TheHttpHandlersTemplatesSeeTheClearPayload) {
  testing::TestHttpServer server([](const testing::TestRequest& request) {
    const Json body = Json::parse(request.body);
    const bool ok = body.at("n") == 0;
    return testing::TestReply::json(ok ? 200 : 400, Json{{"return_code", ok ? "SUCCESS" : "REFUSED"},
                                                         {"account", body.at("account")}}.dump());
  });
  HttpKindConfig config;
  config.url = server.url("/payouts");
  config.body = R"({"account":"{{payload.iban}}","n":{{payload.n}}})";
  config.timeout_ms = 10'000;
  registry.keyring_set(k12);
  HandlerOptions encrypted;
  encrypted.encrypt = true;
  registry.add("payout", std::make_shared<HttpHandler>(HttpKind::compile(config), std::make_shared<HttpClient>()),
               encrypted);
  const std::int64_t paid = enqueue(encrypted_spec("payout", 0, k1));
  TaskSpec refused_spec = encrypted_spec("payout", 1, k1);
  refused_spec.attempt_max = 1;
  const std::int64_t refused = enqueue(refused_spec);
  {
    Running running(*db, registry, options());
    ASSERT_TRUE(wait_state(paid, "succeeded"));
    ASSERT_TRUE(wait_state(refused, "dead"));
  }
  for (const auto& request : server.requests()) EXPECT_NE(request.body.find(secret), std::string::npos);
  const Task done = task_get(paid);
  EXPECT_EQ(Json::parse(json_open(*k12, EncryptedField::result, paid, "payout", *done.result_json))["body"]["account"],
            secret);
  const Task dead = task_get(refused);
  EXPECT_NE(text_open(*k12, EncryptedField::error, refused, "payout", *dead.error).find(secret), std::string::npos);
  for (const std::int64_t id : {paid, refused}) EXPECT_EQ(stored_row(id).find(secret), std::string::npos);
  for (const Json& line : logs.events()) EXPECT_EQ(line.dump().find(secret), std::string::npos) << line.dump();
}

TEST_F(EncryptionTest, UnreadableTasksGoToNeedsReviewAndTheHandlerIsNeverCalled) {
  std::atomic<int> calls{0};
  registry.keyring_set(k12);
  HandlerOptions encrypted;
  encrypted.encrypt = true;
  registry.add(
      "payout",
      [&](const Task&, const TaskContext&) -> HandlerResult {
        ++calls;
        return Outcome{};
      },
      encrypted);
  // A key the worker lacks; other material under an id it has; a ciphertext
  // altered in the row; one moved from another task.
  const std::int64_t missing = enqueue(encrypted_spec("payout", 1, keyring_of({{"k9", 'c'}}, "k9")));
  const std::int64_t wrong = enqueue(encrypted_spec("payout", 2, keyring_of({{"k1", 'z'}}, "k1")));
  const std::int64_t tampered = enqueue(encrypted_spec("payout", 3, k1));
  const std::int64_t source = enqueue(encrypted_spec("payout", 4, k1));
  const std::int64_t moved = enqueue(encrypted_spec("payout", 5, k1));
  exec("UPDATE @schema@.task SET payload = jsonb_set(payload, '{payq_encrypted,ct}', "
       "to_jsonb(translate(payload->'payq_encrypted'->>'ct', 'ABCDEFGH', 'BCDEFGHA'))) WHERE id = $1::bigint",
       {std::to_string(tampered)});
  exec("UPDATE @schema@.task SET payload = (SELECT payload FROM @schema@.task WHERE id = $1::bigint) "
       "WHERE id = $2::bigint",
       {std::to_string(source), std::to_string(moved)});
  {
    Running running(*db, registry, options());
    for (const std::int64_t id : {missing, wrong, tampered, moved}) ASSERT_TRUE(wait_state(id, "needs_review"));
    ASSERT_TRUE(wait_state(source, "succeeded"));
  }
  EXPECT_EQ(calls.load(), 1);  // the source task only
  const std::map<std::int64_t, std::string> expected = {
      {missing, "KeyMissing"}, {wrong, "DecryptionFailed"}, {tampered, "DecryptionFailed"}, {moved, "DecryptionFailed"}};
  for (const auto& [id, error_class] : expected) {
    const Task task = task_get(id);
    EXPECT_EQ(task.state, TaskState::needs_review);
    EXPECT_EQ(task.attempt, 1);  // not its attempts burned first
    ASSERT_TRUE(task.error);
    EXPECT_NE(task.error->find(error_class), std::string::npos) << *task.error;
    EXPECT_NE(task.error->find("the handler was not called"), std::string::npos) << *task.error;
    EXPECT_EQ(attempts(id).at(0).outcome, "unknown");
  }
}

// A handler that takes several tasks per call (as Python handlers do).
class ManyHandler final : public Handler {
 public:
  HandlerResult handle(const Task&, const TaskContext&) override {
    ++single_calls;
    return Outcome{};
  }
  bool runs_many() const noexcept override { return true; }
  void handle_many(const TaskBatchCall& call) override {
    ++many_calls;
    for (std::size_t i = 0; i < call.tasks.size() && call.may_start(i); ++i) {
      const Json payload = Json::parse(call.tasks[i]->payload_json);
      {
        std::lock_guard<std::mutex> guard(mutex);
        seen.insert(payload.at("iban").get<std::string>());
      }
      if (payload.at("n") == 3) throw std::runtime_error("declined " + payload.at("iban").get<std::string>());
      Outcome outcome;
      outcome.result_json = Json{{"paid_to", payload.at("iban")}}.dump();
      call.done(i, outcome);
    }
  }
  std::atomic<int> single_calls{0};
  std::atomic<int> many_calls{0};
  std::mutex mutex;
  std::set<std::string> seen;
};

TEST_F(EncryptionTest, AHandlerOfSeveralTasksPerCallKeepsItsCallsAndGetsClearTasksAndSealedOutcomes) {
  registry.keyring_set(k1);
  HandlerOptions encrypted;
  encrypted.encrypt = true;
  auto handler = std::make_shared<ManyHandler>();
  registry.add("payout", handler, encrypted);
  const std::int64_t paid = enqueue(encrypted_spec("payout", 1, k1));
  const std::int64_t tampered = enqueue(encrypted_spec("payout", 2, k1));
  TaskSpec raising_spec = encrypted_spec("payout", 3, k1);
  raising_spec.attempt_max = 1;
  const std::int64_t raising = enqueue(raising_spec);
  const std::int64_t after = enqueue(encrypted_spec("payout", 4, k1));
  exec("UPDATE @schema@.task SET payload = jsonb_set(payload, '{payq_encrypted,ct}', "
       "to_jsonb(translate(payload->'payq_encrypted'->>'ct', 'ABCDEFGH', 'BCDEFGHA'))) WHERE id = $1::bigint",
       {std::to_string(tampered)});
  {
    Running running(*db, registry, options());
    ASSERT_TRUE(wait_state(tampered, "needs_review"));
    ASSERT_TRUE(wait_state(raising, "dead"));
    for (const std::int64_t id : {paid, after}) ASSERT_TRUE(wait_state(id, "succeeded"));
  }
  EXPECT_EQ(handler->single_calls.load(), 0);  // the decorator kept the several-tasks entry point
  EXPECT_GE(handler->many_calls.load(), 1);
  EXPECT_EQ(handler->seen, std::set<std::string>{secret});  // clear payloads only
  for (const std::int64_t id : {paid, raising, after}) {
    EXPECT_EQ(stored_row(id).find(secret), std::string::npos) << stored_row(id);
  }
  const Task dead = task_open(*k1, task_get(raising));
  ASSERT_TRUE(dead.error);
  EXPECT_NE(dead.error->find("declined " + secret), std::string::npos) << *dead.error;
  EXPECT_EQ(Json::parse(*task_open(*k1, task_get(paid)).result_json).at("paid_to"), secret);
}

TEST_F(EncryptionTest, EncryptedKindsNeedTheRegistrysKeyring) {
  HandlerOptions encrypted;
  encrypted.encrypt = true;
  auto handler = [](const Task&, const TaskContext&) -> HandlerResult { return Outcome{}; };
  EXPECT_THROW(registry.add("payout", handler, encrypted), KeyMissing);
  registry.keyring_set(std::make_shared<Keyring>());
  EXPECT_THROW(registry.add("payout", handler, encrypted), KeyMissing);
  registry.keyring_set(k1);
  registry.add("payout", handler, encrypted);
  EXPECT_EQ(registry.kinds(), std::vector<std::string>{"payout"});
}

TEST_F(EncryptionTest, NeedsReviewGoesWithTheUnknownOutcomeOnly) {
  const std::int64_t id = enqueue(encrypted_spec("payout", 1, k1));
  const auto claimed = db->transact([](Transaction& tx) { return Outbox(tx).claim({"default", "w", 1}); });
  ASSERT_EQ(claimed.size(), 1u);
  CompleteRequest request;
  request.task_id = id;
  request.lease_token = *claimed[0].lease_token;
  request.worker_id = "w";
  request.outcome.kind = OutcomeKind::retry;
  request.outcome.needs_review = true;
  EXPECT_THROW(db->transact([&](Transaction& tx) { return Outbox(tx).complete(request); }), InvalidArgument);
  EXPECT_EQ(task_get(id).state, TaskState::running);
}

// Tasks enqueued under k1; a worker with {k1, k2} runs one of them (held
// open) while the rotation moves every waiting one to k2; then all succeed.
TEST_F(EncryptionTest, RotationUnderARunningWorkerLeavesNoWaitingTaskOnTheOldKey) {
  constexpr int count = 20;
  std::vector<TaskSpec> specs;
  for (int i = 0; i < count; ++i) specs.push_back(encrypted_spec("payout", i, k1));
  db->transact([&](Transaction& tx) { Outbox(tx).enqueue_batch(specs); });

  Gate entered, release;
  std::mutex seen_mutex;
  std::set<int> seen;
  registry.keyring_set(k12);
  HandlerOptions encrypted;
  encrypted.encrypt = true;
  registry.add(
      "payout",
      [&](const Task& task, const TaskContext&) -> HandlerResult {
        const Json payload = Json::parse(task.payload_json);
        if (payload.at("iban") != secret) throw std::logic_error("garbage payload");
        entered.open();
        if (!release.wait()) throw std::runtime_error("the test never released the handler");
        std::lock_guard<std::mutex> guard(seen_mutex);
        seen.insert(payload.at("n").get<int>());
        return Outcome{};
      },
      encrypted);
  WorkerOptions o = options();
  o.concurrency = 1;
  o.claim_batch_count_max = 1;
  Running running(*db, registry, o);
  ASSERT_TRUE(entered.wait());

  ReencryptBatch batch;
  std::int64_t rotated = 0, batches = 0;
  do {
    batch = db->transact([&](Transaction& tx) { return tasks_reencrypt(tx, *k12, batch.last_id, 6); });
    rotated += batch.rotated;
    ++batches;
    EXPECT_TRUE(batch.unreadable.empty());
  } while (!batch.done && batches < 100);
  EXPECT_EQ(rotated, count - 1);  // the running one is left alone
  EXPECT_GE(batches, 4);          // bounded batches, each its own transaction
  const auto use = db->transact([](Transaction& tx) { return tasks_key_use(tx); });
  for (const KeyUse& u : use) {
    if (u.state == "pending" || u.state == "held") {
      EXPECT_EQ(u.key_id, "k2");
    }
  }

  release.open();
  ASSERT_TRUE(logs.wait_count("task_done", count));
  running.worker.stop();
  EXPECT_EQ(seen.size(), static_cast<std::size_t>(count));
  EXPECT_EQ(count_in_state("succeeded"), count);
  std::int64_t on_k1 = 0;
  for (const KeyUse& u : db->transact([](Transaction& tx) { return tasks_key_use(tx); })) {
    if (u.key_id == "k1") on_k1 += u.count;
  }
  EXPECT_EQ(on_k1, 1);  // only the task that was running when the rotation passed
}

TEST_F(EncryptionTest, RotationSkipsRowsAnotherTransactionHoldsWithoutWaiting) {
  std::vector<std::int64_t> ids;
  for (int i = 0; i < 3; ++i) ids.push_back(enqueue(encrypted_spec("payout", i, k1)));
  auto other = open_database();
  {
    PooledTransaction holder(*other);
    holder.transaction().exec_sql("SELECT id FROM @schema@.task WHERE id = $1::bigint FOR UPDATE",
                                  {std::to_string(ids[1])});
    const ReencryptBatch batch = db->transact([&](Transaction& tx) { return tasks_reencrypt(tx, *k12, 0, 100); });
    EXPECT_EQ(batch.rotated, 2);
    EXPECT_TRUE(batch.done);
    EXPECT_EQ(json_sealed_key(task_get(ids[1]).payload_json), "k1");
  }  // rolled back: the lock is gone
  const ReencryptBatch again = db->transact([&](Transaction& tx) { return tasks_reencrypt(tx, *k12, 0, 100); });
  EXPECT_EQ(again.rotated, 1);
  for (const std::int64_t id : ids) {
    const Task task = task_get(id);
    EXPECT_EQ(json_sealed_key(task.payload_json), "k2");
    EXPECT_EQ(Json::parse(json_open(*k12, EncryptedField::payload, id, "payout", task.payload_json)).at("iban"), secret);
  }
  // A task whose key the rotation lacks is reported, not failed.
  const std::int64_t foreign = enqueue(encrypted_spec("payout", 9, keyring_of({{"k9", 'c'}}, "k9")));
  const ReencryptBatch last = db->transact([&](Transaction& tx) { return tasks_reencrypt(tx, *k12, 0, 100); });
  EXPECT_EQ(last.unreadable, std::vector<std::int64_t>{foreign});
  EXPECT_EQ(last.rotated, 0);
}

}  // namespace
}  // namespace payq

// Enqueue by COPY (cpp/src/outbox/outbox_enqueue_copy.cpp): a large batch
// written with COPY stores exactly what the JSON statement stores, keeps
// every check of enqueue, and names a bad task by its index.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "outbox_test_support.hpp"
#include "payq/error.hpp"

namespace payq {
namespace {

// Passes everything to a transaction, counting COPYs; with `copy` false it
// says it cannot COPY, so the same batch goes through the statement.
class CopyCounting final : public Executor {
 public:
  CopyCounting(Executor& inner, bool copy) : inner_(inner), copy_(copy) {}
  Rows exec(const Statement& statement, const Params& params) override { return inner_.exec(statement, params); }
  bool copy_supported() const noexcept override { return copy_ && inner_.copy_supported(); }
  void copy_in(const CopyTarget& target, std::string_view data) override {
    ++copies;
    inner_.copy_in(target, data);
  }
  void savepoint_begin() override { inner_.savepoint_begin(); }
  void savepoint_release() override { inner_.savepoint_release(); }
  void savepoint_rollback() override { inner_.savepoint_rollback(); }
  const std::string& schema() const override { return inner_.schema(); }

  int copies = 0;

 private:
  Executor& inner_;
  bool copy_;
};

class EnqueueCopy_ : public testing::Settlement_ {
 protected:
  struct Written {
    std::vector<EnqueueResult> results;
    int copies = 0;
  };

  Written enqueue_all(const std::vector<TaskSpec>& specs, bool copy) {
    return db->transact([&](Transaction& tx) {
      CopyCounting executor(tx, copy);
      Written written;
      written.results = Outbox(executor).enqueue_batch(specs);
      written.copies = executor.copies;
      return written;
    });
  }

  // Every stored column of the tasks, in the order of `results`, with what
  // differs by nature between two batches (the ids, the time, the tag of
  // the queue) taken out.
  std::vector<std::vector<Value>> stored(const std::vector<EnqueueResult>& results) {
    std::vector<std::vector<Value>> rows;
    for (const EnqueueResult& r : results) {
      Rows row = db->transact([&](Transaction& tx) {
        return tx.exec_sql(
            "SELECT regexp_replace(queue, '^copy-[a-z]+-', 'copy-') AS queue, kind, payload::text, state, priority, run_at - created_at AS delay, attempt, attempt_max, "
            "timeout_ms, unique_key, partition_key, "
            "CASE WHEN idempotency_key = 'task:' || id THEN '(default)' "
            "ELSE regexp_replace(idempotency_key, '^chosen/[a-z]+/', 'chosen/') END AS key, "
            "amount_minor, currency, settle_hold_id IS NOT NULL AS holds, settle_capture_account_id, "
            "settle_reverse_transaction_id, followup::text, trace_context::text, lease_token, result, error, finished_at, "
            "created_at = updated_at AS fresh "
            "FROM @schema@.task WHERE id = $1",
            {std::to_string(r.task_id)});
      });
      EXPECT_EQ(row.size(), 1u) << "task " << r.task_id;
      rows.push_back(row.values().at(0));
    }
    return rows;
  }

  // One of each thing a task can carry, `n` of them.
  std::vector<TaskSpec> varied(std::size_t n, const std::string& tag) {
    std::vector<TaskSpec> specs;
    for (std::size_t i = 0; i < n; ++i) {
      TaskSpec s = spec("copy.kind." + std::to_string(i % 3), "copy-" + tag + "-" + std::to_string(i % 4));
      s.payload_json = R"({"i":)" + std::to_string(i) +
                       R"(,"text":"tab\there\nline \\ back \"quote\" é 中","nested":{"a":[1,2.5,null,true]}})";
      if (i % 5 == 0) s.payload_json = "[1, 2,\t3]\n";  // whitespace jsonb drops, raw tab and newline
      s.priority = static_cast<int>(i % 7) - 3;
      s.delay_ms = (i % 4 == 0) ? 0 : static_cast<std::int64_t>(i) * 1500 + 7;
      s.attempt_max = 1 + static_cast<int>(i % 9);
      s.timeout_ms = 1000 + static_cast<std::int64_t>(i);
      s.held = i % 6 == 1;
      if (i % 3 == 0) s.partition_key = "customer " + std::to_string(i % 5);
      if (i % 4 == 1) s.idempotency_key = "chosen/" + tag + "/" + std::to_string(i);
      if (i % 5 == 2) {
        s.amount_minor = 100 + static_cast<std::int64_t>(i);
        s.currency = "CNY";
      }
      if (i % 7 == 2) {
        s.trace_context = TraceContext{"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                                       i % 2 ? "vendor=a\\b\"c" : ""};
      }
      if (i % 11 == 3) s.settlement.followup_json = R"({"kind":"undo","payload":{"i":)" + std::to_string(i) + "}}";
      specs.push_back(s);
    }
    return specs;
  }

  std::vector<std::vector<Value>> queues(const std::string& tag) {
    return db->transact([&](Transaction& tx) {
      return tx.exec_sql("SELECT name, uses_partitions, paused FROM @schema@.queue WHERE name LIKE $1 ORDER BY name",
                         {"copy-" + tag + "-%"});
    }).values();
  }
};

TEST_F(EnqueueCopy_, LargeBatchIsCopiedAndStoresWhatTheStatementStores) {
  const std::size_t n = task_batch_copy_count_min * 2 + 5;
  const Written by_copy = enqueue_all(varied(n, "a"), true);
  const Written by_statement = enqueue_all(varied(n, "b"), false);
  EXPECT_EQ(by_copy.copies, 1);
  EXPECT_EQ(by_statement.copies, 0);
  ASSERT_EQ(by_copy.results.size(), n);
  for (std::size_t i = 0; i < n; ++i) {
    EXPECT_TRUE(by_copy.results[i].created);
    if (i > 0) {
      EXPECT_LT(by_copy.results[i - 1].task_id, by_copy.results[i].task_id) << "ids follow the batch order";
    }
  }

  EXPECT_EQ(stored(by_copy.results), stored(by_statement.results));
  const auto copied_queues = queues("a");
  const auto statement_queues = queues("b");
  ASSERT_EQ(copied_queues.size(), 4u);
  ASSERT_EQ(statement_queues.size(), 4u);
  for (std::size_t q = 0; q < copied_queues.size(); ++q) {
    EXPECT_EQ(copied_queues[q][1], statement_queues[q][1]) << "uses_partitions of queue " << q;
    EXPECT_EQ(copied_queues[q][2], statement_queues[q][2]) << "paused of queue " << q;
  }
}

TEST_F(EnqueueCopy_, CopiedTasksAreClaimedLikeAnyOther) {
  std::vector<TaskSpec> specs;
  for (std::size_t i = 0; i < task_batch_copy_count_min; ++i) specs.push_back(spec("copy.claim", "copy-claim"));
  const Written written = enqueue_all(specs, true);
  ASSERT_EQ(written.copies, 1);
  const std::vector<Task> claimed = claim("copy-claim", task_batch_copy_count_min);
  ASSERT_EQ(claimed.size(), task_batch_copy_count_min);
  EXPECT_EQ(claimed.front().id, written.results.front().task_id) << "first in the batch, first claimed";
  EXPECT_EQ(claimed.front().payload_json, R"({"to": "+86 138", "text": "hi"})");
}

TEST_F(EnqueueCopy_, BadTaskFailsTheWholeBatchWithItsIndex) {
  auto expect_refused = [&](std::vector<TaskSpec> specs, const std::string& index, auto error_type) {
    try {
      enqueue_all(specs, true);
      ADD_FAILURE() << "batch with a bad task " << index << " was written";
    } catch (const decltype(error_type)& e) {
      EXPECT_NE(std::string(e.what()).find("task " + index + " of the batch: "), std::string::npos) << e.what();
    }
    EXPECT_EQ(count_tasks("copy.kind.0"), 0);
  };
  std::vector<TaskSpec> specs = varied(300, "bad");
  specs[137].currency = "XXQ";
  specs[137].amount_minor = 1;
  expect_refused(specs, "137", UnknownCurrency(""));

  specs = varied(300, "bad");
  specs[250].payload_json = R"({"open": )";
  expect_refused(specs, "250", InvalidArgument(""));

  specs = varied(300, "bad");
  specs[299].payload_json = R"({"nul":"\u0000"})";
  expect_refused(specs, "299", InvalidArgument(""));

  specs = varied(300, "bad");
  specs[0].settlement.followup_json = R"({"payload":{}})";
  expect_refused(specs, "0", InvalidArgument(""));

  specs = varied(300, "bad");
  specs[64].amount_minor = -5;
  specs[64].currency = "CNY";
  expect_refused(specs, "64", InvalidAmount(""));

  specs = varied(300, "bad");
  specs[1].queue = "no spaces allowed";
  expect_refused(specs, "1", InvalidArgument(""));
}

TEST_F(EnqueueCopy_, SettlingTasksCopiedOwnTheirHoldsAndReplayByKey) {
  std::vector<TaskSpec> specs;
  std::vector<Hold> holds;
  for (std::size_t i = 0; i < task_batch_copy_count_min; ++i) {
    TaskSpec s = spec("payout", "copy-payouts");
    if (i % 8 == 0) {
      holds.push_back(with_ledger([&](Ledger& l) {
        HoldRequest h;
        h.key = "copy-hold-" + std::to_string(i);
        h.account_id = wallet.id;
        h.amount_minor = 10;
        return l.hold(h);
      }));
      s.amount_minor = 10;
      s.currency = "CNY";
      s.idempotency_key = "withdrawal-" + std::to_string(i);
      s.settlement.hold_id = holds.back().id;
      s.settlement.capture_account_id = clearing.id;
    }
    specs.push_back(s);
  }
  const Written first = enqueue_all(specs, true);
  ASSERT_EQ(first.copies, 1);
  for (std::size_t h = 0; h < holds.size(); ++h) {
    const Hold now = with_ledger([&](Ledger& l) { return l.hold_get(holds[h].id); });
    EXPECT_EQ(now.task_id, first.results[h * 8].task_id) << "hold " << h;
    EXPECT_EQ(get(first.results[h * 8].task_id).idempotency_key, "withdrawal-" + std::to_string(h * 8));
  }

  // The same batch again: the keyed tasks are replays, the others new.
  const Written again = enqueue_all(specs, true);
  for (std::size_t i = 0; i < specs.size(); ++i) {
    if (i % 8 == 0) {
      EXPECT_EQ(again.results[i].task_id, first.results[i].task_id);
      EXPECT_FALSE(again.results[i].created);
    } else {
      EXPECT_TRUE(again.results[i].created);
    }
  }

  // A hold that a live task settles cannot be given to a second one.
  std::vector<TaskSpec> thief(task_batch_copy_count_min, spec("payout", "copy-payouts"));
  thief[5].settlement.hold_id = holds[0].id;
  thief[5].settlement.capture_account_id = clearing.id;
  const std::int64_t before = count_tasks("payout");
  EXPECT_THROW(enqueue_all(thief, true), HoldInUse);
  EXPECT_EQ(count_tasks("payout"), before);
}

TEST_F(EnqueueCopy_, OnlyAUniqueKeyKeepsALargeBatchOnTheStatement) {
  std::vector<TaskSpec> specs(task_batch_copy_count_min * 2, spec("copy.unique", "copy-unique"));
  EXPECT_EQ(enqueue_all(specs, true).copies, 1);
  specs[3].unique_key = "only-once";
  const Written first = enqueue_all(specs, true);
  EXPECT_EQ(first.copies, 0);
  const Written again = enqueue_all(specs, true);
  EXPECT_EQ(again.copies, 0);
  EXPECT_EQ(again.results[3].task_id, first.results[3].task_id);
  EXPECT_FALSE(again.results[3].created);
  EXPECT_EQ(count_tasks("copy.unique"), static_cast<std::int64_t>(specs.size() * 3 - 1));
}

TEST_F(EnqueueCopy_, CopyStartsAtTheThreshold) {
  std::vector<TaskSpec> specs(task_batch_copy_count_min - 1, spec("copy.small", "copy-small"));
  EXPECT_EQ(enqueue_all(specs, true).copies, 0);
  specs.push_back(spec("copy.small", "copy-small"));
  EXPECT_EQ(enqueue_all(specs, true).copies, 1);
  EXPECT_EQ(count_tasks("copy.small"), static_cast<std::int64_t>(specs.size() * 2 - 1));
}

TEST_F(EnqueueCopy_, ServerRefusingTheCopyFailsTheBatchAndTheConnectionGoesOn) {
  db->transact([&](Transaction& tx) {
    tx.exec_script(
        "CREATE FUNCTION @schema@.refuse() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN IF NEW.kind = 'copy.refused' THEN RAISE EXCEPTION 'refused by the test'; END IF; "
        "RETURN NEW; END $$; "
        "CREATE TRIGGER refuse BEFORE INSERT ON @schema@.task FOR EACH ROW EXECUTE FUNCTION @schema@.refuse()");
    return 0;
  });
  std::vector<TaskSpec> specs(task_batch_copy_count_min, spec("copy.fine", "copy-refused"));
  specs.back().kind = "copy.refused";
  int copies = 0;
  try {
    db->transact([&](Transaction& tx) {
      CopyCounting executor(tx, true);
      try {
        Outbox(executor).enqueue_batch(specs);
      } catch (...) {
        copies = executor.copies;
        throw;
      }
      return 0;
    });
    ADD_FAILURE() << "the refused batch was written";
  } catch (const DatabaseError& e) {
    EXPECT_NE(std::string(e.what()).find("refused by the test"), std::string::npos) << e.what();
  }
  EXPECT_EQ(copies, 1);
  EXPECT_EQ(count_tasks("copy.fine"), 0);
  specs.back().kind = "copy.fine";
  EXPECT_EQ(enqueue_all(specs, true).copies, 1);
  EXPECT_EQ(count_tasks("copy.fine"), static_cast<std::int64_t>(specs.size()));
}

TEST_F(EnqueueCopy_, RolledBackCopyLeavesNothing) {
  std::vector<TaskSpec> specs(task_batch_copy_count_min, spec("copy.rollback", "copy-rollback"));
  struct RollBack {};
  int copies = 0;
  EXPECT_THROW(db->transact([&](Transaction& tx) {
    CopyCounting executor(tx, true);
    Outbox(executor).enqueue_batch(specs);
    copies = executor.copies;
    throw RollBack{};
  }),
               RollBack);
  EXPECT_EQ(copies, 1);
  EXPECT_EQ(count_tasks("copy.rollback"), 0);
}

}  // namespace
}  // namespace payq

#include "payq/migrate.hpp"

#include <gtest/gtest.h>

#include <thread>

#include "harness.hpp"
#include "payq/database.hpp"
#include "payq/error.hpp"
#include "payq/ledger.hpp"
#include "payq/outbox.hpp"

namespace payq {
namespace {

class Migrate : public testing::DbTest {};

int recorded_count(Database& db) {
  return db.transact(
      [](Transaction& tx) { return static_cast<int>(tx.exec_sql("SELECT count(*) AS n FROM @schema@.schema_migrations").i64(0, "n")); });
}

TEST_F(Migrate, AppliesEveryKnownMigrationOnce) {
  const auto known = migrations_known();
  ASSERT_FALSE(known.empty());
  EXPECT_EQ(recorded_count(*db), static_cast<int>(known.size()));
  EXPECT_EQ(schema_version(*db), known.back().version);
}

TEST_F(Migrate, RerunIsANoOp) {
  auto report = migrate(*db);
  EXPECT_TRUE(report.applied.empty());
  EXPECT_EQ(report.version_current, migrations_known().back().version);
  EXPECT_EQ(recorded_count(*db), static_cast<int>(migrations_known().size()));
}

TEST_F(Migrate, FreshSchemaReportsVersionZeroThenMigrates) {
  DatabaseOptions options;
  options.dsn = testing::cluster_dsn();
  options.schema = testing::schema_unique("fresh");
  Database fresh(options);
  EXPECT_EQ(schema_version(fresh), 0);
  auto report = migrate(fresh);
  EXPECT_EQ(report.applied.size(), migrations_known().size());
  fresh.transact([](Transaction& tx) { tx.exec_sql("DROP SCHEMA @schema@ CASCADE"); });
}

TEST_F(Migrate, ConcurrentMigratorsAreSafe) {
  const std::string target = testing::schema_unique("race");
  constexpr int migrator_count = 8;
  std::vector<std::thread> threads;
  std::vector<std::size_t> applied(migrator_count);
  std::vector<std::string> errors(migrator_count);
  for (int i = 0; i < migrator_count; ++i) {
    threads.emplace_back([&, i] {
      try {
        DatabaseOptions options;
        options.dsn = testing::cluster_dsn();
        options.schema = target;
        Database database(options);
        applied[i] = migrate(database).applied.size();
      } catch (const std::exception& e) {
        errors[i] = e.what();
      }
    });
  }
  for (auto& t : threads) t.join();
  std::size_t total = 0;
  for (int i = 0; i < migrator_count; ++i) {
    EXPECT_EQ(errors[i], "") << "migrator " << i;
    total += applied[i];
  }
  // Exactly one migrator applied everything; the others found it done.
  EXPECT_EQ(total, migrations_known().size());
  DatabaseOptions options;
  options.dsn = testing::cluster_dsn();
  options.schema = target;
  Database check(options);
  EXPECT_EQ(recorded_count(check), static_cast<int>(migrations_known().size()));
  check.transact([](Transaction& tx) { tx.exec_sql("DROP SCHEMA @schema@ CASCADE"); });
}

TEST_F(Migrate, EditedMigrationIsRefused) {
  db->transact([](Transaction& tx) { tx.exec_sql("UPDATE @schema@.schema_migrations SET checksum = '1' WHERE version = 1"); });
  EXPECT_THROW(migrate(*db), MigrationError);
}

TEST_F(Migrate, NewerDatabaseIsRefused) {
  db->transact([](Transaction& tx) {
    tx.exec_sql("INSERT INTO @schema@.schema_migrations (version, name, checksum) VALUES (99999, 'future', '0')");
  });
  EXPECT_THROW(migrate(*db), MigrationError);
}

}  // namespace
}  // namespace payq

namespace payq {
namespace {

// 005 moves transaction headers into operation rows, 006 retypes task
// columns and 007 numbers operator actions: data written under version 4
// must read the same afterwards.
TEST_F(Migrate, UpgradeFromVersionFourKeepsLedgerAndTasks) {
  db->transact([](Transaction& tx) { tx.exec_sql("DROP SCHEMA @schema@ CASCADE"); });
  EXPECT_EQ(migrate(*db, 4).version_current, 4);
  db->transact([](Transaction& tx) {
    tx.exec_script(R"sql(
INSERT INTO @schema@.account (id, owner, namespace, currency, balance, seq, allow_negative)
  OVERRIDING SYSTEM VALUE VALUES (1, 'world', 'default', 'CNY', -1000, 1, true), (2, 'user:1', 'default', 'CNY', 1000, 1, false);
SELECT setval('@schema@.account_id_seq', 2);
SELECT setval('@schema@.ledger_transaction_id_seq', 7);
INSERT INTO @schema@.operation (key, kind, request_hash, transaction_id) VALUES ('fund-1', 'transfer', 'h1', 7);
INSERT INTO @schema@.ledger_transaction (id, key, kind, metadata) VALUES (7, 'fund-1', 'deposit', '{"order": 42}');
INSERT INTO @schema@.entry (account_id, seq, transaction_id, leg, amount, balance_after)
  VALUES (1, 1, 7, 0, -1000, -1000), (2, 1, 7, 1, 1000, 1000);
INSERT INTO @schema@.task (queue, kind, payload, state, attempt_max, timeout_ms, idempotency_key)
  VALUES ('default', 'old.kind', '{}', 'pending', 5, 30000, 'old-task');
INSERT INTO @schema@.task_action (task_id, action, actor, note)
  SELECT id, 'release', 'ops:old', 'approved' FROM @schema@.task WHERE idempotency_key = 'old-task';
)sql");
  });

  const MigrateReport report = migrate(*db);
  EXPECT_EQ(report.applied, (std::vector<int>{5, 6, 7, 8, 9, 10, 11, 12}));

  db->transact([](Transaction& tx) {
    Ledger ledger(tx);
    const LedgerTransaction old = ledger.transaction_get(7);
    EXPECT_EQ(old.key, "fund-1");
    EXPECT_EQ(old.kind, "deposit");
    EXPECT_EQ(old.metadata_json, R"({"order": 42})");
    ASSERT_EQ(old.entries.size(), 2u);
    EXPECT_EQ(ledger.transaction_find("fund-1")->id, 7);
    // The old transaction is still reversible, once and within its amount.
    ReverseRequest refund;
    refund.key = "refund-1";
    refund.transaction_id = 7;
    refund.amount_minor = 400;
    const LedgerTransaction reversal = ledger.reverse(refund);
    EXPECT_EQ(reversal.reverses_id, 7);
    EXPECT_GT(reversal.id, 7);
    refund.key = "refund-2";
    refund.amount_minor = 601;
    EXPECT_THROW(ledger.reverse(refund), InvalidAmount);
    EXPECT_TRUE(ledger.audit().ok());
    // The task kept its values under the new column types.
    Rows task = tx.exec_sql("SELECT kind, state, attempt, attempt_max FROM @schema@.task WHERE idempotency_key = 'old-task'");
    ASSERT_EQ(task.size(), 1u);
    EXPECT_EQ(task.text(0, "kind"), "old.kind");
    EXPECT_EQ(task.text(0, "state"), "pending");
    EXPECT_EQ(task.i64(0, "attempt_max"), 5);
    // The old action got a number; a new one is numbered after it.
    const std::int64_t task_id =
        tx.exec_sql("SELECT id FROM @schema@.task WHERE idempotency_key = 'old-task'").i64(0, "id");
    tx.exec_sql("INSERT INTO @schema@.task_action (task_id, action, actor) VALUES ($1::bigint, 'cancel', 'ops:new')",
                {std::to_string(task_id)});
    const std::vector<TaskAction> actions = Outbox(tx).actions(task_id);
    ASSERT_EQ(actions.size(), 2u);
    EXPECT_EQ(actions[0].action, "release");
    EXPECT_EQ(actions[0].note, "approved");
    EXPECT_EQ(actions[1].action, "cancel");
  });
  // The domains still refuse what the constraints refused.
  EXPECT_THROW(db->transact([](Transaction& tx) {
    tx.exec_sql("UPDATE @schema@.task SET state = 'bogus' WHERE idempotency_key = 'old-task'");
  }), DatabaseError);
  EXPECT_THROW(db->transact([](Transaction& tx) {
    tx.exec_sql("UPDATE @schema@.account SET held = -1 WHERE id = 2");
  }), DatabaseError);
  EXPECT_THROW(db->transact([](Transaction& tx) { tx.exec_sql("DELETE FROM @schema@.account WHERE id = 2"); }),
               DatabaseError);
}

// Upgrades a schema made at `from_version` and holding `rows_sql` to the
// newest version, expecting a refusal; returns its message ("" if none).
std::string upgrade_refusal(Database& db, int from_version, const std::string& rows_sql) {
  db.transact([](Transaction& tx) { tx.exec_sql("DROP SCHEMA @schema@ CASCADE"); });
  EXPECT_EQ(migrate(db, from_version).version_current, from_version);
  db.transact([&](Transaction& tx) { tx.exec_script(rows_sql); });
  try {
    migrate(db);
  } catch (const MigrationError& e) {
    return e.what();
  }
  ADD_FAILURE() << "the upgrade went through";
  return "";
}

// Before 008 two live tasks could settle one hold; such a database is not
// migrated but shown to an operator, and left as it was.
TEST_F(Migrate, TwoLiveTasksOnOneHoldStopTheUpgradeAndChangeNothing) {
  const std::string message = upgrade_refusal(*db, 7, R"sql(
INSERT INTO @schema@.task (queue, kind, payload, state, attempt_max, timeout_ms, idempotency_key, settle_hold_id,
                           settle_capture_account_id)
  VALUES ('payouts', 'payout', '{}', 'pending', 5, 30000, 'wd-8', 41, 2),
         ('payouts', 'payout', '{}', 'pending', 5, 30000, 'wd-8', 41, 2);
)sql");
  EXPECT_NE(message.find("hold 41"), std::string::npos) << message;
  EXPECT_NE(message.find("SELECT id, state"), std::string::npos) << message;
  EXPECT_EQ(schema_version(*db), 7);
}

// Before 009 one chosen idempotency key could name two settling tasks (two
// payouts for one withdrawal): refused the same way.
TEST_F(Migrate, TwoSettlingTasksUnderOneIdempotencyKeyStopTheUpgrade) {
  const std::string message = upgrade_refusal(*db, 8, R"sql(
INSERT INTO @schema@.task (queue, kind, payload, state, attempt_max, timeout_ms, idempotency_key,
                           settle_reverse_transaction_id)
  VALUES ('payouts', 'payout', '{}', 'succeeded', 5, 30000, 'wd-8', 41),
         ('payouts', 'payout', '{}', 'pending', 5, 30000, 'wd-8', 41),
         ('payouts', 'sms', '{}', 'pending', 5, 30000, 'wd-8', NULL),
         ('payouts', 'sms', '{}', 'pending', 5, 30000, 'wd-8', NULL);
)sql");
  EXPECT_NE(message.find("payout 'wd-8'"), std::string::npos) << message;
  EXPECT_EQ(message.find("sms"), std::string::npos) << message;  // no settlement: not bound
  EXPECT_EQ(schema_version(*db), 8);
  // Once the extra task has a key of its own, the upgrade goes through.
  db->transact([](Transaction& tx) {
    tx.exec_sql("UPDATE @schema@.task SET idempotency_key = 'wd-8/second' WHERE kind = 'payout' AND state = 'pending'");
  });
  EXPECT_EQ(migrate(*db, 9).version_current, 9);
}

}  // namespace
}  // namespace payq

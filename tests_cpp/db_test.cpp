#include "payq/db.hpp"

#include <cstdint>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "harness.hpp"
#include "payq/connection.hpp"
#include "payq/error.hpp"

namespace payq {
namespace {

TEST(Db, FormatStyleReordersAndRepeatsParameters) {
  auto out = sql_to_format_style("SELECT $2, $1, $2 WHERE x LIKE 'a%' AND y = '$1' AND z % 2 = 0");
  EXPECT_EQ(out.sql, "SELECT %s, %s, %s WHERE x LIKE 'a%%' AND y = '$1' AND z %% 2 = 0");
  EXPECT_EQ(out.param_order, (std::vector<std::size_t>{1, 0, 1}));
}

TEST(Db, FormatStyleSkipsCommentsButDoublesTheirPercentSigns) {
  auto out = sql_to_format_style("SELECT $1 -- the account's 100% share, not $2\n, $2");
  EXPECT_EQ(out.sql, "SELECT %s -- the account's 100%% share, not $2\n, %s");
  EXPECT_EQ(out.param_order, (std::vector<std::size_t>{0, 1}));
}

TEST(Db, FormatStyleRejectsDollarZero) { EXPECT_THROW(sql_to_format_style("SELECT $0"), DatabaseError); }

TEST(Db, SchemaNameValidationRejectsInjection) {
  EXPECT_NO_THROW(schema_name_validate("payq"));
  EXPECT_NO_THROW(schema_name_validate("tenant_7"));
  EXPECT_THROW(schema_name_validate(""), ConfigError);
  EXPECT_THROW(schema_name_validate("Payq"), ConfigError);
  EXPECT_THROW(schema_name_validate("7days"), ConfigError);
  EXPECT_THROW(schema_name_validate("a\"; DROP TABLE x; --"), ConfigError);
  EXPECT_THROW(schema_name_validate("pg_catalog"), ConfigError);
  EXPECT_THROW(schema_name_validate("information_schema"), ConfigError);
  EXPECT_THROW(schema_name_validate(std::string(64, 'a')), ConfigError);
}

TEST(Db, DsnWithAControlCharacterIsAConfigErrorThatHidesIt) {
  // libpq would read the DSN only up to the NUL and connect to dbname=payq.
  for (const std::string& dsn : {std::string("dbname=payq\0 dbname=other password=hunter2", 42),
                                std::string("dbname=payq password=hunter2\x01")}) {
    ConnectionOptions options;
    options.dsn = dsn;
    try {
      Connection connection(options);
      FAIL() << "a DSN with a control character was accepted";
    } catch (const ConfigError& e) {
      EXPECT_EQ(std::string(e.what()).find("hunter2"), std::string::npos) << e.what();
    }
  }
}

TEST(Db, ExpandSchemaReplacesEveryMarker) {
  EXPECT_EQ(sql_expand_schema("SELECT * FROM @schema@.a JOIN @schema@.b", "s1"),
            "SELECT * FROM \"s1\".a JOIN \"s1\".b");
}

TEST(Db, RowsAccessorsConvertAndCheck) {
  Rows rows({"n", "b", "t"}, {{std::string("42"), std::string("t"), std::nullopt}});
  EXPECT_EQ(rows.i64(0, "n"), 42);
  EXPECT_TRUE(rows.boolean(0, "b"));
  EXPECT_TRUE(rows.is_null(0, "t"));
  EXPECT_THROW(rows.text(0, "t"), DatabaseError);
  EXPECT_THROW(rows.i64(0, "b"), DatabaseError);
  EXPECT_THROW(rows.column("missing"), DatabaseError);
}

// Wide rows are searched by name in sorted order: every column is found,
// a repeated name finds its first column, as the scan of narrow rows does.
TEST(Db, RowsFindEveryColumnOfWideAndNarrowRows) {
  for (std::size_t width : {3, 8, 9, 30}) {
    std::vector<std::string> names;
    std::vector<Value> values;
    for (std::size_t i = 0; i < width; ++i) {
      names.push_back("c" + std::to_string((i * 7) % width) + (i % 2 ? "_odd" : ""));
      values.emplace_back(std::to_string(i));
    }
    names.push_back(names[1]);  // a repeat: its first column wins
    values.emplace_back("repeat");
    Rows rows(names, {values});
    for (std::size_t i = 0; i < width; ++i) EXPECT_EQ(rows.i64(0, names[i]), static_cast<std::int64_t>(i)) << width;
    EXPECT_THROW(rows.column("c"), DatabaseError) << width;
    EXPECT_THROW(rows.column("zz"), DatabaseError) << width;
    EXPECT_THROW(rows.column(""), DatabaseError) << width;
  }
}

TEST(Db, RowsCopiesFindColumnsLikeTheOriginal) {
  std::vector<std::string> names;
  std::vector<Value> values;
  for (int i = 0; i < 20; ++i) {
    names.push_back("col_" + std::to_string(i));
    values.emplace_back(std::to_string(i));
  }
  Rows copy;
  {
    Rows original(names, {values});
    copy = original;
  }
  EXPECT_EQ(copy.i64(0, "col_0"), 0);
  EXPECT_EQ(copy.i64(0, "col_19"), 19);
  EXPECT_EQ(copy.i64(0, "col_7"), 7);
}

class Transactions : public testing::DbTest {};

const Statement create_table{"test_create_t", "CREATE TABLE @schema@.t (v int PRIMARY KEY)"};
const Statement insert_value{"test_insert_t", "INSERT INTO @schema@.t VALUES ($1::int)"};
const Statement count_values{"test_count_t", "SELECT count(*) AS n FROM @schema@.t"};

TEST_F(Transactions, SavepointRollbackKeepsOuterWork) {
  db->transact([](Transaction& tx) { tx.exec(create_table, {}); });
  db->transact([](Transaction& tx) {
    tx.exec(insert_value, {"1"});
    {
      Savepoint inner(tx);
      tx.exec(insert_value, {"2"});
      EXPECT_THROW(tx.exec(insert_value, {"1"}), DatabaseError);  // duplicate key
    }  // rolled back: 2 is gone, the transaction goes on
    tx.exec(insert_value, {"3"});
  });
  auto n = db->transact([](Transaction& tx) { return tx.exec(count_values, {}).i64(0, "n"); });
  EXPECT_EQ(n, 2);
}

TEST_F(Transactions, NestedSavepointsReleaseIntoParent) {
  db->transact([](Transaction& tx) { tx.exec(create_table, {}); });
  db->transact([](Transaction& tx) {
    Savepoint outer(tx);
    {
      Savepoint inner(tx);
      tx.exec(insert_value, {"1"});
      inner.release();
    }
    EXPECT_EQ(tx.savepoint_depth(), 1u);
    outer.release();
  });
  auto n = db->transact([](Transaction& tx) { return tx.exec(count_values, {}).i64(0, "n"); });
  EXPECT_EQ(n, 1);
}

TEST_F(Transactions, UncommittedTransactionRollsBack) {
  db->transact([](Transaction& tx) { tx.exec(create_table, {}); });
  {
    auto lease = db->acquire();
    Transaction tx(*lease);
    tx.exec(insert_value, {"1"});
  }
  auto n = db->transact([](Transaction& tx) { return tx.exec(count_values, {}).i64(0, "n"); });
  EXPECT_EQ(n, 0);
}

TEST_F(Transactions, TransientFailureIsRetriedWithinBound) {
  int calls = 0;
  int result = db->transact([&](Transaction&) {
    if (++calls < 3) throw TransientError("simulated serialization failure", "40001");
    return 7;
  });
  EXPECT_EQ(result, 7);
  EXPECT_EQ(calls, 3);

  calls = 0;
  EXPECT_THROW(db->transact([&](Transaction&) -> int { ++calls; throw TransientError("always", "40001"); }),
               TransientError);
  EXPECT_EQ(calls, db->options().transient_retry_count_max + 1);
}

TEST_F(Transactions, RealSerializationFailureBecomesTransientError) {
  db->transact([](Transaction& tx) {
    tx.exec(create_table, {});
    tx.exec(insert_value, {"1"});
  });
  auto first_lease = db->acquire();
  auto second_lease = db->acquire();
  Transaction first(*first_lease);
  Transaction second(*second_lease);
  first.exec_sql("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE");
  second.exec_sql("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE");
  first.exec_sql("SELECT count(*) FROM @schema@.t");
  second.exec_sql("SELECT count(*) FROM @schema@.t");
  first.exec_sql("INSERT INTO @schema@.t VALUES (10)");
  second.exec_sql("INSERT INTO @schema@.t VALUES (20)");
  first.commit();
  EXPECT_THROW(second.commit(), TransientError);
}

// A transaction's first statement carries BEGIN and goes as EXECUTE with
// quoted literals; later ones go as bound parameters. Both must deliver
// every value byte for byte.
const Statement echo_values{"test_echo_values", "SELECT $1::text AS a, $2::text AS b, $3::text AS c, $4::bigint AS n"};

TEST_F(Transactions, FirstAndLaterStatementsDeliverTheSameValues) {
  const std::string awkward = "it's a \\ back'slash, \"quotes\", $1, 100% 元 \n line";
  const std::string long_text(100000, 'x');
  auto lease = db->acquire();
  Transaction tx(*lease);
  for (int round = 0; round < 2; ++round) {  // first statement, then a later one
    Rows rows = tx.exec(echo_values, {awkward, std::nullopt, long_text, "-9223372036854775808"});
    EXPECT_EQ(rows.text(0, "a"), awkward);
    EXPECT_TRUE(rows.is_null(0, "b"));
    EXPECT_EQ(rows.text(0, "c"), long_text);
    EXPECT_EQ(rows.i64(0, "n"), INT64_MIN);
  }
  tx.commit();
}

TEST_F(Transactions, BadFirstParameterIsATypedErrorAndTheTransactionRollsBack) {
  db->transact([](Transaction& tx) { tx.exec(create_table, {}); });
  auto lease = db->acquire();
  {
    Transaction tx(*lease);
    try {
      tx.exec(insert_value, {"1'); DROP TABLE t; --"});
      FAIL() << "expected DatabaseError";
    } catch (const DatabaseError& e) {
      EXPECT_EQ(e.sqlstate(), "22P02");  // not an integer; nothing injected
    }
  }
  // The connection is usable again, and the table is intact.
  auto n = db->transact([](Transaction& tx) { return tx.exec(count_values, {}).i64(0, "n"); });
  EXPECT_EQ(n, 0);
}

TEST_F(Transactions, TransactionThatRanNothingCommitsAndRollsBack) {
  auto lease = db->acquire();
  {
    Transaction tx(*lease);
    tx.commit();
    EXPECT_FALSE(tx.is_open());
    EXPECT_THROW(tx.commit(), DatabaseError);
  }
  {
    Transaction tx(*lease);
    tx.rollback();
    EXPECT_FALSE(tx.is_open());
  }
  Transaction tx(*lease);  // the connection holds no open transaction
  EXPECT_EQ(tx.exec_sql("SELECT 1 AS one").i64(0, "one"), 1);
  tx.commit();
}

TEST_F(Transactions, CommitAfterACaughtErrorIsRefusedAndNothingIsWritten) {
  db->transact([](Transaction& tx) { tx.exec(create_table, {}); });
  try {
    db->transact([](Transaction& tx) {
      tx.exec(insert_value, {"1"});
      // Caught without a savepoint: the server has aborted the transaction.
      EXPECT_THROW(tx.exec(insert_value, {"1"}), DatabaseError);
    });
    FAIL() << "expected the commit to be refused";
  } catch (const DatabaseError& e) {
    EXPECT_EQ(e.sqlstate(), "25P02");
  }
  auto n = db->transact([](Transaction& tx) { return tx.exec(count_values, {}).i64(0, "n"); });
  EXPECT_EQ(n, 0);
}

TEST_F(Transactions, SavepointRollbackRecoversFromAnError) {
  db->transact([](Transaction& tx) { tx.exec(create_table, {}); });
  db->transact([](Transaction& tx) {
    tx.exec(insert_value, {"1"});
    tx.savepoint_begin();
    EXPECT_THROW(tx.exec(insert_value, {"1"}), DatabaseError);
    tx.savepoint_rollback();
    tx.exec(insert_value, {"2"});
  });
  auto n = db->transact([](Transaction& tx) { return tx.exec(count_values, {}).i64(0, "n"); });
  EXPECT_EQ(n, 2);
}

TEST_F(Transactions, SqlErrorCarriesSqlstate) {
  try {
    db->transact([](Transaction& tx) { tx.exec_sql("SELECT 1/0"); });
    FAIL() << "expected DatabaseError";
  } catch (const DatabaseError& e) {
    EXPECT_EQ(e.sqlstate(), "22012");
  }
}

// The server restarted, failed over or killed the session while a pooled
// connection sat idle: its next user gets a fresh connection, not an error.
TEST_F(Transactions, ConnectionThatDiedWhileIdleIsReplacedBeforeUse) {
  auto killer = open_database();
  auto kill_the_others = [&] {
    return killer->transact([](Transaction& tx) {
      return tx
          .exec_sql("SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity "
                    "WHERE pid <> pg_backend_pid() AND datname = current_database() "
                    "AND backend_type = 'client backend'")
          .i64(0, "n");
    });
  };
  const auto one = [](Transaction& tx) { return tx.exec_sql("SELECT 1 AS one").i64(0, "one"); };
  EXPECT_EQ(db->transact(one), 1);
  ASSERT_GE(kill_the_others(), 1);
  EXPECT_EQ(db->transact(one), 1);  // whole units
  ASSERT_GE(kill_the_others(), 1);
  {
    PooledTransaction driven(*db);  // a transaction the caller drives
    EXPECT_EQ(one(driven.transaction()), 1);
    driven.transaction().commit();
  }
  // A session killed in the middle of a transaction the caller drives:
  // nothing was applied, and the error says so with its own type.
  PooledTransaction driven(*db);
  driven.transaction().exec_sql("SELECT 1");
  ASSERT_GE(kill_the_others(), 1);
  EXPECT_THROW(driven.transaction().exec_sql("SELECT 2"), ConnectionLost);
}

// A DSN that reaches a standby (or a read-only session): the first write
// says so, with a typed error, and nothing is written.
TEST_F(Transactions, WriteOnAReadOnlyServerIsAConfigErrorThatSaysSo) {
  try {
    db->transact([](Transaction& tx) {
      tx.exec_sql("SET TRANSACTION READ ONLY");
      tx.exec_sql("CREATE TABLE @schema@.never (x int)");
    });
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("read-only"), std::string::npos) << e.what();
  }
  EXPECT_EQ(db->transact([](Transaction& tx) {
              return tx.exec_sql("SELECT count(*) AS n FROM pg_tables WHERE tablename = 'never'").i64(0, "n");
            }),
            0);
}

// Prepared statements met in a session that did not prepare them are the
// mark of a transaction-mode pooler: the error names the setting.
TEST_F(Transactions, ForeignPreparedStatementNamesThePoolerSetting) {
  try {
    db->transact([](Transaction& tx) {
      tx.exec_sql("PREPARE payq_clash AS SELECT 1");
      tx.exec_sql("PREPARE payq_clash AS SELECT 1");
    });
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("pooler"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace payq

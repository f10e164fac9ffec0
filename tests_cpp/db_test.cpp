#include "payq/db.hpp"

#include <gtest/gtest.h>

#include "harness.hpp"
#include "payq/error.hpp"

namespace payq {
namespace {

TEST(Db, FormatStyleReordersAndRepeatsParameters) {
  auto out = sql_to_format_style("SELECT $2, $1, $2 WHERE x LIKE 'a%' AND y = '$1' AND z % 2 = 0");
  EXPECT_EQ(out.sql, "SELECT %s, %s, %s WHERE x LIKE 'a%%' AND y = '$1' AND z %% 2 = 0");
  EXPECT_EQ(out.param_order, (std::vector<std::size_t>{1, 0, 1}));
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
  EXPECT_THROW(schema_name_validate(std::string(64, 'a')), ConfigError);
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

TEST_F(Transactions, SqlErrorCarriesSqlstate) {
  try {
    db->transact([](Transaction& tx) { tx.exec_sql("SELECT 1/0"); });
    FAIL() << "expected DatabaseError";
  } catch (const DatabaseError& e) {
    EXPECT_EQ(e.sqlstate(), "22012");
  }
}

}  // namespace
}  // namespace payq

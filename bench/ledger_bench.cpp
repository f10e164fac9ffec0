// Ledger throughput: payq's transfer (without fee, with a fee into a hot
// deferred-credit account, with a fee into an ordinary locked account)
// against two raw-SQL transfers on the same server in the same run, at
// several client counts:
//  - raw_fee_transfer, the like-for-like baseline: the same durable work as
//    payq's fee transfer (an idempotency record under a unique key that
//    refuses a duplicate, three legs with the fee credited without locking
//    the fee account, balance_after and a per-account sequence on each
//    locked account's entry, the available-balance check) in one
//    autocommitted statement or one PL/pgSQL call, on tables of its own;
//    raw_fee_transfer_in_transaction runs the same statement framed as
//    payq's transfer is (BEGIN with it, COMMIT after), for information;
//  - raw_minimal, for information: lock two rows, update them, insert two
//    entries (no idempotency, no fee, no sequence).
// Prints one JSON document on stdout and a short summary with each
// target's verdict on stderr.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <ctime>
#include <iostream>
#include <map>
#include <random>
#include <sstream>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench_support.hpp"
#include "payq/database.hpp"
#include "payq/error.hpp"
#include "payq/ledger.hpp"
#include "payq/migrate.hpp"

using namespace payq;
using bench::median;
using bench::rounded;
using nlohmann::json;

namespace {

// The targets of issue 16 (target 5), read from the medians.
constexpr double fee_vs_like_for_like_min = 0.9;
constexpr double fee_vs_minimal_floor = 0.7;

// How the like-for-like raw transfer is sent.
enum class RawForm { statement, plpgsql };

const char* raw_form_name(RawForm form) { return form == RawForm::statement ? "statement" : "plpgsql"; }

struct Options {
  std::vector<int> client_counts = {1, 4, 8, 16};
  int duration_ms = 3000;
  int round_count = 3;  // each point is the median of this many interleaved runs
  int account_count = 1000;
  bool durable = true;
  // The faster of the two forms on the development VM (see docs/ledger.md).
  RawForm raw_form = RawForm::statement;
  std::string dsn;  // empty: a throwaway embedded cluster
  std::string commit;  // the git commit measured, recorded in the conditions
  std::vector<std::string> variants;  // empty: all (the ratios need all)
};

Options parse(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error(arg + " needs a value");
      return argv[++i];
    };
    if (arg == "--duration-ms") {
      options.duration_ms = std::stoi(next());
      if (options.duration_ms < 1) throw std::runtime_error("--duration-ms needs at least 1");
    } else if (arg == "--rounds") {
      options.round_count = std::stoi(next());
      if (options.round_count < 1) throw std::runtime_error("--rounds needs at least 1");
    } else if (arg == "--accounts") {
      options.account_count = std::stoi(next());
      if (options.account_count < 3) throw std::runtime_error("--accounts needs at least 3");
    } else if (arg == "--clients") {
      options.client_counts.clear();
      std::stringstream list(next());
      for (std::string n; std::getline(list, n, ',');) options.client_counts.push_back(std::stoi(n));
    } else if (arg == "--variants") {
      std::stringstream list(next());
      for (std::string name; std::getline(list, name, ',');) options.variants.push_back(name);
    } else if (arg == "--raw-form") {
      const std::string form = next();
      if (form == "statement") {
        options.raw_form = RawForm::statement;
      } else if (form == "plpgsql") {
        options.raw_form = RawForm::plpgsql;
      } else {
        throw std::runtime_error("--raw-form is statement or plpgsql");
      }
    } else if (arg == "--dsn") {
      options.dsn = next();
    } else if (arg == "--commit") {
      options.commit = next();
    } else if (arg == "--no-fsync") {
      options.durable = false;
    } else {
      throw std::runtime_error("unknown argument " + arg +
                               " (--duration-ms N, --rounds N, --accounts N, --clients 1,4,8,16, --variants "
                               "raw_fee_transfer,raw_minimal,..., --raw-form statement|plpgsql, --dsn DSN, "
                               "--commit SHA, --no-fsync)");
    }
  }
  return options;
}

// ---- raw_minimal: lock two rows, update them, insert two entries.

const Statement raw_lock{"bench_raw_lock",
                         "SELECT id, balance FROM bench_raw.account WHERE id IN ($1::bigint, $2::bigint) "
                         "ORDER BY id FOR UPDATE"};
const Statement raw_update{"bench_raw_update",
                           "UPDATE bench_raw.account a SET balance = a.balance + d.delta "
                           "FROM (VALUES ($1::bigint, -$3::bigint), ($2::bigint, $3::bigint)) AS d(id, delta) "
                           "WHERE a.id = d.id"};
const Statement raw_insert{"bench_raw_insert",
                           "INSERT INTO bench_raw.entry (account_id, amount) "
                           "VALUES ($1::bigint, -$3::bigint), ($2::bigint, $3::bigint)"};

// ---- raw_fee_transfer: the like-for-like baseline, in schema bench_like.
//
// Its tables keep what payq's keep for the same reads: the idempotency key
// as primary key and the transaction id unique (payq's operation row), the
// entries keyed by (account, seq) and indexed by transaction, the fee
// credits keyed by (account, id) and indexed by transaction, and the
// available-balance floor as a table constraint. It leaves out what a
// hand-written ledger might skip: request hashes, metadata, kinds,
// append-only triggers, limits.
constexpr char like_schema[] = R"sql(
CREATE SCHEMA bench_like;
CREATE SEQUENCE bench_like.transaction_id_seq AS bigint;
CREATE TABLE bench_like.account (
  id      bigint PRIMARY KEY,
  balance bigint NOT NULL,
  held    bigint NOT NULL DEFAULT 0,
  seq     bigint NOT NULL DEFAULT 0,
  CONSTRAINT available_floor CHECK (balance - held >= 0)
);
CREATE TABLE bench_like.operation (
  key            text PRIMARY KEY,
  transaction_id bigint NOT NULL UNIQUE,
  created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE bench_like.entry (
  account_id     bigint NOT NULL,
  seq            bigint NOT NULL,
  transaction_id bigint NOT NULL,
  leg            smallint NOT NULL,
  amount         bigint NOT NULL,
  balance_after  bigint NOT NULL,
  created_at     timestamptz NOT NULL,
  PRIMARY KEY (account_id, seq)
);
CREATE INDEX ON bench_like.entry (transaction_id);
CREATE TABLE bench_like.fee_credit (
  id             bigint GENERATED ALWAYS AS IDENTITY,
  account_id     bigint NOT NULL,
  transaction_id bigint NOT NULL,
  leg            smallint NOT NULL,
  amount         bigint NOT NULL,
  created_at     timestamptz NOT NULL,
  PRIMARY KEY (account_id, id)
);
CREATE INDEX ON bench_like.fee_credit (transaction_id);

-- The same transfer as one PL/pgSQL call: the key first (a duplicate
-- returns NULL and writes nothing), then both accounts updated in id
-- order (no deadlock between opposite transfers), the floor checked by
-- the table constraint, then the entries and the fee credit.
CREATE FUNCTION bench_like.transfer(p_key text, p_source bigint, p_target bigint, p_amount bigint,
                                    p_fee_account bigint, p_fee bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
  v_tx bigint;
  v_at timestamptz;
  v_low bigint := least(p_source, p_target);
  v_high bigint := greatest(p_source, p_target);
  v_low_delta bigint := CASE WHEN v_low = p_source THEN -(p_amount + p_fee) ELSE p_amount END;
  v_high_delta bigint := CASE WHEN v_high = p_source THEN -(p_amount + p_fee) ELSE p_amount END;
  v_low_balance bigint;
  v_low_seq bigint;
  v_high_balance bigint;
  v_high_seq bigint;
BEGIN
  INSERT INTO bench_like.operation (key, transaction_id)
  VALUES (p_key, nextval('bench_like.transaction_id_seq'))
  ON CONFLICT (key) DO NOTHING
  RETURNING transaction_id, created_at INTO v_tx, v_at;
  IF v_tx IS NULL THEN
    RETURN NULL;
  END IF;
  UPDATE bench_like.account SET balance = balance + v_low_delta, seq = seq + 1 WHERE id = v_low
  RETURNING balance, seq INTO v_low_balance, v_low_seq;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no account %', v_low;
  END IF;
  UPDATE bench_like.account SET balance = balance + v_high_delta, seq = seq + 1 WHERE id = v_high
  RETURNING balance, seq INTO v_high_balance, v_high_seq;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no account %', v_high;
  END IF;
  INSERT INTO bench_like.entry (account_id, seq, transaction_id, leg, amount, balance_after, created_at)
  VALUES (p_source, CASE WHEN v_low = p_source THEN v_low_seq ELSE v_high_seq END, v_tx, 0, -(p_amount + p_fee),
          CASE WHEN v_low = p_source THEN v_low_balance ELSE v_high_balance END, v_at),
         (p_target, CASE WHEN v_low = p_target THEN v_low_seq ELSE v_high_seq END, v_tx, 1, p_amount,
          CASE WHEN v_low = p_target THEN v_low_balance ELSE v_high_balance END, v_at);
  INSERT INTO bench_like.fee_credit (account_id, transaction_id, leg, amount, created_at)
  VALUES (p_fee_account, v_tx, 2, p_fee, v_at);
  RETURN v_tx;
END
$$;
)sql";

// The same transfer as one statement. The UPDATE finds both accounts
// through the primary key with `id IN (...)`, which the index scan visits
// in ascending order, so it locks them in id order. A missing account
// would leave an entry out: the last line then divides by zero, which
// fails the statement, so nothing of it commits. $1 key, $2 source, $3
// target, $4 amount, $5 fee account, $6 fee.
const Statement like_statement{"bench_like_transfer", R"sql(
WITH op AS (
  INSERT INTO bench_like.operation (key, transaction_id)
  VALUES ($1, nextval('bench_like.transaction_id_seq'))
  ON CONFLICT (key) DO NOTHING
  RETURNING transaction_id, created_at
), u AS (
  UPDATE bench_like.account a
  SET balance = a.balance + CASE WHEN a.id = $2::bigint THEN -($4::bigint + $6::bigint) ELSE $4::bigint END,
      seq = a.seq + 1
  FROM op
  WHERE a.id IN ($2::bigint, $3::bigint)
  RETURNING a.id, a.balance, a.seq
), e AS (
  INSERT INTO bench_like.entry (account_id, seq, transaction_id, leg, amount, balance_after, created_at)
  SELECT u.id, u.seq, op.transaction_id, CASE WHEN u.id = $2::bigint THEN 0 ELSE 1 END,
         CASE WHEN u.id = $2::bigint THEN -($4::bigint + $6::bigint) ELSE $4::bigint END, u.balance, op.created_at
  FROM u, op
), f AS (
  INSERT INTO bench_like.fee_credit (account_id, transaction_id, leg, amount, created_at)
  SELECT $5::bigint, op.transaction_id, 2, $6::bigint, op.created_at FROM op
)
SELECT op.transaction_id / ((SELECT count(*) FROM u) / 2) AS transaction_id FROM op)sql"};

const Statement like_call{"bench_like_transfer_call",
                          "SELECT bench_like.transfer($1, $2::bigint, $3::bigint, $4::bigint, $5::bigint, $6::bigint) "
                          "AS transaction_id"};

struct Fixture {
  std::vector<std::int64_t> users;
  std::int64_t fee_hot = 0;
  std::int64_t fee_locked = 0;
};

Fixture prepare(Database& db, const Options& options) {
  migrate(db);
  Fixture f;
  db.transact([&](Transaction& tx) {
    tx.exec_script(
        "CREATE SCHEMA bench_raw;"
        "CREATE TABLE bench_raw.account (id bigint PRIMARY KEY, balance bigint NOT NULL);"
        "CREATE TABLE bench_raw.entry (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
        " account_id bigint NOT NULL REFERENCES bench_raw.account (id), amount bigint NOT NULL,"
        " created_at timestamptz NOT NULL DEFAULT now());");
    tx.exec_script(like_schema);
  });
  const std::int64_t funding_minor = 1'000'000'000'000;
  db.transact([&](Transaction& tx) {
    Ledger ledger(tx);
    AccountOpen world{"world", "CNY", "bench", true, 0, false};
    const std::int64_t world_id = ledger.account_open(world).id;
    AccountOpen hot{"fees-hot", "CNY", "bench", false, 0, true};
    f.fee_hot = ledger.account_open(hot).id;
    AccountOpen locked{"fees-locked", "CNY", "bench", false, 0, false};
    f.fee_locked = ledger.account_open(locked).id;
    tx.exec_sql("INSERT INTO bench_like.account (id, balance) VALUES ($1, 0)", {std::to_string(f.fee_hot)});
    for (int i = 0; i < options.account_count; ++i) {
      AccountOpen user{"user:" + std::to_string(i), "CNY", "bench", false, 0, false};
      const std::int64_t id = ledger.account_open(user).id;
      f.users.push_back(id);
      TransferRequest fund;
      fund.key = "fund-" + std::to_string(i);
      fund.source_id = world_id;
      fund.target_id = id;
      fund.amount_minor = funding_minor;
      ledger.transfer(fund);
      tx.exec_sql("INSERT INTO bench_raw.account VALUES ($1, $2)",
                  {std::to_string(id), std::to_string(funding_minor)});
      tx.exec_sql("INSERT INTO bench_like.account (id, balance) VALUES ($1, $2)",
                  {std::to_string(id), std::to_string(funding_minor)});
    }
  });
  db.transact([&](Transaction& tx) { tx.exec_sql("ANALYZE"); });
  return f;
}

std::pair<std::int64_t, std::int64_t> random_pair(std::mt19937_64& random, const std::vector<std::int64_t>& ids) {
  const auto a = ids[random() % ids.size()];
  auto b = a;
  while (b == a) b = ids[random() % ids.size()];
  return {a, b};
}

// The fee payq computes for the bench's Fee (60 bps + 1 minor unit,
// half up), so the raw transfer moves the same amounts.
std::int64_t bench_fee_minor(std::int64_t amount_minor) { return (amount_minor * 60 + 5000) / 10000 + 1; }

enum class Variant {
  raw_fee_transfer,
  raw_fee_transfer_in_transaction,
  raw_minimal,
  payq_transfer,
  payq_fee_hot,
  payq_fee_locked
};

// The like-for-like raw transfer must do what it claims: after the run its
// journal balances, each account's balance and sequence match its entries,
// and a repeated key was refused.
json like_for_like_check(Database& db, const Fixture& fixture, RawForm form) {
  // Rolled back at the end: the duplicate probe leaves nothing behind.
  PooledTransaction pooled(db);
  Transaction& tx = pooled.transaction();
  {
    Rows sums = tx.exec_sql(R"sql(
SELECT (SELECT coalesce(sum(amount), 0) FROM bench_like.entry)
         + (SELECT coalesce(sum(amount), 0) FROM bench_like.fee_credit) AS journal_sum,
       (SELECT count(*) FROM bench_like.account a
        WHERE a.id <> $1::bigint AND (a.seq <> (SELECT count(*) FROM bench_like.entry e WHERE e.account_id = a.id)
           OR a.balance <> 1000000000000 + (SELECT coalesce(sum(amount), 0) FROM bench_like.entry e
                                            WHERE e.account_id = a.id)
           OR a.balance <> coalesce((SELECT balance_after FROM bench_like.entry e WHERE e.account_id = a.id
                                     ORDER BY seq DESC LIMIT 1), 1000000000000))) AS accounts_wrong,
       (SELECT count(*) FROM bench_like.operation) AS transfers)sql",
                            {std::to_string(fixture.fee_hot)});
    // A key used before is refused and changes nothing.
    const Params repeat = {std::string("like-duplicate-probe"), std::to_string(fixture.users[0]),
                           std::to_string(fixture.users[1]), "100", std::to_string(fixture.fee_hot),
                           std::to_string(bench_fee_minor(100))};
    const Statement& statement = form == RawForm::statement ? like_statement : like_call;
    const bool first_written = !tx.exec(statement, repeat).is_null(0, "transaction_id");
    Rows second = tx.exec(statement, repeat);
    const bool duplicate_refused = second.empty() || second.is_null(0, "transaction_id");
    tx.rollback();
    return json{{"journal_sum", sums.i64(0, "journal_sum")},
                {"accounts_wrong", sums.i64(0, "accounts_wrong")},
                {"transfers", sums.i64(0, "transfers")},
                {"duplicate_key_refused", first_written && duplicate_refused},
                {"ok", sums.i64(0, "journal_sum") == 0 && sums.i64(0, "accounts_wrong") == 0 && first_written &&
                           duplicate_refused}};
  }
}

std::string utc_now_text() {
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &utc);
  return text;
}

std::string verdict(bool met) { return met ? "met" : "NOT met"; }

}  // namespace

int main(int argc, char** argv) {
  try {
    const Options options = parse(argc, argv);
    std::unique_ptr<bench::Cluster> own_cluster;
    if (options.dsn.empty()) own_cluster = std::make_unique<bench::Cluster>(options.durable);
    const std::string dsn = own_cluster ? own_cluster->dsn() : options.dsn;
    DatabaseOptions db_options;
    db_options.dsn = dsn;
    Database db(db_options);
    const Fixture fixture = prepare(db, options);
    const std::chrono::milliseconds duration(options.duration_ms);
    const Statement& like = options.raw_form == RawForm::statement ? like_statement : like_call;

    const std::vector<std::pair<Variant, const char*>> variants = {
        {Variant::raw_fee_transfer, "raw_fee_transfer"},
        {Variant::raw_fee_transfer_in_transaction, "raw_fee_transfer_in_transaction"},
        {Variant::raw_minimal, "raw_minimal"},
        {Variant::payq_transfer, "payq_transfer"},
        {Variant::payq_fee_hot, "payq_transfer_fee_hot_account"},
        {Variant::payq_fee_locked, "payq_transfer_fee_locked_account"}};
    const bool complete = options.variants.empty();

    json results = json::array();
    bool fee_met_everywhere = complete, floor_met_everywhere = complete;
    std::ostringstream summary;
    for (int clients : options.client_counts) {
      json row = {{"clients", clients}};
      // Rounds interleave the variants, so a drift of the machine (or the
      // tables' growth) during the run weighs on every variant alike.
      std::map<std::string, std::vector<double>> rates;
      for (int round = 0; round < options.round_count; ++round) {
        for (const auto& [variant, name] : variants) {
          if (!complete && std::find(options.variants.begin(), options.variants.end(), name) ==
                               options.variants.end()) {
            continue;
          }
          auto make_client = [&, variant = variant, name = name, clients, round](int index) -> std::function<bool()> {
            auto random = std::make_shared<std::mt19937_64>(static_cast<std::uint64_t>(index) * 1000003 + clients);
            auto counter = std::make_shared<std::int64_t>(0);
            auto key = [=]() {
              return std::string(name) + "-" + std::to_string(clients) + "-" + std::to_string(round) + "-" +
                     std::to_string(index) + "-" + std::to_string((*counter)++);
            };
            if (variant == Variant::raw_fee_transfer || variant == Variant::raw_fee_transfer_in_transaction) {
              auto connection = std::make_shared<Connection>(ConnectionOptions{dsn, "payq", true});
              const bool autocommit = variant == Variant::raw_fee_transfer;
              return [=, &like]() {
                auto [a, b] = random_pair(*random, fixture.users);
                const std::int64_t amount = 1 + static_cast<std::int64_t>((*random)() % 10000);
                const Params params = {key(), std::to_string(a), std::to_string(b), std::to_string(amount),
                                       std::to_string(fixture.fee_hot), std::to_string(bench_fee_minor(amount))};
                Rows written;
                if (autocommit) {
                  // The one statement is the whole transaction: one round trip.
                  written = SingleStatement(*connection).exec(like, params);
                } else {
                  // Framed as payq's transfer is: BEGIN travels with the
                  // statement, COMMIT is a round trip of its own.
                  Transaction tx(*connection);
                  written = tx.exec(like, params);
                  tx.commit();
                }
                if (written.empty() || written.is_null(0, "transaction_id")) {
                  throw std::runtime_error("raw_fee_transfer wrote nothing");
                }
                return true;
              };
            }
            if (variant == Variant::raw_minimal) {
              auto connection = std::make_shared<Connection>(ConnectionOptions{dsn, "payq", true});
              return [=]() {
                auto [a, b] = random_pair(*random, fixture.users);
                const std::string amount = std::to_string(1 + (*random)() % 10000);
                Transaction tx(*connection);
                tx.exec(raw_lock, {std::to_string(a), std::to_string(b)});
                tx.exec(raw_update, {std::to_string(a), std::to_string(b), amount});
                tx.exec(raw_insert, {std::to_string(a), std::to_string(b), amount});
                tx.commit();
                return true;
              };
            }
            return [=, &db]() {
              auto [a, b] = random_pair(*random, fixture.users);
              TransferRequest r;
              r.key = key();
              r.source_id = a;
              r.target_id = b;
              r.amount_minor = 1 + static_cast<std::int64_t>((*random)() % 10000);
              if (variant != Variant::payq_transfer) {
                Fee fee;
                fee.rate_bps = 60;
                fee.fixed_minor = 1;
                r.fee = fee;
                r.fee_account_id = variant == Variant::payq_fee_hot ? fixture.fee_hot : fixture.fee_locked;
              }
              db.transact([&](Transaction& tx) { Ledger(tx).transfer(r); });
              return true;
            };
          };
          const bench::RunResult result = bench::run_clients(clients, duration, make_client);
          rates[name].push_back(result.per_second());
        }
      }
      for (const auto& [name, per_round] : rates) {
        row[name + "_per_s"] = rounded(median(per_round), 1);
        json listed = json::array();
        for (const double rate : per_round) listed.push_back(rounded(rate, 1));
        row[name + "_per_s_rounds"] = listed;
      }
      if (complete) {
        const auto& like_rates = rates["raw_fee_transfer"];
        const auto& minimal_rates = rates["raw_minimal"];
        const auto& hot_rates = rates["payq_transfer_fee_hot_account"];
        const double like_in_transaction = median(rates["raw_fee_transfer_in_transaction"]);
        const double like_raw = median(like_rates);
        const double minimal = median(minimal_rates);
        const double plain = median(rates["payq_transfer"]);
        const double hot = median(hot_rates);
        const double locked = median(rates["payq_transfer_fee_locked_account"]);
        // Each round's ratio too: how far the runs spread.
        json fee_vs_like_rounds = json::array(), fee_vs_minimal_rounds = json::array();
        for (int round = 0; round < options.round_count; ++round) {
          fee_vs_like_rounds.push_back(rounded(hot_rates[round] / like_rates[round], 3));
          fee_vs_minimal_rounds.push_back(rounded(hot_rates[round] / minimal_rates[round], 3));
        }
        const bool fee_met = hot / like_raw >= fee_vs_like_for_like_min;
        const bool floor_met = hot / minimal >= fee_vs_minimal_floor;
        row["ratio_payq_fee_vs_raw_fee_transfer"] = rounded(hot / like_raw, 3);
        row["ratio_payq_fee_vs_raw_fee_transfer_rounds"] = fee_vs_like_rounds;
        row["ratio_payq_fee_vs_raw_fee_transfer_in_transaction"] = rounded(hot / like_in_transaction, 3);
        row["ratio_raw_fee_transfer_in_transaction_vs_autocommit"] = rounded(like_in_transaction / like_raw, 3);
        row["ratio_payq_fee_vs_raw_minimal"] = rounded(hot / minimal, 3);
        row["ratio_payq_fee_vs_raw_minimal_rounds"] = fee_vs_minimal_rounds;
        row["ratio_payq_vs_raw_minimal"] = rounded(plain / minimal, 3);
        row["ratio_fee_hot_vs_no_fee"] = rounded(hot / plain, 3);
        row["ratio_fee_locked_vs_no_fee"] = rounded(locked / plain, 3);
        row["target_fee_vs_raw_fee_transfer_met"] = fee_met;
        row["floor_fee_vs_raw_minimal_met"] = floor_met;
        fee_met_everywhere = fee_met_everywhere && fee_met;
        floor_met_everywhere = floor_met_everywhere && floor_met;
        summary << "  " << clients << " clients: payq fee " << rounded(hot, 0) << "/s, raw fee transfer "
                << rounded(like_raw, 0) << "/s, ratio " << rounded(hot / like_raw, 2) << " (target "
                << fee_vs_like_for_like_min << ": " << verdict(fee_met) << "); vs the same framed as payq's (BEGIN + "
                << "COMMIT) " << rounded(like_in_transaction, 0) << "/s, ratio "
                << rounded(hot / like_in_transaction, 2) << "; vs raw minimal "
                << rounded(minimal, 0) << "/s, ratio " << rounded(hot / minimal, 2) << " (floor "
                << fee_vs_minimal_floor << ": " << verdict(floor_met) << ")\n";
      }
      results.push_back(row);
      std::cerr << row.dump() << std::endl;
    }
    // The journals must still be sound after the run.
    db.transact([&](Transaction& tx) { Ledger(tx).pending_fold(fixture.fee_hot, 10'000'000); });
    const AuditReport audit = db.transact([](Transaction& tx) { return Ledger(tx).audit(); });
    const json like_check = like_for_like_check(db, fixture, options.raw_form);
    const std::string server_version =
        db.transact([](Transaction& tx) { return tx.exec_sql("SHOW server_version").text(0, "server_version"); });

    const bool targets_met = fee_met_everywhere && floor_met_everywhere;
    json out = {
        {"bench", "ledger"},
        {"conditions",
         {{"server", "embedded PostgreSQL " + server_version + ", unix socket, same machine"},
          {"postgresql", server_version},
          {"fsync", options.durable},
          {"cores", std::thread::hardware_concurrency()},
          {"duration_ms_per_run", options.duration_ms},
          {"rounds", options.round_count},
          {"per_point", "median of the rounds; the rounds interleave the variants"},
          {"accounts", options.account_count},
          {"date_utc", utc_now_text()},
          {"git_commit", options.commit.empty() ? json(nullptr) : json(options.commit)},
          {"fee", "60 bps + 0.01, half_up"},
          {"raw_fee_transfer",
           {{"form", raw_form_name(options.raw_form)},
            {"what",
             "the same durable work as payq's fee transfer into a deferred-credit fee account, on tables of its "
             "own (schema bench_like): an idempotency row under a unique key (a repeated key writes nothing), "
             "both accounts updated in id order with balance_after and a per-account sequence on their entries, "
             "the fee credited without locking the fee account, the available-balance floor as a table "
             "constraint; autocommitted, one round trip"},
            {"in_transaction",
             "raw_fee_transfer_in_transaction: the same statement framed as payq's transfer is, BEGIN travelling "
             "with it and COMMIT a round trip of its own (2 round trips); information"}}},
          {"raw_minimal",
           "BEGIN; SELECT 2 rows FOR UPDATE; UPDATE 2 rows; INSERT 2 entries; COMMIT, through payq's Transaction "
           "like payq's own transfers (BEGIN travels with the first statement: 4 round trips)"},
          {"payq_fee_transfer", "Ledger::transfer with a fee into a deferred-credit account, each in its own "
                                "Database::transact (BEGIN travels with the lock: lock, write, COMMIT, 3 round trips)"}}},
        {"targets",
         {{"payq_fee_vs_raw_fee_transfer_min", fee_vs_like_for_like_min},
          {"payq_fee_vs_raw_minimal_floor", fee_vs_minimal_floor}}},
        {"results", results},
        {"target_fee_vs_raw_fee_transfer_met", complete ? json(fee_met_everywhere) : json(nullptr)},
        {"floor_fee_vs_raw_minimal_met", complete ? json(floor_met_everywhere) : json(nullptr)},
        {"targets_met", targets_met},
        {"audit_ok", audit.ok()},
        {"raw_fee_transfer_check", like_check},
        {"resident_kib", bench::resident_kib()}};
    std::cout << out.dump(2) << std::endl;

    std::cerr << "\nbench/ledger: fsync " << (options.durable ? "on" : "off") << ", "
              << std::thread::hardware_concurrency() << " cores, PostgreSQL " << server_version << ", "
              << options.round_count << " rounds of " << options.duration_ms << " ms, raw fee transfer as one "
              << raw_form_name(options.raw_form) << "\n";
    if (complete) {
      std::cerr << summary.str();
      std::cerr << "  payq fee >= " << fee_vs_like_for_like_min << " x raw fee transfer at every client count: "
                << verdict(fee_met_everywhere) << "\n"
                << "  payq fee >= " << fee_vs_minimal_floor << " x raw minimal at every client count (floor): "
                << verdict(floor_met_everywhere) << "\n";
    } else {
      std::cerr << "  a partial run (--variants): no verdicts\n";
    }
    std::cerr << "  audit: " << (audit.ok() ? "ok" : "FAILED") << "; raw fee transfer check: "
              << (like_check["ok"].get<bool>() ? "ok" : "FAILED") << std::endl;
    return audit.ok() && like_check["ok"].get<bool>() ? 0 : 1;
  } catch (const std::exception& e) {
    std::cerr << "payq_bench_ledger: " << e.what() << std::endl;
    return 2;
  }
}

// Ledger throughput: payq's transfer (without fee, with a fee into a hot
// deferred-credit account, with a fee into an ordinary locked account)
// against a minimal raw-SQL transfer (lock two rows, update them, insert two
// entries), on the same server in the same run, at several client counts.
// Prints one JSON document.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <thread>
#include <iostream>
#include <map>
#include <random>
#include <sstream>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench_support.hpp"
#include "payq/database.hpp"
#include "payq/ledger.hpp"
#include "payq/migrate.hpp"

using namespace payq;
using bench::median;
using bench::rounded;
using nlohmann::json;

namespace {

struct Options {
  std::vector<int> client_counts = {1, 4, 8, 16};
  int duration_ms = 3000;
  int round_count = 3;  // each point is the median of this many interleaved runs
  int account_count = 1000;
  bool durable = true;
  std::string dsn;  // empty: a throwaway embedded cluster
  std::vector<std::string> variants;  // empty: all (ratios need all four)
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
    } else if (arg == "--rounds") {
      options.round_count = std::stoi(next());
      if (options.round_count < 1) throw std::runtime_error("--rounds needs at least 1");
    } else if (arg == "--accounts") {
      options.account_count = std::stoi(next());
    } else if (arg == "--clients") {
      options.client_counts.clear();
      std::stringstream list(next());
      for (std::string n; std::getline(list, n, ',');) options.client_counts.push_back(std::stoi(n));
    } else if (arg == "--variants") {
      std::stringstream list(next());
      for (std::string name; std::getline(list, name, ',');) options.variants.push_back(name);
    } else if (arg == "--dsn") {
      options.dsn = next();
    } else if (arg == "--no-fsync") {
      options.durable = false;
    } else {
      throw std::runtime_error("unknown argument " + arg +
                               " (--duration-ms N, --rounds N, --accounts N, --clients 1,4,8,16, --variants raw_sql,..., --dsn DSN, "
                               "--no-fsync)");
    }
  }
  return options;
}

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

    enum class Variant { raw, payq_transfer, payq_fee_hot, payq_fee_locked };
    const std::vector<std::pair<Variant, const char*>> variants = {
        {Variant::raw, "raw_sql"},
        {Variant::payq_transfer, "payq_transfer"},
        {Variant::payq_fee_hot, "payq_transfer_fee_hot_account"},
        {Variant::payq_fee_locked, "payq_transfer_fee_locked_account"}};

    json results = json::array();
    bool met = true;
    for (int clients : options.client_counts) {
      json row = {{"clients", clients}};
      // Rounds interleave the variants, so a drift of the machine (or the
      // tables' growth) during the run weighs on every variant alike.
      std::map<std::string, std::vector<double>> rates;
      for (int round = 0; round < options.round_count; ++round) {
        for (const auto& [variant, name] : variants) {
          if (!options.variants.empty() &&
              std::find(options.variants.begin(), options.variants.end(), name) == options.variants.end()) {
            continue;
          }
          auto make_client = [&, variant = variant, name = name, clients, round](int index) -> std::function<bool()> {
            auto random = std::make_shared<std::mt19937_64>(static_cast<std::uint64_t>(index) * 1000003 + clients);
            auto counter = std::make_shared<std::int64_t>(0);
            if (variant == Variant::raw) {
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
              r.key = std::string(name) + "-" + std::to_string(clients) + "-" + std::to_string(round) + "-" +
                      std::to_string(index) + "-" + std::to_string((*counter)++);
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
      if (options.variants.empty()) {
        const double raw = median(rates["raw_sql"]);
        const double plain = median(rates["payq_transfer"]);
        const double hot = median(rates["payq_transfer_fee_hot_account"]);
        const double locked = median(rates["payq_transfer_fee_locked_account"]);
        row["ratio_payq_fee_vs_raw"] = rounded(hot / raw, 3);
        row["ratio_payq_vs_raw"] = rounded(plain / raw, 3);
        row["ratio_fee_hot_vs_no_fee"] = rounded(hot / plain, 3);
        row["ratio_fee_locked_vs_no_fee"] = rounded(locked / plain, 3);
        // The same ratio within each round: how far the runs spread.
        json fee_vs_raw_rounds = json::array();
        for (int round = 0; round < options.round_count; ++round) {
          fee_vs_raw_rounds.push_back(
              rounded(rates["payq_transfer_fee_hot_account"][round] / rates["raw_sql"][round], 3));
        }
        row["ratio_payq_fee_vs_raw_rounds"] = fee_vs_raw_rounds;
        met = met && hot / raw >= 0.8 && hot / plain >= 0.7;
      } else {
        met = false;  // a partial run proves nothing about the targets
      }
      results.push_back(row);
      std::cerr << row.dump() << std::endl;
    }
    // The journal must still be sound after the run.
    db.transact([&](Transaction& tx) { Ledger(tx).pending_fold(fixture.fee_hot, 10'000'000); });
    const AuditReport audit = db.transact([](Transaction& tx) { return Ledger(tx).audit(); });

    json out = {
        {"bench", "ledger"},
        {"conditions",
         {{"server", "embedded PostgreSQL, unix socket, same machine"},
          {"fsync", options.durable},
          {"duration_ms_per_run", options.duration_ms},
          {"rounds", options.round_count},
          {"per_point", "median of the rounds; the rounds interleave the variants"},
          {"accounts", options.account_count},
          {"cores", std::thread::hardware_concurrency()},
          {"fee", "60 bps + 0.01, half_up"},
          {"raw_sql",
           "BEGIN; SELECT 2 rows FOR UPDATE; UPDATE 2 rows; INSERT 2 entries; COMMIT, through payq's Transaction "
           "like payq's own transfers (BEGIN travels with the first statement: 4 round trips)"}}},
        {"targets", {{"payq_fee_vs_raw_min", 0.8}, {"fee_hot_vs_no_fee_min", 0.7}}},
        {"results", results},
        {"targets_met", met},
        {"audit_ok", audit.ok()},
        {"resident_kib", bench::resident_kib()}};
    std::cout << out.dump(2) << std::endl;
    return audit.ok() ? 0 : 1;
  } catch (const std::exception& e) {
    std::cerr << "payq_bench_ledger: " << e.what() << std::endl;
    return 2;
  }
}

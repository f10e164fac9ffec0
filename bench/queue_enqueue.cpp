// Enqueue rates (one task per transaction, batches through
// Outbox::enqueue_batch, a raw COPY for scale) and the claim's cost against
// what the table holds.
#include <pqxx/result>
#include <pqxx/stream_to>
#include <pqxx/transaction>

#include "payq/outbox.hpp"
#include "payq/worker.hpp"
#include "queue_bench.hpp"

namespace payq::queue_bench {

namespace {

// A raw enqueue writes the same row into payq's task table that
// Outbox::enqueue writes, without payq's validation, unique-key and queue
// upserts.
const Statement raw_enqueue_one{"bench_raw_enqueue_one", R"sql(
INSERT INTO @schema@.task (id, queue, kind, payload, state, attempt_max, timeout_ms, idempotency_key)
SELECT n.id, 'default', $1, $2::jsonb, 'pending', 10, 60000, 'task:' || n.id
FROM (SELECT nextval('@schema@.task_id_seq') AS id) n)sql"};

const Statement raw_enqueue_many{"bench_raw_enqueue_many", R"sql(
INSERT INTO @schema@.task (id, queue, kind, payload, state, attempt_max, timeout_ms, idempotency_key)
SELECT n.id, 'default', $1, n.payload, 'pending', 10, 60000, 'task:' || n.id
FROM (SELECT nextval('@schema@.task_id_seq') AS id, p AS payload FROM jsonb_array_elements($2::jsonb) p) n)sql"};

const Statement ids_reserve{"bench_ids_reserve", R"sql(
SELECT nextval('@schema@.task_id_seq') AS id FROM generate_series(1, $1::integer))sql"};

// Finished tasks as a worker leaves them (kept prune_after_ms, 7 days by
// default), to show what the claim costs as the table grows.
const Statement payq_prefill_finished{"bench_payq_prefill_finished", R"sql(
INSERT INTO @schema@.task (id, queue, kind, payload, state, attempt, attempt_max, timeout_ms, idempotency_key, result,
                           finished_at)
SELECT n.id, 'default', 'bench.noop', jsonb_build_object('n', n.g), 'succeeded', 1, 10, 60000, 'task:' || n.id,
       'null', now()
FROM (SELECT nextval('@schema@.task_id_seq') AS id, g FROM generate_series(1, $1::bigint) g) n)sql"};

TaskSpec noop_spec(std::int64_t n) {
  TaskSpec spec;
  spec.kind = task_kind_noop;
  spec.payload_json = "{\"n\":" + std::to_string(n) + "}";
  return spec;
}

std::string payload_array(std::int64_t first, int count) {
  std::string out = "[";
  for (int i = 0; i < count; ++i) out += (i ? ",{\"n\":" : "{\"n\":") + std::to_string(first + i) + "}";
  return out + "]";
}

// One COPY of `rows` tasks into payq's task table, ids drawn from its
// sequence first (the idempotency key is derived from the id).
void copy_tasks(Connection& connection, int rows, std::int64_t first_n) {
  pqxx::work work(connection.raw());
  const pqxx::result ids = work.exec_params(sql_expand_schema(ids_reserve.sql, connection.schema()), rows);
  const std::vector<std::string> columns = {"id",    "queue",       "kind",       "payload",
                                            "state", "attempt_max", "timeout_ms", "idempotency_key"};
  pqxx::stream_to stream(work, connection.schema() + ".task", columns);
  std::int64_t n = first_n;
  for (const auto& row : ids) {
    const auto id = row[0].as<std::int64_t>();
    stream << std::make_tuple(id, std::string("default"), std::string(task_kind_noop),
                              "{\"n\":" + std::to_string(n++) + "}", std::string("pending"), 10, 60000,
                              "task:" + std::to_string(id));
  }
  stream.complete();
  work.commit();
}

double rate_of(const bench::RunResult& result, int tasks_per_operation) {
  return rounded(result.per_second() * tasks_per_operation, 1);
}

json enqueue_single(Database& db, const Options& o) {
  const std::chrono::milliseconds duration(o.enqueue_duration_ms);
  json rows = json::array();
  for (int clients : o.enqueue_clients) {
    payq_reset(db);
    const auto payq = bench::run_clients(clients, duration, [&](int index) -> std::function<bool()> {
      auto counter = std::make_shared<std::int64_t>(index * 1'000'000'000LL);
      return [&db, counter] {
        db.transact([&](Transaction& tx) { Outbox(tx).enqueue(noop_spec((*counter)++)); });
        return true;
      };
    });
    payq_reset(db);
    const auto payq_notify = bench::run_clients(clients, duration, [&](int index) -> std::function<bool()> {
      auto counter = std::make_shared<std::int64_t>(index * 1'000'000'000LL);
      return [&db, counter] {
        db.transact([&](Transaction& tx) { Outbox(tx).enqueue(noop_spec((*counter)++)); });
        notify_queue(db, "default");
        return true;
      };
    });
    payq_reset(db);
    const auto raw = bench::run_clients(clients, duration, [&](int index) -> std::function<bool()> {
      auto connection = raw_connection(db);
      auto counter = std::make_shared<std::int64_t>(index * 1'000'000'000LL);
      return [connection, counter] {
        Transaction tx(*connection);
        tx.exec(raw_enqueue_one, {task_kind_noop, "{\"n\":" + std::to_string((*counter)++) + "}"});
        tx.commit();
        return true;
      };
    });
    json row = {{"clients", clients},
                {"payq_enqueue_per_s", rate_of(payq, 1)},
                {"payq_enqueue_then_notify_queue_per_s", rate_of(payq_notify, 1)},
                {"raw_sql_insert_per_s", rate_of(raw, 1)}};
    row["ratio_payq_vs_raw"] = ratio_or_null(row["payq_enqueue_per_s"], row["raw_sql_insert_per_s"]);
    progress("enqueue single " + row.dump());
    rows.push_back(row);
  }
  return rows;
}

// Rounds alternate payq and the raw multi-row INSERT at each size.
json enqueue_batches(Database& db, const Options& o) {
  const std::chrono::milliseconds duration(o.enqueue_duration_ms);
  json rows = json::array();
  for (int size : o.enqueue_batch_sizes) {
    std::vector<double> payq_rounds, raw_rounds;
    for (int round = 0; round < o.rounds; ++round) {
      payq_reset(db);
      const auto payq = bench::run_clients(1, duration, [&](int) -> std::function<bool()> {
        auto counter = std::make_shared<std::int64_t>(0);
        return [&db, counter, size] {
          std::vector<TaskSpec> specs;
          specs.reserve(static_cast<std::size_t>(size));
          for (int i = 0; i < size; ++i) specs.push_back(noop_spec((*counter)++));
          db.transact([&](Transaction& tx) { Outbox(tx).enqueue_batch(specs); });
          return true;
        };
      });
      payq_rounds.push_back(rate_of(payq, size));
      payq_reset(db);
      const auto raw = bench::run_clients(1, duration, [&](int) -> std::function<bool()> {
        auto connection = raw_connection(db);
        auto counter = std::make_shared<std::int64_t>(0);
        return [connection, counter, size] {
          Transaction tx(*connection);
          tx.exec(raw_enqueue_many, {task_kind_noop, payload_array(*counter, size)});
          tx.commit();
          *counter += size;
          return true;
        };
      });
      raw_rounds.push_back(rate_of(raw, size));
    }
    json row = {{"batch_size", size},
                {"clients", 1},
                {"payq_enqueue_batch", spread(payq_rounds)},
                {"raw_sql_multi_row_insert", spread(raw_rounds)}};
    row["payq_enqueue_batch_per_s"] = row["payq_enqueue_batch"]["median"];
    row["ratio_payq_vs_raw"] = ratio_or_null(row["payq_enqueue_batch"]["median"], row["raw_sql_multi_row_insert"]["median"]);
    progress("enqueue batch " + json{{"batch_size", size},
                                     {"payq_per_s", row["payq_enqueue_batch"]["rounds"]},
                                     {"raw_per_s", row["raw_sql_multi_row_insert"]["rounds"]}}.dump());
    rows.push_back(row);
  }
  return rows;
}

json enqueue_copy(Database& db, const Options& o) {
  payq_reset(db);
  const int rows = o.copy_rows;
  const auto copy = bench::run_clients(1, std::chrono::milliseconds(o.enqueue_duration_ms),
                                       [&](int) -> std::function<bool()> {
                                         auto connection = raw_connection(db);
                                         auto counter = std::make_shared<std::int64_t>(0);
                                         return [connection, counter, rows] {
                                           copy_tasks(*connection, rows, *counter);
                                           *counter += rows;
                                           return true;
                                         };
                                       });
  json out = {{"rows_per_copy", o.copy_rows},
              {"clients", 1},
              {"copy_per_s", rate_of(copy, o.copy_rows)},
              {"path", "pqxx::stream_to (COPY payq.task (...) FROM STDIN), ids drawn from task_id_seq first, "
                       "no validation: the floor under any enqueue path, for scale"}};
  progress("enqueue raw copy " + out.dump());
  return out;
}

// Mean time of one Outbox::claim (claim_batch tasks, fast path), each
// claim rolled back so every one sees the same table.
double claim_ms_mean(Connection& connection, const Options& o) {
  const ClaimRequest request{"default", "bench-claim", o.claim_batch};
  double seconds = 0;
  for (int i = 0; i < o.claim_count; ++i) {
    Transaction tx(connection);
    const auto started = Clock::now();
    const std::size_t claimed = Outbox(tx).claim(request).size();
    seconds += std::chrono::duration<double>(Clock::now() - started).count();
    if (claimed != o.claim_batch) throw std::logic_error("claim took " + std::to_string(claimed) + " tasks");
    tx.rollback();
  }
  return seconds * 1000 / o.claim_count;
}

json claim_point(Database& db, const Options& o, std::int64_t pending, std::int64_t finished) {
  payq_prefill_tasks(db, pending);
  db.transact([&](Transaction& tx) { tx.exec(payq_prefill_finished, {std::to_string(finished)}); });
  db.transact([](Transaction& tx) { tx.exec_script("ANALYZE @schema@.task"); });
  Database::Lease pooled = db.acquire();
  // The same claim where the session keeps PostgreSQL's default
  // plan_cache_mode instead of the generic plans payq forces.
  const std::shared_ptr<Connection> custom = raw_connection(db);
  return {{"pending_rows", pending},
          {"finished_rows", finished},
          {"claim_ms_mean", rounded(claim_ms_mean(*pooled, o), 3)},
          {"claim_ms_mean_plan_cache_mode_auto", rounded(claim_ms_mean(*custom, o), 3)}};
}

}  // namespace

json enqueue_section(Database& db, const Options& o) {
  json out;
  out["duration_ms_per_point"] = o.enqueue_duration_ms;
  out["single_task_per_transaction"] = enqueue_single(db, o);
  out["batch_per_transaction"] = enqueue_batches(db, o);
  out["batch_method"] =
      "one client, Outbox::enqueue_batch of `batch_size` no-op tasks per transaction (db.transact), for "
      "duration_ms_per_point per round; rounds alternate payq and a raw multi-row INSERT ... SELECT FROM "
      "jsonb_array_elements into the same table";
  out["raw_copy_bulk_load"] = enqueue_copy(db, o);
  payq_reset(db);
  return out;
}

// The claim's cost against what the table holds: a small queue, the same
// with many finished tasks (kept prune_after_ms), and a large backlog.
json claim_section(Database& db, const Options& o) {
  const std::int64_t small = 1000;
  const std::int64_t big = o.claim_rows;
  json rows = json::array({claim_point(db, o, small, 0), claim_point(db, o, small, big), claim_point(db, o, big, 0)});
  json out = {{"claims_per_point", o.claim_count},
              {"claim_batch", o.claim_batch},
              {"method",
               "Outbox::claim (fast path) after ANALYZE, each claim rolled back; claim_ms_mean on a pooled payq "
               "connection (plan_cache_mode = force_generic_plan, as connection.cpp sets it), "
               "claim_ms_mean_plan_cache_mode_auto on a payq Connection after RESET plan_cache_mode"},
              {"results", rows},
              {"ratio_finished_rows_vs_small", ratio_or_null(rows[1]["claim_ms_mean"], rows[0]["claim_ms_mean"])},
              {"ratio_backlog_vs_small", ratio_or_null(rows[2]["claim_ms_mean"], rows[0]["claim_ms_mean"])}};
  progress("claim cost " + rows.dump());
  payq_reset(db);
  return out;
}

}  // namespace payq::queue_bench

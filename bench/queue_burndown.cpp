// Burn-downs of pre-inserted no-op tasks: payq's C++ worker against the
// hand-written loops of queue_raw.cpp, and payq's Python worker
// (bench/queue_python.py, a child process on the same server) against the
// C++ worker run right after it.
#include "queue_bench.hpp"

namespace payq::queue_bench {

namespace {

const char* mode_name(bool batched) { return batched ? "batched" : "synchronous"; }

std::vector<double> ratios(const std::vector<double>& numerators, const std::vector<double>& denominators) {
  std::vector<double> out;
  for (std::size_t i = 0; i < numerators.size() && i < denominators.size(); ++i) {
    out.push_back(denominators[i] > 0 ? rounded(numerators[i] / denominators[i], 3) : 0.0);
  }
  return out;
}

json burndown_point(Database& db, const Options& o, bool batched, int concurrency) {
  BurnConfig config = burn_config(o, concurrency, o.burn_tasks);
  config.batched = batched;
  std::vector<double> minimal, like, payq;
  bool verified = true;
  json payq_rounds = json::array();
  // Rounds alternate the three loops, so drifting load on shared cores
  // falls on all of them.
  for (int round = 0; round < o.rounds; ++round) {
    const json m = raw_burn_point(db, RawLoop::minimal, config);
    const json l = raw_burn_point(db, RawLoop::like_for_like, config);
    const json p = payq_burn_point(db, config);
    minimal.push_back(m["per_s"]);
    like.push_back(l["per_s"]);
    payq.push_back(p["per_s"]);
    verified = verified && m["verified"] == true && l["verified"] == true && p["verified"] == true &&
               p["timed_out"] == false;
    payq_rounds.push_back({{"per_s", p["per_s"]}, {"seconds", p["seconds"]}, {"worker", p["worker"]}});
  }
  json row = {{"completion", mode_name(batched)},
              {"concurrency", concurrency},
              {"payq_cpp_handler", spread(payq)},
              {"raw_like_for_like", spread(like)},
              {"raw_minimal", spread(minimal)}};
  row["ratio_payq_vs_like_for_like"] = ratio_or_null(row["payq_cpp_handler"]["median"], row["raw_like_for_like"]["median"]);
  row["ratio_payq_vs_like_for_like_per_round"] = ratios(payq, like);
  row["ratio_payq_vs_minimal"] = ratio_or_null(row["payq_cpp_handler"]["median"], row["raw_minimal"]["median"]);
  row["verified"] = verified;
  row["payq_rounds"] = payq_rounds;
  progress("burn-down " + json{{"completion", mode_name(batched)},
                               {"concurrency", concurrency},
                               {"payq_per_s", row["payq_cpp_handler"]["rounds"]},
                               {"like_for_like_per_s", row["raw_like_for_like"]["rounds"]},
                               {"minimal_per_s", row["raw_minimal"]["rounds"]}}.dump());
  return row;
}

// One Python burn-down (a child process, one concurrency); {} when it failed.
json python_run(Database& db, const Options& o, int concurrency, bool batched, json& failure) {
  std::vector<std::string> argv = {o.python, o.python_script, "--dsn", db.dsn(), "--schema", db.schema(),
                                   "--tasks", std::to_string(o.burn_tasks), "--concurrency",
                                   std::to_string(concurrency), "--claim-batch", std::to_string(o.claim_batch)};
  if (batched) argv.push_back("--batched");
  const ChildResult child = child_run(argv);
  if (child.exit_status != 0) {
    failure = {{"failed", "python exited with status " + std::to_string(child.exit_status)},
               {"output", child.out.substr(0, 2000)}};
    return nullptr;
  }
  return json::parse(child.out);
}

}  // namespace

json burndown_section(Database& db, const Options& o) {
  json rows = json::array();
  for (const bool batched : {false, true}) {
    for (int concurrency : o.burn_concurrency) rows.push_back(burndown_point(db, o, batched, concurrency));
  }
  return {{"tasks", o.burn_tasks},
          {"claim_batch", o.claim_batch},
          {"rounds", o.rounds},
          {"figure",
           "per side the median of the rounds, with min, max and each round; rounds alternate raw minimal, raw "
           "like-for-like, payq. Targets read ratio_payq_vs_like_for_like (synchronous); the minimal loop and the "
           "batched ratios are information"},
          {"handler", "C++ FunctionHandler returning Outcome{success}"},
          {"completion_modes",
           {{"synchronous",
             "the default (money-moving kinds): fenced completion per task, its own transaction; raw loops: one "
             "completion statement per task, each its own transaction"},
            {"batched",
             "opt-in for idempotent kinds (HandlerOptions::batched_completion): successes completed together in "
             "one fenced statement; raw loops: one completion statement per claimed batch"}}},
          {"worker_options", "listen on, maintenance on, poll_interval 1000 ms, log lines written to /dev/null"},
          {"raw_like_for_like", raw_like_for_like_description},
          {"raw_minimal", raw_minimal_description},
          {"results", rows}};
}

json python_section(Database& db, const Options& o) {
  if (o.python_script.empty()) return {{"skipped", "no --python-script given"}};
  json results = json::array();
  json about;
  for (const bool batched : {false, true}) {
    for (int concurrency : o.burn_concurrency) {
      BurnConfig config = burn_config(o, concurrency, o.burn_tasks);
      config.batched = batched;
      std::vector<double> python, cpp;
      bool verified = true;
      json failure;
      for (int round = 0; round < o.rounds && failure.is_null(); ++round) {
        progress("python burn-down at concurrency " + std::to_string(concurrency) + ", " + mode_name(batched) +
                 ", round " + std::to_string(round + 1) + ": " + o.python + " " + o.python_script);
        json doc = python_run(db, o, concurrency, batched, failure);
        if (doc.is_null()) break;
        const json& run = doc["results"][0];
        // The C++ run right after it: on shared cores the ratio compares
        // neighbours in time.
        const json c = payq_burn_point(db, config);
        python.push_back(run["per_s"]);
        cpp.push_back(c["per_s"]);
        verified = verified && run["verified"] == true && run["timed_out"] == false && c["verified"] == true;
        doc.erase("results");
        about = doc;
      }
      json row = {{"completion", mode_name(batched)}, {"concurrency", concurrency}};
      if (!failure.is_null()) {
        row.update(failure);
        results.push_back(row);
        continue;
      }
      row["python_handler"] = spread(python);
      row["cpp_handler_adjacent"] = spread(cpp);
      row["ratio_python_vs_cpp"] = ratio_or_null(row["python_handler"]["median"], row["cpp_handler_adjacent"]["median"]);
      row["ratio_python_vs_cpp_per_round"] = ratios(python, cpp);
      row["verified"] = verified;
      progress("python " + json{{"completion", mode_name(batched)},
                                {"concurrency", concurrency},
                                {"python_per_s", row["python_handler"]["rounds"]},
                                {"cpp_per_s", row["cpp_handler_adjacent"]["rounds"]}}.dump());
      results.push_back(row);
    }
  }
  payq_reset(db);
  about.erase("completion");
  about["rounds"] = o.rounds;
  about["comparison"] =
      "each Python run is followed at once by a C++ run at the same concurrency on the same rows; the ratio is "
      "median over median";
  about["results"] = results;
  return about;
}

}  // namespace payq::queue_bench

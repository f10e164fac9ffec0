// Issue 16's targets read from the queue bench's JSON document, and the
// short human summary printed to stderr beside it.
#include <cmath>
#include <cstdio>
#include <iostream>

#include "queue_bench.hpp"

namespace payq::queue_bench {

namespace {

// `figure` is a spread ({median, min, max, rounds}) or a plain number;
// `verified` is the measurement's own check (every task done, rows as
// expected): a figure from a run that failed it meets nothing.
json target(const std::string& name, const std::string& rule, const json& figure, double threshold, bool at_least,
            const json& verified = true) {
  const json value = figure.is_object() ? figure.value("median", json(nullptr)) : figure;
  json out = {{"target", name}, {"rule", rule}, {"value", value}};
  if (figure.is_object() && figure.contains("min")) out["spread"] = {figure["min"], figure["max"]};
  out["met"] = value.is_number() ? json(at_least ? value.get<double>() >= threshold : value.get<double>() <= threshold)
                                 : json(nullptr);
  if (verified != true) {
    out["verified"] = false;
    if (value.is_number()) out["met"] = false;
  }
  return out;
}

json information(const std::string& name, const json& value) { return {{"information", name}, {"value", value}}; }

const json* find_row(const json& rows, const std::string& completion, int concurrency) {
  for (const auto& row : rows) {
    if (row.value("completion", "") == completion && row.value("concurrency", -1) == concurrency) return &row;
  }
  return nullptr;
}

// A rate as 12,345; a ratio as 0.85.
std::string figure_text(const json& value) {
  if (!value.is_number()) return "not measured";
  const double v = value.get<double>();
  char buffer[64];
  if (std::fabs(v) < 100 && v != std::floor(v)) {
    std::snprintf(buffer, sizeof buffer, "%.3g", v);
    return buffer;
  }
  std::string digits = std::to_string(static_cast<long long>(std::llround(v)));
  for (int i = static_cast<int>(digits.size()) - 3; i > 0; i -= 3) digits.insert(static_cast<std::size_t>(i), ",");
  return digits;
}

}  // namespace

json targets_of(const json& doc) {
  json out = json::array();
  if (doc.contains("burn_down")) {
    const json& rows = doc["burn_down"]["results"];
    for (int c : {8, 32}) {
      if (const json* row = find_row(rows, "batched", c)) {
        out.push_back(target("batched completion, tasks/s at " + std::to_string(c) + " threads", ">= 50,000",
                             (*row)["payq_cpp_handler"], 50'000, true, (*row)["verified"]));
      }
    }
    if (const json* row = find_row(rows, "synchronous", 32)) {
      out.push_back(target("per-task (synchronous) completion, tasks/s at 32 threads", ">= 12,000",
                           (*row)["payq_cpp_handler"], 12'000, true, (*row)["verified"]));
    }
    for (const auto& row : rows) {
      if (row["completion"] != "synchronous") continue;
      out.push_back(target("synchronous vs like-for-like raw loop at " + row["concurrency"].dump() + " threads",
                           ">= 0.85", row["ratio_payq_vs_like_for_like"], 0.85, true, row["verified"]));
    }
  }
  if (doc.contains("enqueue")) {
    for (const auto& row : doc["enqueue"]["batch_per_transaction"]) {
      if (row["batch_size"].get<int>() < 1000) continue;
      out.push_back(target("bulk enqueue (Outbox::enqueue_batch), tasks/s in batches of " + row["batch_size"].dump(),
                           ">= 150,000", row["payq_enqueue_batch"], 150'000, true));
    }
  }
  if (doc.contains("python_handler") && doc["python_handler"].contains("results")) {
    for (const auto& row : doc["python_handler"]["results"]) {
      out.push_back(target("Python vs C++ handler, " + row["completion"].get<std::string>() + " at " +
                               row["concurrency"].dump() + " threads",
                           ">= 0.8", row.value("ratio_python_vs_cpp", json(nullptr)), 0.8, true,
                           row.value("verified", json(false))));
    }
  }
  if (doc.contains("table_size")) {
    const json& t = doc["table_size"];
    out.push_back(target("claim rate with " + t["finished_rows"]["finished_rows"].dump() +
                             " finished rows vs an empty table",
                         ">= 0.8", t["finished_rows"]["ratio_finished_rows_vs_empty"], 0.8, true,
                         t["finished_rows"]["verified"]));
    out.push_back(target("claim rate with an old snapshot held vs without", ">= 0.8",
                         t["old_snapshot"]["ratio_with_vs_without"], 0.8, true, t["old_snapshot"]["verified"]));
  }
  if (doc.contains("latency")) {
    out.push_back(target("enqueue-to-start latency p50, ms", "<= 5", doc["latency"]["p50_ms"], 5.0, false));
  }
  if (doc.contains("memory")) {
    const json& m = doc["memory"];
    out.push_back(target("worker RSS growth after warm-up, %", "< 10",
                         m.value("rss_growth_after_warmup_pct", json(nullptr)), 10.0 - 1e-9, false,
                         m.value("verified", json(false))));
    const json mib = m.contains("rss_kib_max") ? json(rounded(m["rss_kib_max"].get<double>() / 1024.0, 1)) : json(nullptr);
    out.push_back(target("worker RSS max, MiB, " + m.value("concurrency", json(0)).dump() + " C++ handlers", "< 150",
                         mib, 150.0 - 1e-9, false));
  }
  return out;
}

// Ratios read as information, without a verdict.
json information_of(const json& doc) {
  json out = json::array();
  if (doc.contains("burn_down")) {
    for (const auto& row : doc["burn_down"]["results"]) {
      const std::string where = row["completion"].get<std::string>() + " at " + row["concurrency"].dump() + " threads";
      if (row["completion"] == "batched") {
        out.push_back(information("batched vs like-for-like raw loop, " + where, row["ratio_payq_vs_like_for_like"]));
      }
      out.push_back(information("payq vs minimal flip loop, " + where, row["ratio_payq_vs_minimal"]));
      // The worker may group synchronous successes of several threads into
      // one statement; the raw loop that groups is the batched one.
      const json* batched = find_row(doc["burn_down"]["results"], "batched", row["concurrency"].get<int>());
      if (row["completion"] == "synchronous" && batched != nullptr) {
        out.push_back(information("synchronous vs batched like-for-like raw loop at " + row["concurrency"].dump() +
                                      " threads",
                                  ratio_or_null(row["payq_cpp_handler"]["median"],
                                                (*batched)["raw_like_for_like"]["median"])));
      }
    }
  }
  return out;
}

void print_summary(const json& doc) {
  const json& c = doc["conditions"];
  std::cerr << "\n== payq queue bench: fsync " << (c["fsync"] == true ? "on" : "off") << ", PostgreSQL "
            << c["postgresql"].get<std::string>() << ", " << c["cores"].dump() << " cores, " << c["tasks"].dump()
            << " tasks, claim batch " << c["claim_batch"].dump() << ", " << c["rounds"].dump() << " rounds, "
            << c["date"].get<std::string>() << ", commit " << c["git_commit"].get<std::string>() << " ==\n";
  int met = 0, missed = 0, unmeasured = 0;
  for (const auto& t : doc["targets"]) {
    std::string figure = figure_text(t["value"]);
    if (t.contains("spread")) figure += " (" + figure_text(t["spread"][0]) + " to " + figure_text(t["spread"][1]) + ")";
    const char* verdict = t["met"].is_null()         ? "not measured"
                          : t.contains("verified") ? "NOT MET (run failed its check)"
                          : t["met"] == true       ? "met"
                                                   : "NOT MET";
    if (t["met"].is_null()) {
      ++unmeasured;
    } else if (t["met"] == true) {
      ++met;
    } else {
      ++missed;
    }
    char line[512];
    std::snprintf(line, sizeof line, "  %-68s %-26s %-10s %s\n", t["target"].get<std::string>().c_str(),
                  figure.c_str(), t["rule"].get<std::string>().c_str(), verdict);
    std::cerr << line;
  }
  for (const auto& i : doc.value("information", json::array())) {
    char line[512];
    std::snprintf(line, sizeof line, "  (information) %-68s %s\n", i["information"].get<std::string>().c_str(),
                  figure_text(i["value"]).c_str());
    std::cerr << line;
  }
  std::cerr << "  " << met << " met, " << missed << " not met" << (unmeasured ? ", " : "")
            << (unmeasured ? std::to_string(unmeasured) + " not measured" : "") << "; figures are medians over "
            << c["rounds"].dump() << " rounds (min to max in brackets); run took "
            << figure_text(doc["run_seconds"]) << " s\n";
}

}  // namespace payq::queue_bench

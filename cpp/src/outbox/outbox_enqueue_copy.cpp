// Enqueue by COPY: a large batch written as COPY rows instead of one JSON
// statement. The specs are validated by enqueue_batch before this runs, and
// everything around the write (keys taken, settlements checked, holds owned)
// is the same code for both paths; only how the rows reach the task table
// differs. See docs/outbox.md, "Enqueue".
#include <charconv>
#include <cstdio>
#include <ctime>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "outbox/outbox_internal.hpp"
#include "outbox/outbox_statements.hpp"
#include "payq/error.hpp"

namespace payq::outbox_detail {

namespace {

// A timestamptz in PostgreSQL's input format, from microseconds since 1970
// in UTC (run_at is never before 1970: now plus a non-negative delay).
void timestamp_append(std::string& out, std::int64_t us) {
  const std::time_t seconds = static_cast<std::time_t>(us / 1'000'000);
  std::tm utc{};
  if (us < 0 || gmtime_r(&seconds, &utc) == nullptr) throw DatabaseError("server time out of range for run_at");
  char text[48];
  const int n = std::snprintf(text, sizeof text, "%04d-%02d-%02d %02d:%02d:%02d.%06lld+00", utc.tm_year + 1900,
                              utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec,
                              static_cast<long long>(us % 1'000'000));
  out.append(text, static_cast<std::size_t>(n));
}

std::int64_t i64_parse(const std::string& text) {
  std::int64_t value = 0;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (ec != std::errc() || ptr != end) throw DatabaseError("not a task id from the database: " + text);
  return value;
}

// Fields of one row, each followed by a tab, the last by a newline.
class RowWriter {
 public:
  explicit RowWriter(std::string& out) : out_(out) {}
  void text(std::string_view value) {
    separate();
    copy_text_append(out_, value);
  }
  void text_or_null(const std::optional<std::string>& value) {
    separate();
    copy_text_append(out_, value);
  }
  void number(std::int64_t value) {
    separate();
    out_.append(std::to_string(value));
  }
  void timestamp(std::int64_t us) {
    separate();
    timestamp_append(out_, us);
  }
  void number_or_null(const std::optional<std::int64_t>& value) {
    if (value) {
      number(*value);
    } else {
      text_or_null(std::nullopt);
    }
  }
  void end() { out_.push_back('\n'); }

 private:
  void separate() {
    if (!first_) out_.push_back('\t');
    first_ = false;
  }
  std::string& out_;
  bool first_ = true;
};

// The trace_context column as the statement stores it.
std::optional<std::string> trace_context_json(const TaskSpec& spec) {
  if (!spec.trace_context) return std::nullopt;
  nlohmann::json context = {{"traceparent", spec.trace_context->traceparent}};
  if (!spec.trace_context->tracestate.empty()) context["tracestate"] = spec.trace_context->tracestate;
  return context.dump();
}

void row_append(std::string& out, const TaskSpec& spec, std::int64_t id, std::int64_t now_us) {
  // The columns of outbox_sql::task_copy, in its order.
  RowWriter row(out);
  row.number(id);
  row.text(spec.queue);
  row.text(spec.kind);
  row.text(spec.payload_json);  // checked JSON; jsonb normalises it as it does the statement's
  row.text(spec.held ? "held" : "pending");
  row.number(spec.priority);
  row.timestamp(now_us + spec.delay_ms * 1000);  // run_at, as the statement's now() + delay
  row.number(spec.attempt_max);
  row.number(spec.timeout_ms);
  row.text_or_null(spec.partition_key);
  row.text(spec.idempotency_key ? *spec.idempotency_key : "task:" + std::to_string(id));
  row.number_or_null(spec.amount_minor);
  row.text_or_null(spec.currency);
  row.number_or_null(spec.settlement.hold_id);
  row.number_or_null(spec.settlement.capture_account_id);
  row.number_or_null(spec.settlement.reverse_transaction_id);
  row.text_or_null(spec.settlement.followup_json);
  row.text_or_null(trace_context_json(spec));
  row.end();
}

}  // namespace

bool enqueue_by_copy(const Executor& executor, const std::vector<TaskSpec>& specs) {
  if (specs.size() < task_batch_copy_count_min || !executor.copy_supported()) return false;
  for (const TaskSpec& spec : specs) {
    // A unique key's conflict is handled per row by the statement; an
    // encrypted payload is sealed to its id in the statement's items.
    if (spec.unique_key || spec.encrypt) return false;
  }
  return true;
}

std::vector<std::int64_t> tasks_copy_in(Executor& executor, const std::vector<TaskSpec>& specs,
                                        const std::vector<std::size_t>& which) {
  if (which.empty()) return {};
  std::map<std::string, bool> partitioned_by_queue;
  for (const std::size_t i : which) {
    partitioned_by_queue[specs[i].queue] |= specs[i].partition_key.has_value();
  }
  std::vector<std::string> queues, partitioned_flags, partitioned_queues;
  for (const auto& [queue, partitioned] : partitioned_by_queue) {
    queues.push_back(queue);
    partitioned_flags.push_back(partitioned ? "true" : "false");
    if (partitioned) partitioned_queues.push_back(queue);
  }
  Rows prepared = executor.exec(outbox_sql::enqueue_copy_prepare,
                                {array_text_quoted(queues), array_text_quoted(partitioned_flags),
                                 array_text_quoted(partitioned_queues), std::to_string(which.size())});
  const std::vector<std::string> id_texts = detail::array_elements(prepared.text(0, "ids"));
  if (id_texts.size() != which.size()) throw DatabaseError("the database drew the wrong number of task ids");
  const std::int64_t now_us = prepared.i64(0, "now_us");

  std::vector<std::int64_t> ids;
  ids.reserve(which.size());
  std::string data;
  data.reserve(which.size() * 160);
  for (std::size_t k = 0; k < which.size(); ++k) {
    ids.push_back(i64_parse(id_texts[k]));
    row_append(data, specs[which[k]], ids.back(), now_us);
  }
  executor.copy_in(outbox_sql::task_copy, data);
  return ids;
}

}  // namespace payq::outbox_detail

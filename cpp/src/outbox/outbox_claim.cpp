// Claiming: SKIP LOCKED batches under a lease, with queue limits that hold
// across every worker because a limited queue's claims take its row lock.
#include <set>

#include <nlohmann/json.hpp>

#include "outbox/outbox_internal.hpp"
#include "outbox/outbox_statements.hpp"
#include "payq/error.hpp"
#include "common/text_internal.hpp"

namespace payq {

using namespace outbox_detail;

namespace {

// Locked candidates scanned per claim, relative to what is wanted: enough to
// skip tasks of busy partitions or over the money window without scanning
// the whole queue.
constexpr std::size_t claim_scan_factor = 4;
constexpr std::size_t claim_scan_count_max = 4000;

std::set<std::string> partitions_from(const std::string& array_text) {
  const std::vector<std::string> keys = detail::array_elements(array_text);
  return {keys.begin(), keys.end()};
}

std::vector<Task> tasks_from(const Rows& rows) {
  std::vector<Task> tasks;
  tasks.reserve(rows.size());
  for (std::size_t i = 0; i < rows.size(); ++i) tasks.push_back(task_from(rows, i));
  return tasks;
}

void claim_validate(const ClaimRequest& request) {
  if (request.count_max == 0 || request.count_max > claim_batch_count_max) {
    throw InvalidArgument("a claim takes 1 to " + std::to_string(claim_batch_count_max) + " tasks");
  }
  text_bounded(request.worker_id, 200, "worker id");
}

}  // namespace

std::vector<Task> Outbox::claim(const ClaimRequest& request) {
  if (auto tasks = claim_plain(request)) return std::move(*tasks);
  return claim_limited(request);
}

std::optional<std::vector<Task>> Outbox::claim_plain(const ClaimRequest& request,
                                                     const std::optional<ClaimKey>& after) {
  claim_validate(request);
  Params params{request.queue, std::to_string(request.count_max), request.worker_id};
  if (after) {
    params.push_back(std::to_string(after->priority));
    params.push_back(after->run_at);
    params.push_back(std::to_string(after->id));
  }
  Rows rows = executor_.exec(after ? outbox_sql::claim_plain_after : outbox_sql::claim_plain, params);
  if (rows.boolean(0, "queue_limited") && !rows.boolean(0, "queue_paused")) return std::nullopt;
  std::vector<Task> tasks;
  tasks.reserve(rows.size());
  for (std::size_t i = 0; i < rows.size(); ++i) {
    if (!rows.is_null(i, "id")) tasks.push_back(task_from(rows, i));
  }
  return tasks;
}

std::vector<Task> Outbox::claim_limited(const ClaimRequest& request) {
  claim_validate(request);
  // A limited queue: lock its row, then read usage with a fresh snapshot.
  Rows locked = executor_.exec(outbox_sql::queue_lock, {request.queue});
  if (locked.boolean(0, "paused")) return {};
  const auto concurrency_max = locked.i64_or_null(0, "concurrency_max");
  const auto rate_count_max = locked.i64_or_null(0, "rate_count_max");
  const auto amount_max = locked.i64_or_null(0, "amount_max_minor");
  const auto amount_currency = locked.at(0, "amount_currency");
  Rows usage = executor_.exec(outbox_sql::queue_usage, {request.queue, locked.at(0, "rate_window_ms"),
                                                        locked.at(0, "amount_window_ms")});
  std::int64_t room = static_cast<std::int64_t>(request.count_max);
  if (concurrency_max) room = std::min(room, *concurrency_max - usage.i64(0, "running"));
  if (rate_count_max) room = std::min(room, *rate_count_max - usage.i64(0, "rate_used"));
  if (room <= 0) return {};
  std::int64_t amount_room = amount_max ? *amount_max - usage.i64(0, "amount_used") : 0;
  std::set<std::string> partitions_busy = partitions_from(usage.text(0, "partitions_running"));

  const std::size_t scan = std::min(claim_scan_count_max, static_cast<std::size_t>(room) * claim_scan_factor);
  Rows candidates = executor_.exec(outbox_sql::claim_candidates,
                                   {request.queue, std::to_string(scan), usage.text(0, "partitions_running")});
  std::vector<std::int64_t> picked;
  for (std::size_t i = 0; i < candidates.size() && static_cast<std::int64_t>(picked.size()) < room; ++i) {
    const auto partition = candidates.at(i, "partition_key");
    if (partition && partitions_busy.count(*partition)) continue;
    if (amount_max) {
      // Money limits count tasks in the queue's currency; a task without an
      // amount moves no money.
      const auto amount = candidates.i64_or_null(i, "amount_minor");
      if (amount && candidates.at(i, "currency") == amount_currency) {
        if (*amount > amount_room) continue;
        amount_room -= *amount;
      }
    }
    if (partition) partitions_busy.insert(*partition);
    picked.push_back(candidates.i64(i, "id"));
  }
  if (picked.empty()) return {};
  std::string ids = "{";
  for (std::size_t i = 0; i < picked.size(); ++i) ids += (i ? "," : "") + std::to_string(picked[i]);
  ids += "}";
  const bool record_starts = rate_count_max.has_value() || amount_max.has_value();
  return tasks_from(executor_.exec(outbox_sql::claim_mark, {ids, request.worker_id, record_starts ? "t" : "f"}));
}

ClaimCursor::ClaimCursor(std::chrono::milliseconds full_scan_interval) : full_scan_interval_(full_scan_interval) {
  if (full_scan_interval_.count() < 0) throw InvalidArgument("a claim cursor's full scan interval must not be negative");
}

std::optional<ClaimKey> ClaimCursor::start(std::chrono::steady_clock::time_point now) const {
  if (!key_ || !full_scan_at_ || now - *full_scan_at_ >= full_scan_interval_) return std::nullopt;
  return key_;
}

void ClaimCursor::record(const ClaimRequest& request, const std::optional<ClaimKey>& after,
                         const std::vector<Task>& tasks, std::chrono::steady_clock::time_point now) {
  if (!after) full_scan_at_ = now;
  // Fewer tasks than asked: nothing more is runnable past the cursor (or
  // past the front), so the next claim scans from the front, where tasks
  // that sort earlier may have become runnable or been committed since.
  if (tasks.size() < request.count_max) {
    key_.reset();
    return;
  }
  const Task& last = tasks.back();  // claims come back in claim order
  key_ = ClaimKey{last.priority, last.run_at, last.id};
}

void Outbox::give_back(std::int64_t task_id, std::int64_t lease_token) {
  executor_.exec(outbox_sql::give_back, {std::to_string(task_id), std::to_string(lease_token)});
}

}  // namespace payq

// The worker as a whole: its options split into the parts' options, the
// parts (claim loop, listener, maintenance with its services) built from
// them, and the lifecycle of their threads: start, stop, join.
#include "payq/worker.hpp"

#include <pthread.h>

#include <algorithm>
#include <stdexcept>
#include <system_error>

#include <nlohmann/json.hpp>

#include "payq/error.hpp"
#include "payq/vocabulary.hpp"
#include "worker/claim_loop.hpp"
#include "worker/listener.hpp"
#include "worker/maintenance.hpp"
#include "worker/services.hpp"
#include "worker/worker_internal.hpp"

namespace payq {
namespace {

// Stands in for an empty worker_id while options are validated: the worker
// fills in worker_id_default() only when it is built.
const char* const worker_id_for_validation = "worker";

ClaimLoopOptions claim_loop_options(const WorkerOptions& o) {
  ClaimLoopOptions c;
  c.queues = o.queues;
  c.claim_batch_count_max = o.claim_batch_count_max;
  c.poll_interval = o.poll_interval;
  c.worker_id = o.worker_id.empty() ? worker_id_for_validation : o.worker_id;
  return c;
}

ListenerOptions listener_options(const WorkerOptions& o) {
  ListenerOptions l;
  for (const auto& queue : o.queues) l.queues.insert(queue.first);
  // Notifications sent while no session listened were lost: every thread
  // should look.
  l.listen_wake_count = o.concurrency;
  return l;
}

MaintenanceOptions maintenance_options(const WorkerOptions& o) {
  MaintenanceOptions m;
  m.worker_id = o.worker_id.empty() ? worker_id_for_validation : o.worker_id;
  m.interval = o.maintenance_interval;
  return m;
}

ServiceSchedule service_schedule(const WorkerOptions& o) {
  ServiceSchedule schedule;
  schedule.batch_count_max = o.maintenance_batch_count_max;
  return schedule;
}

PruneOptions prune_options(const WorkerOptions& o) {
  PruneOptions p;
  p.schedule = service_schedule(o);
  p.after_ms = o.prune_after_ms;
  return p;
}

InboxPruneOptions inbox_prune_options(const WorkerOptions& o) {
  InboxPruneOptions p;
  p.schedule = service_schedule(o);
  p.retention_ms = o.inbox_retention_ms;
  return p;
}

// The services in the order they run at a tick, each with what follows its
// commit: the counter it feeds, and for the rescue a wake-up, since rescued
// tasks are pending again and idle threads may claim them now.
std::vector<MaintenanceStep> maintenance_steps(const WorkerOptions& o, WorkerCounters& counters, WakeTokens& wake) {
  auto counting = [](std::atomic<std::int64_t>& counter) {
    return [&counter](std::int64_t count) { counter += count; };
  };
  std::vector<MaintenanceStep> steps;
  const int concurrency = o.concurrency;
  steps.push_back({std::make_unique<LeaseRescueService>(LeaseRescueOptions{service_schedule(o)}),
                   [&counters, &wake, concurrency](std::int64_t count) {
                     counters.leases_rescued += count;
                     if (count > 0) wake.wake(static_cast<int>(std::min<std::int64_t>(count, concurrency)));
                   }});
  steps.push_back({std::make_unique<HoldExpiryService>(HoldExpiryOptions{service_schedule(o)}),
                   counting(counters.holds_expired)});
  steps.push_back({std::make_unique<PruneService>(prune_options(o)), counting(counters.tasks_pruned)});
  steps.push_back(
      {std::make_unique<InboxPruneService>(inbox_prune_options(o)), counting(counters.inbox_events_pruned)});
  if (o.cron) steps.push_back({std::make_unique<CronService>(), counting(counters.cron_tasks_enqueued)});
  if (o.maintenance_extra) steps.push_back({std::make_unique<ExtraService>(o.maintenance_extra), {}});
  return steps;
}

constexpr bool attempt_duration_bounds_agree() {
  for (std::size_t i = 0; i < attempt_duration_bounds_ms.size(); ++i) {
    if (attempt_duration_bounds_seconds[i] != static_cast<double>(attempt_duration_bounds_ms[i]) / 1000) return false;
  }
  return true;
}
static_assert(attempt_duration_bounds_agree(), "the seconds bounds are the millisecond bounds / 1000");
static_assert(service_batch_count_max == worker_maintenance_batch_count_max, "one bound for maintenance batches");

}  // namespace

// ---------------------------------------------------------------- options

void worker_options_validate(const WorkerOptions& o) {
  auto fail = [](const std::string& message) { throw InvalidArgument("worker options: " + message); };
  if (o.concurrency < 1 || o.concurrency > worker_concurrency_max) {
    fail("concurrency must be 1 to " + std::to_string(worker_concurrency_max));
  }
  if (o.shutdown_grace.count() < 0 || o.shutdown_grace > worker_shutdown_grace_max) {
    fail("shutdown_grace must be 0 to " + std::to_string(worker_shutdown_grace_max.count()) + " ms");
  }
  if (o.worker_id.size() > worker_id_bytes_max) {
    fail("worker_id is longer than " + std::to_string(worker_id_bytes_max) + " bytes");
  }
  claim_loop_options(o).validate();
  listener_options(o).validate();
  maintenance_options(o).validate();
  service_schedule(o).validate("maintenance");
  prune_options(o).validate();
  inbox_prune_options(o).validate();
}

// ---------------------------------------------------------------- counters

// Bucketed and summed at full precision: most handlers of a busy worker take
// well under a millisecond, which whole milliseconds would count as zero.
void WorkerCounters::attempt_duration_observe(std::chrono::nanoseconds duration) noexcept {
  const double seconds = std::chrono::duration<double>(duration).count();
  std::size_t bucket = 0;
  while (bucket < attempt_duration_bounds_seconds.size() && seconds > attempt_duration_bounds_seconds[bucket]) {
    ++bucket;
  }
  ++attempt_duration_counts[bucket];
  attempt_duration_ns_sum += duration.count();
  attempt_duration_ms_sum += std::chrono::duration_cast<std::chrono::milliseconds>(duration).count();
}

WorkerStats WorkerCounters::snapshot() const {
  WorkerStats s;
  s.claimed = claimed.load();
  s.succeeded = succeeded.load();
  s.retried = retried.load();
  s.failed = failed.load();
  s.unknown = unknown.load();
  s.unknown_kind = unknown_kind.load();
  s.handler_exceptions = handler_exceptions.load();
  s.completed_by_handler = completed_by_handler.load();
  s.batched_completions = batched_completions.load();
  s.async_started = async_started.load();
  s.async_abandoned = async_abandoned.load();
  s.queue_pauses = queue_pauses.load();
  s.lease_lost = lease_lost.load();
  s.given_back = given_back.load();
  s.complete_errors = complete_errors.load();
  s.database_errors = database_errors.load();
  s.in_flight = in_flight.load();
  s.maintenance_ticks = maintenance_ticks.load();
  s.maintenance_leader = maintenance_leader.load();
  s.leases_rescued = leases_rescued.load();
  s.holds_expired = holds_expired.load();
  s.tasks_pruned = tasks_pruned.load();
  s.inbox_events_pruned = inbox_events_pruned.load();
  s.cron_tasks_enqueued = cron_tasks_enqueued.load();
  for (const auto& count : attempt_duration_counts) s.attempt_duration_counts.push_back(count.load());
  s.attempt_duration_seconds_sum = static_cast<double>(attempt_duration_ns_sum.load()) / 1e9;
  s.attempt_duration_ms_sum = attempt_duration_ms_sum.load();
  return s;
}

// ---------------------------------------------------------------- parts

struct Worker::Parts {
  Parts(Database& database, HandlerRegistry& registry, const WorkerOptions& o)
      : log(o.worker_id, o.log_sink, o.log_debug),
        wake(o.concurrency, stop),
        claim_loop(database, registry, claim_loop_options(o), stop, wake, log, counters) {
    if (o.listen && database.listen_dsn()) {
      listener.emplace(database, listener_options(o), [this](int count) { wake.wake(count); }, stop, log);
    }
    if (o.maintenance) {
      maintenance.emplace(database, maintenance_options(o), maintenance_steps(o, counters, wake), stop, log,
                          counters);
    }
  }

  WorkerLog log;
  StopSignal stop;
  WakeTokens wake;
  WorkerCounters counters;
  ClaimLoop claim_loop;
  std::optional<Listener> listener;
  std::optional<Maintenance> maintenance;
};

// ---------------------------------------------------------------- lifecycle

Worker::Worker(Database& database, HandlerRegistry& registry, WorkerOptions options)
    : database_(database), options_(std::move(options)) {
  worker_options_validate(options_);
  if (options_.worker_id.empty()) options_.worker_id = worker_id_default();
  if (!options_.log_sink) options_.log_sink = worker_log_to_stderr;
  parts_ = std::make_unique<Parts>(database_, registry, options_);
}

Worker::~Worker() {
  request_stop();
  shutdown_wait();
}

void Worker::start() {
  std::unique_lock<std::mutex> lock(lifecycle_mutex_);
  if (started_) throw InvalidState("worker " + options_.worker_id + " was already started");
  started_ = true;
  WorkerLog& log = parts_->log;
  log.write("info", "worker_started",
            {{"concurrency", options_.concurrency},
             {"queues", options_.queues},
             {"listen", parts_->listener.has_value()},
             {"pooler", pooler_name(database_.pooler())},
             {"maintenance", options_.maintenance},
             {"schema", database_.schema()}});
  if (options_.listen && !database_.listen_dsn()) {
    log.write("info", "listen_unavailable",
              {{"reason", "behind a transaction-mode pooler without listen_dsn"},
               {"poll_interval_ms", options_.poll_interval.count()}});
  }
  // Named threads, so `top -H`, gdb and perf tell a worker's parts apart
  // (Linux keeps 15 characters of a name). A thread is counted once it
  // exists; it cannot uncount itself before that, as its exit takes the
  // lifecycle mutex this function holds. A part's body returns at stop;
  // anything it throws is a broken invariant, which stops the worker.
  auto spawn = [this](std::string name, const char* part, auto body) {
    threads_.emplace_back([this, name, part, body] {
      pthread_setname_np(pthread_self(), name.substr(0, 15).c_str());
      try {
        body();
      } catch (...) {
        thread_fatal(part);
      }
      std::lock_guard<std::mutex> exit_guard(lifecycle_mutex_);
      --threads_running_;
      lifecycle_cv_.notify_all();
    });
    ++threads_running_;
  };
  std::string refused;
  try {
    for (int i = 0; i < options_.concurrency; ++i) {
      spawn("payq-claim-" + std::to_string(i), "claimer", [this, i] { parts_->claim_loop.run(i); });
    }
    // The completer's writers (completer.hpp); at stop they end once
    // nothing waits, and claiming threads write what comes after.
    for (int i = 0; i < std::min(completer_writer_count_max, options_.concurrency); ++i) {
      spawn("payq-complete-" + std::to_string(i), "completer", [this] { parts_->claim_loop.complete_serve(); });
    }
    if (parts_->listener) spawn("payq-listen", "listener", [this] { parts_->listener->run(); });
    if (parts_->maintenance) {
      spawn("payq-maint", "maintenance", [this] {
        parts_->maintenance->run();
        parts_->counters.maintenance_leader = false;
      });
    }
    return;
  } catch (const std::system_error& e) {
    refused = e.what();
  }
  // The system refused a thread: stop the ones that started, then say so.
  lock.unlock();
  log.write("error", "worker_thread_refused", {{"error", refused}, {"threads_started", threads_.size()}});
  request_stop();
  shutdown_wait();
  throw ResourceExhausted("worker " + options_.worker_id + " could not start a thread (" + refused +
                          "); the threads it had started are stopped");
}

void Worker::run() {
  start();
  parts_->stop.wait();
  stop();
}

void Worker::request_stop() noexcept {
  if (!parts_->stop.request()) return;
  parts_->wake.stop_notify();
}

bool Worker::stop_requested() const noexcept { return parts_->stop.requested(); }

bool Worker::stop_wait_for(std::chrono::milliseconds timeout) { return parts_->stop.wait_for(timeout); }

void Worker::stop() {
  request_stop();
  {
    // A handler calling stop() would wait for its own thread forever.
    std::lock_guard<std::mutex> guard(lifecycle_mutex_);
    for (const auto& thread : threads_) {
      if (thread.get_id() == std::this_thread::get_id()) {
        throw InvalidState("Worker::stop() called from a worker thread; use request_stop()");
      }
    }
  }
  shutdown_wait();
  std::exception_ptr fatal;
  {
    std::lock_guard<std::mutex> guard(lifecycle_mutex_);
    fatal = std::exchange(fatal_error_, nullptr);
  }
  if (fatal) std::rethrow_exception(fatal);
}

// Waits for the threads (one caller joins, the others wait for it), logging
// once if in-flight handlers outlive the grace period.
void Worker::shutdown_wait() {
  std::unique_lock<std::mutex> lock(lifecycle_mutex_);
  if (!started_) return;
  if (joining_) {
    lifecycle_cv_.wait(lock, [&] { return joined_; });
    return;
  }
  joining_ = true;
  const bool within_grace =
      lifecycle_cv_.wait_for(lock, options_.shutdown_grace, [&] { return threads_running_ == 0; });
  if (!within_grace) {
    lock.unlock();
    parts_->log.write(
        "warning", "shutdown_grace_exceeded",
        {{"in_flight", parts_->counters.in_flight.load()}, {"grace_ms", options_.shutdown_grace.count()}});
    lock.lock();
    lifecycle_cv_.wait(lock, [&] { return threads_running_ == 0; });
  }
  std::vector<std::thread> threads = std::move(threads_);
  lock.unlock();
  for (auto& thread : threads) thread.join();
  lock.lock();
  joined_ = true;
  lifecycle_cv_.notify_all();
  lock.unlock();
  parts_->log.write("info", "worker_stopped", {{"given_back", parts_->counters.given_back.load()}});
}

void Worker::thread_fatal(const char* thread_name) noexcept {
  std::string message = "unknown exception";
  try {
    throw;
  } catch (const std::exception& e) {
    message = e.what();
  } catch (...) {
  }
  {
    std::lock_guard<std::mutex> guard(lifecycle_mutex_);
    if (!fatal_error_) fatal_error_ = std::current_exception();
  }
  parts_->log.write("error", "worker_thread_failed", {{"thread", thread_name}, {"error", message}});
  request_stop();
}

WorkerStats Worker::stats() const { return parts_->counters.snapshot(); }

}  // namespace payq

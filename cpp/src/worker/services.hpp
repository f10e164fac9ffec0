// The maintenance services: each one step of the elected leader's work, a
// small type with its options (named defaults, validated on construction).
// Maintenance (maintenance.hpp) runs each in a transaction of its own; a
// service knows nothing of the election, threads or the log, so a test runs
// one alone inside a transaction.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>

#include "payq/connection.hpp"

namespace payq {

// Bounds and defaults, named once.
inline constexpr std::int64_t service_batch_count_default = 1000;
inline constexpr std::int64_t service_batch_count_max = 100'000;
inline constexpr std::chrono::milliseconds service_interval_every_tick{0};
inline constexpr std::chrono::milliseconds service_interval_max{24LL * 3600 * 1000};
inline constexpr std::int64_t prune_after_ms_default = 7LL * 24 * 3600 * 1000;
// Far longer than task rows: a provider re-sending an old notification must
// still be recognised as a duplicate.
inline constexpr std::int64_t inbox_retention_ms_default = 180LL * 24 * 3600 * 1000;

class MaintenanceService {
 public:
  virtual ~MaintenanceService() = default;
  // The step's name in the log (maintenance_step, maintenance_step_failed).
  virtual const char* name() const noexcept = 0;
  // Runs one step inside `tx`, which the caller commits; the rows handled.
  virtual std::int64_t run(Transaction& tx) = 0;
  // Whether handling `count` rows means more are waiting (a full batch), so
  // the next tick should come at once.
  virtual bool backlog(std::int64_t count) const noexcept = 0;
  // Runs at a tick only if it last ran at least this long ago (0: every tick).
  virtual std::chrono::milliseconds interval() const noexcept = 0;
};

// Shared by every service's options: when it runs, and how much per step.
struct ServiceSchedule {
  std::chrono::milliseconds interval = service_interval_every_tick;
  std::int64_t batch_count_max = service_batch_count_default;
  // Throws InvalidArgument naming `service`.
  void validate(const char* service) const;
};

// Tasks whose lease ran out while `running` become `unknown` attempts
// (retried with the same idempotency key, never compensated).
struct LeaseRescueOptions {
  ServiceSchedule schedule;
  void validate() const { schedule.validate("lease rescue"); }
};

class LeaseRescueService final : public MaintenanceService {
 public:
  explicit LeaseRescueService(LeaseRescueOptions options = {});
  const char* name() const noexcept override { return "leases_rescue"; }
  std::int64_t run(Transaction& tx) override;
  bool backlog(std::int64_t count) const noexcept override { return count >= options_.schedule.batch_count_max; }
  std::chrono::milliseconds interval() const noexcept override { return options_.schedule.interval; }

 private:
  LeaseRescueOptions options_;
};

// Ledger holds past their expiry are released.
struct HoldExpiryOptions {
  ServiceSchedule schedule;
  void validate() const { schedule.validate("hold expiry"); }
};

class HoldExpiryService final : public MaintenanceService {
 public:
  explicit HoldExpiryService(HoldExpiryOptions options = {});
  const char* name() const noexcept override { return "holds_expire"; }
  std::int64_t run(Transaction& tx) override;
  bool backlog(std::int64_t count) const noexcept override { return count >= options_.schedule.batch_count_max; }
  std::chrono::milliseconds interval() const noexcept override { return options_.schedule.interval; }

 private:
  HoldExpiryOptions options_;
};

// Finished tasks older than `after_ms` are deleted.
struct PruneOptions {
  ServiceSchedule schedule;
  std::int64_t after_ms = prune_after_ms_default;
  void validate() const;
};

class PruneService final : public MaintenanceService {
 public:
  explicit PruneService(PruneOptions options = {});
  const char* name() const noexcept override { return "prune"; }
  std::int64_t run(Transaction& tx) override;
  bool backlog(std::int64_t count) const noexcept override { return count >= options_.schedule.batch_count_max; }
  std::chrono::milliseconds interval() const noexcept override { return options_.schedule.interval; }

 private:
  PruneOptions options_;
};

// Provider callbacks (the inbox) older than `retention_ms` are deleted.
struct InboxPruneOptions {
  ServiceSchedule schedule;
  std::int64_t retention_ms = inbox_retention_ms_default;
  void validate() const;
};

class InboxPruneService final : public MaintenanceService {
 public:
  explicit InboxPruneService(InboxPruneOptions options = {});
  const char* name() const noexcept override { return "inbox_prune"; }
  std::int64_t run(Transaction& tx) override;
  bool backlog(std::int64_t count) const noexcept override { return count >= options_.schedule.batch_count_max; }
  std::chrono::milliseconds interval() const noexcept override { return options_.schedule.interval; }

 private:
  InboxPruneOptions options_;
};

// Each cron entry's latest due slot is enqueued once (Outbox::cron_fire).
// Entries are few and each fires at most once a minute, so there is no
// batch to bound and never a backlog.
struct CronOptions {
  std::chrono::milliseconds interval = service_interval_every_tick;
  void validate() const;
};

class CronService final : public MaintenanceService {
 public:
  explicit CronService(CronOptions options = {});
  const char* name() const noexcept override { return "cron_fire"; }
  std::int64_t run(Transaction& tx) override;
  bool backlog(std::int64_t) const noexcept override { return false; }
  std::chrono::milliseconds interval() const noexcept override { return options_.interval; }

 private:
  CronOptions options_;
};

// The caller's own step (WorkerOptions::maintenance_extra); counts nothing.
class ExtraService final : public MaintenanceService {
 public:
  explicit ExtraService(std::function<void(Transaction&)> step);
  const char* name() const noexcept override { return "extra"; }
  std::int64_t run(Transaction& tx) override;
  bool backlog(std::int64_t) const noexcept override { return false; }
  std::chrono::milliseconds interval() const noexcept override { return service_interval_every_tick; }

 private:
  std::function<void(Transaction&)> step_;
};

}  // namespace payq

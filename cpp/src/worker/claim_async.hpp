// The asynchronous attempts of one claimed batch: started by the worker
// thread, finished by whatever thread the handler calls back on (the HTTP
// client's loop), recorded by the worker thread again. Private to the worker.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "payq/handler.hpp"
#include "worker/claim_loop.hpp"

namespace payq {

class AsyncBatch {
 public:
  using Clock = std::chrono::steady_clock;

  // A result handed over by a handler's callback.
  struct Arrival {
    std::size_t slot = 0;
    HandlerResult result;
    Clock::time_point at;
  };

  // One started attempt. `claimed` points into the batch being run, which
  // outlives this object.
  struct Slot {
    const ClaimedTask* claimed = nullptr;
    HandlerEntry entry;
    Clock::time_point started;
    bool recorded = false;
  };

  // `in_flight` counts every started attempt until it is recorded (or this
  // batch gives up on it); `capacity` is the batch size, a bound on slots.
  AsyncBatch(std::atomic<std::int64_t>& in_flight, std::size_t capacity);
  ~AsyncBatch();
  AsyncBatch(const AsyncBatch&) = delete;
  AsyncBatch& operator=(const AsyncBatch&) = delete;

  // Registers an attempt about to start; returns the callback for its
  // handler. Results delivered after this batch is gone are dropped.
  HandlerCallback add(const ClaimedTask& claimed, const HandlerEntry& entry);

  // The next result, waiting until `deadline`; nullopt once it passed.
  std::optional<Arrival> next(Clock::time_point deadline);
  void recorded(std::size_t slot);

  const Slot& slot(std::size_t index) const { return slots_.at(index); }
  std::size_t size() const noexcept { return slots_.size(); }
  std::size_t pending() const noexcept { return slots_.size() - recorded_count_; }
  // When to stop waiting: the latest lease end of the pending attempts plus
  // a margin. Past it the lease is gone and maintenance rescues the attempt
  // as `unknown`, so waiting longer could only record a zombie's result.
  Clock::time_point deadline() const;

 private:
  // Shared with the callbacks, which may outlive the batch.
  struct Inbox {
    std::mutex mutex;
    std::condition_variable cv;
    std::vector<Arrival> arrivals;   // reserved to capacity: delivering never allocates
    std::size_t taken = 0;           // arrivals before this index were handed out
    std::vector<char> delivered;     // per slot; a second delivery is ignored
  };

  std::atomic<std::int64_t>& in_flight_;
  std::size_t capacity_;
  std::shared_ptr<Inbox> inbox_;
  std::vector<Slot> slots_;
  std::size_t recorded_count_ = 0;
};

}  // namespace payq

// The stop signal and the wake tokens (worker_internal.hpp).
#include <algorithm>

#include "worker/worker_internal.hpp"

namespace payq {

bool StopSignal::request() noexcept {
  if (requested_.exchange(true)) return false;
  // Lock and unlock before notifying, so a waiter that checked the flag
  // just before the store cannot miss the wakeup.
  { std::lock_guard<std::mutex> guard(mutex_); }
  cv_.notify_all();
  return true;
}

void StopSignal::wait() {
  std::unique_lock<std::mutex> lock(mutex_);
  cv_.wait(lock, [&] { return requested_.load(); });
}

bool StopSignal::wait_for(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mutex_);
  return cv_.wait_for(lock, timeout, [&] { return requested_.load(); });
}

void WakeTokens::wake(int token_count) {
  {
    std::lock_guard<std::mutex> guard(mutex_);
    tokens_ = std::min(capacity_, tokens_ + token_count);
  }
  if (token_count >= capacity_) {
    cv_.notify_all();
  } else {
    for (int i = 0; i < token_count; ++i) cv_.notify_one();
  }
}

bool WakeTokens::idle_wait(std::chrono::milliseconds timeout, const std::function<void()>& before_wait) {
  std::unique_lock<std::mutex> lock(mutex_);
  auto woken = [&] { return stop_.requested() || tokens_ > 0; };
  if (!woken()) {
    if (before_wait) before_wait();
    cv_.wait_for(lock, timeout, woken);
  }
  if (tokens_ == 0) return false;
  --tokens_;
  return true;
}

void WakeTokens::stop_notify() {
  { std::lock_guard<std::mutex> guard(mutex_); }
  cv_.notify_all();
}

}  // namespace payq

// The handler registry: task kind -> handler, with per-kind backoff.
#include <algorithm>
#include <mutex>

#include "crypto/encrypting_handler.hpp"
#include "payq/error.hpp"
#include "payq/handler.hpp"
#include "payq/keyring.hpp"

namespace payq {

void HandlerRegistry::add(const std::string& kind, std::shared_ptr<Handler> handler, HandlerOptions options) {
  if (kind.empty() || kind.size() > task_kind_bytes_max) {
    throw InvalidArgument("a task kind is 1 to " + std::to_string(task_kind_bytes_max) + " bytes");
  }
  if (!handler) throw InvalidArgument("the handler for kind '" + kind + "' is null");
  if (options.backoff) backoff_validate(*options.backoff);
  if (options.encrypt) {
    const std::shared_ptr<const Keyring> keys = keyring();
    if (!keys) throw KeyMissing("kind '" + kind + "' is to be encrypted, but the handler registry has no keyring");
    keys->current();  // KeyMissing without a current key
    // Applied once here, so the worker and the HTTP handler know nothing of it.
    handler = crypto::encrypting_handler(std::move(handler), keys);
  }
  std::unique_lock<std::shared_mutex> guard(mutex_);
  const bool inserted = registrations_.emplace(kind, Registration{std::move(handler), std::move(options)}).second;
  if (!inserted) throw InvalidArgument("a handler for kind '" + kind + "' is already registered");
}

void HandlerRegistry::add(const std::string& kind, FunctionHandler::Function function, HandlerOptions options) {
  if (!function) throw InvalidArgument("the handler function for kind '" + kind + "' is empty");
  add(kind, std::make_shared<FunctionHandler>(std::move(function)), std::move(options));
}

bool HandlerRegistry::remove(const std::string& kind) {
  std::unique_lock<std::shared_mutex> guard(mutex_);
  return registrations_.erase(kind) > 0;
}

void HandlerRegistry::keyring_set(std::shared_ptr<const Keyring> keyring) {
  std::unique_lock<std::shared_mutex> guard(mutex_);
  keyring_ = std::move(keyring);
}

std::shared_ptr<const Keyring> HandlerRegistry::keyring() const {
  std::shared_lock<std::shared_mutex> guard(mutex_);
  return keyring_;
}

void HandlerRegistry::default_backoff_set(const BackoffPolicy& backoff) {
  backoff_validate(backoff);
  std::unique_lock<std::shared_mutex> guard(mutex_);
  default_backoff_ = backoff;
}

BackoffPolicy HandlerRegistry::default_backoff() const {
  std::shared_lock<std::shared_mutex> guard(mutex_);
  return default_backoff_;
}

std::optional<HandlerEntry> HandlerRegistry::find(const std::string& kind) const {
  std::shared_lock<std::shared_mutex> guard(mutex_);
  auto found = registrations_.find(kind);
  if (found == registrations_.end()) return std::nullopt;
  const HandlerOptions& options = found->second.options;
  return HandlerEntry{found->second.handler, options.backoff.value_or(default_backoff_), options.batched_completion};
}

std::vector<std::string> HandlerRegistry::kinds() const {
  std::shared_lock<std::shared_mutex> guard(mutex_);
  std::vector<std::string> out;
  out.reserve(registrations_.size());
  for (const auto& entry : registrations_) out.push_back(entry.first);
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace payq

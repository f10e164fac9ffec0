// Handlers: the code that performs a task's side effect, registered per task
// kind. The worker claims a task, calls its kind's handler, and records the
// Outcome the handler reports. Handlers know nothing of threads, leases or
// connections beyond what TaskContext hands them.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "payq/backoff.hpp"
#include "payq/outbox.hpp"

namespace payq {

class Keyring;  // keyring.hpp

// Bounds, named once.
inline constexpr std::size_t task_kind_bytes_max = 200;  // as the task table's CHECK

// The error recorded when no handler is registered for a task's kind.
inline constexpr const char* unknown_task_kind_error = "unknown task kind";

// What a handler may know about the attempt it runs in.
struct TaskContext {
  const std::string& worker_id;
  // The fencing epoch of this attempt. A handler that completes the task
  // itself (see HandlerResult::completed_by_handler) passes it, with
  // worker_id, to Outbox::complete inside its own business transaction.
  std::int64_t lease_token;
  // True once the worker is shutting down: a long handler may cut its work
  // short and report `retry` (if nothing was applied) rather than run past
  // the shutdown grace.
  std::function<bool()> stopping;
  // Reads this task's earlier attempts (oldest first) on the worker's
  // connection, for a handler that must know whether an earlier attempt may
  // have been applied. Valid only during the handle()/handle_async() call;
  // empty when the caller has no database to read from.
  std::function<std::vector<TaskAttempt>()> attempts_read;
};

// What a handler returns: normally an Outcome, which the worker records with
// the fenced Outbox::complete (in a savepoint of a group transaction shared
// with other tasks' outcomes; see docs/outbox.md). A handler that must record
// the completion atomically with its own business writes (for example a
// ledger posting that is the side effect itself) calls Outbox::complete on
// its own executor, commits, and returns completed_by_handler(): the worker
// then records nothing. If such a handler's transaction never commits, the
// task stays `running` until its lease expires and maintenance rescues the
// attempt as `unknown`, which is safe.
struct HandlerResult {
  // nullopt: the handler completed the task itself.
  std::optional<Outcome> outcome;
  // Back-pressure (a provider's 429 or Retry-After): the worker pauses the
  // task's queue for this many milliseconds, for every worker on every
  // machine (Outbox::queue_pause_until, in a short transaction of its own),
  // before it records the outcome. A failed pause is logged and costs only
  // the back-pressure, never the outcome.
  std::optional<std::int64_t> queue_pause_ms;

  HandlerResult() = default;
  // Implicit, so a handler can simply `return Outcome{...};`.
  HandlerResult(Outcome value) : outcome(std::move(value)) {}  // NOLINT(google-explicit-constructor)

  static HandlerResult completed_by_handler() { return HandlerResult(); }
};

// The handler interface: one instance per kind, called from several worker
// threads at once, so it must be thread-safe.
//
// A handler that throws is treated as if it returned `retry` with the
// exception's message as the error (payq::Error, std::exception and anything
// else alike). A handler whose side effect may already have happened when it
// fails must not throw: it returns `unknown`, so the attempt is retried with
// the same idempotency key and never compensated.
// The continuation of an asynchronous attempt (see Handler::handle_async).
using HandlerCallback = std::function<void(HandlerResult)>;

// Several claimed tasks of one kind for one call (see Handler::handle_many).
struct TaskBatchCall {
  std::vector<const Task*> tasks;  // in claim order
  // The context of tasks[i], built on demand; valid during the call.
  std::function<TaskContext(std::size_t)> context;
  // Asked before tasks[i] starts, in order (tasks[0] always may): false
  // ends the call, because the worker is stopping, the task's lease ran
  // low, or the results already handed over should be recorded first.
  std::function<bool(std::size_t)> may_start;
  // Takes the result of tasks[i], in order, as soon as the task ran.
  std::function<void(std::size_t, HandlerResult)> done;
};

class Handler {
 public:
  virtual ~Handler() = default;
  virtual HandlerResult handle(const Task& task, const TaskContext& context) = 0;

  // The optional asynchronous entry point, for handlers that mostly wait on
  // a remote party (the built-in HTTP handler): the worker starts every
  // asynchronous task of a claimed batch first, so one worker thread has the
  // whole batch in flight, and records each result as it arrives, still one
  // fenced completion per task. A handler that returns true here implements
  // handle_async(): start the work, return at once, and call `done` exactly
  // once with the result, from any thread (even before returning). `done`
  // is quick and never throws; calls after the first are ignored. The
  // context's references and attempts_read() are valid only during the
  // call, so copy what the continuation needs. Throwing from handle_async()
  // means nothing was started, so the attempt is a `retry`.
  virtual bool asynchronous() const noexcept { return false; }
  // Default: the synchronous handle(), for callers that always go through here.
  virtual void handle_async(const Task& task, const TaskContext& context, HandlerCallback done) {
    done(handle(task, context));
  }

  // The optional entry point for handlers whose every call has a fixed
  // cost of its own (a Python handler takes the GIL): consecutive claimed
  // tasks of the kind are handed over in one call. A handler that returns
  // true here implements handle_many(): run the tasks in order, each only
  // if may_start(i), and hand each result to done(i, result) right after
  // it ran. Each outcome is still recorded on its own (fenced, atomic with
  // its settlement) once the call returned. An exception counts as thrown
  // by the task after the last result handed over (a `retry`); the tasks
  // after it are run by a later call.
  virtual bool runs_many() const noexcept { return false; }
  // Default: handle() for each task.
  virtual void handle_many(const TaskBatchCall& call) {
    for (std::size_t i = 0; i < call.tasks.size() && call.may_start(i); ++i) {
      call.done(i, handle(*call.tasks[i], call.context(i)));
    }
  }
};

// A handler made from a callable, for tests and small programs.
class FunctionHandler final : public Handler {
 public:
  using Function = std::function<HandlerResult(const Task&, const TaskContext&)>;
  explicit FunctionHandler(Function function) : function_(std::move(function)) {}
  HandlerResult handle(const Task& task, const TaskContext& context) override { return function_(task, context); }

 private:
  Function function_;
};

// Per-kind options; unset fields fall back to the registry's defaults.
struct HandlerOptions {
  std::optional<BackoffPolicy> backoff;
  // Marks a kind whose handlers are idempotent and whose tasks carry no
  // settlement. The worker's completer writes every kind's outcomes in
  // group transactions (worker/completer.hpp), each still fenced by its
  // lease token and atomic with its settlement, so this no longer changes
  // how outcomes are written; such successes are counted in
  // WorkerStats::batched_completions.
  bool batched_completion = false;
  // The kind's payloads, results and errors are encrypted at rest
  // (docs/encryption.md): the handler gets the payload decrypted with the
  // registry's keyring (keyring_set, before this kind is added), and its
  // result, error and stack trace are encrypted under the keyring's current
  // key before the worker records or logs them. A payload that cannot be
  // decrypted never reaches the handler: the task goes to needs_review.
  bool encrypt = false;
};

// A registered handler with its options resolved against the defaults.
struct HandlerEntry {
  std::shared_ptr<Handler> handler;
  BackoffPolicy backoff;
  bool batched_completion = false;
};

// Maps task kind -> handler. Thread-safe: workers look kinds up while the
// application may still register more (registration normally happens before
// the worker starts).
//
// A task whose kind has no handler fails its attempt with the `fail` outcome
// and the error "unknown task kind": it goes `dead` at once, where an
// operator sees it (and may task_retry it once the handler is deployed),
// rather than burning its attempts in silent retries. Its settlement's
// failure side runs, which is correct because the side effect was certainly
// never attempted. Mind rolling deployments: a worker that does not know a
// new kind yet kills such tasks; deploy handlers before producers.
class HandlerRegistry {
 public:
  HandlerRegistry() = default;
  HandlerRegistry(const HandlerRegistry&) = delete;
  HandlerRegistry& operator=(const HandlerRegistry&) = delete;

  // Throws InvalidArgument for an empty or over-long kind, a null handler,
  // or a kind that is already registered.
  void add(const std::string& kind, std::shared_ptr<Handler> handler, HandlerOptions options = {});
  // Convenience: wraps a callable in a FunctionHandler.
  void add(const std::string& kind, FunctionHandler::Function function, HandlerOptions options = {});
  // Returns whether the kind was registered.
  bool remove(const std::string& kind);

  // The keys of the kinds added with HandlerOptions::encrypt from now on;
  // adding such a kind without a keyring (or one without a current key) is
  // KeyMissing.
  void keyring_set(std::shared_ptr<const Keyring> keyring);
  std::shared_ptr<const Keyring> keyring() const;

  // The backoff for kinds registered without one of their own.
  void default_backoff_set(const BackoffPolicy& backoff);
  BackoffPolicy default_backoff() const;

  // nullopt: no handler for the kind.
  std::optional<HandlerEntry> find(const std::string& kind) const;
  std::vector<std::string> kinds() const;

 private:
  struct Registration {
    std::shared_ptr<Handler> handler;
    HandlerOptions options;
  };

  mutable std::shared_mutex mutex_;
  std::unordered_map<std::string, Registration> registrations_;
  BackoffPolicy default_backoff_;
  std::shared_ptr<const Keyring> keyring_;
};

}  // namespace payq

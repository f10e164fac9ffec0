// The decorator of encrypted kinds: clear text exists only between the
// decryption and the encryption around the inner handler, and never in an
// error or log line the worker writes.
#include "crypto/encrypting_handler.hpp"

#include <exception>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/text_internal.hpp"
#include "payq/encryption.hpp"
#include "payq/error.hpp"
#include "payq/vocabulary.hpp"

namespace payq::crypto {
namespace {

// The last `bytes_max` bytes of a stack trace (the innermost frames),
// starting at a character boundary.
std::string tail(const std::string& text, std::size_t bytes_max) {
  if (text.size() <= bytes_max) return text;
  std::size_t start = text.size() - bytes_max;
  while (start < text.size() && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) ++start;
  return text.substr(start);
}

// The stored form of an outcome: result, error and stack trace encrypted.
// A result the store could not hold is `unknown` (as the worker would make
// it), decided here because once encrypted it would pass as storable.
HandlerResult outcome_sealed(const Keyring& keyring, std::int64_t task_id, const std::string& kind,
                             HandlerResult result) {
  if (!result.outcome) return result;
  Outcome& outcome = *result.outcome;
  if (outcome.kind == OutcomeKind::success) {
    try {
      const std::string canonical = detail::json_input_canonical(
          outcome.result_json.empty() ? "null" : outcome.result_json, "the handler's result", task_payload_bytes_max);
      outcome.result_json = json_seal(keyring, EncryptedField::result, task_id, kind, canonical);
    } catch (const InvalidArgument& e) {
      outcome.kind = OutcomeKind::unknown;
      outcome.error = std::string("result cannot be stored: ") + e.what();
      outcome.result_json = "null";
    }
  }
  if (!outcome.error.empty()) {
    outcome.error = text_seal(keyring, EncryptedField::error, task_id, kind,
                              detail::text_truncated(outcome.error, encrypted_error_bytes_max));
  }
  if (!outcome.traceback.empty()) {
    outcome.traceback = text_seal(keyring, EncryptedField::traceback, task_id, kind,
                                  tail(outcome.traceback, encrypted_traceback_bytes_max));
  }
  return result;
}

// What the worker records for a handler that threw: `retry` (as for any
// handler), with the message encrypted, since it may quote the payload.
HandlerResult raised(const std::string& message) {
  Outcome outcome;
  outcome.kind = OutcomeKind::retry;
  outcome.error = message.empty() ? "handler threw an exception" : message;
  return outcome;
}

class EncryptingHandler final : public Handler {
 public:
  EncryptingHandler(std::shared_ptr<Handler> inner, std::shared_ptr<const Keyring> keyring)
      : inner_(std::move(inner)), keyring_(std::move(keyring)) {}

  HandlerResult handle(const Task& task, const TaskContext& context) override {
    std::optional<Task> clear;
    if (auto refused = opened(task, clear)) return std::move(*refused);
    HandlerResult result;
    try {
      result = inner_->handle(*clear, context_for(context, task.kind));
    } catch (const std::exception& e) {
      result = raised(e.what());
    } catch (...) {
      result = raised("handler threw a non-standard exception");
    }
    return outcome_sealed(*keyring_, task.id, task.kind, std::move(result));
  }

  bool asynchronous() const noexcept override { return inner_->asynchronous(); }

  bool runs_many() const noexcept override { return inner_->runs_many(); }

  // Runs of readable tasks go to the inner handler in one call each (a
  // Python handler then takes the GIL once per run); an unreadable task is
  // answered here, in its place in the order, without calling the handler.
  void handle_many(const TaskBatchCall& call) override {
    const std::size_t count = call.tasks.size();
    std::vector<std::optional<Task>> clear(count);
    std::vector<std::optional<HandlerResult>> refused(count);
    for (std::size_t i = 0; i < count; ++i) refused[i] = opened(*call.tasks[i], clear[i]);
    std::size_t next = 0;  // the first task without a result yet
    while (next < count) {
      if (refused[next]) {
        if (!call.may_start(next)) return;
        call.done(next, std::move(*refused[next]));
        ++next;
        continue;
      }
      std::size_t end = next;
      while (end < count && !refused[end]) ++end;
      TaskBatchCall run;
      for (std::size_t i = next; i < end; ++i) run.tasks.push_back(&*clear[i]);
      const std::size_t offset = next;
      std::size_t handed = next;
      run.context = [&](std::size_t i) { return context_for(call.context(offset + i), call.tasks[offset + i]->kind); };
      run.may_start = [&](std::size_t i) { return call.may_start(offset + i); };
      run.done = [&](std::size_t i, HandlerResult result) {
        const Task& task = *call.tasks[offset + i];
        call.done(offset + i, outcome_sealed(*keyring_, task.id, task.kind, std::move(result)));
        handed = offset + i + 1;
      };
      try {
        inner_->handle_many(run);
      } catch (const std::exception& e) {
        // The task after the last result threw: its error is sealed here,
        // since the caller would record the exception's text in clear.
        if (handed < end) {
          const Task& task = *call.tasks[handed];
          call.done(handed, outcome_sealed(*keyring_, task.id, task.kind, raised(e.what())));
        }
        return;
      } catch (...) {
        if (handed < end) {
          const Task& task = *call.tasks[handed];
          call.done(handed, outcome_sealed(*keyring_, task.id, task.kind, raised("handler threw a non-standard exception")));
        }
        return;
      }
      if (handed < end) return;  // the inner call stopped early
      next = end;
    }
  }

  void handle_async(const Task& task, const TaskContext& context, HandlerCallback done) override {
    std::optional<Task> clear;
    if (auto refused = opened(task, clear)) return done(std::move(*refused));
    auto keyring = keyring_;
    const std::int64_t task_id = task.id;
    const std::string kind = task.kind;
    auto sealing = [keyring, task_id, kind, done](HandlerResult result) {
      // `done` never throws; a sealing failure (no random bytes) must not
      // leave the attempt without an outcome.
      try {
        done(outcome_sealed(*keyring, task_id, kind, std::move(result)));
      } catch (const std::exception& e) {
        Outcome outcome;
        outcome.kind = OutcomeKind::unknown;
        outcome.error = std::string("the outcome could not be encrypted: ") + e.what();
        done(HandlerResult(outcome));
      }
    };
    try {
      inner_->handle_async(*clear, context_for(context, task.kind), sealing);
    } catch (const std::exception& e) {
      // Nothing was started (the handler contract): a retry, encrypted.
      sealing(raised(e.what()));
    } catch (...) {
      sealing(raised("handler threw a non-standard exception"));
    }
  }

 private:
  // Fills `clear` with the decrypted task, or returns the outcome that
  // sends an unreadable one to an operator.
  std::optional<HandlerResult> opened(const Task& task, std::optional<Task>& clear) const {
    try {
      clear = task_open(*keyring_, task);
      return std::nullopt;
    } catch (const EncryptionError& e) {
      Outcome outcome;
      outcome.kind = OutcomeKind::unknown;
      outcome.needs_review = true;
      outcome.error = std::string("the task cannot be decrypted (") + error_class_of(e).name + "): " + e.what() +
                      "; the handler was not called";
      return HandlerResult(outcome);
    }
  }

  // The context with attempts_read decrypting what it can: an attempt whose
  // key is gone keeps its ciphertext rather than failing the handler.
  TaskContext context_for(const TaskContext& context, const std::string& kind) const {
    TaskContext wrapped = context;
    if (!context.attempts_read) return wrapped;
    auto keyring = keyring_;
    wrapped.attempts_read = [read = context.attempts_read, keyring, kind] {
      std::vector<TaskAttempt> attempts = read();
      for (auto& attempt : attempts) {
        try {
          attempt = attempt_open(*keyring, kind, attempt);
        } catch (const EncryptionError&) {
        }
      }
      return attempts;
    };
    return wrapped;
  }

  std::shared_ptr<Handler> inner_;
  std::shared_ptr<const Keyring> keyring_;
};

}  // namespace

std::shared_ptr<Handler> encrypting_handler(std::shared_ptr<Handler> inner, std::shared_ptr<const Keyring> keyring) {
  return std::make_shared<EncryptingHandler>(std::move(inner), std::move(keyring));
}

}  // namespace payq::crypto

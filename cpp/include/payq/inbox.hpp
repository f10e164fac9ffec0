// The inbox: result callbacks from payment providers ("payout K was
// applied" / "payout K failed"), deduplicated by the provider's event id and
// settled against the matching task in the caller's transaction.
//
// Verifying that a callback really comes from the provider (an HMAC
// signature, a token) happens before this, where the HTTP request is read;
// the Python layer has helpers for it (payq.inbox).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "payq/db.hpp"
#include "payq/outbox.hpp"

namespace payq {

inline constexpr std::size_t inbox_provider_bytes_max = 100;
inline constexpr std::size_t inbox_event_id_bytes_max = 255;
inline constexpr std::size_t inbox_payload_bytes_max = 64 * 1024;

struct CallbackEvent {
  std::string provider;  // who sent it, e.g. "alipay"
  std::string event_id;  // the provider's id of this notification
  std::string key;       // the idempotency key the provider was called with
  bool applied = false;  // true: the payout was applied; false: it definitely failed
  std::string payload_json = "{}";  // the notification, stored with the event (and as the task's result)
};

// What a callback did.
enum class CallbackEffect {
  settled_success,  // the task succeeded through it (its success side ran)
  settled_failure,  // the task went dead through it (its failure side ran)
  already_settled,  // the task was already settled the same way: nothing to do
  no_task,          // no task carries this key (recorded; nothing else)
  conflict,         // the provider contradicts a settled task: recorded, an alert raised, nothing changed
  ignored,          // the task never ran (held, cancelled): recorded, nothing changed
  duplicate,        // this event was received before: nothing recorded or changed
};

const char* callback_effect_name(CallbackEffect effect);

struct CallbackResult {
  CallbackEffect effect = CallbackEffect::no_task;
  std::optional<std::int64_t> task_id;
  std::optional<TaskState> task_state;  // afterwards
};

class Inbox {
 public:
  explicit Inbox(Executor& executor) : executor_(executor) {}

  // Records the event and settles its task, in the executor's transaction.
  //
  // A task still `running` is taken over: its attempt is recorded as
  // completed by the callback and the worker's own completion, when it
  // comes, finds the lease gone (LeaseLost) and changes nothing. A task
  // waiting to retry (`pending`) or in `needs_review` is settled as the
  // provider says. InvalidArgument (nothing written) for an empty or
  // over-long provider, event id or key, or a payload that is not JSON.
  CallbackResult receive(const CallbackEvent& event);

  // Deletes events received more than `older_than_ms` ago, at most
  // `count_max` of them; returns how many. Keep them longer than any
  // provider may re-send a notification.
  std::int64_t prune(std::int64_t older_than_ms, std::int64_t count_max);

 private:
  Executor& executor_;
};

}  // namespace payq

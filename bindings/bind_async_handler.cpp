// Async Python handlers (`@payq.handler` on an `async def`): a C++ Handler
// whose handle_async() hands the task to payq's handler event loop (one per
// worker process, python/payq/aio/handler_loop.py) and returns at once, so
// one worker thread keeps a whole claimed batch of coroutines in flight, as
// it does for the built-in HTTP handler. The coroutine's completion calls
// back with the same report a synchronous Python handler returns, and the
// worker records it with the same fenced completion and settlement.
//
// The GIL is taken only to schedule the coroutine (on the worker thread)
// and to read its report (on the loop thread, which holds it anyway); the
// worker thread waits for results without it.
#include <pybind11/stl.h>

#include <chrono>
#include <cstdint>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <utility>

#include "bind.hpp"
#include "payq/error.hpp"
#include "payq/handler.hpp"
#include "payq/outbox.hpp"
#include "payq/vocabulary.hpp"

namespace payq::bindings {
namespace {

// How long the synchronous entry point (Handler::handle, which the worker
// never calls for an asynchronous handler) waits past the task's lease: the
// coroutine is cancelled when the lease runs out, so its report follows.
constexpr std::chrono::milliseconds sync_wait_margin{5'000};

// A report as payq/worker.py's adapters make them: None (the handler
// completed the task itself) or (outcome, result_json, error,
// retry_after_ms[, traceback]). Call with the GIL held; throws for a report
// payq cannot read.
HandlerResult result_from_report(const py::object& reported) {
  if (reported.is_none()) return HandlerResult::completed_by_handler();
  py::tuple items = reported.cast<py::tuple>();
  if (items.size() != 4 && items.size() != 5) {
    throw InvalidArgument("an async handler report has 4 or 5 items, not " + std::to_string(items.size()));
  }
  Outcome outcome;
  outcome.kind = outcome_kind_parse(items[0].cast<std::string>());
  outcome.result_json = items[1].cast<std::string>();
  outcome.error = items[2].cast<std::string>();
  outcome.retry_after_ms = items[3].cast<std::optional<std::int64_t>>();
  if (items.size() == 5) outcome.traceback = items[4].cast<std::string>();
  return outcome;
}

// What `done` receives when a report cannot be read: the handler ran, so
// its effect is unknown, never a success.
HandlerResult unreadable_report(const std::string& why) {
  Outcome outcome;
  outcome.kind = OutcomeKind::unknown;
  outcome.error = "the async handler's report could not be read: " + why;
  return outcome;
}

// Calls `starter(task, worker_id, lease_token, deliver)` (payq/aio/
// handler_loop.py), which schedules the coroutine on the handler loop and
// returns; `deliver(report)` is called once from the loop thread.
class PythonAsyncHandler final : public Handler {
 public:
  explicit PythonAsyncHandler(py::object starter) : starter_(std::move(starter)) {}
  ~PythonAsyncHandler() override {
    py::gil_scoped_acquire gil;
    starter_ = py::object();
  }

  bool asynchronous() const noexcept override { return true; }

  // For callers that do not go through handle_async(): waits (without the
  // GIL) for the coroutine, at most its lease plus a margin.
  HandlerResult handle(const Task& task, const TaskContext& context) override {
    auto promise = std::make_shared<std::promise<HandlerResult>>();
    std::future<HandlerResult> result = promise->get_future();
    handle_async(task, context, [promise](HandlerResult value) { promise->set_value(std::move(value)); });
    const auto wait = std::chrono::milliseconds(task.timeout_ms) + sync_wait_margin;
    if (result.wait_for(wait) != std::future_status::ready) {
      return unreadable_report("no report within the task's lease");
    }
    return result.get();
  }

  void handle_async(const Task& task, const TaskContext& context, HandlerCallback done) override {
    py::gil_scoped_acquire gil;
    // `done` is quick and never throws (Handler's contract), so calling it
    // with the GIL held on the loop thread costs the loop nothing.
    py::cpp_function deliver([done](const py::object& reported) {
      HandlerResult result;
      try {
        result = result_from_report(reported);
      } catch (const std::exception& e) {
        result = unreadable_report(e.what());
      }
      done(std::move(result));
    });
    // Throwing here (no loop could be started) means nothing was started:
    // the worker records the attempt as a `retry`.
    starter_(task, context.worker_id, context.lease_token, deliver);
  }

 private:
  py::object starter_;
};

}  // namespace

void bind_async_handler(py::module_& m) {
  // A method of the HandlerRegistry bound in bind_worker.cpp, beside
  // add_python: same options, an async starter instead of an adapter.
  py::object registry_type = m.attr("HandlerRegistry");
  registry_type.attr("add_python_async") = py::cpp_function(
      [](HandlerRegistry& self, const std::string& kind, py::object starter, std::optional<std::int64_t> delay_ms_base,
         std::optional<std::int64_t> delay_ms_max, std::optional<int> multiplier, bool batched_completion, bool encrypt) {
        HandlerOptions options;
        options.batched_completion = batched_completion;
        options.encrypt = encrypt;  // the registry's keyring decrypts before the coroutine starts
        options.backoff = backoff_from(delay_ms_base, delay_ms_max, multiplier);
        self.add(kind, std::make_shared<PythonAsyncHandler>(std::move(starter)), options);
      },
      py::name("add_python_async"), py::is_method(registry_type),
      py::sibling(py::getattr(registry_type, "add_python_async", py::none())), py::arg("kind"), py::arg("starter"),
      py::arg("delay_ms_base"), py::arg("delay_ms_max"), py::arg("multiplier"), py::arg("batched_completion"), py::arg("encrypt") = false);
}

}  // namespace payq::bindings

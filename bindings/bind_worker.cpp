// The worker engine for Python. A Python handler is a C++ Handler that takes
// the GIL only for the call into Python; the engine's threads, claims and
// completions run without it.
#include <pybind11/functional.h>
#include <pybind11/stl.h>

#include <memory>

#include "bind.hpp"
#include "payq/outbox.hpp"
#include "payq/worker.hpp"

namespace payq::bindings {
namespace {

// What the adapter reported: None when the handler completed the task
// itself, else (outcome, result_json, error, retry_after_ms[, traceback]).
// Called with the GIL held.
HandlerResult reported_read(py::object reported) {
  if (reported.is_none()) return HandlerResult::completed_by_handler();
  // A fifth item, when there is one, is the stack trace of a handler
  // that raised (stored with the attempt, bounded by the core).
  std::string traceback;
  if (py::len(reported) == 5) {
    traceback = reported.cast<py::tuple>()[4].cast<std::string>();
    reported = reported.cast<py::tuple>()[py::slice(0, 4, 1)];
  }
  auto [kind, result_json, error, retry_after_ms] =
      reported.cast<std::tuple<std::string, std::string, std::string, std::optional<std::int64_t>>>();
  Outcome outcome;
  outcome.traceback = std::move(traceback);
  // An outcome payq cannot read is refused (a handler exception, logged
  // and recorded as the attempt's error), never taken for `retry`.
  outcome.kind = outcome_kind_parse(kind);
  outcome.result_json = std::move(result_json);
  outcome.error = std::move(error);
  outcome.retry_after_ms = retry_after_ms;
  return outcome;
}

// Calls `adapter(task, worker_id, lease_token)` (payq/worker.py), which runs
// the user's function and reports its outcome (reported_read). Consecutive
// claimed tasks of the kind run under one acquisition of the GIL
// (handle_many): taking it is the costly part of a short handler's call,
// the more so with many worker threads contending for it.
class PythonHandler final : public Handler {
 public:
  explicit PythonHandler(py::object adapter) : adapter_(std::move(adapter)) {}
  ~PythonHandler() override {
    py::gil_scoped_acquire gil;
    adapter_ = py::object();
  }

  HandlerResult handle(const Task& task, const TaskContext& context) override {
    py::gil_scoped_acquire gil;
    return reported_read(adapter_(task, context.worker_id, context.lease_token));
  }

  bool runs_many() const noexcept override { return true; }

  void handle_many(const TaskBatchCall& call) override {
    py::gil_scoped_acquire gil;
    for (std::size_t i = 0; i < call.tasks.size() && call.may_start(i); ++i) {
      const TaskContext context = call.context(i);
      call.done(i, reported_read(adapter_(*call.tasks[i], context.worker_id, context.lease_token)));
    }
  }

 private:
  py::object adapter_;
};

}  // namespace

std::optional<BackoffPolicy> backoff_from(std::optional<std::int64_t> delay_ms_base,
                                          std::optional<std::int64_t> delay_ms_max, std::optional<int> multiplier) {
  if (!delay_ms_base && !delay_ms_max && !multiplier) return std::nullopt;
  BackoffPolicy backoff;
  if (delay_ms_base) backoff.delay_ms_base = *delay_ms_base;
  if (delay_ms_max) backoff.delay_ms_max = *delay_ms_max;
  if (multiplier) backoff.multiplier = *multiplier;
  backoff_validate(backoff);
  return backoff;
}

void bind_worker(py::module_& m) {
  py::class_<HandlerRegistry, std::shared_ptr<HandlerRegistry>>(m, "HandlerRegistry")
      .def(py::init([] { return std::make_shared<HandlerRegistry>(); }))
      .def("add_python",
           [](HandlerRegistry& self, const std::string& kind, py::object adapter,
              std::optional<std::int64_t> delay_ms_base, std::optional<std::int64_t> delay_ms_max,
              std::optional<int> multiplier, bool batched_completion, bool encrypt) {
             HandlerOptions options;
             options.batched_completion = batched_completion;
             options.encrypt = encrypt;
             options.backoff = backoff_from(delay_ms_base, delay_ms_max, multiplier);
             self.add(kind, std::make_shared<PythonHandler>(std::move(adapter)), options);
           },
           py::arg("kind"), py::arg("adapter"), py::arg("delay_ms_base"), py::arg("delay_ms_max"),
           py::arg("multiplier"), py::arg("batched_completion"), py::arg("encrypt") = false)
      .def("remove", &HandlerRegistry::remove)
      .def("kinds", &HandlerRegistry::kinds);

  py::class_<WorkerStats>(m, "WorkerStats")
      .def_readonly("claimed", &WorkerStats::claimed)
      .def_readonly("succeeded", &WorkerStats::succeeded)
      .def_readonly("retried", &WorkerStats::retried)
      .def_readonly("failed", &WorkerStats::failed)
      .def_readonly("unknown", &WorkerStats::unknown)
      .def_readonly("unknown_kind", &WorkerStats::unknown_kind)
      .def_readonly("handler_exceptions", &WorkerStats::handler_exceptions)
      .def_readonly("completed_by_handler", &WorkerStats::completed_by_handler)
      .def_readonly("batched_completions", &WorkerStats::batched_completions)
      .def_readonly("async_started", &WorkerStats::async_started)
      .def_readonly("async_abandoned", &WorkerStats::async_abandoned)
      .def_readonly("queue_pauses", &WorkerStats::queue_pauses)
      .def_readonly("lease_lost", &WorkerStats::lease_lost)
      .def_readonly("given_back", &WorkerStats::given_back)
      .def_readonly("complete_errors", &WorkerStats::complete_errors)
      .def_readonly("database_errors", &WorkerStats::database_errors)
      .def_readonly("in_flight", &WorkerStats::in_flight)
      .def_readonly("maintenance_ticks", &WorkerStats::maintenance_ticks)
      .def_readonly("maintenance_leader", &WorkerStats::maintenance_leader)
      .def_readonly("leases_rescued", &WorkerStats::leases_rescued)
      .def_readonly("holds_expired", &WorkerStats::holds_expired)
      .def_readonly("tasks_pruned", &WorkerStats::tasks_pruned)
      .def_readonly("inbox_events_pruned", &WorkerStats::inbox_events_pruned)
      .def_readonly("cron_tasks_enqueued", &WorkerStats::cron_tasks_enqueued)
      .def_readonly("attempt_duration_counts", &WorkerStats::attempt_duration_counts)
      .def_readonly("attempt_duration_seconds_sum", &WorkerStats::attempt_duration_seconds_sum)
      .def_readonly("attempt_duration_ms_sum", &WorkerStats::attempt_duration_ms_sum);
  m.attr("attempt_duration_bounds_seconds") =
      std::vector<double>(attempt_duration_bounds_seconds.begin(), attempt_duration_bounds_seconds.end());
  m.attr("attempt_duration_bounds_ms") =
      std::vector<std::int64_t>(attempt_duration_bounds_ms.begin(), attempt_duration_bounds_ms.end());

  // Holds the database and registry alive as long as the worker.
  struct PyWorker {
    std::shared_ptr<Database> database;
    std::shared_ptr<HandlerRegistry> registry;
    std::unique_ptr<Worker> worker;
    PyWorker(std::shared_ptr<Database> d, std::shared_ptr<HandlerRegistry> r, std::unique_ptr<Worker> w)
        : database(std::move(d)), registry(std::move(r)), worker(std::move(w)) {}
    PyWorker(PyWorker&&) = default;
    // The worker joins its threads on destruction; a handler among them may
    // be waiting for the GIL, so it must not be held here.
    ~PyWorker() {
      if (!worker) return;
      py::gil_scoped_release release;
      worker.reset();
    }
  };
  py::class_<PyWorker>(m, "Worker")
      .def(py::init([](std::shared_ptr<Database> database, std::shared_ptr<HandlerRegistry> registry,
                       std::vector<std::pair<std::string, int>> queues, int concurrency, std::size_t batch,
                       std::int64_t poll_ms, std::int64_t grace_ms, std::string worker_id, bool listen,
                       bool maintenance, std::int64_t maintenance_interval_ms, std::int64_t prune_after_ms,
                       bool log) {
             WorkerOptions options;
             options.queues = std::move(queues);
             options.concurrency = concurrency;
             options.claim_batch_count_max = batch;
             options.poll_interval = std::chrono::milliseconds(poll_ms);
             options.shutdown_grace = std::chrono::milliseconds(grace_ms);
             options.worker_id = std::move(worker_id);
             options.listen = listen;
             options.maintenance = maintenance;
             options.maintenance_interval = std::chrono::milliseconds(maintenance_interval_ms);
             options.prune_after_ms = prune_after_ms;
             if (!log) options.log_sink = [](const std::string&) {};
             auto worker = std::make_unique<Worker>(*database, *registry, std::move(options));
             return PyWorker{std::move(database), std::move(registry), std::move(worker)};
           }),
           // Thirteen settings: by name only, so two swapped integers cannot
           // pass for each other.
           py::arg("database"), py::arg("registry"), py::kw_only(), py::arg("queues"), py::arg("concurrency"),
           py::arg("batch"), py::arg("poll_ms"), py::arg("grace_ms"), py::arg("worker_id"), py::arg("listen"),
           py::arg("maintenance"), py::arg("maintenance_interval_ms"), py::arg("prune_after_ms"), py::arg("log"))
      .def("start", [](PyWorker& self) { self.worker->start(); }, py::call_guard<py::gil_scoped_release>())
      .def("request_stop", [](PyWorker& self) { self.worker->request_stop(); },
           py::call_guard<py::gil_scoped_release>())
      .def("stop", [](PyWorker& self) { self.worker->stop(); }, py::call_guard<py::gil_scoped_release>())
      // True also when the worker stopped itself after a fatal thread error,
      // which stop() then rethrows.
      .def("stop_requested", [](const PyWorker& self) { return self.worker->stop_requested(); })
      // Waits (without the GIL) until stop is requested or `timeout_ms`
      // passes; whether it was. Python's run() waits in short slices, so its
      // signal handlers get to run in between.
      .def(
          "stop_wait_for",
          [](PyWorker& self, std::int64_t timeout_ms) {
            if (timeout_ms < 0) throw InvalidArgument("stop_wait_for: timeout_ms cannot be negative");
            return self.worker->stop_wait_for(std::chrono::milliseconds(timeout_ms));
          },
          py::call_guard<py::gil_scoped_release>())
      .def("stats", [](PyWorker& self) { return self.worker->stats(); });

  m.def(
      "notify_queues",
      [](std::shared_ptr<Database> database, const std::vector<std::string>& queues) {
        for (const auto& queue : queues) notify_queue(*database, queue);
      },
      py::call_guard<py::gil_scoped_release>());
}

}  // namespace payq::bindings

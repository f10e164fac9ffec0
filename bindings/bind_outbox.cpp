// The outbox for Python: TaskSpec is filled in by payq/outbox.py; results
// are read-only; operations run on a Database or an executor (bind_target).
#include <pybind11/stl.h>

#include "bind.hpp"
#include "bind_target.hpp"
#include "payq/outbox.hpp"

namespace payq::bindings {
namespace {

void bind_values(py::module_& m) {
  py::class_<Settlement>(m, "Settlement")
      .def(py::init<>())
      .def_readwrite("hold_id", &Settlement::hold_id)
      .def_readwrite("capture_account_id", &Settlement::capture_account_id)
      .def_readwrite("reverse_transaction_id", &Settlement::reverse_transaction_id)
      .def_readwrite("followup_json", &Settlement::followup_json);
  py::class_<TaskSpec>(m, "TaskSpec")
      .def(py::init<>())
      .def_readwrite("kind", &TaskSpec::kind)
      .def_readwrite("payload_json", &TaskSpec::payload_json)
      .def_readwrite("queue", &TaskSpec::queue)
      .def_readwrite("priority", &TaskSpec::priority)
      .def_readwrite("delay_ms", &TaskSpec::delay_ms)
      .def_readwrite("attempt_max", &TaskSpec::attempt_max)
      .def_readwrite("timeout_ms", &TaskSpec::timeout_ms)
      .def_readwrite("unique_key", &TaskSpec::unique_key)
      .def_readwrite("partition_key", &TaskSpec::partition_key)
      .def_readwrite("idempotency_key", &TaskSpec::idempotency_key)
      .def_readwrite("amount_minor", &TaskSpec::amount_minor)
      .def_readwrite("currency", &TaskSpec::currency)
      .def_readwrite("held", &TaskSpec::held)
      .def_readwrite("settlement", &TaskSpec::settlement);
  py::class_<QueueOverview>(m, "QueueOverview")
      .def_readonly("name", &QueueOverview::name)
      .def_readonly("paused", &QueueOverview::paused)
      .def_readonly("paused_until", &QueueOverview::paused_until)
      .def_readonly("concurrency_max", &QueueOverview::concurrency_max)
      .def_readonly("rate_count_max", &QueueOverview::rate_count_max)
      .def_readonly("rate_window_ms", &QueueOverview::rate_window_ms)
      .def_readonly("amount_max_minor", &QueueOverview::amount_max_minor)
      .def_readonly("amount_currency", &QueueOverview::amount_currency)
      .def_readonly("amount_window_ms", &QueueOverview::amount_window_ms)
      .def_readonly("weight", &QueueOverview::weight)
      .def_readonly("pending", &QueueOverview::pending)
      .def_readonly("runnable", &QueueOverview::runnable)
      .def_readonly("running", &QueueOverview::running)
      .def_readonly("held", &QueueOverview::held)
      .def_readonly("dead", &QueueOverview::dead)
      .def_readonly("needs_review", &QueueOverview::needs_review)
      .def_readonly("oldest_runnable_age_ms", &QueueOverview::oldest_runnable_age_ms)
      .def_readonly("started_last_minute", &QueueOverview::started_last_minute);
  py::class_<TaskAction>(m, "TaskAction")
      .def_readonly("task_id", &TaskAction::task_id)
      .def_readonly("action", &TaskAction::action)
      .def_readonly("actor", &TaskAction::actor)
      .def_readonly("note", &TaskAction::note)
      .def_readonly("created_at", &TaskAction::created_at);
  py::class_<CronEntry>(m, "CronEntry")
      .def_readonly("name", &CronEntry::name)
      .def_readonly("schedule", &CronEntry::schedule)
      .def_readonly("time_zone", &CronEntry::time_zone)
      .def_readonly("queue", &CronEntry::queue)
      .def_readonly("kind", &CronEntry::kind)
      .def_readonly("payload_json", &CronEntry::payload_json);
  py::class_<EnqueueResult>(m, "EnqueueResult")
      .def_readonly("task_id", &EnqueueResult::task_id)
      .def_readonly("created", &EnqueueResult::created);
  py::class_<Task>(m, "Task")
      .def_readonly("id", &Task::id)
      .def_readonly("queue", &Task::queue)
      .def_readonly("kind", &Task::kind)
      .def_readonly("payload_json", &Task::payload_json)
      .def_property_readonly("state", [](const Task& t) { return task_state_name(t.state); })
      .def_readonly("priority", &Task::priority)
      .def_readonly("attempt", &Task::attempt)
      .def_readonly("attempt_max", &Task::attempt_max)
      .def_readonly("timeout_ms", &Task::timeout_ms)
      .def_readonly("unique_key", &Task::unique_key)
      .def_readonly("partition_key", &Task::partition_key)
      .def_readonly("idempotency_key", &Task::idempotency_key)
      .def_readonly("amount_minor", &Task::amount_minor)
      .def_readonly("currency", &Task::currency)
      .def_readonly("settlement", &Task::settlement)
      .def_readonly("lease_token", &Task::lease_token)
      .def_readonly("lease_until", &Task::lease_until)
      .def_readonly("worker_id", &Task::worker_id)
      .def_readonly("result_json", &Task::result_json)
      .def_readonly("error", &Task::error)
      .def_readonly("run_at", &Task::run_at)
      .def_readonly("created_at", &Task::created_at)
      .def_readonly("finished_at", &Task::finished_at);
  py::class_<TaskAttempt>(m, "TaskAttempt")
      .def_readonly("task_id", &TaskAttempt::task_id)
      .def_readonly("attempt", &TaskAttempt::attempt)
      .def_readonly("lease_token", &TaskAttempt::lease_token)
      .def_readonly("worker_id", &TaskAttempt::worker_id)
      .def_readonly("outcome", &TaskAttempt::outcome)
      .def_readonly("error", &TaskAttempt::error)
      .def_readonly("duration_ms", &TaskAttempt::duration_ms)
      .def_readonly("started_at", &TaskAttempt::started_at)
      .def_readonly("finished_at", &TaskAttempt::finished_at)
      .def_readonly("traceback", &TaskAttempt::traceback);
  py::class_<QueueAction>(m, "QueueAction")
      .def_readonly("id", &QueueAction::id)
      .def_readonly("queue", &QueueAction::queue)
      .def_readonly("action", &QueueAction::action)
      .def_readonly("actor", &QueueAction::actor)
      .def_readonly("note", &QueueAction::note)
      .def_readonly("detail_json", &QueueAction::detail_json)
      .def_readonly("created_at", &QueueAction::created_at);
  py::class_<Completion>(m, "Completion")
      .def_property_readonly("state", [](const Completion& c) { return task_state_name(c.state); })
      .def_readonly("alerted", &Completion::alerted)
      .def_readonly("next_run_in_ms", &Completion::next_run_in_ms);
}

}  // namespace

void bind_outbox(py::module_& m) {
  bind_values(m);
  using OptText = std::optional<std::string>;
  m.def("outbox_enqueue_batch", [](py::handle target, const std::vector<TaskSpec>& specs) {
    return on_target(target, [&](Executor& e) { return Outbox(e).enqueue_batch(specs); });
  });
  m.attr("TASK_BATCH_COPY_COUNT_MIN") = task_batch_copy_count_min;
  m.def("outbox_claim", [](py::handle target, std::string queue, std::string worker_id, std::size_t count_max) {
    ClaimRequest request{std::move(queue), std::move(worker_id), count_max};
    return on_target(target, [&](Executor& e) { return Outbox(e).claim(request); });
  });
  // Keyword-only: nine values, several of one type, that must not be swapped.
  m.def(
      "outbox_complete",
      [](py::handle target, std::int64_t task_id, std::int64_t lease_token, int attempt, const std::string& outcome,
         std::string result_json, std::string error, std::optional<std::int64_t> retry_after_ms,
         std::string worker_id, std::int64_t duration_ms) {
        CompleteRequest request;
        request.task_id = task_id;
        request.lease_token = lease_token;
        request.attempt = attempt;
        request.outcome.kind = outcome_kind_parse(outcome);
        request.outcome.result_json = std::move(result_json);
        request.outcome.error = std::move(error);
        request.outcome.retry_after_ms = retry_after_ms;
        request.worker_id = std::move(worker_id);
        request.duration_ms = duration_ms;
        return on_target(target, [&](Executor& e) { return Outbox(e).complete(request); });
      },
      py::arg("target"), py::kw_only(), py::arg("task_id"), py::arg("lease_token"), py::arg("attempt"),
      py::arg("outcome"), py::arg("result_json") = "null", py::arg("error") = "",
      py::arg("retry_after_ms") = py::none(), py::arg("worker_id"), py::arg("duration_ms"));
  m.def("outbox_task_get", [](py::handle target, std::int64_t id) {
    return on_target(target, [&](Executor& e) { return Outbox(e).task_get(id); });
  });
  // Keyword-only: four optional texts side by side must not be swapped.
  m.def(
      "outbox_tasks_list",
      [](py::handle target, OptText state, OptText queue, OptText kind, OptText key,
         std::optional<std::int64_t> created_before_ms_ago, std::int64_t after_id, std::int64_t limit) {
        TaskFilter filter{std::move(state), std::move(queue), std::move(kind), std::move(key), created_before_ms_ago,
                          after_id, limit};
        return on_target(target, [&](Executor& e) { return Outbox(e).tasks_list(filter); });
      },
      py::arg("target"), py::kw_only(), py::arg("state") = py::none(), py::arg("queue") = py::none(),
      py::arg("kind") = py::none(), py::arg("key") = py::none(), py::arg("created_before_ms_ago") = py::none(),
      py::arg("after_id") = 0, py::arg("limit") = TaskFilter{}.limit);
  m.def("outbox_actions", [](py::handle target, std::int64_t task_id) {
    return on_target(target, [&](Executor& e) { return Outbox(e).actions(task_id); });
  });
  m.def("outbox_cron_list", [](py::handle target) {
    return on_target(target, [&](Executor& e) { return Outbox(e).cron_list(); });
  });
  m.def("outbox_cron_remove", [](py::handle target, const std::string& name) {
    on_target(target, [&](Executor& e) {
      Outbox(e).cron_remove(name);
      return 0;
    });
  });
  m.def("outbox_queues_overview", [](py::handle target) {
    return on_target(target, [&](Executor& e) { return Outbox(e).queues_overview(); });
  });
  m.def("outbox_stats", [](py::handle target) {
    auto stats = on_target(target, [&](Executor& e) { return Outbox(e).stats(); });
    std::vector<std::tuple<std::string, std::string, std::int64_t>> out;
    for (const auto& s : stats) out.emplace_back(s.queue, s.state, s.count);
    return out;
  });
  m.def("outbox_cron_set", [](py::handle target, std::string name, std::string schedule, std::string time_zone,
                              std::string queue, std::string kind, std::string payload_json) {
    CronEntry entry{std::move(name), std::move(schedule), std::move(time_zone), std::move(queue), std::move(kind),
                    std::move(payload_json)};
    on_target(target, [&](Executor& e) {
      Outbox(e).cron_set(entry);
      return 0;
    });
  });
  m.def("outbox_cron_fire", [](py::handle target) {
    return on_target(target, [&](Executor& e) { return Outbox(e).cron_fire(); });
  });
  m.def("outbox_attempts", [](py::handle target, std::int64_t id) {
    return on_target(target, [&](Executor& e) { return Outbox(e).attempts(id); });
  });
  m.def("outbox_task_action", [](py::handle target, std::int64_t id, std::string action, std::string actor,
                                 std::string note) {
    // resolve takes its answer: outbox_task_resolve.
    const OperatorAction parsed = operator_action_parse(action);
    if (parsed == OperatorAction::resolve) throw InvalidArgument("resolve a task with outbox_task_resolve");
    on_target(target, [&](Executor& e) {
      Outbox outbox(e);
      switch (parsed) {
        case OperatorAction::release: outbox.task_release(id, actor, note); break;
        case OperatorAction::retry: outbox.task_retry(id, actor, note); break;
        case OperatorAction::cancel: outbox.task_cancel(id, actor, note); break;
        case OperatorAction::resolve: break;
      }
      return 0;
    });
  });
  m.def("outbox_task_resolve", [](py::handle target, std::int64_t id, bool applied, std::string actor,
                                  std::string note, std::optional<std::int64_t> capture_account_id,
                                  bool hold_release_manual) {
    ResolveRequest request;
    request.task_id = id;
    request.applied = applied;
    request.actor = std::move(actor);
    request.note = std::move(note);
    request.capture_account_id = capture_account_id;
    request.hold_release_manual = hold_release_manual;
    on_target(target, [&](Executor& e) {
      Outbox(e).task_resolve(request);
      return 0;
    });
  });
  m.def("outbox_queue_configure",
        [](py::handle target, std::string name, std::optional<int> concurrency_max, std::optional<int> rate_count_max,
           std::optional<std::int64_t> rate_window_ms, std::optional<std::int64_t> amount_max_minor,
           OptText amount_currency, std::optional<std::int64_t> amount_window_ms, int weight, std::string actor,
           std::string note) {
          QueueConfig config{std::move(name), concurrency_max, rate_count_max, rate_window_ms, amount_max_minor,
                             std::move(amount_currency), amount_window_ms, weight};
          const QueueActionBy by{std::move(actor), std::move(note)};
          on_target(target, [&](Executor& e) {
            Outbox(e).queue_configure(config, by);
            return 0;
          });
        },
        py::arg("target"), py::arg("name"), py::kw_only(), py::arg("concurrency_max"), py::arg("rate_count_max"),
        py::arg("rate_window_ms"), py::arg("amount_max_minor"), py::arg("amount_currency"),
        py::arg("amount_window_ms"), py::arg("weight"), py::arg("actor") = "", py::arg("note") = "");
  m.def(
      "outbox_queue_pause",
      [](py::handle target, std::string name, bool paused, std::string actor, std::string note) {
        const QueueActionBy by{std::move(actor), std::move(note)};
        on_target(target, [&](Executor& e) {
          Outbox(e).queue_pause(name, paused, by);
          return 0;
        });
      },
      py::arg("target"), py::arg("name"), py::arg("paused"), py::kw_only(), py::arg("actor") = "",
      py::arg("note") = "");
  m.def(
      "outbox_queue_pause_until",
      [](py::handle target, std::string name, std::int64_t pause_ms, std::string actor, std::string note) {
        const QueueActionBy by{std::move(actor), std::move(note)};
        on_target(target, [&](Executor& e) {
          Outbox(e).queue_pause_until(name, pause_ms, by);
          return 0;
        });
      },
      py::arg("target"), py::arg("name"), py::arg("pause_ms"), py::kw_only(), py::arg("actor") = "",
      py::arg("note") = "");
  m.def(
      "outbox_queue_actions",
      [](py::handle target, OptText queue, std::int64_t limit) {
        return on_target(target, [&](Executor& e) { return Outbox(e).queue_actions(queue, limit); });
      },
      py::arg("target"), py::arg("queue"), py::arg("limit"));
  m.def("outbox_leases_rescue", [](py::handle target, std::int64_t count_max) {
    return on_target(target, [&](Executor& e) { return Outbox(e).leases_rescue(count_max); });
  });
  m.def("outbox_prune", [](py::handle target, std::int64_t finished_before_ms_ago, std::int64_t count_max) {
    return on_target(target, [&](Executor& e) { return Outbox(e).prune(finished_before_ms_ago, count_max); });
  });
}

}  // namespace payq::bindings

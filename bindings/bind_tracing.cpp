// Tracing for Python: the core's tracing hooks (payq/tracing.hpp) call a
// hook object of payq/tracing.py, which makes OpenTelemetry spans. The GIL
// is taken only while a tracer is installed, and only for the hook's call.
#include <pybind11/stl.h>

#include <memory>
#include <variant>

#include "bind.hpp"
#include "payq/outbox.hpp"
#include "payq/tracing.hpp"

namespace payq::bindings {
namespace {

const char* kind_name(tracing::SpanKind kind) {
  switch (kind) {
    case tracing::SpanKind::internal: return "internal";
    case tracing::SpanKind::client: return "client";
    case tracing::SpanKind::producer: return "producer";
    case tracing::SpanKind::consumer: return "consumer";
  }
  return "internal";
}

const char* status_name(tracing::Status status) {
  switch (status) {
    case tracing::Status::unset: return "unset";
    case tracing::Status::ok: return "ok";
    case tracing::Status::error: return "error";
  }
  return "unset";
}

py::dict attributes_to_python(const tracing::Attributes& attributes) {
  py::dict out;
  for (const tracing::Attribute& a : attributes) {
    std::visit([&](const auto& value) { out[py::str(a.key)] = py::cast(value); }, a.value);
  }
  return out;
}

py::object context_to_python(const std::optional<TraceContext>& context) {
  if (!context) return py::none();
  return py::make_tuple(context->traceparent, context->tracestate);
}

// Calls payq.tracing._Hook: start(...) -> int, end(...), context(id) ->
// (traceparent, tracestate) | None. A hook that raises loses its span: the
// error is reported as unraisable (sys.unraisablehook), the work goes on.
class PythonTracer final : public tracing::Tracer {
 public:
  explicit PythonTracer(py::object hook) : hook_(std::move(hook)) {}
  ~PythonTracer() override {
    // After the interpreter is gone (a tracer outliving it in a static),
    // the reference is dropped without a decrement rather than crash.
    if (!Py_IsInitialized()) {
      hook_.release();
      return;
    }
    py::gil_scoped_acquire gil;
    hook_ = py::object();
  }
  PythonTracer(const PythonTracer&) = delete;
  PythonTracer& operator=(const PythonTracer&) = delete;

  tracing::SpanId span_start(const tracing::SpanStart& s) noexcept override {
    py::gil_scoped_acquire gil;
    try {
      py::object id = hook_.attr("start")(s.name, kind_name(s.kind), s.parent, context_to_python(s.remote_parent),
                                          context_to_python(s.link), s.start_unix_ns,
                                          attributes_to_python(s.attributes));
      return id.cast<tracing::SpanId>();
    } catch (py::error_already_set& e) {
      e.discard_as_unraisable("payq tracing: span start");
    } catch (const std::exception&) {
      // A conversion failed: the span is lost.
    }
    return 0;
  }

  void span_end(tracing::SpanId span, const tracing::Attributes& attributes, tracing::Status status,
                const std::string& description, std::int64_t end_unix_ns) noexcept override {
    py::gil_scoped_acquire gil;
    try {
      hook_.attr("end")(span, attributes_to_python(attributes), status_name(status), description, end_unix_ns);
    } catch (py::error_already_set& e) {
      e.discard_as_unraisable("payq tracing: span end");
    } catch (const std::exception&) {
    }
  }

  std::optional<TraceContext> span_context(tracing::SpanId span) noexcept override {
    py::gil_scoped_acquire gil;
    try {
      py::object context = hook_.attr("context")(span);
      if (context.is_none()) return std::nullopt;
      auto [traceparent, tracestate] = context.cast<std::pair<std::string, std::string>>();
      return TraceContext{std::move(traceparent), std::move(tracestate)};
    } catch (py::error_already_set& e) {
      e.discard_as_unraisable("payq tracing: span context");
    } catch (const std::exception&) {
    }
    return std::nullopt;
  }

 private:
  py::object hook_;
};

}  // namespace

void bind_tracing(py::module_& m) {
  py::class_<TraceContext>(m, "TraceContext")
      .def(py::init([](std::string traceparent, std::string tracestate) {
             return TraceContext{std::move(traceparent), std::move(tracestate)};
           }),
           py::arg("traceparent"), py::arg("tracestate") = "")
      .def_readonly("traceparent", &TraceContext::traceparent)
      .def_readonly("tracestate", &TraceContext::tracestate);

  // The task's trace context, on the classes bind_outbox defined.
  py::reinterpret_borrow<py::class_<TaskSpec>>(m.attr("TaskSpec"))
      .def_readwrite("trace_context", &TaskSpec::trace_context);
  py::reinterpret_borrow<py::class_<Task>>(m.attr("Task")).def_readonly("trace_context", &Task::trace_context);

  m.def("tracing_install", [](py::object hook) { tracing::tracer_set(std::make_shared<PythonTracer>(std::move(hook))); });
  m.def("tracing_uninstall", [] { tracing::tracer_set(nullptr); });
  m.def("tracing_enabled", [] { return tracing::enabled(); });
  // The id of this thread's current core span (a worker's attempt, while
  // its handler runs), or None.
  m.def("tracing_current_span", []() -> std::optional<tracing::SpanId> {
    const tracing::Span* span = tracing::current();
    if (span == nullptr || !span->active()) return std::nullopt;
    return span->id();
  });
  m.def("tracing_flush", [] { tracing::flush(); });

  // A tracer must not outlive the interpreter it calls into.
  py::module_::import("atexit").attr("register")(py::cpp_function([] { tracing::tracer_set(nullptr); }));
}

}  // namespace payq::bindings

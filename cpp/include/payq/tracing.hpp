// Tracing hooks: spans for the work the core does (a claim, each attempt, a
// provider's HTTP call, a settlement, a ledger posting), handed to a Tracer
// that an embedding program installs. The core knows no tracing library:
// the Python binding implements Tracer with the OpenTelemetry API
// (python/payq/tracing.py); a C++ program may implement it with its own.
//
// With no tracer installed every hook costs one relaxed atomic load and a
// branch, and nothing is allocated.
//
// Spans carry ids, names, kinds, queues, outcomes and currencies, never a
// task's payload, result or error text, nor account numbers (only ids).
//
//   payq::tracing::Span span("payq.settle");
//   span.set("payq.task.id", task.id);
//   payq::tracing::Scope scope(span);  // children on this thread parent on it
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace payq {

// The W3C trace context (https://www.w3.org/TR/trace-context/) of the code
// that enqueued a task: its `traceparent` and `tracestate` headers, stored
// with the task so that each attempt continues that trace.
struct TraceContext {
  std::string traceparent;  // "00-<32 hex trace id>-<16 hex parent span id>-<2 hex flags>"
  std::string tracestate;   // vendor entries; may be empty
};

// Bounds, named once.
inline constexpr std::size_t traceparent_bytes = 55;
inline constexpr std::size_t tracestate_bytes_max = 512;

// InvalidArgument unless `context` is a version-00 traceparent with
// lower-case hex, non-zero trace and span ids, and a tracestate of at most
// tracestate_bytes_max printable ASCII bytes.
void trace_context_validate(const TraceContext& context);

namespace tracing {

using Value = std::variant<std::string, std::int64_t, bool>;
struct Attribute {
  std::string key;
  Value value;
};
using Attributes = std::vector<Attribute>;

enum class SpanKind { internal, client, producer, consumer };
enum class Status { unset, ok, error };

// A tracer's handle on one of its spans; 0 is none.
using SpanId = std::uint64_t;

struct SpanStart {
  std::string name;
  SpanKind kind = SpanKind::internal;
  SpanId parent = 0;                          // a span of the same tracer, or
  std::optional<TraceContext> remote_parent;  // a stored context (used when parent is 0)
  std::optional<TraceContext> link;           // a related span of another trace (a claim)
  std::int64_t start_unix_ns = 0;             // 0: now
  Attributes attributes;
};

// Implemented by the embedding program. Called from any thread but an HTTP
// client's event loop (ends recorded there are delivered later, see
// Span::end_deferred), never while the core holds a lock of its own. A
// tracer must not throw: losing a span is acceptable, losing the work is
// not. With no parent and no remote parent, a tracer may use its own notion
// of the caller's current span (Python's context, for a ledger call made by
// application code).
class Tracer {
 public:
  virtual ~Tracer() = default;
  virtual SpanId span_start(const SpanStart& start) noexcept = 0;
  // `end_unix_ns` 0: now.
  virtual void span_end(SpanId span, const Attributes& attributes, Status status, const std::string& description,
                        std::int64_t end_unix_ns) noexcept = 0;
  // The span's W3C context, to propagate it (an HTTP traceparent header).
  virtual std::optional<TraceContext> span_context(SpanId span) noexcept = 0;
};

// Installs the tracer (nullptr: tracing off). Spans already started end on
// the tracer that started them.
void tracer_set(std::shared_ptr<Tracer> tracer);

namespace detail {
extern std::atomic<bool> tracer_installed;
}  // namespace detail

// The one branch every hook pays when tracing is off.
inline bool enabled() noexcept { return detail::tracer_installed.load(std::memory_order_relaxed); }

// Wall-clock nanoseconds since the Unix epoch, as OpenTelemetry counts time.
std::int64_t now_unix_ns() noexcept;

// One span. Inert (every method a no-op) when no tracer was installed at
// its start. Ends when destroyed, with an error status if that happens
// while an exception unwinds the stack. Not thread-safe: one owner at a time.
class Span {
 public:
  Span() = default;
  // A child of the current span of this thread (see Scope), if any.
  explicit Span(const char* name, SpanKind kind = SpanKind::internal);
  // Only when tracing is on: builds its SpanStart lazily otherwise.
  static Span start(SpanStart start);
  ~Span();
  Span(Span&& other) noexcept;
  Span& operator=(Span&& other) noexcept;
  Span(const Span&) = delete;
  Span& operator=(const Span&) = delete;

  bool active() const noexcept { return id_ != 0; }
  SpanId id() const noexcept { return id_; }
  // Attributes are kept here and handed over at the end: one call into the
  // tracer at the start and one at the end, whatever is set in between.
  // Each copies its value only when the span is active.
  void set(const char* key, const std::string& value);
  void set(const char* key, const char* value);
  void set(const char* key, std::int64_t value);
  void set(const char* key, int value) { set(key, static_cast<std::int64_t>(value)); }
  void set(const char* key, bool value);
  void status(Status status, std::string description = {});
  void end(std::int64_t end_unix_ns = 0) noexcept;
  // Records the end now and leaves its delivery to the tracer to the next
  // span started or ended on another thread (or flush()): for a thread that
  // must never wait on a tracer, an HTTP client's event loop.
  void end_deferred() noexcept;
  // The span's W3C context; nullopt when inert.
  std::optional<TraceContext> context() const;

 private:
  std::shared_ptr<Tracer> tracer_;
  SpanId id_ = 0;
  Attributes attributes_;
  Status status_ = Status::unset;
  std::string description_;
  int uncaught_at_start_ = 0;
};

// Makes `span` the current span of this thread while it lives: spans
// started here without a parent become its children. Nests.
class Scope {
 public:
  explicit Scope(Span& span) noexcept;
  ~Scope();
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

 private:
  Span* previous_;
};

// The current span of this thread (nullptr: none).
Span* current() noexcept;
// Makes `span` (nullptr: none) current without a Scope, returning the
// previous one, for code whose span starts and ends in separate calls;
// the caller restores the previous one.
Span* current_exchange(Span* span) noexcept;
// Sets an attribute on the current span, if there is one.
void current_set(const char* key, const std::string& value);
void current_set(const char* key, std::int64_t value);
void current_set(const char* key, bool value);
// The current span's W3C context, if there is a current span.
std::optional<TraceContext> current_context();

// Delivers the ends recorded by Span::end_deferred().
void flush() noexcept;

}  // namespace tracing
}  // namespace payq

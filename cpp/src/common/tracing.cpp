// Tracing hooks (payq/tracing.hpp): the installed tracer, spans that end
// themselves, the current span of each thread, and the ends recorded on
// threads that must not wait on a tracer.
#include "payq/tracing.hpp"

#include <chrono>
#include <exception>
#include <mutex>
#include <utility>

#include "payq/error.hpp"

namespace payq {

namespace {

bool hex_lower(const std::string& text, std::size_t from, std::size_t count) {
  for (std::size_t i = from; i < from + count; ++i) {
    const char c = text[i];
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

bool all_zero(const std::string& text, std::size_t from, std::size_t count) {
  return text.compare(from, count, std::string(count, '0')) == 0;
}

}  // namespace

void trace_context_validate(const TraceContext& context) {
  const std::string& p = context.traceparent;
  // Version 00: "00-" trace id (32) "-" span id (16) "-" flags (2).
  const bool shaped = p.size() == traceparent_bytes && p.compare(0, 3, "00-") == 0 && p[35] == '-' && p[52] == '-' &&
                      hex_lower(p, 3, 32) && hex_lower(p, 36, 16) && hex_lower(p, 53, 2);
  if (!shaped || all_zero(p, 3, 32) || all_zero(p, 36, 16)) {
    throw InvalidArgument("a trace context's traceparent is \"00-<32 hex trace id>-<16 hex span id>-<2 hex flags>\" "
                          "with non-zero ids");
  }
  if (context.tracestate.size() > tracestate_bytes_max) {
    throw InvalidArgument("a trace context's tracestate is at most " + std::to_string(tracestate_bytes_max) + " bytes");
  }
  for (const char c : context.tracestate) {
    if (c < 0x20 || c > 0x7e) throw InvalidArgument("a trace context's tracestate is printable ASCII");
  }
}

namespace tracing {

namespace detail {
std::atomic<bool> tracer_installed{false};
}  // namespace detail

namespace {

std::mutex& tracer_mutex() {
  static std::mutex mutex;
  return mutex;
}

std::shared_ptr<Tracer>& tracer_slot() {
  static std::shared_ptr<Tracer> tracer;
  return tracer;
}

std::shared_ptr<Tracer> tracer_get() {
  std::lock_guard<std::mutex> guard(tracer_mutex());
  return tracer_slot();
}

thread_local Span* current_span = nullptr;

// An end recorded by Span::end_deferred(), waiting for delivery.
struct DeferredEnd {
  std::shared_ptr<Tracer> tracer;
  SpanId id = 0;
  Attributes attributes;
  Status status = Status::unset;
  std::string description;
  std::int64_t end_unix_ns = 0;
};

// Ends waiting for delivery. Every attempt's own end flushes them, so only
// a stalled worker lets them pile up; past the bound they are dropped (the
// tracer never exports those spans).
constexpr std::size_t deferred_count_max = 65'536;

struct Deferred {
  std::mutex mutex;
  std::vector<DeferredEnd> ends;
  std::atomic<bool> pending{false};
};

Deferred& deferred() {
  static Deferred d;
  return d;
}

}  // namespace

void tracer_set(std::shared_ptr<Tracer> tracer) {
  std::shared_ptr<Tracer> previous;
  {
    std::lock_guard<std::mutex> guard(tracer_mutex());
    previous = std::exchange(tracer_slot(), std::move(tracer));
    detail::tracer_installed.store(tracer_slot() != nullptr, std::memory_order_relaxed);
  }
  flush();
  // `previous` is released here, outside the lock: its destructor may wait
  // (the binding's takes the GIL).
}

std::int64_t now_unix_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

void flush() noexcept {
  Deferred& d = deferred();
  if (!d.pending.load(std::memory_order_acquire)) return;
  std::vector<DeferredEnd> ends;
  {
    std::lock_guard<std::mutex> guard(d.mutex);
    ends.swap(d.ends);
    d.pending.store(false, std::memory_order_release);
  }
  for (DeferredEnd& e : ends) e.tracer->span_end(e.id, e.attributes, e.status, e.description, e.end_unix_ns);
}

// ---------------------------------------------------------------- spans

Span::Span(const char* name, SpanKind kind) {
  if (!enabled()) return;
  SpanStart start;
  start.name = name;
  start.kind = kind;
  *this = Span::start(std::move(start));
}

Span Span::start(SpanStart start) {
  Span span;
  if (!enabled()) return span;
  std::shared_ptr<Tracer> tracer = tracer_get();
  if (!tracer) return span;
  flush();
  if (start.parent == 0 && !start.remote_parent && current_span != nullptr) start.parent = current_span->id_;
  span.id_ = tracer->span_start(start);
  if (span.id_ == 0) return span;
  span.tracer_ = std::move(tracer);
  span.uncaught_at_start_ = std::uncaught_exceptions();
  return span;
}

Span::~Span() {
  if (id_ == 0) return;
  // Ended by an exception: the span says so, without its message (which
  // may quote data a span must not carry).
  if (std::uncaught_exceptions() > uncaught_at_start_ && status_ != Status::error) {
    status(Status::error, "exception");
  }
  end();
}

Span::Span(Span&& other) noexcept
    : tracer_(std::move(other.tracer_)),
      id_(std::exchange(other.id_, 0)),
      attributes_(std::move(other.attributes_)),
      status_(other.status_),
      description_(std::move(other.description_)),
      uncaught_at_start_(other.uncaught_at_start_) {}

Span& Span::operator=(Span&& other) noexcept {
  if (this == &other) return *this;
  end();
  tracer_ = std::move(other.tracer_);
  id_ = std::exchange(other.id_, 0);
  attributes_ = std::move(other.attributes_);
  status_ = other.status_;
  description_ = std::move(other.description_);
  uncaught_at_start_ = other.uncaught_at_start_;
  return *this;
}

void Span::set(const char* key, const std::string& value) {
  if (id_ != 0) attributes_.push_back(Attribute{key, value});
}

void Span::set(const char* key, const char* value) {
  if (id_ != 0) attributes_.push_back(Attribute{key, std::string(value)});
}

void Span::set(const char* key, std::int64_t value) {
  if (id_ != 0) attributes_.push_back(Attribute{key, value});
}

void Span::set(const char* key, bool value) {
  if (id_ != 0) attributes_.push_back(Attribute{key, value});
}

void Span::status(Status status, std::string description) {
  if (id_ == 0) return;
  status_ = status;
  description_ = std::move(description);
}

void Span::end(std::int64_t end_unix_ns) noexcept {
  if (id_ == 0) return;
  flush();
  tracer_->span_end(std::exchange(id_, 0), attributes_, status_, description_, end_unix_ns);
  tracer_.reset();
  attributes_.clear();
}

void Span::end_deferred() noexcept {
  if (id_ == 0) return;
  Deferred& d = deferred();
  try {
    DeferredEnd e{std::move(tracer_), std::exchange(id_, 0), std::move(attributes_), status_,
                  std::move(description_), now_unix_ns()};
    std::lock_guard<std::mutex> guard(d.mutex);
    if (d.ends.size() >= deferred_count_max) return;
    d.ends.push_back(std::move(e));
    d.pending.store(true, std::memory_order_release);
  } catch (...) {
    // Out of memory: the span is lost, the work is not.
  }
}

std::optional<TraceContext> Span::context() const {
  if (id_ == 0) return std::nullopt;
  return tracer_->span_context(id_);
}

// ---------------------------------------------------------------- the current span

Scope::Scope(Span& span) noexcept : previous_(current_span) {
  if (span.active()) current_span = &span;
}

Scope::~Scope() { current_span = previous_; }

Span* current() noexcept { return current_span; }

Span* current_exchange(Span* span) noexcept { return std::exchange(current_span, span); }

void current_set(const char* key, const std::string& value) {
  if (current_span != nullptr) current_span->set(key, value);
}

void current_set(const char* key, std::int64_t value) {
  if (current_span != nullptr) current_span->set(key, value);
}

void current_set(const char* key, bool value) {
  if (current_span != nullptr) current_span->set(key, value);
}

std::optional<TraceContext> current_context() {
  if (current_span == nullptr) return std::nullopt;
  return current_span->context();
}

}  // namespace tracing
}  // namespace payq

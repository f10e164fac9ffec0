// The HTTP handler: a kind's configuration checked and compiled once; each
// attempt builds its call on the worker thread, runs it on the client's
// loop, and turns the answer into an outcome there (no database, no Python).
#include "payq/http_handler.hpp"

#include <algorithm>
#include <cctype>
#include <fstream>
#include <future>
#include <utility>

#include <nlohmann/json.hpp>

#include "http/http_text_internal.hpp"
#include "payq/error.hpp"
#include "payq/tracing.hpp"

namespace payq {
namespace {

using Json = nlohmann::json;

// A response body quoted in an error is cut to this many bytes.
constexpr std::size_t error_body_excerpt_bytes_max = 512;
// The stored result's body, as JSON text, stays within this.
constexpr std::size_t result_body_json_bytes_max = http_response_body_bytes_max_limit;
// JSON escaping grows a text at most this many times (a control byte
// becomes \u00XX).
constexpr std::size_t json_escape_growth_max = 6;
// A response body nested deeper than this is stored as text: walking it
// (and writing it out again) recurses once per level.
constexpr std::size_t json_depth_max = 256;

bool method_known(const std::string& method) {
  for (const char* known : {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"}) {
    if (method == known) return true;
  }
  return false;
}

bool method_sends_body(const std::string& method) { return method == "POST" || method == "PUT" || method == "PATCH"; }

bool header_name_valid(const std::string& name) {
  if (name.empty() || name.size() > 100) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 || std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
  });
}

std::string lower(std::string text) {
  for (char& c : text) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return text;
}

bool http_url(const std::string& url) {
  const std::string head = lower(url.substr(0, 8));
  return head.rfind("http://", 0) == 0 || head.rfind("https://", 0) == 0;
}

// The URL without its query, for error texts.
std::string url_label(const std::string& url) { return url.substr(0, url.find('?')); }

OutcomeKind outcome_of(HttpVerdict verdict) {
  switch (verdict) {
    case HttpVerdict::success: return OutcomeKind::success;
    case HttpVerdict::retry: return OutcomeKind::retry;
    case HttpVerdict::fail: return OutcomeKind::fail;
    case HttpVerdict::unknown: return OutcomeKind::unknown;
  }
  return OutcomeKind::unknown;
}

HandlerResult outcome(OutcomeKind kind, std::string error) {
  Outcome o;
  o.kind = kind;
  o.error = std::move(error);
  return o;
}

// Every string in `value`, keys included, redacted as decoded text, so no
// escaped form of a secret (tok\/..., \u0074ok...) survives into what is
// stored. False when the value nests deeper than json_depth_max: it is then
// kept as text, never walked or dumped further.
bool strings_redacted(Json& value, const HttpKind& kind, std::size_t depth = 0) {
  if (depth > json_depth_max) return false;
  if (value.is_string()) {
    value = kind.redacted(value.get<std::string>());
  } else if (value.is_array()) {
    for (Json& item : value) {
      if (!strings_redacted(item, kind, depth + 1)) return false;
    }
  } else if (value.is_object()) {
    Json redacted_object = Json::object();
    for (auto it = value.begin(); it != value.end(); ++it) {
      if (!strings_redacted(it.value(), kind, depth + 1)) return false;
      redacted_object[kind.redacted(it.key())] = std::move(it.value());
    }
    value = std::move(redacted_object);
  }
  return true;
}

// The body as stored, secrets redacted: its JSON value when it is complete
// JSON that PostgreSQL's jsonb takes (no \u0000), else the text as a JSON
// string, cut further if escaping would grow it past the bound.
Json body_value(const std::string& text, bool& truncated, const HttpKind& kind) {
  if (!truncated) {
    Json parsed = Json::parse(text, nullptr, false);
    if (!parsed.is_discarded() && strings_redacted(parsed, kind)) {
      const std::string dumped = parsed.dump();
      if (dumped.find("\\u0000") == std::string::npos && dumped.size() <= result_body_json_bytes_max) return parsed;
    }
  }
  Json value = http_detail::utf8_sanitized(kind.redacted(text));
  if (value.dump().size() > result_body_json_bytes_max) {
    value = std::string(
        http_detail::utf8_prefix(value.get_ref<const std::string&>(), result_body_json_bytes_max / json_escape_growth_max));
    truncated = true;
  }
  return value;
}

void config_check(bool ok, const std::string& message) {
  if (!ok) throw ConfigError("http kind: " + message);
}

// The provider call's span, a child of the attempt (current on the worker
// thread while the handler starts); null when tracing is off. With a
// status query first, it covers both requests. Attributes name the kind's
// URL template, never the rendered URL (it may carry payload values).
std::shared_ptr<tracing::Span> call_span(const HttpKindConfig& config) {
  if (!tracing::enabled()) return nullptr;
  auto span = std::make_shared<tracing::Span>("payq.http", tracing::SpanKind::client);
  span->set("http.request.method", config.method);
  span->set("url.template", url_label(config.url));
  return span;
}

// Ends the call's span from the client's loop thread, which must never
// wait on a tracer: the end is delivered by the worker thread.
void call_span_end(tracing::Span* span, const HttpResponse& response, const HandlerResult& result) {
  if (span == nullptr || !span->active()) return;
  if (response.status != 0) span->set("http.response.status_code", static_cast<std::int64_t>(response.status));
  if (response.failure != HttpFailure::none) span->set("error.type", http_failure_name(response.failure));
  const OutcomeKind kind = result.outcome ? result.outcome->kind : OutcomeKind::success;
  span->set("payq.attempt.outcome", outcome_kind_name(kind));
  if (kind == OutcomeKind::success) {
    span->status(tracing::Status::ok);
  } else {
    span->status(tracing::Status::error, outcome_kind_name(kind));
  }
  span->end_deferred();
}

// What the provider is sent with send_traceparent: the call span's
// context, else the one the task was enqueued with.
void trace_headers_add(HttpRequest& request, const tracing::Span* span, const Task& task) {
  std::optional<TraceContext> context = span != nullptr ? span->context() : std::nullopt;
  if (!context) context = task.trace_context;
  if (!context) return;
  request.headers.push_back(HttpHeader{"traceparent", context->traceparent});
  if (!context->tracestate.empty()) request.headers.push_back(HttpHeader{"tracestate", context->tracestate});
}

}  // namespace

// ---------------------------------------------------------------- compiling a kind

// Checks, in order: method; url (a template starting http:// or https://);
// headers (valid names, none that libcurl manages, secrets readable);
// idempotency header; body (a template, only for POST/PUT/PATCH);
// timeouts (1 ms to http_timeout_ms_max); the body
// bound; redirects (GET/HEAD only); the CA file (readable); the rules;
// the back-pressure bounds; the status query.
std::shared_ptr<const HttpKind> HttpKind::compile(HttpKindConfig config) {
  auto kind = std::make_shared<HttpKind>(Token{});
  HttpKindConfig& c = config;
  config_check(method_known(c.method), "method '" + c.method + "' is not GET, HEAD, POST, PUT, PATCH or DELETE");
  config_check(http_url(c.url), "url must start with http:// or https://");
  kind->url_ = HttpTemplate::parse(c.url, HttpTemplateContext::url, "url");

  std::vector<std::string> names;
  for (const HttpHeaderConfig& h : c.headers) {
    config_check(header_name_valid(h.name), "header name '" + h.name + "' is not an HTTP token");
    const std::string name = lower(h.name);
    for (const char* managed : {"content-length", "transfer-encoding", "host", "expect", "connection"}) {
      config_check(name != managed, "header " + h.name + " is set by the HTTP client itself");
    }
    config_check(std::find(names.begin(), names.end(), name) == names.end(), "header " + h.name + " is given twice");
    names.push_back(name);
    if (name == "content-type") kind->content_type_given_ = true;
    Header header{h.name, std::nullopt, {}};
    if (h.secret_env) {
      for (unsigned char ch : h.value) config_check(ch >= 0x20 && ch != 0x7f, "header " + h.name + " contains a control character");
      header.fixed = h.value + kind->secrets_.from_env(*h.secret_env);
    } else {
      header.value = HttpTemplate::parse(h.value, HttpTemplateContext::header, "header " + h.name);
    }
    kind->headers_.push_back(std::move(header));
  }
  if (c.send_traceparent) {
    for (const char* sent : {"traceparent", "tracestate"}) {
      config_check(std::find(names.begin(), names.end(), sent) == names.end(),
                   std::string("header ") + sent + " is sent by send_traceparent; give one or the other");
      config_check(lower(c.idempotency_header) != sent,
                   std::string("idempotency_header ") + sent + " is sent by send_traceparent");
    }
  }
  if (!c.idempotency_header.empty()) {
    config_check(header_name_valid(c.idempotency_header),
                 "idempotency_header '" + c.idempotency_header + "' is not an HTTP token");
    config_check(std::find(names.begin(), names.end(), lower(c.idempotency_header)) == names.end(),
                 "header " + c.idempotency_header + " is also the idempotency header");
  }
  if (c.body) {
    config_check(method_sends_body(c.method), "a " + c.method + " request has no body");
    kind->body_ = HttpTemplate::parse(*c.body, HttpTemplateContext::body, "body");
  }

  config_check(c.connect_timeout_ms >= 1 && c.connect_timeout_ms <= http_timeout_ms_max,
               "connect_timeout_ms must be 1 to " + std::to_string(http_timeout_ms_max));
  config_check(c.timeout_ms >= 1 && c.timeout_ms <= http_timeout_ms_max,
               "timeout_ms must be 1 to " + std::to_string(http_timeout_ms_max));
  config_check(c.response_body_bytes_max >= 1 && c.response_body_bytes_max <= http_response_body_bytes_max_limit,
               "response_body_bytes_max must be 1 to " + std::to_string(http_response_body_bytes_max_limit));
  config_check(!c.follow_redirects || c.method == "GET" || c.method == "HEAD",
               "follow_redirects is for GET and HEAD kinds only: a " + c.method +
                   " must never be re-sent to wherever a redirect points");
  if (c.ca_file) {
    std::ifstream file(*c.ca_file);
    config_check(file.good(), "ca_file " + *c.ca_file + " cannot be read");
  }
  try {
    http_rules_validate(c.rules);
  } catch (const ConfigError& e) {
    throw ConfigError(std::string("http kind: ") + e.what());
  }
  config_check(c.retry_after_ms_max >= 1 && c.retry_after_ms_max <= task_delay_ms_max,
               "retry_after_ms_max must be 1 to " + std::to_string(task_delay_ms_max));
  config_check(c.rate_limited_pause_ms >= 1 && c.rate_limited_pause_ms <= c.retry_after_ms_max,
               "rate_limited_pause_ms must be 1 to retry_after_ms_max");
  if (c.status_query) {
    config_check(http_url(c.status_query->url), "status_query url must start with http:// or https://");
    kind->status_url_ = HttpTemplate::parse(c.status_query->url, HttpTemplateContext::url, "status_query url");
    config_check(!c.status_query->not_found_statuses.empty(), "status_query needs a not-found status (404)");
    for (int status : c.status_query->not_found_statuses) {
      config_check(status >= 100 && status <= 599, "status_query not-found status " + std::to_string(status) +
                                                       " is not within 100-599");
    }
  }
  kind->config_ = std::move(config);
  return kind;
}

// ---------------------------------------------------------------- building calls

std::vector<HttpHeader> HttpKind::headers_for(const Task& task, const Json& payload) const {
  std::vector<HttpHeader> out;
  out.reserve(headers_.size() + 2);
  for (const Header& h : headers_) out.push_back(HttpHeader{h.name, h.value ? h.value->render(task, payload) : h.fixed});
  return out;
}

namespace {

Json payload_of(const Task& task) {
  Json payload = Json::parse(task.payload_json, nullptr, false);
  if (payload.is_discarded()) throw InvalidArgument("the task's payload is not JSON");
  return payload;
}

}  // namespace

HttpRequest HttpKind::request(const Task& task) const {
  const Json payload = payload_of(task);
  HttpRequest r;
  r.method = config_.method;
  r.url = url_.render(task, payload);
  r.headers = headers_for(task, payload);
  if (!config_.idempotency_header.empty()) {
    for (unsigned char c : task.idempotency_key) {
      if (c < 0x20 || c == 0x7f) throw InvalidArgument("the task's idempotency key contains a control character");
    }
    r.headers.push_back(HttpHeader{config_.idempotency_header, task.idempotency_key});
  }
  if (body_) {
    r.body = body_->render(task, payload);
  } else if (method_sends_body(config_.method)) {
    r.body = task.payload_json;
  }
  if (r.body && !content_type_given_) r.headers.push_back(HttpHeader{"Content-Type", "application/json"});
  r.connect_timeout_ms = std::min(config_.connect_timeout_ms, config_.timeout_ms);
  r.timeout_ms = config_.timeout_ms;
  r.response_body_bytes_max = config_.response_body_bytes_max;
  r.follow_redirects = config_.follow_redirects;
  r.ca_file = config_.ca_file;
  return r;
}

HttpRequest HttpKind::status_request(const Task& task) const {
  if (!status_url_) throw InvalidState("this http kind has no status query");
  const Json payload = payload_of(task);
  HttpRequest r;
  r.method = "GET";
  r.url = status_url_->render(task, payload);
  r.headers = headers_for(task, payload);
  r.connect_timeout_ms = std::min(config_.connect_timeout_ms, config_.timeout_ms);
  r.timeout_ms = config_.timeout_ms;
  r.response_body_bytes_max = config_.response_body_bytes_max;
  r.ca_file = config_.ca_file;
  return r;
}

// ---------------------------------------------------------------- reading answers

std::string HttpKind::result_json(const HttpResponse& response, const char* via) const {
  bool truncated = response.body_truncated;
  Json body = body_value(response.body, truncated, *this);
  Json out = {{"status", response.status}, {"body", std::move(body)}, {"truncated", truncated}};
  if (via != nullptr) out["via"] = via;
  return out.dump(-1, ' ', false, Json::error_handler_t::replace);
}

std::string HttpKind::error_text(const std::string& reason, const HttpResponse& response) const {
  std::string text = redacted(reason);
  if (response.failure == HttpFailure::none && !response.body.empty()) {
    const std::string_view excerpt = http_detail::utf8_prefix(response.body, error_body_excerpt_bytes_max);
    // Redacted on its own, before "..." is added: an excerpt that ends
    // inside a secret then loses the secret's start too.
    text += "; body: " + redacted(std::string(excerpt));
    if (excerpt.size() < response.body.size() || response.body_truncated) text += "...";
  }
  return redacted(http_detail::utf8_sanitized(text));
}

void HttpKind::back_pressure(const HttpResponse& response, HandlerResult& result) const {
  if (response.failure != HttpFailure::none || !result.outcome || result.outcome->kind == OutcomeKind::success) return;
  const std::optional<std::int64_t> after = http_retry_after_ms(response, config_.retry_after_ms_max);
  if (response.status != 429 && !after) return;
  const std::int64_t pause_ms = after.value_or(config_.rate_limited_pause_ms);
  result.outcome->retry_after_ms = pause_ms;
  if (pause_ms > 0) result.queue_pause_ms = pause_ms;
}

HandlerResult HttpKind::result(const HttpResponse& response) const {
  const HttpClassification c = http_classify(config_.rules, response);
  const std::string label = config_.method + " " + url_label(config_.url) + ": ";
  HandlerResult out = outcome(outcome_of(c.verdict), {});
  if (c.verdict == HttpVerdict::success) {
    out.outcome->result_json = result_json(response, nullptr);
  } else {
    out.outcome->error = error_text(label + c.reason, response);
  }
  back_pressure(response, out);
  return out;
}

std::optional<HandlerResult> HttpKind::status_result(const HttpResponse& response) const {
  if (!config_.status_query) throw InvalidState("this http kind has no status query");
  const std::string label = "status query GET " + url_label(config_.status_query->url) + ": ";
  const auto& not_found = config_.status_query->not_found_statuses;
  if (response.failure == HttpFailure::none &&
      std::find(not_found.begin(), not_found.end(), response.status) != not_found.end()) {
    return std::nullopt;
  }
  const HttpClassification c = http_classify(config_.rules, response);
  const bool answered = response.failure == HttpFailure::none && response.status >= 200 && response.status < 300;
  HandlerResult out;
  if (answered && c.verdict == HttpVerdict::success) {
    out = outcome(OutcomeKind::success, {});
    out.outcome->result_json = result_json(response, "status_query");
  } else if (answered && c.verdict == HttpVerdict::fail) {
    out = outcome(OutcomeKind::fail, error_text(label + "the provider reports it failed: " + c.reason, response));
  } else {
    // Proves nothing either way: the earlier attempt may still have been applied.
    out = outcome(OutcomeKind::unknown, error_text(label + "inconclusive: " + c.reason, response));
  }
  back_pressure(response, out);
  return out;
}

std::optional<HandlerResult> HttpKind::status_result(const HttpStatusAnswer& answer) const {
  switch (answer.finding) {
    case HttpStatusFinding::not_found:
      return std::nullopt;
    case HttpStatusFinding::applied: {
      HandlerResult out = outcome(OutcomeKind::success, {});
      out.outcome->result_json = result_json_redacted(answer.result_json);
      return out;
    }
    case HttpStatusFinding::failed:
      return outcome(OutcomeKind::fail, redacted(http_detail::utf8_sanitized("status check: the provider reports it failed: " + answer.detail)));
    case HttpStatusFinding::unknown:
      break;
  }
  return outcome(OutcomeKind::unknown, redacted(http_detail::utf8_sanitized("status check inconclusive: " + answer.detail)));
}

std::string HttpKind::result_json_redacted(const std::string& result_json) const {
  Json parsed = Json::parse(result_json, nullptr, false);
  if (parsed.is_discarded() || !strings_redacted(parsed, *this)) return redacted(result_json);
  return parsed.dump(-1, ' ', false, Json::error_handler_t::replace);
}

HandlerResult HttpKind::unbuildable(const std::string& why, bool status_query) const {
  // The call itself never will be built, so nothing was or will be sent:
  // `fail`. A status query that cannot be built proves nothing about the
  // earlier attempt, which may have been applied: `unknown`.
  if (status_query) return outcome(OutcomeKind::unknown, redacted("cannot build the status query: " + why));
  return outcome(OutcomeKind::fail, redacted("cannot build the request: " + why));
}

// ---------------------------------------------------------------- the handler

HttpHandler::HttpHandler(std::shared_ptr<const HttpKind> kind, std::shared_ptr<HttpClient> client,
                         HttpStatusCheck status_check)
    : kind_(std::move(kind)), client_(std::move(client)), status_check_(std::move(status_check)) {
  if (!kind_) throw ConfigError("http handler: the kind is null");
  if (!client_) throw ConfigError("http handler: the client is null");
  if (status_check_ && kind_->has_status_url()) {
    throw ConfigError("http handler: a kind has one status check, a status query url or a callable, not both");
  }
}

HandlerResult HttpHandler::handle(const Task& task, const TaskContext& context) {
  auto promise = std::make_shared<std::promise<HandlerResult>>();
  std::future<HandlerResult> future = promise->get_future();
  handle_async(task, context, [promise](HandlerResult result) { promise->set_value(std::move(result)); });
  HandlerResult result = future.get();
  tracing::flush();  // the call's span ended on the client's loop
  return result;
}

// Worth asking only when an earlier attempt may have been applied, which is
// what an `unknown` attempt is; without the attempt history, any retry is.
bool HttpHandler::status_check_due(const Task& task, const TaskContext& context) const {
  if (!kind_->has_status_url() && !status_check_) return false;
  if (task.attempt <= 1) return false;
  if (!context.attempts_read) return true;
  for (const TaskAttempt& a : context.attempts_read()) {
    if (a.attempt < task.attempt && a.outcome == outcome_kind_name(OutcomeKind::unknown)) return true;
  }
  return false;
}

void HttpHandler::handle_async(const Task& task, const TaskContext& context, HandlerCallback done) {
  HttpRequest call;
  try {
    call = kind_->request(task);
  } catch (const InvalidArgument& e) {
    done(kind_->unbuildable(e.what(), false));
    return;
  }
  if (status_check_due(task, context)) {
    if (status_check_) {
      HttpStatusAnswer answer;
      try {
        answer = status_check_(task);
      } catch (const std::exception& e) {
        answer = HttpStatusAnswer{HttpStatusFinding::unknown, "null", std::string("the status check threw: ") + e.what()};
      }
      if (std::optional<HandlerResult> found = kind_->status_result(answer)) {
        done(std::move(*found));
        return;
      }
    } else {
      HttpRequest query;
      try {
        query = kind_->status_request(task);
      } catch (const InvalidArgument& e) {
        done(kind_->unbuildable(e.what(), true));
        return;
      }
      std::shared_ptr<tracing::Span> span = call_span(kind_->config());
      if (kind_->config().send_traceparent) {
        trace_headers_add(query, span.get(), task);
        trace_headers_add(call, span.get(), task);
      }
      if (span) span->set("payq.http.status_query", true);
      // The client outlives its callbacks' runs, so a raw pointer to it is
      // safe in there; owning it would let a callback end the client.
      client_->send(std::move(query), [kind = kind_, client = client_.get(), call = std::move(call), done,
                                       span](HttpResponse response) mutable {
        if (std::optional<HandlerResult> found = kind->status_result(response)) {
          call_span_end(span.get(), response, *found);
          done(std::move(*found));
          return;
        }
        if (span) span->set("payq.http.status_query.status_code", static_cast<std::int64_t>(response.status));
        client->send(std::move(call), [kind, done, span](HttpResponse paid) {
          HandlerResult result = kind->result(paid);
          call_span_end(span.get(), paid, result);
          done(std::move(result));
        });
      });
      return;
    }
  }
  std::shared_ptr<tracing::Span> span = call_span(kind_->config());
  if (kind_->config().send_traceparent) trace_headers_add(call, span.get(), task);
  client_->send(std::move(call), [kind = kind_, done = std::move(done), span](HttpResponse response) {
    HandlerResult result = kind->result(response);
    call_span_end(span.get(), response, result);
    done(std::move(result));
  });
}

}  // namespace payq

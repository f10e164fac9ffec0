// The built-in HTTP handler: a task kind whose side effect is one HTTP call
// to a provider (a payout, a charged API), configured rather than coded.
// Per kind: method, URL, headers (secrets from the environment), a body
// rendered from the payload, timeouts, an idempotency header carrying the
// task's idempotency_key, rules that classify the answer (http_classify.hpp),
// an optional status query asked before paying again after an attempt that
// may have been applied, and back-pressure on 429 / Retry-After.
//
// The call runs on an HttpClient's event loop: the handler is asynchronous
// (Handler::handle_async), so a worker thread has a whole claimed batch of
// calls in flight, with no thread per call and no Python.
//
//   auto client = std::make_shared<payq::HttpClient>();
//   payq::HttpKindConfig payout;
//   payout.url = "https://provider.example/payouts";
//   payout.headers = {{"Authorization", "Bearer ", "PROVIDER_TOKEN"}};
//   payout.body = R"({"account":"{{payload.account}}","amount_minor":{{payload.amount_minor}}})";
//   payout.rules.success_when = {{"return_code", "SUCCESS"}};
//   payout.rules.error_codes = {{"NOTENOUGH", payq::HttpVerdict::fail}};
//   payout.status_query = payq::HttpStatusQueryConfig{"https://provider.example/payouts/{{task.idempotency_key}}", {404}};
//   registry.add("payout", std::make_shared<payq::HttpHandler>(payq::HttpKind::compile(payout), client));
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "payq/handler.hpp"
#include "payq/http_classify.hpp"
#include "payq/http_client.hpp"
#include "payq/http_secret.hpp"
#include "payq/http_template.hpp"

namespace payq {

struct HttpHeaderConfig {
  std::string name;
  // The value, a template (http_template.hpp); with secret_env, the literal
  // text before the secret ("Bearer ").
  std::string value;
  // An environment variable holding a secret that follows `value`. Read
  // once, when the kind is compiled; never written to logs, errors or
  // results (HttpSecrets).
  std::optional<std::string> secret_env;
};

// Asks the provider whether an earlier attempt was applied: a GET to `url`
// (a template, usually with {{task.idempotency_key}}) with the kind's
// headers. A status in not_found_statuses means "never applied": pay again
// with the same idempotency key. A 2xx answer is classified by the kind's
// rules: success means applied (the answer becomes the result), fail means
// it definitely failed. Anything else (an error, a timeout, a verdict of
// retry or unknown) proves nothing: the attempt is `unknown`, to be asked
// again later.
struct HttpStatusQueryConfig {
  std::string url;
  std::vector<int> not_found_statuses{404};
};

// What a status check found. A callable status check (see HttpHandler)
// returns one of these.
enum class HttpStatusFinding { applied, failed, not_found, unknown };
struct HttpStatusAnswer {
  HttpStatusFinding finding = HttpStatusFinding::unknown;
  std::string result_json = "null";  // the task's result when applied
  std::string detail;                // why, for the error when failed or unknown
};
using HttpStatusCheck = std::function<HttpStatusAnswer(const Task&)>;

struct HttpKindConfig {
  std::string method = "POST";  // GET, HEAD, POST, PUT, PATCH or DELETE
  std::string url;              // a template; http:// or https://
  std::vector<HttpHeaderConfig> headers;
  // A template; nullopt: the task's payload JSON itself, for POST, PUT and
  // PATCH (GET, HEAD and DELETE send no body). A body is sent as
  // application/json unless a Content-Type header says otherwise.
  std::optional<std::string> body;
  // Carries the task's idempotency_key on every attempt; empty: none.
  std::string idempotency_header = "Idempotency-Key";
  // Resolving, connecting and the TLS handshake (within timeout_ms).
  std::int64_t connect_timeout_ms = 5'000;
  // The whole call. Keep it well below the task's timeout (its lease):
  // an attempt still waiting when the lease ends is recorded `unknown`.
  std::int64_t timeout_ms = 30'000;
  // The response body kept as the result (or in the error); a longer body
  // is cut off there and marked truncated, never read further.
  std::size_t response_body_bytes_max = 64 * 1024;
  // Follow 3xx (GET and HEAD kinds only: a payment is never re-sent to
  // wherever a redirect points). Not followed, a 3xx is classified like any
  // status: `fail` by default.
  bool follow_redirects = false;
  // PEM file of the certificate authorities to trust instead of the
  // system's. TLS peer and host name verification cannot be turned off.
  std::optional<std::string> ca_file;
  HttpRules rules;
  // Back-pressure: a 429 pauses the task's queue for every worker for the
  // Retry-After time, or this long without one; a Retry-After on any answer
  // that is not a success does the same. Capped at retry_after_ms_max.
  std::int64_t rate_limited_pause_ms = 1'000;
  std::int64_t retry_after_ms_max = 600'000;
  std::optional<HttpStatusQueryConfig> status_query;
  // Send the attempt's W3C trace context to the provider (a `traceparent`
  // header, and `tracestate` when there is one) on the call and the status
  // query, so the provider's traces join the task's: the context of the
  // call's span when tracing is on (payq/tracing.hpp), else the one stored
  // with the task at enqueue. Off by default: it tells the provider the
  // trace's ids.
  bool send_traceparent = false;
};

// A kind's configuration, checked, with templates parsed and secrets read:
// immutable and shared by every call of the kind.
class HttpKind {
 public:
  // ConfigError naming the first problem (see http_handler.cpp for the list).
  static std::shared_ptr<const HttpKind> compile(HttpKindConfig config);

  // The call for `task`; InvalidArgument when the task cannot fill the
  // templates (a missing payload field).
  HttpRequest request(const Task& task) const;
  // The status query for `task` (requires has_status_url()).
  HttpRequest status_request(const Task& task) const;
  bool has_status_url() const noexcept { return status_url_.has_value(); }

  // The attempt's result from the call's response: the outcome (success
  // with the bounded, redacted body as result; otherwise the reason and a
  // body excerpt as error) and any back-pressure.
  HandlerResult result(const HttpResponse& response) const;
  // The attempt's result from a status query; nullopt: not found, pay now.
  std::optional<HandlerResult> status_result(const HttpResponse& response) const;
  std::optional<HandlerResult> status_result(const HttpStatusAnswer& answer) const;
  // The attempt's result when the request could not be built.
  HandlerResult unbuildable(const std::string& why, bool status_query) const;

  std::string redacted(std::string text) const { return secrets_.redacted(std::move(text)); }
  const HttpKindConfig& config() const noexcept { return config_; }

 private:
  // Only compile() makes one (make_shared needs a public constructor).
  struct Token {
    explicit Token() = default;
  };

 public:
  explicit HttpKind(Token) {}

 private:
  struct Header {
    std::string name;
    std::optional<HttpTemplate> value;  // nullopt: `fixed` (a secret's header)
    std::string fixed;
  };

  std::vector<HttpHeader> headers_for(const Task& task, const nlohmann::json& payload) const;
  std::string result_json(const HttpResponse& response, const char* via) const;
  // A status check's result JSON with its decoded strings redacted.
  std::string result_json_redacted(const std::string& result_json) const;
  std::string error_text(const std::string& reason, const HttpResponse& response) const;
  void back_pressure(const HttpResponse& response, HandlerResult& result) const;

  HttpKindConfig config_;  // secrets are not in here: only their variables' names
  HttpSecrets secrets_;
  HttpTemplate url_;
  std::optional<HttpTemplate> body_;
  std::vector<Header> headers_;
  bool content_type_given_ = false;
  std::optional<HttpTemplate> status_url_;
};

class HttpHandler final : public Handler {
 public:
  // `status_check`: a callable instead of the kind's status query (not
  // both), called on the worker thread before paying again.
  // ConfigError for a null kind or client, or two status checks.
  HttpHandler(std::shared_ptr<const HttpKind> kind, std::shared_ptr<HttpClient> client,
              HttpStatusCheck status_check = {});

  // Blocks until the call is done; the worker uses handle_async().
  HandlerResult handle(const Task& task, const TaskContext& context) override;
  bool asynchronous() const noexcept override { return true; }
  // Builds the call (an unbuildable one is `fail`: it never will be), asks
  // the status query first when an earlier attempt of the task was
  // `unknown`, then calls. `done` runs on the client's loop thread.
  void handle_async(const Task& task, const TaskContext& context, HandlerCallback done) override;

  const HttpKind& kind() const noexcept { return *kind_; }

 private:
  bool status_check_due(const Task& task, const TaskContext& context) const;

  std::shared_ptr<const HttpKind> kind_;
  // Declared after kind_ so it is destroyed first: the client's remaining
  // callbacks then never hold the last reference to the kind.
  std::shared_ptr<HttpClient> client_;
  HttpStatusCheck status_check_;
};

}  // namespace payq

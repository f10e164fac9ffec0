// An HTTP client for many calls in flight without a thread per call: one
// libcurl multi handle driven by one event-loop thread. A caller hands over
// a request and a callback and returns at once; the loop runs the transfer
// and calls back with the response, or with the failure and whether any of
// the request may have reached the server, which is what decides between
// "definitely not applied" and "may have been applied" for a payment.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace payq {

// Bounds, named once.
// A stored response body stays well inside task_payload_bytes_max, even
// when every byte needs escaping as JSON text.
inline constexpr std::size_t http_response_body_bytes_max_limit = 192 * 1024;
inline constexpr std::size_t http_response_header_bytes_max = 64 * 1024;
inline constexpr long http_redirect_count_max = 5;
inline constexpr std::int64_t http_timeout_ms_max = 3'600'000;

enum class HttpFailure {
  none,        // a complete response arrived (its body possibly cut at the bound)
  resolve,     // the host name did not resolve: nothing was sent
  connect,     // the connection was refused or the host unreachable: nothing was sent
  tls,         // the TLS handshake or certificate verification failed: nothing was sent
  timeout,     // the connect or total timeout passed (see request_sent)
  connection,  // the connection broke or closed without a full answer (see request_sent)
  aborted,     // the client shut down before the transfer ended (see request_sent)
  overloaded,  // refused at once: too many transfers in flight; nothing was sent
  other,       // anything else libcurl reports (see request_sent)
};
const char* http_failure_name(HttpFailure failure);

struct HttpHeader {
  std::string name;
  std::string value;
};

struct HttpRequest {
  std::string method = "GET";  // GET, HEAD, POST, PUT, PATCH or DELETE
  std::string url;             // http:// or https:// only
  std::vector<HttpHeader> headers;
  std::optional<std::string> body;  // nullopt: none
  std::int64_t connect_timeout_ms = 5'000;  // resolving, connecting and the TLS handshake
  std::int64_t timeout_ms = 30'000;         // the whole transfer
  // The response body kept; the transfer stops reading once it is exceeded.
  std::size_t response_body_bytes_max = 64 * 1024;
  bool follow_redirects = false;  // at most http_redirect_count_max, http(s) only
  // PEM file of the certificate authorities to trust instead of the
  // system's. Peer and host name are always verified.
  std::optional<std::string> ca_file;
};

struct HttpResponse {
  HttpFailure failure = HttpFailure::none;
  // Whether any of the request may have reached the server. False only if
  // the transfer failed before the connection (TLS included) was ready for
  // the request: then the server certainly never saw it.
  bool request_sent = false;
  int status = 0;                   // 0: no status line arrived
  std::vector<HttpHeader> headers;  // of the last response; names in lower case
  std::string body;                 // at most response_body_bytes_max bytes
  bool body_truncated = false;      // the body was longer and was cut off
  std::string error;                // libcurl's description of a failure
  std::int64_t duration_ms = 0;

  // The first header of that (lower case) name, if any.
  const std::string* header(std::string_view name_lower) const;
};

// Called exactly once per request with its response.
using HttpCallback = std::function<void(HttpResponse)>;

struct HttpClientOptions {
  // Transfers in flight or waiting to start; more are refused at once with
  // `overloaded` (nothing sent), so memory stays bounded under any load.
  std::size_t transfer_count_max = 4096;
  // Idle connections kept for reuse, over all hosts.
  long connection_cache_count_max = 64;
};

class HttpClient {
 public:
  // Starts the event-loop thread. ConfigError if libcurl cannot start.
  explicit HttpClient(HttpClientOptions options = {});
  // Stops the loop: transfers still in flight end with `aborted` (their
  // callbacks run before this returns). Must not run on the loop thread,
  // so never let a callback own the last reference to its client.
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // Starts `request` and returns at once. `callback` runs on the loop
  // thread, or right here when the request is refused (overloaded, client
  // stopping, a request libcurl cannot take). It must be quick, since every
  // transfer waits while it runs; it may call send() again. An exception
  // escaping it is reported on stderr and otherwise ignored.
  void send(HttpRequest request, HttpCallback callback);
  // Blocks until the response. Never call it from a callback.
  HttpResponse send_and_wait(HttpRequest request);
  // Transfers in flight or waiting to start.
  std::size_t transfer_count() const;

 private:
  class Loop;
  std::unique_ptr<Loop> loop_;
};

// The CA bundle an https request without ca_file trusts: libcurl's built-in
// one, or, when that file is missing, where this distribution keeps its
// bundle (Fedora, RHEL, openSUSE, Alpine, Arch); "" when none was found.
std::string http_ca_bundle_default();

}  // namespace payq

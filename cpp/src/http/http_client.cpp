// The HTTP client: easy handles set up on the caller's thread, run by one
// libcurl multi handle on the loop thread, which also calls the callbacks.
#include "payq/http_client.hpp"

#include <curl/curl.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <deque>
#include <exception>
#include <future>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <utility>

#include "payq/error.hpp"

namespace payq {
namespace {

using Clock = std::chrono::steady_clock;

// The loop's longest sleep; libcurl's own timers and curl_multi_wakeup()
// (a new request, stop) end it earlier.
constexpr int loop_poll_ms = 1000;

struct EasyCleanup {
  void operator()(CURL* handle) const noexcept { curl_easy_cleanup(handle); }
};
struct MultiCleanup {
  void operator()(CURLM* handle) const noexcept { curl_multi_cleanup(handle); }
};
struct SlistCleanup {
  void operator()(curl_slist* list) const noexcept { curl_slist_free_all(list); }
};
using EasyHandle = std::unique_ptr<CURL, EasyCleanup>;
using MultiHandle = std::unique_ptr<CURLM, MultiCleanup>;
using HeaderList = std::unique_ptr<curl_slist, SlistCleanup>;

void curl_global_once() {
  // Never cleaned up: libcurl stays usable for the life of the process.
  static const CURLcode code = curl_global_init(CURL_GLOBAL_ALL);
  if (code != CURLE_OK) throw ConfigError(std::string("libcurl could not start: ") + curl_easy_strerror(code));
}

// The system's CA bundle when libcurl's built-in one is missing, or nullptr
// to keep libcurl's default. A wheel's libcurl was built on Debian and looks
// for /etc/ssl/certs/ca-certificates.crt; other distributions keep the
// bundle elsewhere (docs/install.md). Looked up once per process.
const char* system_ca_bundle() {
  static const std::string found = [] {
    const curl_version_info_data* info = curl_version_info(CURLVERSION_NOW);
    if (info->age >= CURLVERSION_NINTH && info->cainfo != nullptr && access(info->cainfo, R_OK) == 0) {
      return std::string();
    }
    for (const char* path : {"/etc/pki/tls/certs/ca-bundle.crt",                   // Fedora, RHEL
                             "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",  // RHEL, CentOS
                             "/etc/ssl/ca-bundle.pem",                             // openSUSE
                             "/etc/ssl/cert.pem"}) {                               // Alpine, Arch
      if (access(path, R_OK) == 0) return std::string(path);
    }
    return std::string();
  }();
  return found.empty() ? nullptr : found.c_str();
}

std::string_view trimmed(std::string_view text) {
  const auto blank = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; };
  while (!text.empty() && blank(text.front())) text.remove_prefix(1);
  while (!text.empty() && blank(text.back())) text.remove_suffix(1);
  return text;
}

std::string lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

HttpFailure failure_of(CURLcode code) {
  switch (code) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
      return HttpFailure::resolve;
    case CURLE_COULDNT_CONNECT:
      return HttpFailure::connect;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_CRL_BADFILE:
      return HttpFailure::tls;
    case CURLE_OPERATION_TIMEDOUT:
      return HttpFailure::timeout;
    case CURLE_GOT_NOTHING:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_HTTP3:
      return HttpFailure::connection;
    default:
      return HttpFailure::other;
  }
}

// One request on its way. Declared so that the easy handle is cleaned up
// before the header list and the request (whose body it points into).
struct Transfer {
  HttpRequest request;
  HttpCallback callback;
  HeaderList headers;
  EasyHandle easy;
  HttpResponse response;
  std::size_t header_bytes = 0;
  // Set by libcurl's pre-request callback: from then on the server may see
  // the request, so a failure can no longer prove that nothing was sent.
  bool request_started = false;
  Clock::time_point started;
  char error[CURL_ERROR_SIZE] = {};
};

void callback_run(HttpCallback& callback, HttpResponse response) noexcept {
  try {
    callback(std::move(response));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "payq http client: a response callback threw: %s\n", e.what());
  } catch (...) {
    std::fprintf(stderr, "payq http client: a response callback threw\n");
  }
}

std::size_t on_body(char* data, std::size_t size, std::size_t count, void* user) {
  Transfer& t = *static_cast<Transfer*>(user);
  const std::size_t length = size * count;
  const std::size_t room = t.request.response_body_bytes_max - t.response.body.size();
  if (length <= room) {
    t.response.body.append(data, length);
    return length;
  }
  // Keep what fits and stop reading: the rest is never held in memory.
  t.response.body.append(data, room);
  t.response.body_truncated = true;
  return CURL_WRITEFUNC_ERROR;
}

std::size_t on_header(char* data, std::size_t size, std::size_t count, void* user) {
  Transfer& t = *static_cast<Transfer*>(user);
  const std::size_t length = size * count;
  const std::string_view line(data, length);
  if (line.rfind("HTTP/", 0) == 0) {
    // A new response (after a redirect or a 100 Continue): its headers only.
    t.response.headers.clear();
    t.header_bytes = 0;
    return length;
  }
  t.header_bytes += length;
  const std::size_t colon = line.find(':');
  if (t.header_bytes > http_response_header_bytes_max || colon == std::string_view::npos) return length;
  t.response.headers.push_back(
      HttpHeader{lower(trimmed(line.substr(0, colon))), std::string(trimmed(line.substr(colon + 1)))});
  return length;
}

int on_prerequest(void* user, char*, char*, int, int) {
  static_cast<Transfer*>(user)->request_started = true;
  return CURL_PREREQFUNC_OK;
}

// Sets every option; returns the first failure, CURLE_OK if none.
class Options {
 public:
  explicit Options(CURL* easy) : easy_(easy) {}
  template <typename Value>
  Options& set(CURLoption option, Value value) {
    if (first_ == CURLE_OK) first_ = curl_easy_setopt(easy_, option, value);
    return *this;
  }
  CURLcode result() const { return first_; }

 private:
  CURL* easy_;
  CURLcode first_ = CURLE_OK;
};

CURLcode transfer_setup(Transfer& t) {
  t.easy.reset(curl_easy_init());
  if (!t.easy) return CURLE_OUT_OF_MEMORY;
  const HttpRequest& r = t.request;
  // "Expect:" turns off 100-continue, which would stall a body until the
  // server answers it (or a second passes).
  curl_slist* list = curl_slist_append(nullptr, "Expect:");
  t.headers.reset(list);
  for (const HttpHeader& h : r.headers) {
    // "Name;" is libcurl's way to send a header with an empty value.
    const std::string line = h.value.empty() ? h.name + ";" : h.name + ": " + h.value;
    list = curl_slist_append(t.headers.get(), line.c_str());
    if (list == nullptr) return CURLE_OUT_OF_MEMORY;
  }
  Options o(t.easy.get());
  o.set(CURLOPT_URL, r.url.c_str())
      .set(CURLOPT_PROTOCOLS_STR, "http,https")
      .set(CURLOPT_REDIR_PROTOCOLS_STR, "http,https")
      .set(CURLOPT_NOSIGNAL, 1L)
      .set(CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(r.connect_timeout_ms))
      .set(CURLOPT_TIMEOUT_MS, static_cast<long>(r.timeout_ms))
      .set(CURLOPT_FOLLOWLOCATION, r.follow_redirects ? 1L : 0L)
      .set(CURLOPT_MAXREDIRS, http_redirect_count_max)
      .set(CURLOPT_SSL_VERIFYPEER, 1L)
      .set(CURLOPT_SSL_VERIFYHOST, 2L)
      .set(CURLOPT_HTTPHEADER, t.headers.get())
      .set(CURLOPT_WRITEFUNCTION, &on_body)
      .set(CURLOPT_WRITEDATA, static_cast<void*>(&t))
      .set(CURLOPT_HEADERFUNCTION, &on_header)
      .set(CURLOPT_HEADERDATA, static_cast<void*>(&t))
      .set(CURLOPT_PREREQFUNCTION, &on_prerequest)
      .set(CURLOPT_PREREQDATA, static_cast<void*>(&t))
      .set(CURLOPT_ERRORBUFFER, t.error)
      .set(CURLOPT_PRIVATE, static_cast<void*>(&t));
  if (r.ca_file) {
    o.set(CURLOPT_CAINFO, r.ca_file->c_str());
  } else if (const char* bundle = system_ca_bundle()) {
    o.set(CURLOPT_CAINFO, bundle);
  }
  if (r.method == "GET") {
    o.set(CURLOPT_HTTPGET, 1L);
  } else if (r.method == "HEAD") {
    o.set(CURLOPT_NOBODY, 1L);
  } else if (r.method == "POST") {
    o.set(CURLOPT_POST, 1L);
  } else {
    o.set(CURLOPT_CUSTOMREQUEST, r.method.c_str());
  }
  if (r.body || r.method == "POST") {
    const std::string* body = r.body ? &*r.body : nullptr;
    o.set(CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body ? body->size() : 0))
        .set(CURLOPT_POSTFIELDS, body ? body->c_str() : "");
  }
  return o.result();
}

}  // namespace

const char* http_failure_name(HttpFailure failure) {
  switch (failure) {
    case HttpFailure::none: return "none";
    case HttpFailure::resolve: return "resolve";
    case HttpFailure::connect: return "connect";
    case HttpFailure::tls: return "tls";
    case HttpFailure::timeout: return "timeout";
    case HttpFailure::connection: return "connection";
    case HttpFailure::aborted: return "aborted";
    case HttpFailure::overloaded: return "overloaded";
    case HttpFailure::other: return "other";
  }
  return "other";
}

const std::string* HttpResponse::header(std::string_view name_lower) const {
  for (const HttpHeader& h : headers) {
    if (h.name == name_lower) return &h.value;
  }
  return nullptr;
}

// ---------------------------------------------------------------- the loop

class HttpClient::Loop {
 public:
  explicit Loop(HttpClientOptions options);
  ~Loop();
  Loop(const Loop&) = delete;
  Loop& operator=(const Loop&) = delete;

  void submit(std::unique_ptr<Transfer> transfer);
  std::size_t transfer_count() const {
    std::lock_guard<std::mutex> guard(mutex_);
    return transfer_count_;
  }
  bool on_loop_thread() const { return std::this_thread::get_id() == thread_.get_id(); }

 private:
  void run() noexcept;
  void admit(std::unique_ptr<Transfer> transfer);
  void reap();
  // Fills in the response from the finished (or abandoned) easy handle and
  // calls back.
  void finish(std::unique_ptr<Transfer> transfer, CURLcode code, bool aborted);
  // Calls back a request that never reached the loop.
  void refuse(std::unique_ptr<Transfer> transfer, HttpFailure failure, const std::string& error);

  HttpClientOptions options_;
  MultiHandle multi_;
  mutable std::mutex mutex_;
  std::deque<std::unique_ptr<Transfer>> incoming_;  // under mutex_
  std::size_t transfer_count_ = 0;                  // under mutex_
  bool stopping_ = false;                           // under mutex_
  std::unordered_map<CURL*, std::unique_ptr<Transfer>> running_;  // the loop thread's alone
  std::thread thread_;
};

HttpClient::Loop::Loop(HttpClientOptions options) : options_(options) {
  curl_global_once();
  multi_.reset(curl_multi_init());
  if (!multi_) throw ConfigError("libcurl could not create a multi handle");
  curl_multi_setopt(multi_.get(), CURLMOPT_MAXCONNECTS, options_.connection_cache_count_max);
  thread_ = std::thread([this] { run(); });
}

HttpClient::Loop::~Loop() {
  {
    std::lock_guard<std::mutex> guard(mutex_);
    stopping_ = true;
  }
  curl_multi_wakeup(multi_.get());
  if (on_loop_thread()) {
    // A callback released the last reference to its own client: joining
    // would wait for ourselves. A bug in the caller; stop loudly.
    std::fprintf(stderr, "payq http client destroyed from its own callback\n");
    std::terminate();
  }
  thread_.join();
}

void HttpClient::Loop::submit(std::unique_ptr<Transfer> transfer) {
  transfer->started = Clock::now();
  const CURLcode setup = transfer_setup(*transfer);
  if (setup != CURLE_OK) {
    refuse(std::move(transfer), HttpFailure::other, std::string("request refused: ") + curl_easy_strerror(setup));
    return;
  }
  {
    std::unique_lock<std::mutex> lock(mutex_);
    if (stopping_ || transfer_count_ >= options_.transfer_count_max) {
      const bool stopping = stopping_;
      lock.unlock();
      if (stopping) {
        refuse(std::move(transfer), HttpFailure::aborted, "the HTTP client is shutting down");
      } else {
        refuse(std::move(transfer), HttpFailure::overloaded,
               "more than " + std::to_string(options_.transfer_count_max) + " transfers in flight");
      }
      return;
    }
    ++transfer_count_;
    incoming_.push_back(std::move(transfer));
  }
  curl_multi_wakeup(multi_.get());
}

void HttpClient::Loop::run() noexcept {
  for (;;) {
    std::deque<std::unique_ptr<Transfer>> fresh;
    bool stop = false;
    {
      std::lock_guard<std::mutex> guard(mutex_);
      fresh.swap(incoming_);
      stop = stopping_;
    }
    for (auto& transfer : fresh) admit(std::move(transfer));
    if (stop) break;
    int running_count = 0;
    curl_multi_perform(multi_.get(), &running_count);
    reap();
    curl_multi_poll(multi_.get(), nullptr, 0, loop_poll_ms, nullptr);
  }
  // Stopping: whatever is still running ends as aborted.
  std::vector<std::unique_ptr<Transfer>> left;
  left.reserve(running_.size());
  for (auto& entry : running_) {
    curl_multi_remove_handle(multi_.get(), entry.first);
    left.push_back(std::move(entry.second));
  }
  running_.clear();
  for (auto& transfer : left) finish(std::move(transfer), CURLE_OK, true);
}

void HttpClient::Loop::admit(std::unique_ptr<Transfer> transfer) {
  CURL* easy = transfer->easy.get();
  const CURLMcode added = curl_multi_add_handle(multi_.get(), easy);
  if (added != CURLM_OK) {
    {
      std::lock_guard<std::mutex> guard(mutex_);
      --transfer_count_;
    }
    refuse(std::move(transfer), HttpFailure::other, std::string("request refused: ") + curl_multi_strerror(added));
    return;
  }
  running_.emplace(easy, std::move(transfer));
}

void HttpClient::Loop::reap() {
  int left = 0;
  while (CURLMsg* message = curl_multi_info_read(multi_.get(), &left)) {
    if (message->msg != CURLMSG_DONE) continue;
    // Read before removing the handle: that frees the message.
    CURL* easy = message->easy_handle;
    const CURLcode code = message->data.result;
    curl_multi_remove_handle(multi_.get(), easy);
    auto found = running_.find(easy);
    if (found == running_.end()) continue;
    std::unique_ptr<Transfer> transfer = std::move(found->second);
    running_.erase(found);
    finish(std::move(transfer), code, false);
  }
}

void HttpClient::Loop::finish(std::unique_ptr<Transfer> transfer, CURLcode code, bool aborted) {
  HttpResponse& r = transfer->response;
  long status = 0;
  curl_easy_getinfo(transfer->easy.get(), CURLINFO_RESPONSE_CODE, &status);
  r.status = static_cast<int>(status);
  r.request_sent = transfer->request_started;
  r.duration_ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - transfer->started).count();
  // Our own stop at the body bound is a complete answer with a cut body.
  const bool cut_at_bound = code == CURLE_WRITE_ERROR && r.body_truncated;
  if (aborted) {
    r.failure = HttpFailure::aborted;
    r.error = "the HTTP client shut down during the transfer";
  } else if (code != CURLE_OK && !cut_at_bound) {
    r.failure = failure_of(code);
    r.error = transfer->error[0] != '\0' ? transfer->error : curl_easy_strerror(code);
  }
  {
    std::lock_guard<std::mutex> guard(mutex_);
    --transfer_count_;
  }
  callback_run(transfer->callback, std::move(r));
}

void HttpClient::Loop::refuse(std::unique_ptr<Transfer> transfer, HttpFailure failure, const std::string& error) {
  HttpResponse& r = transfer->response;
  r.failure = failure;
  r.request_sent = false;
  r.error = error;
  callback_run(transfer->callback, std::move(r));
}

// ---------------------------------------------------------------- the client

std::string http_ca_bundle_default() {
  if (const char* bundle = system_ca_bundle()) return bundle;
  const curl_version_info_data* info = curl_version_info(CURLVERSION_NOW);
  if (info->age >= CURLVERSION_NINTH && info->cainfo != nullptr && access(info->cainfo, R_OK) == 0) {
    return info->cainfo;
  }
  return "";
}

HttpClient::HttpClient(HttpClientOptions options) : loop_(std::make_unique<Loop>(options)) {}

HttpClient::~HttpClient() = default;

void HttpClient::send(HttpRequest request, HttpCallback callback) {
  auto transfer = std::make_unique<Transfer>();
  transfer->request = std::move(request);
  transfer->callback = std::move(callback);
  loop_->submit(std::move(transfer));
}

HttpResponse HttpClient::send_and_wait(HttpRequest request) {
  if (loop_->on_loop_thread()) throw InvalidState("HttpClient::send_and_wait called from a response callback");
  std::promise<HttpResponse> promise;
  std::future<HttpResponse> future = promise.get_future();
  send(std::move(request), [&promise](HttpResponse response) { promise.set_value(std::move(response)); });
  return future.get();
}

std::size_t HttpClient::transfer_count() const { return loop_->transfer_count(); }

}  // namespace payq

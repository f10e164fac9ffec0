// The built-in HTTP handler for Python: a kind is compiled in C++ (checked,
// templates parsed, secrets read) when Python registers it, and its calls
// never touch Python. Only a status check given as a Python callable takes
// the GIL, on the worker thread, for that call.
#include <pybind11/stl.h>

#include <memory>
#include <stdexcept>
#include <tuple>

#include <nlohmann/json.hpp>

#include "bind.hpp"
#include "payq/error.hpp"
#include "payq/handler.hpp"
#include "payq/http_handler.hpp"

namespace payq::bindings {
namespace {

// A compiled kind, opaque to Python.
struct PyHttpKind {
  std::shared_ptr<const HttpKind> kind;
};

HttpStatusFinding finding_parse(const std::string& name) {
  if (name == "applied") return HttpStatusFinding::applied;
  if (name == "failed") return HttpStatusFinding::failed;
  if (name == "not_found") return HttpStatusFinding::not_found;
  if (name == "unknown") return HttpStatusFinding::unknown;
  throw InvalidArgument("a status check finds applied, failed, not_found or unknown, not '" + name + "'");
}

// Calls `adapter(task)` (payq/http.py), which runs the user's callable and
// reports (finding, result_json, detail).
class PythonStatusCheck {
 public:
  explicit PythonStatusCheck(py::object adapter) : adapter_(std::move(adapter)) {}
  ~PythonStatusCheck() {
    py::gil_scoped_acquire gil;
    adapter_ = py::object();
  }
  PythonStatusCheck(const PythonStatusCheck&) = delete;
  PythonStatusCheck& operator=(const PythonStatusCheck&) = delete;

  HttpStatusAnswer operator()(const Task& task) {
    py::gil_scoped_acquire gil;
    try {
      auto [finding, result_json, detail] =
          adapter_(task).cast<std::tuple<std::string, std::string, std::string>>();
      return HttpStatusAnswer{finding_parse(finding), std::move(result_json), std::move(detail)};
    } catch (py::error_already_set& e) {
      // Converted while the GIL is held; the handler makes it `unknown`.
      throw std::runtime_error(e.what());
    }
  }

 private:
  py::object adapter_;
};

std::vector<HttpHeaderConfig> headers_from(
    const std::vector<std::tuple<std::string, std::string, std::optional<std::string>>>& headers) {
  std::vector<HttpHeaderConfig> out;
  for (const auto& [name, value, secret_env] : headers) out.push_back(HttpHeaderConfig{name, value, secret_env});
  return out;
}

HttpRules rules_from(const std::vector<std::tuple<int, int, std::string>>& status_rules,
                     const std::vector<std::pair<std::string, std::string>>& success_when,
                     const std::string& success_mismatch, const std::string& error_code_field,
                     const std::vector<std::pair<std::string, std::string>>& error_codes) {
  HttpRules rules;
  for (const auto& [first, last, verdict] : status_rules) {
    rules.status_rules.push_back(HttpStatusRule{first, last, http_verdict_parse(verdict)});
  }
  for (const auto& [path, value_json] : success_when) {
    nlohmann::json value = nlohmann::json::parse(value_json, nullptr, false);
    if (value.is_discarded()) throw InvalidArgument("success_when: the value of " + path + " is not JSON");
    rules.success_when.push_back(HttpFieldMatch{path, std::move(value)});
  }
  rules.success_mismatch = http_verdict_parse(success_mismatch);
  rules.error_code_field = error_code_field;
  for (const auto& [code, verdict] : error_codes) rules.error_codes.push_back(HttpErrorCode{code, http_verdict_parse(verdict)});
  return rules;
}

}  // namespace

void bind_http(py::module_& m) {
  py::class_<HttpClient, std::shared_ptr<HttpClient>>(m, "HttpClient")
      .def(py::init([](std::size_t transfer_count_max) {
             HttpClientOptions options;
             options.transfer_count_max = transfer_count_max;
             return std::make_shared<HttpClient>(options);
           }),
           py::arg("transfer_count_max") = HttpClientOptions{}.transfer_count_max)
      .def("transfer_count", &HttpClient::transfer_count);

  py::class_<PyHttpKind>(m, "HttpKind")
      .def_property_readonly("method", [](const PyHttpKind& k) { return k.kind->config().method; })
      .def_property_readonly("url", [](const PyHttpKind& k) { return k.kind->config().url; });

  m.def(
      "http_kind_compile",
      [](std::string method, std::string url,
         const std::vector<std::tuple<std::string, std::string, std::optional<std::string>>>& headers,
         std::optional<std::string> body, std::string idempotency_header, std::int64_t connect_timeout_ms,
         std::int64_t timeout_ms, std::size_t response_body_bytes_max, bool follow_redirects,
         std::optional<std::string> ca_file, const std::vector<std::tuple<int, int, std::string>>& status_rules,
         const std::vector<std::pair<std::string, std::string>>& success_when, const std::string& success_mismatch,
         const std::string& error_code_field, const std::vector<std::pair<std::string, std::string>>& error_codes,
         std::int64_t rate_limited_pause_ms, std::int64_t retry_after_ms_max, std::optional<std::string> status_url,
         std::vector<int> status_not_found, bool send_traceparent) {
        HttpKindConfig config;
        config.method = std::move(method);
        config.url = std::move(url);
        config.headers = headers_from(headers);
        config.body = std::move(body);
        config.idempotency_header = std::move(idempotency_header);
        config.connect_timeout_ms = connect_timeout_ms;
        config.timeout_ms = timeout_ms;
        config.response_body_bytes_max = response_body_bytes_max;
        config.follow_redirects = follow_redirects;
        config.ca_file = std::move(ca_file);
        config.rules = rules_from(status_rules, success_when, success_mismatch, error_code_field, error_codes);
        config.rate_limited_pause_ms = rate_limited_pause_ms;
        config.retry_after_ms_max = retry_after_ms_max;
        if (status_url) config.status_query = HttpStatusQueryConfig{std::move(*status_url), std::move(status_not_found)};
        config.send_traceparent = send_traceparent;
        return PyHttpKind{HttpKind::compile(std::move(config))};
      },
      py::kw_only(), py::arg("method"), py::arg("url"), py::arg("headers"), py::arg("body"),
      py::arg("idempotency_header"), py::arg("connect_timeout_ms"), py::arg("timeout_ms"),
      py::arg("response_body_bytes_max"), py::arg("follow_redirects"), py::arg("ca_file"), py::arg("status_rules"),
      py::arg("success_when"), py::arg("success_mismatch"), py::arg("error_code_field"), py::arg("error_codes"),
      py::arg("rate_limited_pause_ms"), py::arg("retry_after_ms_max"), py::arg("status_url"),
      py::arg("status_not_found"), py::arg("send_traceparent"));

  m.def(
      "registry_add_http",
      [](HandlerRegistry& registry, const std::string& kind, const PyHttpKind& http_kind,
         std::shared_ptr<HttpClient> client, py::object status_check, std::optional<std::int64_t> delay_ms_base,
         std::optional<std::int64_t> delay_ms_max, std::optional<int> multiplier, bool encrypt) {
        HttpStatusCheck check;
        if (!status_check.is_none()) {
          auto adapter = std::make_shared<PythonStatusCheck>(std::move(status_check));
          check = [adapter](const Task& task) { return (*adapter)(task); };
        }
        HandlerOptions options;
        options.backoff = backoff_from(delay_ms_base, delay_ms_max, multiplier);
        options.encrypt = encrypt;
        registry.add(kind, std::make_shared<HttpHandler>(http_kind.kind, std::move(client), std::move(check)), options);
      },
      py::arg("registry"), py::arg("kind"), py::arg("http_kind"), py::arg("client"), py::arg("status_check"),
      py::arg("delay_ms_base"), py::arg("delay_ms_max"), py::arg("multiplier"), py::arg("encrypt") = false);
}

}  // namespace payq::bindings

// HTTP request templates (http_template.hpp): parse, then render against a
// task and its JSON payload.
//
// Input: byte 0 picks the context (body, url, header); the bytes up to the
// first NUL are a template, the rest a JSON payload (if it is not JSON, the
// payload is {"raw": <the bytes, made valid UTF-8>}).
//
// Properties:
//   - parse refuses only with ConfigError, render only with InvalidArgument;
//   - a template without placeholders renders as its own text, and every
//     rendering starts with the template's text before its first "{{";
//   - a header template without control characters renders without them;
//   - escaping is exact for every value in the payload: in a body,
//     {"v":"{{payload.P}}"} (or {"v":{{payload.P}}} for a non-string) is
//     JSON whose v equals the value; in a URL the value arrives
//     percent-encoded with only unreserved bytes left bare and decodes back
//     to its text; in a header it arrives as is, or is refused for a control
//     character or a value that is not a scalar.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "fuzz_check.hpp"
#include "http/http_text_internal.hpp"
#include "payq/error.hpp"
#include "payq/http_template.hpp"
#include "payq/outbox.hpp"

namespace {

using Json = nlohmann::json;
using payq::HttpTemplate;
using payq::HttpTemplateContext;
using payq::fuzz::printable;

// Values checked per input, so a huge payload does not slow every run.
constexpr std::size_t checked_values_max = 24;

bool path_key(const std::string& key) {
  if (key.empty()) return false;
  for (char c : key) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

// (dotted path below the payload, value) for values a placeholder can name.
void values_collect(const Json& value, const std::string& path, std::size_t depth,
                    std::vector<std::pair<std::string, const Json*>>& out) {
  if (out.size() >= checked_values_max) return;
  if (!path.empty()) out.emplace_back(path, &value);
  if (depth + 1 >= payq::http_template_path_depth_max) return;
  const auto child_path = [&](const std::string& segment) { return path.empty() ? segment : path + "." + segment; };
  if (value.is_object()) {
    for (auto it = value.begin(); it != value.end(); ++it) {
      if (path_key(it.key())) values_collect(it.value(), child_path(it.key()), depth + 1, out);
    }
  } else if (value.is_array()) {
    for (std::size_t i = 0; i < value.size() && i < 4; ++i) {
      values_collect(value[i], child_path(std::to_string(i)), depth + 1, out);
    }
  }
}

bool control_free(const std::string& text) {
  for (unsigned char c : text) {
    if (c < 0x20 || c == 0x7f) return false;
  }
  return true;
}

bool url_bare(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
         c == '_' || c == '~' || c == ':' || c == '@';
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;  // percent_encoded writes upper case only
}

// Decodes what percent_encoded wrote, checking that it wrote nothing else.
std::string url_decoded(const std::string& encoded) {
  std::string out;
  for (std::size_t i = 0; i < encoded.size(); ++i) {
    const char c = encoded[i];
    if (c != '%') {
      PAYQ_FUZZ_CHECK(url_bare(static_cast<unsigned char>(c)), "bare byte in a URL value: " + printable(encoded));
      out.push_back(c);
      continue;
    }
    PAYQ_FUZZ_CHECK(i + 2 < encoded.size(), "a cut-off escape: " + printable(encoded));
    const int high = hex_value(encoded[i + 1]);
    const int low = hex_value(encoded[i + 2]);
    PAYQ_FUZZ_CHECK(high >= 0 && low >= 0, "a malformed escape: " + printable(encoded));
    PAYQ_FUZZ_CHECK(!url_bare(static_cast<unsigned char>(high * 16 + low)),
                    "an unreserved byte was escaped: " + printable(encoded));
    out.push_back(static_cast<char>(high * 16 + low));
    i += 2;
  }
  return out;
}

std::string render_or_refuse(const std::string& text, HttpTemplateContext context, const payq::Task& task,
                             const Json& payload, bool* refused) {
  *refused = false;
  HttpTemplate t = HttpTemplate::parse(text, context, "fuzz");
  try {
    return t.render(task, payload);
  } catch (const payq::InvalidArgument&) {
    *refused = true;
    return {};
  }
}

void check_body_escaping(const std::string& path, const Json& value, const payq::Task& task, const Json& payload) {
  const std::string text =
      value.is_string() ? "{\"v\":\"{{payload." + path + "}}\"}" : "{\"v\":{{payload." + path + "}}}";
  bool refused = false;
  const std::string rendered = render_or_refuse(text, HttpTemplateContext::body, task, payload, &refused);
  PAYQ_FUZZ_CHECK(!refused, "a body refused payload." + path);
  const Json parsed = Json::parse(rendered, nullptr, false);
  PAYQ_FUZZ_CHECK(!parsed.is_discarded(), "body is not JSON: " + printable(rendered));
  PAYQ_FUZZ_CHECK(parsed.is_object() && parsed.size() == 1 && parsed.contains("v"),
                  "body has the wrong shape: " + printable(rendered));
  PAYQ_FUZZ_CHECK(parsed["v"] == value, "payload." + path + " came back as " + printable(parsed["v"].dump()) +
                                            ", not " + printable(value.dump()));
}

void check_url_escaping(const std::string& path, const Json& value, const payq::Task& task, const Json& payload) {
  bool refused = false;
  const std::string rendered =
      render_or_refuse("https://x/{{payload." + path + "}}?", HttpTemplateContext::url, task, payload, &refused);
  const bool scalar = value.is_string() || value.is_number() || value.is_boolean();
  PAYQ_FUZZ_CHECK(refused == !scalar, "a URL " + std::string(refused ? "refused" : "took") + " a " +
                                          value.type_name() + " value");
  if (refused) return;
  PAYQ_FUZZ_CHECK(rendered.size() >= 11 && rendered.compare(0, 10, "https://x/") == 0 && rendered.back() == '?',
                  "URL literals lost: " + printable(rendered));
  const std::string decoded = url_decoded(rendered.substr(10, rendered.size() - 11));
  const std::string expected = value.is_string() ? value.get<std::string>() : value.dump();
  PAYQ_FUZZ_CHECK(decoded == expected, "URL value decodes to " + printable(decoded) + ", not " + printable(expected));
}

void check_header_escaping(const std::string& path, const Json& value, const payq::Task& task,
                           const Json& payload) {
  bool refused = false;
  const std::string rendered =
      render_or_refuse("v={{payload." + path + "}};", HttpTemplateContext::header, task, payload, &refused);
  const bool allowed = value.is_number() || value.is_boolean() ||
                       (value.is_string() && control_free(value.get<std::string>()));
  PAYQ_FUZZ_CHECK(refused == !allowed, "a header " + std::string(refused ? "refused " : "took ") +
                                           printable(value.dump()));
  if (refused) return;
  const std::string expected = value.is_string() ? value.get<std::string>() : value.dump();
  PAYQ_FUZZ_CHECK(rendered == "v=" + expected + ";", "header rendered as " + printable(rendered));
}

void check_task_fields(const payq::Task& task, const Json& payload) {
  bool refused = false;
  const std::string rendered = render_or_refuse(
      R"({"id":{{task.id}},"k":"{{ task.idempotency_key }}","n":"{{task.kind}}","q":"{{task.queue}}","a":{{task.attempt}}})",
      HttpTemplateContext::body, task, payload, &refused);
  PAYQ_FUZZ_CHECK(!refused, "task fields refused in a body");
  const Json parsed = Json::parse(rendered, nullptr, false);
  PAYQ_FUZZ_CHECK(parsed.is_object(), "task fields body is not JSON: " + printable(rendered));
  PAYQ_FUZZ_CHECK(parsed["id"] == task.id && parsed["k"] == task.idempotency_key && parsed["n"] == task.kind &&
                      parsed["q"] == task.queue && parsed["a"] == task.attempt,
                  "task fields came back as " + printable(rendered));
}

void check_any_template(const std::string& text, HttpTemplateContext context, const payq::Task& task,
                        const Json& payload) {
  std::optional<HttpTemplate> t;
  try {
    t = HttpTemplate::parse(text, context, "fuzz");
  } catch (const payq::ConfigError&) {
    return;
  } catch (...) {
    payq::fuzz::unexpected_exception("HttpTemplate::parse");
  }
  PAYQ_FUZZ_CHECK(text.size() <= payq::http_template_bytes_max, "accepted an over-long template");
  PAYQ_FUZZ_CHECK(t->source() == text, "source() differs from the text");
  const std::size_t open = text.find("{{");
  PAYQ_FUZZ_CHECK(t->has_placeholders() == (open != std::string::npos),
                  "has_placeholders() is wrong for " + printable(text));
  std::string rendered;
  try {
    rendered = t->render(task, payload);
  } catch (const payq::InvalidArgument&) {
    PAYQ_FUZZ_CHECK(open != std::string::npos, "a template without placeholders was refused");
    return;
  } catch (...) {
    payq::fuzz::unexpected_exception("HttpTemplate::render");
  }
  if (open == std::string::npos) PAYQ_FUZZ_CHECK(rendered == text, "literal template rendered differently");
  PAYQ_FUZZ_CHECK(rendered.compare(0, open == std::string::npos ? text.size() : open, text, 0,
                                   open == std::string::npos ? text.size() : open) == 0,
                  "rendering lost the leading literal: " + printable(rendered));
  if (context == HttpTemplateContext::header && control_free(text)) {
    PAYQ_FUZZ_CHECK(control_free(rendered), "a header rendered a control character: " + printable(rendered));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const HttpTemplateContext context = data[0] % 3 == 0   ? HttpTemplateContext::body
                                      : data[0] % 3 == 1 ? HttpTemplateContext::url
                                                         : HttpTemplateContext::header;
  const std::string rest(reinterpret_cast<const char*>(data + 1), size - 1);
  const std::size_t nul = rest.find('\0');
  const std::string text = rest.substr(0, nul);
  const std::string payload_text = nul == std::string::npos ? std::string() : rest.substr(nul + 1);
  Json payload = Json::parse(payload_text, nullptr, false);
  // A payload is read from jsonb, so its strings are always valid UTF-8.
  if (payload.is_discarded()) payload = Json{{"raw", payq::http_detail::utf8_sanitized(payload_text)}};

  std::vector<std::pair<std::string, const Json*>> values;
  values_collect(payload, "", 0, values);

  payq::Task task;
  task.id = static_cast<std::int64_t>(size) * 7919;
  task.kind = "payout";
  task.queue = "default";
  task.attempt = 1 + static_cast<int>(data[0] >> 4);
  task.idempotency_key = "key-1";
  for (const auto& [path, value] : values) {
    if (value->is_string()) {
      task.idempotency_key = value->get<std::string>();  // valid UTF-8: it came from JSON
      break;
    }
  }

  try {
    check_any_template(text, context, task, payload);
    check_task_fields(task, payload);
    for (const auto& [path, value] : values) {
      check_body_escaping(path, *value, task, payload);
      check_url_escaping(path, *value, task, payload);
      check_header_escaping(path, *value, task, payload);
    }
  } catch (...) {
    payq::fuzz::unexpected_exception("http_template");
  }
  return 0;
}

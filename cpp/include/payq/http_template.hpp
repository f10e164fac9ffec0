// Templates for the URL, headers and body of an HTTP call: literal text
// with placeholders filled from the task when it runs.
//
//   {{payload.account}}       a field of the task's JSON payload (dotted
//                             path; a number indexes an array)
//   {{payload}}               the whole payload
//   {{task.idempotency_key}}  also task.id, task.kind, task.queue, task.attempt
//
// A template is parsed once, when the kind is configured, so a malformed one
// is a ConfigError then, never a failed task later. A value is escaped for
// where it lands: in a body, a string is JSON-escaped (without quotes, so
// write "{{payload.account}}" inside quotes) and anything else is written as
// JSON; in a URL it is percent-encoded; in a header it is written as is,
// but a control character makes the task's request unrenderable.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "payq/outbox.hpp"

namespace payq {

// Bounds, named once.
inline constexpr std::size_t http_template_bytes_max = 64 * 1024;
inline constexpr std::size_t http_template_path_depth_max = 32;

enum class HttpTemplateContext { body, url, header };

class HttpTemplate {
 public:
  // ConfigError (naming `what`) for an unclosed "{{", an empty placeholder,
  // a root other than payload or task, an unknown task field, or a template
  // over http_template_bytes_max.
  static HttpTemplate parse(const std::string& text, HttpTemplateContext context, const std::string& what);

  // InvalidArgument when the task cannot fill it: a missing payload field,
  // or a value that has no form in this context (an object in a URL, a
  // control character in a header).
  std::string render(const Task& task, const nlohmann::json& payload) const;

  bool has_placeholders() const noexcept;
  const std::string& source() const noexcept { return source_; }

 private:
  enum class TaskField { none, id, idempotency_key, kind, queue, attempt };
  struct Piece {
    std::string literal;              // text before the placeholder
    bool payload = false;             // a payload placeholder
    std::vector<std::string> path;    // its path below the payload (empty: the whole payload)
    TaskField task_field = TaskField::none;
  };

  std::string source_;
  HttpTemplateContext context_ = HttpTemplateContext::body;
  std::vector<Piece> pieces_;  // the last one may be literal only
};

}  // namespace payq

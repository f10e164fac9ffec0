#include "payq/http_template.hpp"

#include <nlohmann/json.hpp>

#include "http/http_text_internal.hpp"
#include "payq/error.hpp"

namespace payq {
namespace {

using Json = nlohmann::json;

std::string dotted(const std::vector<std::string>& path) {
  std::string out;
  for (const auto& segment : path) out += (out.empty() ? "" : ".") + segment;
  return out;
}

std::string_view trimmed(std::string_view text) {
  while (!text.empty() && text.front() == ' ') text.remove_prefix(1);
  while (!text.empty() && text.back() == ' ') text.remove_suffix(1);
  return text;
}

// A placeholder's value written for its context.
std::string formatted(const Json& value, HttpTemplateContext context, const std::string& name) {
  switch (context) {
    case HttpTemplateContext::body: {
      if (!value.is_string()) return value.dump(-1, ' ', false, Json::error_handler_t::replace);
      // The string's JSON form without its quotes: the template supplies them.
      const std::string quoted = value.dump(-1, ' ', false, Json::error_handler_t::replace);
      return quoted.substr(1, quoted.size() - 2);
    }
    case HttpTemplateContext::url:
      if (value.is_string()) return http_detail::percent_encoded(value.get_ref<const std::string&>());
      if (value.is_number() || value.is_boolean()) return http_detail::percent_encoded(value.dump());
      throw InvalidArgument(name + " is " + value.type_name() + ", which has no form in a URL");
    case HttpTemplateContext::header: {
      if (value.is_number() || value.is_boolean()) return value.dump();
      if (!value.is_string()) throw InvalidArgument(name + " is " + value.type_name() + ", not a header value");
      const auto& text = value.get_ref<const std::string&>();
      for (unsigned char c : text) {
        if (c < 0x20 || c == 0x7f) throw InvalidArgument(name + " contains a control character");
      }
      return text;
    }
  }
  throw std::logic_error("unknown template context");
}

}  // namespace

HttpTemplate HttpTemplate::parse(const std::string& text, HttpTemplateContext context, const std::string& what) {
  if (text.size() > http_template_bytes_max) {
    throw ConfigError(what + ": a template is at most " + std::to_string(http_template_bytes_max) + " bytes");
  }
  HttpTemplate t;
  t.source_ = text;
  t.context_ = context;
  std::size_t at = 0;
  // Bounded by the text: every pass consumes at least the "{{...}}" it found.
  for (;;) {
    const std::size_t open = text.find("{{", at);
    if (open == std::string::npos) {
      if (at < text.size()) t.pieces_.push_back(Piece{text.substr(at), false, {}, TaskField::none});
      return t;
    }
    const std::size_t close = text.find("}}", open + 2);
    if (close == std::string::npos) throw ConfigError(what + ": '{{' at byte " + std::to_string(open) + " is never closed");
    const std::string name(trimmed(std::string_view(text).substr(open + 2, close - open - 2)));
    std::vector<std::string> path = http_detail::json_path_split(name);
    if (path.empty()) throw ConfigError(what + ": '{{" + name + "}}' is not a placeholder (payload.<path> or task.<field>)");
    if (path.size() > http_template_path_depth_max) throw ConfigError(what + ": '{{" + name + "}}' is too deep");
    Piece piece{text.substr(at, open - at), false, {}, TaskField::none};
    if (path[0] == "payload") {
      piece.payload = true;
      piece.path.assign(path.begin() + 1, path.end());
    } else if (path[0] == "task" && path.size() == 2) {
      const std::string& field = path[1];
      piece.task_field = field == "id"                ? TaskField::id
                         : field == "idempotency_key" ? TaskField::idempotency_key
                         : field == "kind"            ? TaskField::kind
                         : field == "queue"           ? TaskField::queue
                         : field == "attempt"         ? TaskField::attempt
                                                      : TaskField::none;
      if (piece.task_field == TaskField::none) {
        throw ConfigError(what + ": '{{" + name + "}}': a task field is id, idempotency_key, kind, queue or attempt");
      }
    } else {
      throw ConfigError(what + ": '{{" + name + "}}' is not a placeholder (payload.<path> or task.<field>)");
    }
    t.pieces_.push_back(std::move(piece));
    at = close + 2;
  }
}

std::string HttpTemplate::render(const Task& task, const Json& payload) const {
  std::string out;
  out.reserve(source_.size());
  for (const Piece& piece : pieces_) {
    out += piece.literal;
    if (piece.payload) {
      const std::string name = piece.path.empty() ? "payload" : "payload." + dotted(piece.path);
      const Json* value = http_detail::json_path_find(payload, piece.path);
      if (value == nullptr) throw InvalidArgument("the task's payload has no field '" + dotted(piece.path) + "'");
      out += formatted(*value, context_, name);
      continue;
    }
    switch (piece.task_field) {
      case TaskField::none: break;
      case TaskField::id: out += formatted(Json(task.id), context_, "task.id"); break;
      case TaskField::idempotency_key:
        out += formatted(Json(task.idempotency_key), context_, "task.idempotency_key");
        break;
      case TaskField::kind: out += formatted(Json(task.kind), context_, "task.kind"); break;
      case TaskField::queue: out += formatted(Json(task.queue), context_, "task.queue"); break;
      case TaskField::attempt: out += formatted(Json(task.attempt), context_, "task.attempt"); break;
    }
  }
  return out;
}

bool HttpTemplate::has_placeholders() const noexcept {
  for (const Piece& piece : pieces_) {
    if (piece.payload || piece.task_field != TaskField::none) return true;
  }
  return false;
}

}  // namespace payq

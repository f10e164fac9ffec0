#include "payq/db.hpp"

#include <algorithm>
#include <charconv>
#include <cctype>
#include <stdexcept>

#include "payq/error.hpp"

namespace payq {

Rows::Rows(std::vector<std::string> columns, std::vector<std::vector<Value>> values)
    : columns_(std::move(columns)), values_(std::move(values)) {
  // Wide rows (a task has 26 columns, read by name for every row) are
  // searched by name in sorted order; a stable sort keeps the first of two
  // equal names first, as the scan of narrow rows finds it.
  if (columns_.size() > linear_column_count_max) {
    by_name_.resize(columns_.size());
    for (std::size_t i = 0; i < by_name_.size(); ++i) by_name_[i] = i;
    std::stable_sort(by_name_.begin(), by_name_.end(),
                     [this](std::size_t a, std::size_t b) { return columns_[a] < columns_[b]; });
  }
}

std::size_t Rows::column(std::string_view name) const {
  if (by_name_.empty()) {
    for (std::size_t i = 0; i < columns_.size(); ++i) {
      if (columns_[i] == name) return i;
    }
  } else {
    const auto found = std::lower_bound(by_name_.begin(), by_name_.end(), name,
                                        [this](std::size_t i, std::string_view n) { return columns_[i] < n; });
    if (found != by_name_.end() && columns_[*found] == name) return *found;
  }
  throw DatabaseError("result has no column '" + std::string(name) + "'");
}

const Value& Rows::at(std::size_t row, std::string_view column_name) const {
  if (row >= values_.size()) throw DatabaseError("result row out of range");
  return values_[row][column(column_name)];
}

bool Rows::is_null(std::size_t row, std::string_view column_name) const {
  return !at(row, column_name).has_value();
}

std::string Rows::text(std::size_t row, std::string_view column_name) const {
  const Value& value = at(row, column_name);
  if (!value) throw DatabaseError("column '" + std::string(column_name) + "' is NULL");
  return *value;
}

std::optional<std::int64_t> Rows::i64_or_null(std::size_t row, std::string_view column_name) const {
  const Value& value = at(row, column_name);
  if (!value) return std::nullopt;
  std::int64_t result = 0;
  const char* end = value->data() + value->size();
  auto [ptr, ec] = std::from_chars(value->data(), end, result);
  if (ec != std::errc() || ptr != end) {
    throw DatabaseError("column '" + std::string(column_name) + "' is not a 64-bit integer: " + *value);
  }
  return result;
}

std::int64_t Rows::i64(std::size_t row, std::string_view column_name) const {
  auto value = i64_or_null(row, column_name);
  if (!value) throw DatabaseError("column '" + std::string(column_name) + "' is NULL");
  return *value;
}

bool Rows::boolean(std::size_t row, std::string_view column_name) const {
  std::string value = text(row, column_name);
  if (value == "t" || value == "true" || value == "True") return true;
  if (value == "f" || value == "false" || value == "False") return false;
  throw DatabaseError("column '" + std::string(column_name) + "' is not a boolean: " + value);
}

Savepoint::Savepoint(Executor& executor) : executor_(executor) { executor_.savepoint_begin(); }

Savepoint::~Savepoint() {
  if (!open_) return;
  try {
    executor_.savepoint_rollback();
  } catch (...) {
    // The enclosing transaction is already failing; its own rollback
    // discards what this savepoint held.
  }
}

void Savepoint::release() {
  if (!open_) return;
  open_ = false;
  executor_.savepoint_release();
}

void schema_name_validate(const std::string& schema) {
  constexpr std::size_t identifier_bytes_max = 63;
  bool ok = !schema.empty() && schema.size() <= identifier_bytes_max &&
            !std::isdigit(static_cast<unsigned char>(schema[0]));
  for (char c : schema) {
    ok = ok && ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_');
  }
  if (!ok) {
    throw ConfigError("invalid schema name '" + schema +
                      "': use lower-case letters, digits and '_' (at most 63, not starting with a digit)");
  }
  if (schema.rfind("pg_", 0) == 0 || schema == "information_schema") {
    throw ConfigError("schema name '" + schema + "' is reserved by PostgreSQL");
  }
}

std::string sql_expand_schema(std::string_view sql, const std::string& schema) {
  static constexpr std::string_view marker = "@schema@";
  const std::string quoted = "\"" + schema + "\"";
  std::string out;
  out.reserve(sql.size() + 64);
  std::size_t pos = 0;
  while (true) {
    std::size_t hit = sql.find(marker, pos);
    if (hit == std::string_view::npos) break;
    out.append(sql.substr(pos, hit - pos));
    out.append(quoted);
    pos = hit + marker.size();
  }
  out.append(sql.substr(pos));
  return out;
}

FormatStyleSql sql_to_format_style(std::string_view sql) {
  FormatStyleSql out;
  out.sql.reserve(sql.size() + 16);
  char quote = 0;  // inside '...' or "..." nothing is a placeholder
  for (std::size_t i = 0; i < sql.size(); ++i) {
    char c = sql[i];
    if (quote) {
      out.sql.append(c == '%' ? "%%" : std::string(1, c));
      if (c == quote) quote = 0;
      continue;
    }
    if (c == '-' && i + 1 < sql.size() && sql[i + 1] == '-') {
      // A comment runs to the end of the line: no quote or $n in it counts,
      // but a percent sign still has to be doubled.
      for (; i < sql.size() && sql[i] != '\n'; ++i) {
        out.sql.push_back(sql[i]);
        if (sql[i] == '%') out.sql.push_back('%');
      }
      if (i < sql.size()) out.sql.push_back('\n');
    } else if (c == '\'' || c == '"') {
      quote = c;
      out.sql.push_back(c);
    } else if (c == '%') {
      out.sql.append("%%");
    } else if (c == '$' && i + 1 < sql.size() && std::isdigit(static_cast<unsigned char>(sql[i + 1]))) {
      std::size_t j = i + 1;
      std::size_t number = 0;
      while (j < sql.size() && std::isdigit(static_cast<unsigned char>(sql[j]))) {
        number = number * 10 + static_cast<std::size_t>(sql[j] - '0');
        ++j;
      }
      if (number == 0) throw DatabaseError("SQL placeholder $0 is not valid");
      out.param_order.push_back(number - 1);
      out.sql.append("%s");
      i = j - 1;
    } else {
      out.sql.push_back(c);
    }
  }
  return out;
}

void Executor::copy_in(const CopyTarget& target, std::string_view) {
  throw std::logic_error(std::string("this executor cannot COPY (into ") + target.name + ")");
}

void copy_text_append(std::string& data, std::string_view field) {
  for (const char c : field) {
    switch (c) {
      case '\\': data.append("\\\\"); break;
      case '\t': data.append("\\t"); break;
      case '\n': data.append("\\n"); break;
      case '\r': data.append("\\r"); break;
      default: data.push_back(c);
    }
  }
}

void copy_text_append(std::string& data, const Value& field) {
  if (!field) {
    data.append("\\N");
    return;
  }
  copy_text_append(data, std::string_view(*field));
}

}  // namespace payq

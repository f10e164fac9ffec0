// How the core reaches PostgreSQL: one narrow executor interface, with an
// implementation on libpqxx (payq's own connections, this header) and one on
// an application's DB-API connection (the Python binding). Money and queue
// logic is written once, against Executor.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace payq {

// A bound parameter or a result value in PostgreSQL text format; nullopt is
// SQL NULL.
using Value = std::optional<std::string>;
using Params = std::vector<Value>;

// The rows of one statement, every value as text. Accessors name the column
// and throw DatabaseError if the value is missing or malformed.
class Rows {
 public:
  Rows() = default;
  Rows(std::vector<std::string> columns, std::vector<std::vector<Value>> values);

  std::size_t size() const noexcept { return values_.size(); }
  bool empty() const noexcept { return values_.empty(); }
  const std::vector<std::string>& columns() const noexcept { return columns_; }
  const std::vector<std::vector<Value>>& values() const noexcept { return values_; }

  std::size_t column(std::string_view name) const;
  const Value& at(std::size_t row, std::string_view column_name) const;
  bool is_null(std::size_t row, std::string_view column_name) const;
  std::string text(std::size_t row, std::string_view column_name) const;
  std::int64_t i64(std::size_t row, std::string_view column_name) const;
  std::optional<std::int64_t> i64_or_null(std::size_t row, std::string_view column_name) const;
  bool boolean(std::size_t row, std::string_view column_name) const;

 private:
  static constexpr std::size_t linear_column_count_max = 8;

  std::vector<std::string> columns_;
  std::vector<std::vector<Value>> values_;
  std::vector<std::size_t> by_name_;  // column indices sorted by name; empty for narrow rows
};

// A named SQL statement. `sql` uses $1..$n placeholders and may contain
// @schema@, replaced by the (validated) schema name of the executor. Names
// are unique and stable: payq's own connections prepare statements by name.
struct Statement {
  const char* name;
  const char* sql;
};

// Where COPY ... FROM STDIN writes, named like a Statement: `table` may
// contain @schema@; `columns` lists the data's fields in order.
struct CopyTarget {
  const char* name;
  const char* table;
  const char* columns;
};

class Executor {
 public:
  virtual ~Executor() = default;

  // Runs one statement inside the executor's current transaction.
  virtual Rows exec(const Statement& statement, const Params& params) = 0;

  // Whether copy_in works on this executor. Callers with many rows to write
  // check it and otherwise write them with statements.
  virtual bool copy_supported() const noexcept { return false; }
  // Writes `data` into the target with COPY FROM STDIN, inside the current
  // transaction: rows in COPY's text format (fields separated by a tab, \N
  // for NULL, backslash escapes, every row ended by a newline; see
  // copy_text_append). A failure aborts the transaction like a failed
  // statement. std::logic_error where copy_supported() is false.
  virtual void copy_in(const CopyTarget& target, std::string_view data);

  // Savepoints nest; a rollback undoes everything since the matching begin
  // and leaves the enclosing transaction usable.
  virtual void savepoint_begin() = 0;
  virtual void savepoint_release() = 0;
  virtual void savepoint_rollback() = 0;

  virtual const std::string& schema() const = 0;
};

// Scoped savepoint: rolled back on destruction unless released.
class Savepoint {
 public:
  explicit Savepoint(Executor& executor);
  ~Savepoint();
  Savepoint(const Savepoint&) = delete;
  Savepoint& operator=(const Savepoint&) = delete;

  void release();

 private:
  Executor& executor_;
  bool open_ = true;
};

// Appends one field to COPY text-format data: NULL as \N, and backslash,
// tab, newline and carriage return escaped. The caller adds the separators
// (a tab between fields, a newline after each row).
void copy_text_append(std::string& data, const Value& field);
void copy_text_append(std::string& data, std::string_view field);

// Throws ConfigError unless `schema` is a plain lower-case identifier
// (letters, digits, underscore; at most 63 bytes; not starting with a digit).
void schema_name_validate(const std::string& schema);

// Replaces every @schema@ in `sql` by the quoted schema name.
std::string sql_expand_schema(std::string_view sql, const std::string& schema);

// Rewrites $1..$n placeholders into DB-API "format" style (%s, parameters
// re-ordered and repeated as needed) and doubles literal percent signs.
// Returns the SQL and, per %s, the index of the $n parameter it takes.
struct FormatStyleSql {
  std::string sql;
  std::vector<std::size_t> param_order;
};
FormatStyleSql sql_to_format_style(std::string_view sql);

}  // namespace payq

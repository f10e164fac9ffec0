#include <charconv>
#include <vector>

#include "ledger/ledger_internal.hpp"
#include "ledger/ledger_statements.hpp"
#include "common/text_internal.hpp"
#include "payq/error.hpp"

namespace payq {

const char* limit_kind_name(LimitKind kind) {
  switch (kind) {
    case LimitKind::per_transaction_max: return "per_transaction_max";
    case LimitKind::daily_count: return "daily_count";
    case LimitKind::daily_amount: return "daily_amount";
  }
  return "unknown";
}

LimitKind limit_kind_parse(const std::string& name) {
  for (LimitKind kind : {LimitKind::per_transaction_max, LimitKind::daily_count, LimitKind::daily_amount}) {
    if (name == limit_kind_name(kind)) return kind;
  }
  throw InvalidArgument("unknown limit kind '" + name + "' (per_transaction_max, daily_count, daily_amount)");
}

namespace {

void limit_rule_validate(const LimitRule& rule) {
  const bool by_account = rule.account_id.has_value();
  const bool by_namespace = rule.ns.has_value() && rule.currency.has_value();
  if (by_account == by_namespace) {
    throw InvalidArgument("a limit names either an account, or a namespace and a currency");
  }
  if (by_account) ledger_detail::id_validate(*rule.account_id, "account");
  if (rule.value < 0) throw InvalidArgument("a limit value cannot be negative");
}

}  // namespace

void Ledger::limit_set(const LimitRule& rule) {
  limit_rule_validate(rule);
  if (rule.account_id) {
    account_get(*rule.account_id);  // UnknownAccount before anything is written
    executor_.exec(ledger_sql::limit_set_account,
                   {std::to_string(*rule.account_id), limit_kind_name(rule.kind), std::to_string(rule.value)});
  } else {
    executor_.exec(ledger_sql::limit_set_namespace,
                   {*rule.ns, *rule.currency, limit_kind_name(rule.kind), std::to_string(rule.value)});
  }
}

void Ledger::limit_remove(const LimitRule& rule) {
  limit_rule_validate(rule);
  executor_.exec(ledger_sql::limit_remove, {limit_kind_name(rule.kind), ledger_detail::optional_text(rule.account_id),
                                           rule.ns, rule.currency});
}

namespace ledger_detail {

namespace {

struct RuleText {
  std::string kind;
  std::int64_t value = 0;
};

// posting_lock's rules: a PostgreSQL array of 'kind=value', as in
// {daily_count=5,per_transaction_max=10000}.
std::vector<RuleText> rules_parse(const std::string& text) {
  std::vector<RuleText> rules;
  for (const std::string& element : detail::array_elements(text)) {
    auto broken = [&] { return DatabaseError("unexpected limit rule from the database: " + element); };
    const std::size_t equals = element.find('=');
    if (equals == std::string::npos) throw broken();
    RuleText rule{element.substr(0, equals), 0};
    const char* end = element.data() + element.size();
    const auto [ptr, ec] = std::from_chars(element.data() + equals + 1, end, rule.value);
    if (ec != std::errc() || ptr != end) throw broken();
    rules.push_back(std::move(rule));
  }
  return rules;
}

}  // namespace

bool limits_present(const Rows& rows, std::size_t row) {
  const Value& rules = rows.at(row, "limit_rules");
  return rules && *rules != "{}";
}

void limits_check(Executor& executor, const Rows& rows, std::size_t row, std::int64_t amount_minor,
                  std::int64_t account_id) {
  if (!limits_present(rows, row)) return;
  Rows usage = executor.exec(ledger_sql::limit_usage_today, {std::to_string(account_id)});
  const std::int64_t used_count = usage.empty() ? 0 : usage.i64(0, "count");
  const std::int64_t used_minor = usage.empty() ? 0 : usage.i64(0, "amount_minor");
  const std::vector<RuleText> rules = rules_parse(*rows.at(row, "limit_rules"));
  const std::string subject = "account " + std::to_string(account_id);
  for (const auto& rule : rules) {
    const LimitKind kind = limit_kind_parse(rule.kind);
    const std::int64_t value = rule.value;
    switch (kind) {
      case LimitKind::per_transaction_max:
        if (amount_minor > value) {
          throw LimitExceeded(subject + ": " + std::to_string(amount_minor) + " exceeds the per-transaction maximum " +
                              std::to_string(value));
        }
        break;
      case LimitKind::daily_count:
        if (used_count + 1 > value) {
          throw LimitExceeded(subject + ": daily count limit " + std::to_string(value) + " reached");
        }
        break;
      case LimitKind::daily_amount:
        if (amount_add(used_minor, amount_minor) > value) {
          throw LimitExceeded(subject + ": daily amount limit " + std::to_string(value) + " would be exceeded (" +
                              std::to_string(used_minor) + " used today)");
        }
        break;
    }
  }
}

}  // namespace ledger_detail
}  // namespace payq

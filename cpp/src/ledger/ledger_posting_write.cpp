// The statement that writes a posting, composed per shape. Every
// data-modifying part of a statement costs the server a table open, index
// and constraint set-up and trigger bookkeeping even when it writes no row,
// so the parts a posting does not need are left out: a plain transfer
// writes its operation row (which is also the transaction header), two
// entries and two accounts.
#include <array>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>

#include "ledger/ledger_statements.hpp"

namespace payq::ledger_sql {
namespace {

// Parts name their parameters {like_this}; compose() numbers them in order
// of first use.
constexpr char head[] = R"sql(
WITH t AS (
  INSERT INTO @schema@.operation (key, kind, request_hash, hold_id, transaction_id, transaction_kind, metadata,
                                  reverses_id, reversed_minor)
  VALUES ({key}, {op_kind}, {request_hash}, {hold_id}::bigint, nextval('@schema@.ledger_transaction_id_seq'),
          {transaction_kind}, {metadata}::jsonb, {reverses_id}::bigint, {reversed_minor}::bigint)
  ON CONFLICT (key) DO NOTHING
  RETURNING transaction_id AS id, created_at
), e AS (
  INSERT INTO @schema@.entry (account_id, seq, transaction_id, leg, amount, balance_after, created_at)
  SELECT x.account_id, x.seq, t.id, x.leg, x.amount, x.balance_after, t.created_at
  FROM t, unnest({entry_account}::bigint[], {entry_amount}::bigint[], {entry_seq}::bigint[],
                 {entry_balance_after}::bigint[], {entry_leg}::smallint[])
          AS x(account_id, amount, seq, balance_after, leg)
), a AS (
  -- The values of each account by its position in the arrays: a join with
  -- unnest() would be planned as a hash join, costly to set up per call.
  UPDATE @schema@.account acc
  SET balance = ({update_balance}::bigint[])[array_position({update_account}::bigint[], acc.id)],
      seq = ({update_seq}::bigint[])[array_position({update_account}::bigint[], acc.id)],
      held = acc.held - ({update_held_release}::bigint[])[array_position({update_account}::bigint[], acc.id)]
  WHERE acc.id = ANY({update_account}::bigint[]) AND EXISTS (SELECT FROM t)
))sql";

constexpr char pending_part[] = R"sql(, p AS (
  INSERT INTO @schema@.pending_credit (transaction_id, leg, account_id, amount, created_at)
  SELECT t.id, x.leg, x.account_id, x.amount, t.created_at
  FROM t, unnest({pending_account}::bigint[], {pending_amount}::bigint[], {pending_leg}::smallint[])
          AS x(account_id, amount, leg)
))sql";

constexpr char capture_part[] = R"sql(, h AS (
  UPDATE @schema@.hold hd
  SET status = 'captured', captured_minor = {captured_minor}::bigint, finished_at = now()
  FROM t
  WHERE hd.id = {hold_id}::bigint
))sql";

constexpr char limits_part[] = R"sql(, l AS (
  INSERT INTO @schema@.limit_usage AS u (account_id, day, count, amount_minor)
  SELECT {limit_account}::bigint, (now() AT TIME ZONE i.day_time_zone)::date, 1, {limit_amount}::bigint
  FROM t, @schema@.installation i
  ON CONFLICT (account_id, day)
  DO UPDATE SET count = u.count + 1, amount_minor = u.amount_minor + EXCLUDED.amount_minor
))sql";

constexpr char tail[] = R"sql(
SELECT t.id AS transaction_id,
       to_char(t.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS created_at
FROM t)sql";

// The {name} each PostingParam goes by in the parts above, in enum order.
constexpr std::array<const char*, static_cast<std::size_t>(PostingParam::count)> param_names = {
    "key",           "op_kind",        "request_hash",  "hold_id",
    "transaction_kind", "metadata",     "reverses_id",   "reversed_minor",
    "entry_account", "entry_amount",   "entry_seq",     "entry_balance_after",
    "entry_leg",     "update_account", "update_balance", "update_seq",
    "update_held_release", "pending_account", "pending_amount", "pending_leg",
    "captured_minor", "limit_account", "limit_amount"};

PostingParam param_named(const std::string& name) {
  for (std::size_t i = 0; i < param_names.size(); ++i) {
    if (name == param_names[i]) return static_cast<PostingParam>(i);
  }
  throw std::logic_error("posting write: no parameter named {" + name + "}");
}

// Owns the text a Statement points into.
struct Composed {
  std::string name;
  std::string sql;
  PostingWrite write;
};

std::unique_ptr<Composed> compose(PostingWriteShape shape) {
  auto composed = std::make_unique<Composed>();
  composed->name = std::string("payq_posting_write_") + (shape.pending ? "p" : "") + (shape.capture ? "c" : "") +
                   (shape.limits ? "l" : "");
  std::string text = head;
  if (shape.pending) text += pending_part;
  if (shape.capture) text += capture_part;
  if (shape.limits) text += limits_part;
  text += tail;

  std::map<std::string, int> numbers;
  std::string::size_type at = 0;
  while (at < text.size()) {
    const auto open = text.find('{', at);
    if (open == std::string::npos) {
      composed->sql.append(text, at, std::string::npos);
      break;
    }
    const auto close = text.find('}', open);
    composed->sql.append(text, at, open - at);
    const std::string name = text.substr(open + 1, close - open - 1);
    auto [found, added] = numbers.emplace(name, static_cast<int>(numbers.size()) + 1);
    if (added) composed->write.params.push_back(param_named(name));
    composed->sql += "$" + std::to_string(found->second);
    at = close + 1;
  }
  composed->write.statement = Statement{composed->name.c_str(), composed->sql.c_str()};
  return composed;
}

}  // namespace

const PostingWrite& posting_write(PostingWriteShape shape) {
  // Built once, before any thread can ask (function-local statics are
  // initialised thread-safely).
  static const auto shapes = [] {
    std::array<std::unique_ptr<Composed>, 8> all;
    for (int bits = 0; bits < 8; ++bits) all[bits] = compose({(bits & 1) != 0, (bits & 2) != 0, (bits & 4) != 0});
    return all;
  }();
  const int bits = (shape.pending ? 1 : 0) | (shape.capture ? 2 : 0) | (shape.limits ? 4 : 0);
  return shapes[bits]->write;
}

}  // namespace payq::ledger_sql

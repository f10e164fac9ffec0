// The ledger for Python: value types read-only, operations taking either a
// _core.Database (payq runs its own transaction, retrying transient
// failures) or an executor object (a payq Transaction or an AppExecutor:
// the caller's transaction).
#include <pybind11/stl.h>

#include "bind.hpp"
#include "bind_target.hpp"
#include "payq/database.hpp"
#include "payq/ledger.hpp"

namespace payq::bindings {
namespace {

template <typename Work>
auto on_ledger(py::handle target, Work&& work) {
  return on_target(target, [&](Executor& executor) {
    Ledger ledger(executor);
    return work(ledger);
  });
}

void bind_values(py::module_& m) {
  py::class_<Account>(m, "Account")
      .def_readonly("id", &Account::id)
      .def_readonly("owner", &Account::owner)
      .def_readonly("namespace", &Account::ns)
      .def_readonly("currency", &Account::currency)
      .def_readonly("balance_minor", &Account::balance_minor)
      .def_readonly("held_minor", &Account::held_minor)
      .def_readonly("pending_minor", &Account::pending_minor)
      .def_readonly("seq", &Account::seq)
      .def_readonly("allow_negative", &Account::allow_negative)
      .def_readonly("overdraft_minor", &Account::overdraft_minor)
      .def_readonly("deferred_credit", &Account::deferred_credit)
      .def_readonly("closed", &Account::closed);
  py::class_<Entry>(m, "Entry")
      .def_readonly("transaction_id", &Entry::transaction_id)
      .def_readonly("account_id", &Entry::account_id)
      .def_readonly("currency", &Entry::currency)
      .def_readonly("amount_minor", &Entry::amount_minor)
      .def_readonly("seq", &Entry::seq)
      .def_readonly("balance_after", &Entry::balance_after)
      .def_readonly("created_at", &Entry::created_at);
  py::class_<LedgerTransaction>(m, "LedgerTransaction")
      .def_readonly("id", &LedgerTransaction::id)
      .def_readonly("key", &LedgerTransaction::key)
      .def_readonly("kind", &LedgerTransaction::kind)
      .def_readonly("metadata_json", &LedgerTransaction::metadata_json)
      .def_readonly("reverses_id", &LedgerTransaction::reverses_id)
      .def_readonly("hold_id", &LedgerTransaction::hold_id)
      .def_readonly("reversed_minor", &LedgerTransaction::reversed_minor)
      .def_readonly("created_at", &LedgerTransaction::created_at)
      .def_readonly("entries", &LedgerTransaction::entries)
      .def_readonly("replayed", &LedgerTransaction::replayed);
  py::class_<Hold>(m, "Hold")
      .def_readonly("id", &Hold::id)
      .def_readonly("key", &Hold::key)
      .def_readonly("account_id", &Hold::account_id)
      .def_readonly("currency", &Hold::currency)
      .def_readonly("amount_minor", &Hold::amount_minor)
      .def_readonly("captured_minor", &Hold::captured_minor)
      .def_property_readonly("status", [](const Hold& h) { return hold_status_name(h.status); })
      .def_readonly("expires_at", &Hold::expires_at)
      .def_readonly("metadata_json", &Hold::metadata_json)
      .def_readonly("task_id", &Hold::task_id)
      .def_readonly("replayed", &Hold::replayed);
  py::class_<AuditViolation>(m, "AuditViolation")
      .def_readonly("check", &AuditViolation::check)
      .def_readonly("subject", &AuditViolation::subject)
      .def_readonly("detail", &AuditViolation::detail);
  py::class_<AuditReport>(m, "AuditReport")
      .def_readonly("violations", &AuditReport::violations)
      .def_readonly("accounts_checked", &AuditReport::accounts_checked)
      .def_readonly("entries_checked", &AuditReport::entries_checked)
      .def_property_readonly("ok", &AuditReport::ok);
}

}  // namespace

void bind_ledger(py::module_& m) {
  bind_values(m);
  using Key = std::string;
  using Metadata = std::string;
  using OptI64 = std::optional<std::int64_t>;

  m.def("ledger_account_open",
        [](py::handle target, std::string owner, std::string currency, std::string ns, bool allow_negative,
           std::int64_t overdraft_minor, bool deferred_credit) {
          AccountOpen request{std::move(owner), std::move(currency), std::move(ns), allow_negative, overdraft_minor,
                              deferred_credit};
          return on_ledger(target, [&](Ledger& l) { return l.account_open(request); });
        });
  m.def("ledger_account_get", [](py::handle target, std::int64_t id) {
    return on_ledger(target, [&](Ledger& l) { return l.account_get(id); });
  });
  m.def("ledger_account_find", [](py::handle target, std::string owner, std::string ns, std::string currency) {
    return on_ledger(target, [&](Ledger& l) { return l.account_find(owner, ns, currency); });
  });
  m.def("ledger_account_close", [](py::handle target, std::int64_t id) {
    return on_ledger(target, [&](Ledger& l) { return l.account_close(id); });
  });
  m.def("ledger_currency_define", [](py::handle target, std::string code, int exponent) {
    on_ledger(target, [&](Ledger& l) {
      l.currency_define(code, exponent);
      return 0;
    });
  });
  m.def("ledger_currencies_load", [](py::handle target) {
    return on_ledger(target, [&](Ledger& l) { return l.currencies_load(); });
  });
  m.def("ledger_post", [](py::handle target, Key key, std::vector<std::pair<std::int64_t, std::int64_t>> legs,
                          std::string kind, Metadata metadata) {
    PostRequest request;
    request.key = std::move(key);
    for (const auto& [account, amount] : legs) request.legs.push_back({account, amount});
    request.kind = std::move(kind);
    request.metadata_json = std::move(metadata);
    return on_ledger(target, [&](Ledger& l) { return l.post(request); });
  });
  // Keyword-only: three account ids and an amount side by side must not be swapped.
  m.def(
      "ledger_transfer",
      [](py::handle target, Key key, std::int64_t source_id, std::int64_t target_id, std::int64_t amount_minor,
         std::optional<Fee> fee, OptI64 fee_account_id, bool fee_payer_target, std::string kind, Metadata metadata) {
        TransferRequest request;
        request.key = std::move(key);
        request.source_id = source_id;
        request.target_id = target_id;
        request.amount_minor = amount_minor;
        request.fee = fee;
        request.fee_account_id = fee_account_id;
        request.fee_payer = fee_payer_target ? FeePayer::target : FeePayer::source;
        request.kind = std::move(kind);
        request.metadata_json = std::move(metadata);
        return on_ledger(target, [&](Ledger& l) { return l.transfer(request); });
      },
      py::arg("target"), py::kw_only(), py::arg("key"), py::arg("source_id"), py::arg("target_id"),
      py::arg("amount_minor"), py::arg("fee") = py::none(), py::arg("fee_account_id") = py::none(),
      py::arg("fee_payer_target") = false, py::arg("kind"), py::arg("metadata"));
  m.def("ledger_hold", [](py::handle target, Key key, std::int64_t account_id, std::int64_t amount_minor,
                          OptI64 expires_in_ms, Metadata metadata) {
    HoldRequest request{std::move(key), account_id, amount_minor, expires_in_ms, std::move(metadata)};
    return on_ledger(target, [&](Ledger& l) { return l.hold(request); });
  });
  m.def("ledger_capture", [](py::handle target, Key key, std::int64_t hold_id, std::int64_t target_id,
                             OptI64 amount_minor, std::string kind, Metadata metadata) {
    CaptureRequest request{std::move(key), hold_id, target_id, amount_minor, std::move(kind), std::move(metadata), std::nullopt};
    return on_ledger(target, [&](Ledger& l) { return l.capture(request); });
  });
  m.def("ledger_release", [](py::handle target, Key key, std::int64_t hold_id) {
    ReleaseRequest request{std::move(key), hold_id, std::nullopt};
    return on_ledger(target, [&](Ledger& l) { return l.release(request); });
  });
  m.def("ledger_reverse", [](py::handle target, Key key, std::int64_t transaction_id, OptI64 amount_minor,
                             std::string kind, Metadata metadata) {
    ReverseRequest request{std::move(key), transaction_id, amount_minor, std::move(kind), std::move(metadata)};
    return on_ledger(target, [&](Ledger& l) { return l.reverse(request); });
  });
  m.def("ledger_accounts_lock", [](py::handle target, std::vector<std::int64_t> ids) {
    on_ledger(target, [&](Ledger& l) {
      l.accounts_lock(ids);
      return 0;
    });
  });
  m.def("ledger_holds_expire", [](py::handle target, std::int64_t count_max) {
    return on_ledger(target, [&](Ledger& l) { return l.holds_expire(count_max); });
  });
  m.def("ledger_pending_fold", [](py::handle target, std::int64_t account_id, std::int64_t count_max) {
    return on_ledger(target, [&](Ledger& l) { return l.pending_fold(account_id, count_max); });
  });
  m.def("ledger_limit_set", [](py::handle target, OptI64 account_id, std::optional<std::string> ns,
                               std::optional<std::string> currency, std::string kind, std::int64_t value) {
    LimitRule rule{account_id, std::move(ns), std::move(currency), limit_kind_parse(kind), value};
    on_ledger(target, [&](Ledger& l) {
      l.limit_set(rule);
      return 0;
    });
  });
  m.def("ledger_limit_remove", [](py::handle target, OptI64 account_id, std::optional<std::string> ns,
                                  std::optional<std::string> currency, std::string kind) {
    LimitRule rule{account_id, std::move(ns), std::move(currency), limit_kind_parse(kind), 0};
    on_ledger(target, [&](Ledger& l) {
      l.limit_remove(rule);
      return 0;
    });
  });
  m.def("ledger_accounts_list", [](py::handle target, std::int64_t after_id, std::int64_t limit,
                                   std::optional<std::string> owner) {
    return on_ledger(target, [&](Ledger& l) { return l.accounts_list(after_id, limit, owner); });
  });
  m.def("ledger_history", [](py::handle target, std::int64_t account_id, std::int64_t after_seq,
                             std::int64_t limit) {
    return on_ledger(target, [&](Ledger& l) { return l.history(account_id, after_seq, limit); });
  });
  m.def("ledger_transaction_get", [](py::handle target, std::int64_t id) {
    return on_ledger(target, [&](Ledger& l) { return l.transaction_get(id); });
  });
  m.def("ledger_transaction_find", [](py::handle target, Key key) {
    return on_ledger(target, [&](Ledger& l) { return l.transaction_find(key); });
  });
  m.def("ledger_hold_get", [](py::handle target, std::int64_t id) {
    return on_ledger(target, [&](Ledger& l) { return l.hold_get(id); });
  });
  m.def("ledger_audit", [](py::handle target) { return on_ledger(target, [](Ledger& l) { return l.audit(); }); });
}

}  // namespace payq::bindings

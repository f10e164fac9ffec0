#include "bind.hpp"

PYBIND11_MODULE(_core, m) {
  m.doc() = "payq's C++ core. Private: use the payq package.";
  payq::bindings::bind_error(m);
  payq::bindings::bind_vocabulary(m);
  payq::bindings::bind_money(m);
  payq::bindings::bind_database(m);
  payq::bindings::bind_embedded(m);
  payq::bindings::bind_app_executor(m);
  payq::bindings::bind_ledger(m);
  payq::bindings::bind_outbox(m);
  payq::bindings::bind_inbox(m);
  payq::bindings::bind_worker(m);
  payq::bindings::bind_async_handler(m);
  payq::bindings::bind_http(m);
  payq::bindings::bind_keyring(m);
  payq::bindings::bind_tracing(m);
  payq::bindings::bind_versions(m);
}

// Maps every payq C++ error onto the class of the same name in payq.errors,
// the one home of payq's Python exceptions.
#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>

#include "bind.hpp"
#include "payq/error.hpp"

namespace payq::bindings {
namespace {

// Borrowed for the life of the interpreter: payq.errors is never unloaded.
std::unordered_map<std::string, PyObject*>& python_types() {
  static std::unordered_map<std::string, PyObject*> types;
  return types;
}

[[noreturn]] void raise_as(const char* name, const std::exception& e, const std::string* sqlstate = nullptr,
                          std::optional<std::int64_t> task_id = std::nullopt) {
  PyObject* type = python_types().at(name);
  py::object instance = py::reinterpret_borrow<py::object>(type)(e.what());
  if (sqlstate) instance.attr("sqlstate") = sqlstate->empty() ? py::none() : py::object(py::str(*sqlstate));
  if (task_id) instance.attr("task_id") = *task_id;
  PyErr_SetObject(type, instance.ptr());
  throw py::error_already_set();
}

void translate(std::exception_ptr pointer) {
  try {
    std::rethrow_exception(pointer);
  } catch (const CommitUnknown& e) {
    raise_as("CommitUnknown", e, &e.sqlstate());
  } catch (const TransientError& e) {
    raise_as("TransientError", e, &e.sqlstate());
  } catch (const ConnectionLost& e) {
    raise_as("ConnectionLost", e, &e.sqlstate());
  } catch (const DatabaseError& e) {
    raise_as("DatabaseError", e, &e.sqlstate());
  } catch (const ConfigError& e) {
    raise_as("ConfigError", e);
  } catch (const MigrationError& e) {
    raise_as("MigrationError", e);
  } catch (const InvalidAmount& e) {
    raise_as("InvalidAmount", e);
  } catch (const UnknownCurrency& e) {
    raise_as("UnknownCurrency", e);
  } catch (const CurrencyMismatch& e) {
    raise_as("CurrencyMismatch", e);
  } catch (const UnknownAccount& e) {
    raise_as("UnknownAccount", e);
  } catch (const AccountClosed& e) {
    raise_as("AccountClosed", e);
  } catch (const InsufficientFunds& e) {
    raise_as("InsufficientFunds", e);
  } catch (const LimitExceeded& e) {
    raise_as("LimitExceeded", e);
  } catch (const Unbalanced& e) {
    raise_as("Unbalanced", e);
  } catch (const IdempotencyConflict& e) {
    raise_as("IdempotencyConflict", e);
  } catch (const HoldInUse& e) {
    raise_as("HoldInUse", e, nullptr, e.task_id());
  } catch (const InvalidState& e) {
    raise_as("InvalidState", e);
  } catch (const InvalidArgument& e) {
    raise_as("InvalidArgument", e);
  } catch (const UnknownTaskKind& e) {
    raise_as("UnknownTaskKind", e);
  } catch (const UnknownTask& e) {
    raise_as("UnknownTask", e);
  } catch (const LeaseLost& e) {
    raise_as("LeaseLost", e);
  } catch (const ResourceExhausted& e) {
    raise_as("ResourceExhausted", e);
  } catch (const Error& e) {
    raise_as("Error", e);
  }
}

}  // namespace

void bind_error(py::module_& m) {
  py::module_ errors = py::module_::import("payq.errors");
  for (const char* name : {"Error", "ConfigError", "DatabaseError", "TransientError", "ConnectionLost", "CommitUnknown",
                           "MigrationError", "InvalidAmount", "UnknownCurrency", "CurrencyMismatch",
                           "UnknownAccount", "AccountClosed", "InsufficientFunds", "LimitExceeded", "Unbalanced",
                           "IdempotencyConflict", "InvalidState", "HoldInUse", "InvalidArgument", "UnknownTaskKind",
                           "UnknownTask", "LeaseLost", "ResourceExhausted"}) {
    python_types()[name] = errors.attr(name).ptr();
  }
  py::register_exception_translator(&translate);

  // Lets the Python tests prove that each C++ type arrives as its Python twin.
  m.def("_raise_for_test", [](const std::string& name) {
    if (name == "CommitUnknown") throw CommitUnknown("test", "08006");
    if (name == "TransientError") throw TransientError("test", "40001");
    if (name == "ConnectionLost") throw ConnectionLost("test", "08006");
    if (name == "DatabaseError") throw DatabaseError("test", "22012");
    if (name == "ConfigError") throw ConfigError("test");
    if (name == "MigrationError") throw MigrationError("test");
    if (name == "InvalidAmount") throw InvalidAmount("test");
    if (name == "UnknownCurrency") throw UnknownCurrency("test");
    if (name == "CurrencyMismatch") throw CurrencyMismatch("test");
    if (name == "UnknownAccount") throw UnknownAccount("test");
    if (name == "AccountClosed") throw AccountClosed("test");
    if (name == "InsufficientFunds") throw InsufficientFunds("test");
    if (name == "LimitExceeded") throw LimitExceeded("test");
    if (name == "Unbalanced") throw Unbalanced("test");
    if (name == "IdempotencyConflict") throw IdempotencyConflict("test");
    if (name == "HoldInUse") throw HoldInUse("test", 7);
    if (name == "InvalidState") throw InvalidState("test");
    if (name == "InvalidArgument") throw InvalidArgument("test");
    if (name == "UnknownTaskKind") throw UnknownTaskKind("test");
    if (name == "UnknownTask") throw UnknownTask("test");
    if (name == "LeaseLost") throw LeaseLost("test");
    if (name == "ResourceExhausted") throw ResourceExhausted("test");
    throw Error("test");
  });
}

}  // namespace payq::bindings

// The error hierarchy of payq. Every failure a caller can act on has its own
// type; all derive from payq::Error, and each crosses into Python as the
// payq.Error subclass of the same name. A new class is also entered in
// payq::error_classes() (vocabulary.cpp), the one table the binding and the
// drift test (tests_py/test_vocabulary.py) read.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace payq {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// Configuration or environment is wrong: a malformed DSN, a bad schema name,
// PostgreSQL binaries missing. Nothing was attempted against the database.
class ConfigError : public Error {
 public:
  using Error::Error;
};

// The database refused or failed an operation. `sqlstate` is the five
// character SQLSTATE when the server sent one, empty otherwise.
class DatabaseError : public Error {
 public:
  explicit DatabaseError(const std::string& message, std::string sqlstate = {})
      : Error(message), sqlstate_(std::move(sqlstate)) {}
  const std::string& sqlstate() const noexcept { return sqlstate_; }

 private:
  std::string sqlstate_;
};

// A serialization failure or deadlock: the transaction was rolled back and
// may be run again from the start. payq retries these itself, with a bound,
// in transactions it owns.
class TransientError : public DatabaseError {
 public:
  using DatabaseError::DatabaseError;
};

// The connection to the server broke before the transaction was committed:
// nothing of it was applied. payq re-runs its own transactions after this
// (transact(), with a bound) and retries a transaction's first statement on
// a fresh connection by itself; a transaction an application drives gets
// this error and may be run again from the start.
class ConnectionLost : public DatabaseError {
 public:
  using DatabaseError::DatabaseError;
};

// The connection broke while COMMIT was in flight: the transaction may or may
// not have been applied. Never retried blindly; the caller must look.
class CommitUnknown : public DatabaseError {
 public:
  using DatabaseError::DatabaseError;
};

// A migration on record does not match the one this library carries, or the
// database is newer than this library.
class MigrationError : public Error {
 public:
  using Error::Error;
};

// ---- Ledger and money

class InvalidAmount : public Error {
 public:
  using Error::Error;
};

class UnknownCurrency : public Error {
 public:
  using Error::Error;
};

class CurrencyMismatch : public Error {
 public:
  using Error::Error;
};

class UnknownAccount : public Error {
 public:
  using Error::Error;
};

class AccountClosed : public Error {
 public:
  using Error::Error;
};

class InsufficientFunds : public Error {
 public:
  using Error::Error;
};

class LimitExceeded : public Error {
 public:
  using Error::Error;
};

class Unbalanced : public Error {
 public:
  using Error::Error;
};

class IdempotencyConflict : public Error {
 public:
  using Error::Error;
};

// A request that is well formed but not allowed in the current state, such
// as capturing a hold that was already released.
class InvalidState : public Error {
 public:
  using Error::Error;
};

// A hold that a live task settles: only that task's settlement (or an
// operator's action on the task) may capture or release it, and no second
// task may settle it. `task_id` names the task.
class HoldInUse : public InvalidState {
 public:
  HoldInUse(const std::string& message, std::int64_t task_id) : InvalidState(message), task_id_(task_id) {}
  std::int64_t task_id() const noexcept { return task_id_; }

 private:
  std::int64_t task_id_;
};

// An argument that is not an amount but still malformed: an empty or absurd
// idempotency key, an unknown rounding rule, a negative limit.
class InvalidArgument : public Error {
 public:
  using Error::Error;
};

// ---- Queue

class UnknownTaskKind : public Error {
 public:
  using Error::Error;
};

// A completion for a task that is no longer running under the caller's
// lease token: another worker took it over. The caller must roll back.
class LeaseLost : public Error {
 public:
  using Error::Error;
};

// The operating system refused a resource payq needs, such as a thread
// for a worker. Whatever was started with it has been stopped.
class ResourceExhausted : public Error {
 public:
  using Error::Error;
};

// A task was not found.
class UnknownTask : public Error {
 public:
  using Error::Error;
};

// An operator action names a queue that has neither settings nor tasks:
// most likely a typo, which must not create a phantom queue.
class UnknownQueue : public InvalidArgument {
 public:
  using InvalidArgument::InvalidArgument;
};

// ---- Encryption at rest (keyring.hpp, encryption.hpp)

// A task's encrypted text cannot be made or read; the two below say why.
class EncryptionError : public Error {
 public:
  using Error::Error;
};

// The key a ciphertext names is not in the keyring, or there is no keyring
// or current key to encrypt with.
class KeyMissing : public EncryptionError {
 public:
  using EncryptionError::EncryptionError;
};

// A ciphertext does not authenticate: other key material under the same id,
// an altered ciphertext, or one moved from another task, kind or field.
class DecryptionFailed : public EncryptionError {
 public:
  using EncryptionError::EncryptionError;
};

}  // namespace payq

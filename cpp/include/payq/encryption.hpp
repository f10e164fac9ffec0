// Encrypted task payloads, results and errors at rest (docs/encryption.md).
//
// A task enqueued with TaskSpec::encrypt stores its payload as a JSON
// envelope, {"payq_encrypted": {"v": 1, "key": <key id>, "nonce": <base64>,
// "ct": <base64 ciphertext and tag>}}; a handler registered with
// HandlerOptions::encrypt gets the clear payload and has its result stored
// in the same envelope and its error text (and stack trace) as
// "payq-encrypted:1:<key id>:<nonce>:<ciphertext>". AES-256-GCM (OpenSSL's
// libcrypto); the associated data names the field, the task id and its
// kind, so a ciphertext moved to another task, kind or field does not
// decrypt.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "payq/db.hpp"
#include "payq/keyring.hpp"
#include "payq/outbox.hpp"

namespace payq {

inline constexpr int encryption_version = 1;
// The one member of a JSON envelope.
inline constexpr const char* encrypted_json_member = "payq_encrypted";
// The start of an encrypted text (error, stack trace).
inline constexpr const char* encrypted_text_prefix = "payq-encrypted:1:";
// An error text is cut to this many bytes before it is encrypted, so that
// its ciphertext fits the error column's bound whole (a cut ciphertext
// would never decrypt); a stack trace keeps its last
// encrypted_traceback_bytes_max bytes for the same reason.
inline constexpr std::size_t encrypted_error_bytes_max = 2048;
inline constexpr std::size_t encrypted_traceback_bytes_max = 5 * 1024;
// Tasks re-encrypted by one tasks_reencrypt call, at most.
inline constexpr std::int64_t reencrypt_batch_count_max = 10'000;

// Which field of a task a ciphertext belongs to: part of its associated
// data, so a payload's ciphertext cannot be replayed as a result.
enum class EncryptedField { payload, result, error, traceback };
const char* encrypted_field_name(EncryptedField field);

// The associated data of one field of one task.
std::string encryption_associated(EncryptedField field, std::int64_t task_id, const std::string& kind);

// ---- JSON fields (payload, result)

// The envelope of `clear_json` (any JSON text) under the keyring's current key.
std::string json_seal(const Keyring& keyring, EncryptedField field, std::int64_t task_id, const std::string& kind,
                      const std::string& clear_json);
// The key id of an envelope; nullopt for any other JSON (a clear value).
// DecryptionFailed for a payq_encrypted member of the wrong shape.
std::optional<std::string> json_sealed_key(const std::string& json_text);
// The clear JSON text of an envelope. KeyMissing or DecryptionFailed (see
// Keyring::open); DecryptionFailed also for text that is no envelope.
std::string json_open(const Keyring& keyring, EncryptedField field, std::int64_t task_id, const std::string& kind,
                      const std::string& envelope_json);

// ---- Text fields (error, stack trace)

std::string text_seal(const Keyring& keyring, EncryptedField field, std::int64_t task_id, const std::string& kind,
                      const std::string& clear);
// The key id of an encrypted text; nullopt for clear text.
std::optional<std::string> text_sealed_key(const std::string& text);
std::string text_open(const Keyring& keyring, EncryptedField field, std::int64_t task_id, const std::string& kind,
                      const std::string& sealed);

// ---- Tasks as read

// Whether any of the task's payload, result or error is encrypted.
bool task_encrypted(const Task& task);
// The task with its payload, result and error decrypted (clear ones are
// left as they are). KeyMissing or DecryptionFailed if one cannot be read.
Task task_open(const Keyring& keyring, Task task);
// The same for an attempt's error and stack trace (of a task of `kind`).
TaskAttempt attempt_open(const Keyring& keyring, const std::string& kind, TaskAttempt attempt);

// ---- Rotation

// One batch of a rotation (tasks_reencrypt).
struct ReencryptBatch {
  std::int64_t examined = 0;   // tasks on another key than the current one, locked and looked at
  std::int64_t rotated = 0;    // re-encrypted under the current key
  std::vector<std::int64_t> unreadable;  // left as they were: a key missing, or not authentic
  std::int64_t last_id = 0;    // the next batch starts after this id
  bool done = false;           // nothing left after last_id
};

// In the executor's transaction: re-encrypts, under the keyring's current
// key, the payload and error of up to `count_max` waiting tasks (held or
// pending, retrying ones included) with id > after_id that use another key,
// in id order. Rows another transaction holds (a claim in flight) are
// skipped (FOR UPDATE SKIP LOCKED), never waited for, and running tasks
// are not touched: a later pass takes them if they come back to pending.
ReencryptBatch tasks_reencrypt(Executor& executor, const Keyring& keyring, std::int64_t after_id,
                               std::int64_t count_max);

// How many tasks use each key, per state (payload envelopes), for
// `payq keys status`: a key is safe to remove when no task needs it.
struct KeyUse {
  std::string key_id;
  std::string state;
  std::int64_t count = 0;
};
std::vector<KeyUse> tasks_key_use(Executor& executor);

}  // namespace payq

// Encrypted task payloads in the outbox: sealed at enqueue, re-encrypted
// under the current key by a rotation, counted per key.
#include "outbox/outbox_encryption.hpp"

#include <algorithm>
#include <stdexcept>

#include "outbox/outbox_internal.hpp"
#include "payq/encryption.hpp"
#include "payq/error.hpp"
#include "payq/keyring.hpp"

namespace payq {
namespace {

using Json = nlohmann::json;

// Ids for the encrypted tasks of a batch, drawn before they are written.
const Statement task_ids_draw{"payq_task_ids_draw", R"sql(
SELECT nextval('@schema@.task_id_seq') AS id FROM generate_series(1, $1::integer))sql"};

// The waiting tasks after $1 whose payload or error uses another key than
// $2, in id order, locked; rows a claim holds are skipped, never waited for.
const Statement tasks_key_stale{"payq_tasks_key_stale", R"sql(
SELECT id, kind, payload::text AS payload, error FROM @schema@.task
WHERE id > $1::bigint AND state IN ('pending', 'held')
  AND ((payload ? 'payq_encrypted' AND payload->'payq_encrypted'->>'key' IS DISTINCT FROM $2)
       OR (error LIKE 'payq-encrypted:1:%' AND split_part(error, ':', 3) <> $2))
ORDER BY id
LIMIT $3::bigint
FOR UPDATE SKIP LOCKED)sql"};

const Statement task_reencrypted{"payq_task_reencrypted", R"sql(
UPDATE @schema@.task SET payload = $2::jsonb, error = $3, updated_at = now()
WHERE id = $1::bigint AND state IN ('pending', 'held'))sql"};

const Statement key_use_count{"payq_tasks_key_use", R"sql(
SELECT payload->'payq_encrypted'->>'key' AS key_id, state, count(*) AS n FROM @schema@.task
WHERE payload ? 'payq_encrypted'
GROUP BY 1, 2 ORDER BY 1, 2)sql"};

}  // namespace

namespace outbox_detail {

void spec_encryption_validate(const TaskSpec& spec) {
  if (!spec.encrypt) {
    if (spec.keyring) throw InvalidArgument("a task keyring without encrypt=true encrypts nothing");
    // A worker would take such a payload for ciphertext and refuse it.
    bool envelope = false;
    try {
      envelope = json_sealed_key(spec.payload_json).has_value();
    } catch (const DecryptionFailed&) {
      envelope = true;
    }
    if (envelope) {
      throw InvalidArgument(std::string("a clear task payload cannot be an object whose only member is \"") +
                            encrypted_json_member + "\" (reserved for encrypted payloads)");
    }
    return;
  }
  if (!spec.keyring) {
    throw KeyMissing("task of kind '" + spec.kind + "' asks to be encrypted, but no keyring was given");
  }
  spec.keyring->current();  // KeyMissing without a current key
}

bool specs_encrypted(const std::vector<TaskSpec>& specs) {
  return std::any_of(specs.begin(), specs.end(), [](const TaskSpec& spec) { return spec.encrypt; });
}

void payloads_seal(Executor& executor, const std::vector<TaskSpec>& specs, std::vector<Json>& items) {
  std::vector<std::size_t> sealed;
  for (std::size_t i = 0; i < specs.size(); ++i) {
    if (specs[i].encrypt) sealed.push_back(i);
  }
  if (sealed.empty()) return;
  Rows ids = executor.exec(task_ids_draw, {std::to_string(sealed.size())});
  if (ids.size() != sealed.size()) throw std::logic_error("the task id sequence gave too few ids");
  for (std::size_t k = 0; k < sealed.size(); ++k) {
    const std::size_t i = sealed[k];
    const std::int64_t id = ids.i64(k, "id");
    Json& item = items[i];
    item["given_id"] = id;
    item["payload"] = Json::parse(
        json_seal(*specs[i].keyring, EncryptedField::payload, id, specs[i].kind, item["payload"].dump()));
  }
}

}  // namespace outbox_detail

ReencryptBatch tasks_reencrypt(Executor& executor, const Keyring& keyring, std::int64_t after_id,
                               std::int64_t count_max) {
  if (count_max < 1 || count_max > reencrypt_batch_count_max) {
    throw InvalidArgument("a re-encryption batch is 1 to " + std::to_string(reencrypt_batch_count_max) + " tasks");
  }
  if (after_id < 0) throw InvalidArgument("after_id cannot be negative");
  const std::string& current = keyring.current();
  Rows rows = executor.exec(tasks_key_stale, {std::to_string(after_id), current, std::to_string(count_max)});
  ReencryptBatch batch;
  batch.examined = static_cast<std::int64_t>(rows.size());
  batch.last_id = after_id;
  batch.done = static_cast<std::int64_t>(rows.size()) < count_max;
  for (std::size_t r = 0; r < rows.size(); ++r) {
    const std::int64_t id = rows.i64(r, "id");
    const std::string kind = rows.text(r, "kind");
    batch.last_id = id;
    std::string payload = rows.text(r, "payload");
    std::optional<std::string> error = rows.at(r, "error");
    try {
      const auto payload_key = json_sealed_key(payload);
      if (payload_key && *payload_key != current) {
        const std::string clear = json_open(keyring, EncryptedField::payload, id, kind, payload);
        payload = json_seal(keyring, EncryptedField::payload, id, kind, clear);
      }
      const auto error_key = error ? text_sealed_key(*error) : std::nullopt;
      if (error_key && *error_key != current) {
        const std::string clear = text_open(keyring, EncryptedField::error, id, kind, *error);
        error = text_seal(keyring, EncryptedField::error, id, kind, clear);
      }
    } catch (const EncryptionError&) {
      // Left as it is: the worker sends it to needs_review when it comes.
      batch.unreadable.push_back(id);
      continue;
    }
    executor.exec(task_reencrypted, {std::to_string(id), payload, error});
    ++batch.rotated;
  }
  return batch;
}

std::vector<KeyUse> tasks_key_use(Executor& executor) {
  Rows rows = executor.exec(key_use_count, {});
  std::vector<KeyUse> out;
  for (std::size_t r = 0; r < rows.size(); ++r) {
    out.push_back(KeyUse{rows.at(r, "key_id").value_or(""), rows.text(r, "state"), rows.i64(r, "n")});
  }
  return out;
}

}  // namespace payq

// The stored forms of encrypted task fields: a JSON envelope for payloads
// and results, a prefixed text for errors and stack traces.
#include "payq/encryption.hpp"

#include <nlohmann/json.hpp>

#include "crypto/base64.hpp"
#include "payq/error.hpp"

namespace payq {
namespace {

using Json = nlohmann::json;

// Checked when read, so a malformed envelope is DecryptionFailed, not a
// JSON library error.
Sealed envelope_read(const Json& inner) {
  if (!inner.is_object()) throw DecryptionFailed("the encrypted envelope is not an object");
  auto text = [&](const char* name) -> std::string {
    auto found = inner.find(name);
    if (found == inner.end() || !found->is_string()) {
      throw DecryptionFailed(std::string("the encrypted envelope lacks its \"") + name + "\"");
    }
    return found->get<std::string>();
  };
  auto version = inner.find("v");
  if (version == inner.end() || !version->is_number_integer() || version->get<int>() != encryption_version) {
    throw DecryptionFailed("the encrypted envelope is of an unknown version");
  }
  Sealed sealed;
  sealed.key_id = text("key");
  auto nonce = crypto::base64_decode(text("nonce"));
  auto ciphertext = crypto::base64_decode(text("ct"));
  if (!nonce || !ciphertext) throw DecryptionFailed("the encrypted envelope is not base64");
  sealed.nonce = std::move(*nonce);
  sealed.ciphertext = std::move(*ciphertext);
  return sealed;
}

// "payq-encrypted:1:<key>:<nonce>:<ct>" after its prefix.
Sealed text_read(const std::string& text) {
  const std::string prefix = encrypted_text_prefix;
  const auto key_end = text.find(':', prefix.size());
  const auto nonce_end = key_end == std::string::npos ? key_end : text.find(':', key_end + 1);
  if (nonce_end == std::string::npos) throw DecryptionFailed("the encrypted text is malformed");
  Sealed sealed;
  sealed.key_id = text.substr(prefix.size(), key_end - prefix.size());
  auto nonce = crypto::base64_decode(text.substr(key_end + 1, nonce_end - key_end - 1));
  auto ciphertext = crypto::base64_decode(text.substr(nonce_end + 1));
  if (!nonce || !ciphertext) throw DecryptionFailed("the encrypted text is not base64");
  sealed.nonce = std::move(*nonce);
  sealed.ciphertext = std::move(*ciphertext);
  return sealed;
}

bool text_is_sealed(const std::string& text) { return text.rfind(encrypted_text_prefix, 0) == 0; }

// The envelope member of a JSON text, if it is an envelope: a one-member
// object. Cheap for the common case (a clear payload) without parsing.
std::optional<Json> envelope_inner(const std::string& json_text) {
  if (json_text.find(encrypted_json_member) == std::string::npos) return std::nullopt;
  Json value = Json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (!value.is_object() || value.size() != 1 || !value.contains(encrypted_json_member)) return std::nullopt;
  return value[encrypted_json_member];
}

}  // namespace

const char* encrypted_field_name(EncryptedField field) {
  switch (field) {
    case EncryptedField::payload: return "payload";
    case EncryptedField::result: return "result";
    case EncryptedField::error: return "error";
    case EncryptedField::traceback: return "traceback";
  }
  return "unknown";
}

std::string encryption_associated(EncryptedField field, std::int64_t task_id, const std::string& kind) {
  // A JSON array: unambiguous whatever the kind's characters.
  return Json::array({"payq", encryption_version, encrypted_field_name(field), task_id, kind}).dump();
}

std::string json_seal(const Keyring& keyring, EncryptedField field, std::int64_t task_id, const std::string& kind,
                      const std::string& clear_json) {
  const Sealed sealed = keyring.seal(clear_json, encryption_associated(field, task_id, kind));
  Json inner = {{"v", encryption_version},
                {"key", sealed.key_id},
                {"nonce", crypto::base64_encode(sealed.nonce)},
                {"ct", crypto::base64_encode(sealed.ciphertext)}};
  return Json{{encrypted_json_member, std::move(inner)}}.dump();
}

std::optional<std::string> json_sealed_key(const std::string& json_text) {
  std::optional<Json> inner = envelope_inner(json_text);
  if (!inner) return std::nullopt;
  return envelope_read(*inner).key_id;
}

std::string json_open(const Keyring& keyring, EncryptedField field, std::int64_t task_id, const std::string& kind,
                      const std::string& envelope_json) {
  std::optional<Json> inner = envelope_inner(envelope_json);
  if (!inner) throw DecryptionFailed(std::string("the ") + encrypted_field_name(field) + " is not encrypted");
  return keyring.open(envelope_read(*inner), encryption_associated(field, task_id, kind));
}

std::string text_seal(const Keyring& keyring, EncryptedField field, std::int64_t task_id, const std::string& kind,
                      const std::string& clear) {
  const Sealed sealed = keyring.seal(clear, encryption_associated(field, task_id, kind));
  return encrypted_text_prefix + sealed.key_id + ":" + crypto::base64_encode(sealed.nonce) + ":" +
         crypto::base64_encode(sealed.ciphertext);
}

std::optional<std::string> text_sealed_key(const std::string& text) {
  if (!text_is_sealed(text)) return std::nullopt;
  return text_read(text).key_id;
}

std::string text_open(const Keyring& keyring, EncryptedField field, std::int64_t task_id, const std::string& kind,
                      const std::string& sealed) {
  if (!text_is_sealed(sealed)) throw DecryptionFailed(std::string("the ") + encrypted_field_name(field) + " is not encrypted");
  return keyring.open(text_read(sealed), encryption_associated(field, task_id, kind));
}

bool task_encrypted(const Task& task) {
  return envelope_inner(task.payload_json).has_value() || (task.result_json && envelope_inner(*task.result_json)) ||
         (task.error && text_is_sealed(*task.error));
}

Task task_open(const Keyring& keyring, Task task) {
  if (envelope_inner(task.payload_json)) {
    task.payload_json = json_open(keyring, EncryptedField::payload, task.id, task.kind, task.payload_json);
  }
  if (task.result_json && envelope_inner(*task.result_json)) {
    task.result_json = json_open(keyring, EncryptedField::result, task.id, task.kind, *task.result_json);
  }
  if (task.error && text_is_sealed(*task.error)) {
    task.error = text_open(keyring, EncryptedField::error, task.id, task.kind, *task.error);
  }
  return task;
}

TaskAttempt attempt_open(const Keyring& keyring, const std::string& kind, TaskAttempt attempt) {
  if (attempt.error && text_is_sealed(*attempt.error)) {
    attempt.error = text_open(keyring, EncryptedField::error, attempt.task_id, kind, *attempt.error);
  }
  if (attempt.traceback && text_is_sealed(*attempt.traceback)) {
    attempt.traceback = text_open(keyring, EncryptedField::traceback, attempt.task_id, kind, *attempt.traceback);
  }
  return attempt;
}

}  // namespace payq

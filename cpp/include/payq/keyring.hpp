// The keys that encrypt task payloads, results and errors at rest (see
// encryption.hpp and docs/encryption.md): AES-256 keys, each with an id, one
// of them current (new encryptions use it), all of them readable (a
// ciphertext names the key it was made with, so old keys keep decrypting
// until they are removed).
//
// Key material never leaves this class in text form: no message, log line
// or printable form shows it, and it is wiped when the keyring goes.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace payq {

// Bounds, named once.
inline constexpr std::size_t key_bytes = 32;          // AES-256
inline constexpr std::size_t key_id_bytes_max = 64;   // [A-Za-z0-9_.-]
inline constexpr std::size_t keyring_key_count_max = 64;
inline constexpr std::size_t keyring_file_bytes_max = 64 * 1024;

// Where Keyring::from_env looks: a file (keyring_file_parse's format), or
// the keys themselves as "id1:base64,id2:base64" and the current key's id.
inline constexpr const char* keyring_env_file = "PAYQ_KEYS_FILE";
inline constexpr const char* keyring_env_keys = "PAYQ_KEYS";
inline constexpr const char* keyring_env_current = "PAYQ_KEY_CURRENT";

// One AES-256-GCM ciphertext as stored: the id of its key, the 96-bit nonce
// and the ciphertext with its 16-byte tag appended (raw bytes).
struct Sealed {
  std::string key_id;
  std::string nonce;
  std::string ciphertext;
};

class Keyring {
 public:
  Keyring() = default;
  Keyring(const Keyring& other);
  Keyring& operator=(const Keyring& other);
  Keyring(Keyring&& other) noexcept;
  Keyring& operator=(Keyring&& other) noexcept;
  ~Keyring();

  // Adds a key of exactly key_bytes bytes under `id` (1..key_id_bytes_max of
  // letters, digits, '_', '.', '-'). InvalidArgument for a bad id, a key of
  // another length, a repeated id or too many keys; the message never shows
  // the key.
  void add(const std::string& id, const std::string& key);
  // The same with the key in standard base64 (44 characters).
  void add_base64(const std::string& id, const std::string& key_base64);
  // KeyMissing unless `id` was added.
  void current_set(const std::string& id);

  bool empty() const noexcept { return keys_.empty(); }
  bool has(const std::string& id) const noexcept;
  // The ids, in the order they were added.
  std::vector<std::string> ids() const;
  // The current key's id; KeyMissing when none is set.
  const std::string& current() const;

  // Encrypts `clear` under the current key with a fresh random nonce,
  // binding `associated` (authenticated, not stored). KeyMissing without a
  // current key.
  Sealed seal(const std::string& clear, const std::string& associated) const;
  // The clear text of `sealed`. KeyMissing when its key is not here;
  // DecryptionFailed when it does not authenticate (wrong key material, an
  // altered ciphertext, or other associated data: moved elsewhere).
  std::string open(const Sealed& sealed, const std::string& associated) const;

  // "id1:base64,id2:base64" (spaces around items allowed) with the current
  // key's id; `current` may be empty when there is exactly one key.
  // ConfigError naming the fault (never a key) for anything else.
  static Keyring parse(const std::string& keys, const std::string& current);
  // A key file: one "id:base64" per line, and "current=<id>" (optional with
  // exactly one key); blank lines and lines starting with '#' are skipped.
  // ConfigError for an unreadable or malformed file.
  static Keyring file_read(const std::string& path);
  // PAYQ_KEYS_FILE if set, else PAYQ_KEYS and PAYQ_KEY_CURRENT. ConfigError
  // when none is set or what is set is malformed.
  static Keyring from_env();
  // A new random key, base64 (for `payq keys generate`).
  static std::string key_generate_base64();

 private:
  struct Key {
    std::string id;
    std::string bytes;
  };
  const Key* find(const std::string& id) const noexcept;
  void wipe() noexcept;

  std::vector<Key> keys_;
  std::string current_;
};

}  // namespace payq

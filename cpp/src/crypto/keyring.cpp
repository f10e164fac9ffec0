// The keyring: keys by id, AES-256-GCM through OpenSSL's libcrypto, and the
// ways a keyring is loaded (text, file, environment).
#include "payq/keyring.hpp"

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <iterator>
#include <optional>
#include <sstream>
#include <stdexcept>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "crypto/base64.hpp"
#include "payq/error.hpp"

namespace payq {
namespace {

constexpr int nonce_bytes = 12;  // 96 bits, GCM's native nonce
constexpr int tag_bytes = 16;

bool key_id_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
         c == '-';
}

bool key_id_valid(const std::string& id) {
  return !id.empty() && id.size() <= key_id_bytes_max && std::all_of(id.begin(), id.end(), key_id_char);
}

// A key id as a message may show it: ids are not secret, but a malformed
// one may be a key pasted into the wrong place, so it is never repeated.
std::string id_quoted(const std::string& id) { return key_id_valid(id) ? "'" + id + "'" : "(malformed id)"; }

struct CipherContextFree {
  void operator()(EVP_CIPHER_CTX* context) const { EVP_CIPHER_CTX_free(context); }
};
using CipherContext = std::unique_ptr<EVP_CIPHER_CTX, CipherContextFree>;

CipherContext context_new() {
  CipherContext context(EVP_CIPHER_CTX_new());
  if (!context) throw ResourceExhausted("OpenSSL could not allocate a cipher context");
  return context;
}

int int_size(std::size_t size, const char* what) {
  // OpenSSL takes int lengths; payq's texts are far below 2 GiB.
  if (size > static_cast<std::size_t>(1) << 30) throw InvalidArgument(std::string(what) + " is too large to encrypt");
  return static_cast<int>(size);
}

unsigned char* bytes_of(std::string& s) { return reinterpret_cast<unsigned char*>(&s[0]); }
const unsigned char* bytes_of(const std::string& s) { return reinterpret_cast<const unsigned char*>(s.data()); }

std::string trimmed(const std::string& s) {
  const auto first = s.find_first_not_of(" \t\r\n");
  if (first == std::string::npos) return {};
  const auto last = s.find_last_not_of(" \t\r\n");
  return s.substr(first, last - first + 1);
}

// "id:base64" into the keyring; ConfigError naming `where`, never the key.
void entry_add(Keyring& keyring, const std::string& entry, const std::string& where) {
  const auto colon = entry.find(':');
  if (colon == std::string::npos) throw ConfigError(where + ": a key is written id:base64");
  const std::string id = trimmed(entry.substr(0, colon));
  std::string key = trimmed(entry.substr(colon + 1));
  try {
    keyring.add_base64(id, key);
  } catch (const InvalidArgument& e) {
    OPENSSL_cleanse(bytes_of(key), key.size());
    throw ConfigError(where + ": " + e.what());
  }
  OPENSSL_cleanse(bytes_of(key), key.size());
}

void current_choose(Keyring& keyring, const std::string& current, const std::string& where) {
  if (keyring.empty()) throw ConfigError(where + ": no key given");
  if (current.empty()) {
    if (keyring.ids().size() != 1) throw ConfigError(where + ": several keys and none named current");
    keyring.current_set(keyring.ids().front());
    return;
  }
  if (!keyring.has(current)) throw ConfigError(where + ": the current key " + id_quoted(current) + " is not among the keys");
  keyring.current_set(current);
}

}  // namespace

Keyring::Keyring(const Keyring& other) : keys_(other.keys_), current_(other.current_) {}

Keyring& Keyring::operator=(const Keyring& other) {
  if (this != &other) {
    wipe();
    keys_ = other.keys_;
    current_ = other.current_;
  }
  return *this;
}

Keyring::Keyring(Keyring&& other) noexcept : keys_(std::move(other.keys_)), current_(std::move(other.current_)) {}

Keyring& Keyring::operator=(Keyring&& other) noexcept {
  if (this != &other) {
    wipe();
    keys_ = std::move(other.keys_);
    current_ = std::move(other.current_);
  }
  return *this;
}

Keyring::~Keyring() { wipe(); }

void Keyring::wipe() noexcept {
  for (Key& key : keys_) {
    if (!key.bytes.empty()) OPENSSL_cleanse(bytes_of(key.bytes), key.bytes.size());
  }
  keys_.clear();
}

void Keyring::add(const std::string& id, const std::string& key) {
  if (!key_id_valid(id)) {
    throw InvalidArgument("a key id is 1 to " + std::to_string(key_id_bytes_max) +
                          " letters, digits, '_', '.' or '-'");
  }
  if (key.size() != key_bytes) {
    throw InvalidArgument("key " + id_quoted(id) + " is " + std::to_string(key.size()) + " bytes; AES-256 takes " +
                          std::to_string(key_bytes));
  }
  if (has(id)) throw InvalidArgument("key " + id_quoted(id) + " is given twice");
  if (keys_.size() >= keyring_key_count_max) {
    throw InvalidArgument("a keyring holds at most " + std::to_string(keyring_key_count_max) + " keys");
  }
  keys_.push_back(Key{id, key});
}

void Keyring::add_base64(const std::string& id, const std::string& key_base64) {
  std::optional<std::string> key = crypto::base64_decode(key_base64);
  if (!key) throw InvalidArgument("key " + id_quoted(id) + " is not base64 (44 characters for 32 bytes)");
  try {
    add(id, *key);
  } catch (...) {
    OPENSSL_cleanse(bytes_of(*key), key->size());
    throw;
  }
  OPENSSL_cleanse(bytes_of(*key), key->size());
}

void Keyring::current_set(const std::string& id) {
  if (!has(id)) throw KeyMissing("key " + id_quoted(id) + " is not in the keyring");
  current_ = id;
}

const Keyring::Key* Keyring::find(const std::string& id) const noexcept {
  for (const Key& key : keys_) {
    if (key.id == id) return &key;
  }
  return nullptr;
}

bool Keyring::has(const std::string& id) const noexcept { return find(id) != nullptr; }

std::vector<std::string> Keyring::ids() const {
  std::vector<std::string> out;
  out.reserve(keys_.size());
  for (const Key& key : keys_) out.push_back(key.id);
  return out;
}

const std::string& Keyring::current() const {
  if (current_.empty()) throw KeyMissing(keys_.empty() ? "the keyring is empty" : "the keyring has no current key");
  return current_;
}

Sealed Keyring::seal(const std::string& clear, const std::string& associated) const {
  const Key* key = find(current());
  Sealed sealed;
  sealed.key_id = key->id;
  sealed.nonce.assign(nonce_bytes, '\0');
  if (RAND_bytes(bytes_of(sealed.nonce), nonce_bytes) != 1) {
    throw ResourceExhausted("OpenSSL's random generator gave no nonce");
  }
  CipherContext context = context_new();
  sealed.ciphertext.assign(clear.size() + tag_bytes, '\0');
  int length = 0;
  int total = 0;
  const bool ok =
      EVP_EncryptInit_ex(context.get(), EVP_aes_256_gcm(), nullptr, nullptr, nullptr) == 1 &&
      EVP_CIPHER_CTX_ctrl(context.get(), EVP_CTRL_GCM_SET_IVLEN, nonce_bytes, nullptr) == 1 &&
      EVP_EncryptInit_ex(context.get(), nullptr, nullptr, bytes_of(key->bytes), bytes_of(sealed.nonce)) == 1 &&
      EVP_EncryptUpdate(context.get(), nullptr, &length, bytes_of(associated),
                        int_size(associated.size(), "associated data")) == 1 &&
      EVP_EncryptUpdate(context.get(), bytes_of(sealed.ciphertext), &length, bytes_of(clear),
                        int_size(clear.size(), "the text")) == 1 &&
      (total = length, EVP_EncryptFinal_ex(context.get(), bytes_of(sealed.ciphertext) + total, &length) == 1) &&
      EVP_CIPHER_CTX_ctrl(context.get(), EVP_CTRL_GCM_GET_TAG, tag_bytes,
                          bytes_of(sealed.ciphertext) + total + length) == 1;
  // GCM is a stream mode: the ciphertext is exactly as long as the text.
  if (!ok || total + length != static_cast<int>(clear.size())) {
    throw std::logic_error("OpenSSL refused an AES-256-GCM encryption");
  }
  return sealed;
}

std::string Keyring::open(const Sealed& sealed, const std::string& associated) const {
  const Key* key = find(sealed.key_id);
  if (!key) throw KeyMissing("key " + id_quoted(sealed.key_id) + " is not in the keyring");
  if (sealed.nonce.size() != nonce_bytes || sealed.ciphertext.size() < tag_bytes) {
    throw DecryptionFailed("the ciphertext is malformed (nonce or tag missing)");
  }
  const std::size_t clear_size = sealed.ciphertext.size() - tag_bytes;
  std::string clear(clear_size, '\0');
  std::string tag = sealed.ciphertext.substr(clear_size);
  CipherContext context = context_new();
  int length = 0;
  int total = 0;
  const bool ok =
      EVP_DecryptInit_ex(context.get(), EVP_aes_256_gcm(), nullptr, nullptr, nullptr) == 1 &&
      EVP_CIPHER_CTX_ctrl(context.get(), EVP_CTRL_GCM_SET_IVLEN, nonce_bytes, nullptr) == 1 &&
      EVP_DecryptInit_ex(context.get(), nullptr, nullptr, bytes_of(key->bytes), bytes_of(sealed.nonce)) == 1 &&
      EVP_DecryptUpdate(context.get(), nullptr, &length, bytes_of(associated),
                        int_size(associated.size(), "associated data")) == 1 &&
      EVP_DecryptUpdate(context.get(), clear.empty() ? nullptr : bytes_of(clear), &length, bytes_of(sealed.ciphertext),
                        int_size(clear_size, "the ciphertext")) == 1 &&
      (total = length,
       EVP_CIPHER_CTX_ctrl(context.get(), EVP_CTRL_GCM_SET_TAG, tag_bytes, bytes_of(tag)) == 1) &&
      EVP_DecryptFinal_ex(context.get(), clear.empty() ? nullptr : bytes_of(clear) + total, &length) == 1;
  if (!ok) {
    // Nothing of an unauthenticated text is handed out.
    OPENSSL_cleanse(bytes_of(clear), clear.size());
    throw DecryptionFailed("the ciphertext does not authenticate under key " + id_quoted(sealed.key_id) +
                           ": another key under the same id, an altered text, or a text moved from another "
                           "task or field");
  }
  return clear;
}

Keyring Keyring::parse(const std::string& keys, const std::string& current) {
  Keyring keyring;
  std::stringstream items(keys);
  std::string item;
  std::size_t n = 0;
  while (std::getline(items, item, ',')) {
    ++n;
    if (trimmed(item).empty()) continue;
    entry_add(keyring, item, std::string(keyring_env_keys) + " item " + std::to_string(n));
  }
  current_choose(keyring, trimmed(current), keyring_env_keys);
  return keyring;
}

Keyring Keyring::file_read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError("key file " + path + " cannot be read");
  std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (content.size() > keyring_file_bytes_max) throw ConfigError("key file " + path + " is larger than 64 KiB");
  Keyring keyring;
  std::string current;
  std::stringstream lines(content);
  std::string line;
  std::size_t n = 0;
  while (std::getline(lines, line)) {
    ++n;
    const std::string text = trimmed(line);
    if (text.empty() || text[0] == '#') continue;
    const std::string where = "key file " + path + " line " + std::to_string(n);
    if (text.rfind("current=", 0) == 0) {
      if (!current.empty()) throw ConfigError(where + ": current= is given twice");
      current = trimmed(text.substr(8));
      if (current.empty()) throw ConfigError(where + ": current= names no key");
      continue;
    }
    entry_add(keyring, text, where);
  }
  OPENSSL_cleanse(bytes_of(content), content.size());
  current_choose(keyring, current, "key file " + path);
  return keyring;
}

Keyring Keyring::from_env() {
  const char* file = std::getenv(keyring_env_file);
  if (file && *file) return file_read(file);
  const char* keys = std::getenv(keyring_env_keys);
  if (!keys || !*keys) {
    throw ConfigError(std::string("no keys: set ") + keyring_env_file + " (a key file) or " + keyring_env_keys +
                      " (id:base64,...) and " + keyring_env_current);
  }
  const char* current = std::getenv(keyring_env_current);
  return parse(keys, current ? current : "");
}

std::string Keyring::key_generate_base64() {
  std::string key(key_bytes, '\0');
  if (RAND_bytes(bytes_of(key), static_cast<int>(key_bytes)) != 1) {
    throw ResourceExhausted("OpenSSL's random generator gave no key");
  }
  std::string text = crypto::base64_encode(key);
  OPENSSL_cleanse(bytes_of(key), key.size());
  return text;
}

}  // namespace payq

// The keyring and the stored forms of encrypted fields, without a database:
// round trips, what the associated data binds, tampering, missing and wrong
// keys, and how a keyring is loaded (never showing a key in a message).
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "crypto/base64.hpp"
#include "payq/encryption.hpp"
#include "payq/error.hpp"
#include "payq/keyring.hpp"

namespace payq {
namespace {

using Json = nlohmann::json;

const std::string key_a(32, 'a');
const std::string key_b(32, 'b');

Keyring two_keys(const std::string& current = "k2") {
  Keyring keyring;
  keyring.add("k1", key_a);
  keyring.add("k2", key_b);
  keyring.current_set(current);
  return keyring;
}

template <typename E, typename F>
std::string message_of(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected an exception";
  return {};
}

TEST(Keyring, SealOpenRoundTripUsesTheCurrentKeyAndAFreshNonce) {
  const Keyring keyring = two_keys();
  const Sealed one = keyring.seal("IBAN DE89 3704", "ad");
  const Sealed two = keyring.seal("IBAN DE89 3704", "ad");
  EXPECT_EQ(one.key_id, "k2");
  EXPECT_EQ(one.nonce.size(), 12u);
  EXPECT_EQ(one.ciphertext.size(), std::string("IBAN DE89 3704").size() + 16);
  EXPECT_NE(one.nonce, two.nonce);
  EXPECT_NE(one.ciphertext, two.ciphertext);
  EXPECT_EQ(keyring.open(one, "ad"), "IBAN DE89 3704");
  EXPECT_EQ(keyring.open(keyring.seal("", "ad"), "ad"), "");
}

TEST(Keyring, OldKeysStayReadableAfterTheCurrentKeyChanges) {
  const Sealed old = two_keys("k1").seal("clear", "ad");
  EXPECT_EQ(two_keys("k2").open(old, "ad"), "clear");
}

TEST(Keyring, OtherAssociatedDataTamperingOrOtherKeyMaterialFailToAuthenticate) {
  const Keyring keyring = two_keys();
  const Sealed sealed = keyring.seal("clear", "ad");
  EXPECT_THROW(keyring.open(sealed, "other"), DecryptionFailed);
  for (std::size_t i : {std::size_t{0}, sealed.ciphertext.size() - 1}) {  // text, tag
    Sealed tampered = sealed;
    tampered.ciphertext[i] = static_cast<char>(tampered.ciphertext[i] ^ 1);
    EXPECT_THROW(keyring.open(tampered, "ad"), DecryptionFailed);
  }
  Sealed nonce = sealed;
  nonce.nonce[0] = static_cast<char>(nonce.nonce[0] ^ 1);
  EXPECT_THROW(keyring.open(nonce, "ad"), DecryptionFailed);
  Sealed truncated = sealed;
  truncated.ciphertext.resize(10);
  EXPECT_THROW(keyring.open(truncated, "ad"), DecryptionFailed);
  // The same id with other key material: a wrong key.
  Keyring wrong;
  wrong.add("k2", std::string(32, 'z'));
  wrong.current_set("k2");
  EXPECT_THROW(wrong.open(sealed, "ad"), DecryptionFailed);
}

TEST(Keyring, AMissingKeyIsKeyMissing) {
  const Sealed sealed = two_keys().seal("clear", "ad");
  Keyring only_k1;
  only_k1.add("k1", key_a);
  only_k1.current_set("k1");
  EXPECT_THROW(only_k1.open(sealed, "ad"), KeyMissing);
  EXPECT_THROW(Keyring().seal("clear", "ad"), KeyMissing);
  EXPECT_THROW(Keyring().current_set("k1"), KeyMissing);
}

TEST(Keyring, BadKeysAndIdsAreRefusedWithoutShowingTheKey) {
  Keyring keyring;
  const std::string short_key = "0123456789abcdef0123456789abcde";  // 31 bytes
  const std::string message = message_of<InvalidArgument>([&] { keyring.add("k1", short_key); });
  EXPECT_EQ(message.find(short_key), std::string::npos) << message;
  EXPECT_THROW(keyring.add("", key_a), InvalidArgument);
  EXPECT_THROW(keyring.add("k 1", key_a), InvalidArgument);
  EXPECT_THROW(keyring.add(std::string(65, 'k'), key_a), InvalidArgument);
  keyring.add("k1", key_a);
  EXPECT_THROW(keyring.add("k1", key_b), InvalidArgument);
  EXPECT_THROW(keyring.add_base64("k2", "not base64!"), InvalidArgument);
  // A key pasted where the id goes is not repeated either.
  const std::string pasted = crypto::base64_encode(key_b);
  const std::string id_message = message_of<InvalidArgument>([&] { keyring.add(pasted, key_b); });
  EXPECT_EQ(id_message.find(pasted), std::string::npos) << id_message;
}

TEST(Keyring, ParseReadsIdsKeysAndTheCurrentOne) {
  const std::string a = crypto::base64_encode(key_a);
  const std::string b = crypto::base64_encode(key_b);
  const Keyring keyring = Keyring::parse(" k1:" + a + " , k2:" + b, "k2");
  EXPECT_EQ(keyring.ids(), (std::vector<std::string>{"k1", "k2"}));
  EXPECT_EQ(keyring.current(), "k2");
  EXPECT_EQ(Keyring::parse("only:" + a, "").current(), "only");
  EXPECT_THROW(Keyring::parse("k1:" + a + ",k2:" + b, ""), ConfigError);
  EXPECT_THROW(Keyring::parse("k1:" + a, "k9"), ConfigError);
  EXPECT_THROW(Keyring::parse("", ""), ConfigError);
  const std::string message = message_of<ConfigError>([&] { Keyring::parse("k1" + a, ""); });
  EXPECT_EQ(message.find(a), std::string::npos) << message;
}

TEST(Keyring, FileAndEnvironmentLoadTheSameKeyring) {
  const std::string a = crypto::base64_encode(key_a);
  const std::string b = crypto::base64_encode(key_b);
  const std::string path = ::testing::TempDir() + "payq_keyring_test_keys";
  {
    std::ofstream out(path);
    out << "# payq keys\n\nk1:" << a << "\nk2:" << b << "\ncurrent=k1\n";
  }
  const Keyring from_file = Keyring::file_read(path);
  EXPECT_EQ(from_file.ids(), (std::vector<std::string>{"k1", "k2"}));
  EXPECT_EQ(from_file.current(), "k1");
  ::setenv(keyring_env_file, path.c_str(), 1);
  EXPECT_EQ(Keyring::from_env().current(), "k1");
  ::unsetenv(keyring_env_file);
  std::remove(path.c_str());
  EXPECT_THROW(Keyring::file_read(path), ConfigError);

  ::setenv(keyring_env_keys, ("k1:" + a + ",k2:" + b).c_str(), 1);
  ::setenv(keyring_env_current, "k2", 1);
  const Keyring from_env = Keyring::from_env();
  ::unsetenv(keyring_env_keys);
  ::unsetenv(keyring_env_current);
  EXPECT_EQ(from_env.current(), "k2");
  EXPECT_EQ(from_env.open(from_file.seal("x", "ad"), "ad"), "x");
  EXPECT_THROW(Keyring::from_env(), ConfigError);
}

TEST(Keyring, Base64IsStrict) {
  for (const std::string clear : {"", "f", "fo", "foo", "foob", "fooba", "foobar"}) {
    EXPECT_EQ(crypto::base64_decode(crypto::base64_encode(clear)), clear);
  }
  EXPECT_EQ(crypto::base64_encode("foobar"), "Zm9vYmFy");
  EXPECT_FALSE(crypto::base64_decode("Zm9=YmFy"));
  EXPECT_FALSE(crypto::base64_decode("Zm9vYmF"));
  EXPECT_FALSE(crypto::base64_decode("Zm9vYmF5\n"));
  EXPECT_FALSE(crypto::base64_decode("Zh=="));  // non-zero bits under the padding
  EXPECT_EQ(Keyring::key_generate_base64().size(), 44u);
  EXPECT_NE(Keyring::key_generate_base64(), Keyring::key_generate_base64());
}

TEST(Encryption, AnEnvelopeOpensOnlyForItsTaskKindAndField) {
  const Keyring keyring = two_keys();
  const std::string envelope = json_seal(keyring, EncryptedField::payload, 7, "payout", R"({"iban":"DE89"})");
  const Json stored = Json::parse(envelope);
  ASSERT_TRUE(stored.contains(encrypted_json_member));
  EXPECT_EQ(stored[encrypted_json_member]["key"], "k2");
  EXPECT_EQ(stored[encrypted_json_member]["v"], 1);
  EXPECT_EQ(envelope.find("DE89"), std::string::npos);
  EXPECT_EQ(json_sealed_key(envelope), "k2");
  EXPECT_EQ(json_sealed_key(R"({"iban":"DE89"})"), std::nullopt);
  EXPECT_EQ(json_open(keyring, EncryptedField::payload, 7, "payout", envelope), R"({"iban":"DE89"})");
  EXPECT_THROW(json_open(keyring, EncryptedField::payload, 8, "payout", envelope), DecryptionFailed);
  EXPECT_THROW(json_open(keyring, EncryptedField::payload, 7, "refund", envelope), DecryptionFailed);
  EXPECT_THROW(json_open(keyring, EncryptedField::result, 7, "payout", envelope), DecryptionFailed);
  EXPECT_THROW(json_open(keyring, EncryptedField::payload, 7, "payout", R"({"iban":"DE89"})"), DecryptionFailed);
  Json wrong_version = stored;
  wrong_version[encrypted_json_member]["v"] = 2;
  EXPECT_THROW(json_open(keyring, EncryptedField::payload, 7, "payout", wrong_version.dump()), DecryptionFailed);
}

TEST(Encryption, TextFieldsKeepTheirPrefixAndBinding) {
  const Keyring keyring = two_keys();
  const std::string sealed = text_seal(keyring, EncryptedField::error, 7, "payout", "declined: DE89");
  EXPECT_EQ(sealed.rfind(encrypted_text_prefix, 0), 0u);
  EXPECT_EQ(sealed.find("DE89"), std::string::npos);
  EXPECT_EQ(text_sealed_key(sealed), "k2");
  EXPECT_EQ(text_sealed_key("plain error"), std::nullopt);
  EXPECT_EQ(text_open(keyring, EncryptedField::error, 7, "payout", sealed), "declined: DE89");
  EXPECT_THROW(text_open(keyring, EncryptedField::traceback, 7, "payout", sealed), DecryptionFailed);
  EXPECT_THROW(text_open(keyring, EncryptedField::error, 7, "payout", sealed.substr(0, sealed.size() - 4)),
               DecryptionFailed);
}

TEST(Encryption, TaskOpenDecryptsEveryEncryptedField) {
  const Keyring keyring = two_keys();
  Task task;
  task.id = 3;
  task.kind = "payout";
  task.payload_json = json_seal(keyring, EncryptedField::payload, 3, "payout", R"({"a":1})");
  task.result_json = json_seal(keyring, EncryptedField::result, 3, "payout", R"({"ok":true})");
  task.error = text_seal(keyring, EncryptedField::error, 3, "payout", "boom");
  EXPECT_TRUE(task_encrypted(task));
  const Task clear = task_open(keyring, task);
  EXPECT_EQ(clear.payload_json, R"({"a":1})");
  EXPECT_EQ(clear.result_json, R"({"ok":true})");
  EXPECT_EQ(clear.error, "boom");
  EXPECT_FALSE(task_encrypted(clear));
  EXPECT_EQ(task_open(keyring, clear).payload_json, clear.payload_json);  // clear stays clear
}

}  // namespace
}  // namespace payq

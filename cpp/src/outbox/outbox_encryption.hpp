// Encrypted payloads at enqueue (outbox_encryption.cpp): the checks before
// anything is written, and the sealing once the batch is planned.
#pragma once

#include <vector>

#include <nlohmann/json.hpp>

#include "payq/db.hpp"
#include "payq/outbox.hpp"

namespace payq::outbox_detail {

// KeyMissing for encrypt without a keyring (or without a current key);
// InvalidArgument for a keyring without encrypt, which would encrypt nothing.
void spec_encryption_validate(const TaskSpec& spec);

bool specs_encrypted(const std::vector<TaskSpec>& specs);

// For every spec that asks for it: draws its task id now (the associated
// data binds the ciphertext to it), writes it into the statement's item as
// "given_id" and replaces the item's payload by its envelope. The request
// hashes were taken from the clear payload before, so a replay under the
// same key is still recognised.
void payloads_seal(Executor& executor, const std::vector<TaskSpec>& specs, std::vector<nlohmann::json>& items);

}  // namespace payq::outbox_detail

// The handler decorator of kinds registered with HandlerOptions::encrypt
// (worker_handler.cpp applies it): the payload is decrypted just before the
// handler runs, the result, error and stack trace are encrypted just after.
#pragma once

#include <memory>

#include "payq/handler.hpp"
#include "payq/keyring.hpp"

namespace payq::crypto {

// A task whose payload cannot be decrypted (a key missing from `keyring`,
// a ciphertext that does not authenticate) never reaches `inner`: its
// attempt is `unknown` with needs_review, so it waits for an operator with
// the reason as its error. A clear payload (a task enqueued before the
// kind was encrypted) is handed over as it is.
std::shared_ptr<Handler> encrypting_handler(std::shared_ptr<Handler> inner, std::shared_ptr<const Keyring> keyring);

}  // namespace payq::crypto

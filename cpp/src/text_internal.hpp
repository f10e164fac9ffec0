// Checks on text that payq stores: identifiers, keys, names.
#pragma once

#include <cstddef>
#include <string>

namespace payq::detail {

// InvalidArgument unless `value` is 1..bytes_max bytes without control
// characters; `what` names it in the message.
void text_bounded(const std::string& value, std::size_t bytes_max, const char* what);

}  // namespace payq::detail

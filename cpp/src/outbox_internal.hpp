// Shared by the outbox's source files.
#pragma once

#include "payq/outbox.hpp"
#include "text_internal.hpp"

namespace payq::outbox_detail {

// Bounds of task text columns, as the task table's CHECKs.
inline constexpr std::size_t kind_bytes_max = 200;
inline constexpr std::size_t queue_bytes_max = 100;
inline constexpr std::size_t key_bytes_max = 255;

Task task_from(const Rows& rows, std::size_t row);
using detail::text_bounded;
// Canonical JSON text of any JSON value; InvalidArgument if it is not JSON.
std::string json_canonical(const std::string& text, const char* what, std::size_t bytes_max);

// Runs a settled task's success side (applied) or failure side.
void settle_task(Executor& executor, const Task& task, bool applied);

}  // namespace payq::outbox_detail

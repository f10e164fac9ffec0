// The worker's structured log: one JSON object per line, to the configured
// sink, so log shippers can index events without parsing prose.
#include <time.h>

#include <chrono>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "worker/worker_internal.hpp"

namespace payq {
namespace {

// UTC with milliseconds: 2024-05-01T12:00:00.123Z.
std::string timestamp_now() {
  const auto now = std::chrono::system_clock::now();
  const std::time_t seconds = std::chrono::system_clock::to_time_t(now);
  const auto millis =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  char text[64];
  std::snprintf(text, sizeof text, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", utc.tm_year + 1900, utc.tm_mon + 1,
                utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec, static_cast<int>(millis));
  return text;
}

// Appends `value` as JSON; invalid UTF-8 (say, a provider's raw error body)
// is replaced, not fatal.
void json_append(std::string& line, const nlohmann::json& value) {
  line += value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

bool key_reserved(const std::string& key) {
  return key == "ts" || key == "level" || key == "event" || key == "worker";
}

}  // namespace

void worker_log_to_stderr(const std::string& line) {
  std::string out = line;
  out.push_back('\n');
  std::fputs(out.c_str(), stderr);
}

WorkerLog::WorkerLog(std::string worker_id, Sink sink, bool debug)
    : worker_id_(std::move(worker_id)), sink_(sink ? std::move(sink) : Sink(worker_log_to_stderr)), debug_(debug) {}

// Never throws: a failing sink (or a handler's error text that is not valid
// UTF-8) must not take a worker thread down. The line falls back to stderr.
// The line is written directly, not built as a JSON object first: a worker
// logs every task, and copying the fields into a tree cost more than the
// task's own bookkeeping. The record's keys (ts, level, event, worker) come
// first and are not overridden by fields of the same name.
void WorkerLog::write(const char* level, const char* event, const nlohmann::json& fields) noexcept {
  std::string line;
  try {
    line.reserve(256);
    line += "{\"ts\":\"";
    line += timestamp_now();
    // Levels and events are payq's own plain identifiers: nothing to escape.
    line += "\",\"level\":\"";
    line += level;
    line += "\",\"event\":\"";
    line += event;
    line += "\",\"worker\":";
    json_append(line, worker_id_);
    if (fields.is_object()) {
      for (auto it = fields.begin(); it != fields.end(); ++it) {
        if (key_reserved(it.key())) continue;
        line += ',';
        json_append(line, it.key());
        line += ':';
        json_append(line, it.value());
      }
    }
    line += '}';
    std::lock_guard<std::mutex> guard(mutex_);
    sink_(line);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "payq worker log sink failed (%s): %s\n", e.what(), line.c_str());
  } catch (...) {
    std::fprintf(stderr, "payq worker log sink failed: %s\n", line.c_str());
  }
}

}  // namespace payq

// Cron: each entry's latest due slot becomes a task, once across workers.
#include <string>

#include "payq/error.hpp"
#include "payq/outbox.hpp"
#include "worker/services.hpp"

namespace payq {

void CronOptions::validate() const {
  if (interval < service_interval_every_tick || interval > service_interval_max) {
    throw InvalidArgument("cron options: interval must be 0 to " + std::to_string(service_interval_max.count()) +
                          " ms");
  }
}

CronService::CronService(CronOptions options) : options_(options) { options_.validate(); }

std::int64_t CronService::run(Transaction& tx) { return Outbox(tx).cron_fire(); }

}  // namespace payq

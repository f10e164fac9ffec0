// What the maintenance services share (services.hpp): the schedule's
// validation, and the caller's extra step.
#include "worker/services.hpp"

#include <string>

#include "payq/error.hpp"

namespace payq {

void ServiceSchedule::validate(const char* service) const {
  const std::string owner = std::string(service) + " options: ";
  if (interval < service_interval_every_tick || interval > service_interval_max) {
    throw InvalidArgument(owner + "interval must be 0 to " + std::to_string(service_interval_max.count()) + " ms");
  }
  if (batch_count_max < 1 || batch_count_max > service_batch_count_max) {
    throw InvalidArgument(owner + "batch_count_max must be 1 to " + std::to_string(service_batch_count_max));
  }
}

ExtraService::ExtraService(std::function<void(Transaction&)> step) : step_(std::move(step)) {
  if (!step_) throw InvalidArgument("maintenance extra step is empty");
}

std::int64_t ExtraService::run(Transaction& tx) {
  step_(tx);
  return 0;
}

}  // namespace payq

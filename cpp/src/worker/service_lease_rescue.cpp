// Lease rescue: an attempt whose lease ran out is recorded as `unknown`.
#include "payq/outbox.hpp"
#include "worker/services.hpp"

namespace payq {

LeaseRescueService::LeaseRescueService(LeaseRescueOptions options) : options_(options) { options_.validate(); }

std::int64_t LeaseRescueService::run(Transaction& tx) {
  return Outbox(tx).leases_rescue(options_.schedule.batch_count_max);
}

}  // namespace payq

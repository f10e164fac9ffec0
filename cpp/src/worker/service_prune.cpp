// Pruning: finished tasks (with their attempts) past their retention.
#include "payq/error.hpp"
#include "payq/outbox.hpp"
#include "worker/services.hpp"

namespace payq {

void PruneOptions::validate() const {
  schedule.validate("prune");
  if (after_ms < 0) throw InvalidArgument("prune options: after_ms cannot be negative");
}

PruneService::PruneService(PruneOptions options) : options_(options) { options_.validate(); }

std::int64_t PruneService::run(Transaction& tx) {
  return Outbox(tx).prune(options_.after_ms, options_.schedule.batch_count_max);
}

}  // namespace payq

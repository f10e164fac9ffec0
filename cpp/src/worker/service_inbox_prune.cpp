// Inbox pruning: provider callbacks past their retention.
#include "payq/error.hpp"
#include "payq/inbox.hpp"
#include "worker/services.hpp"

namespace payq {

void InboxPruneOptions::validate() const {
  schedule.validate("inbox prune");
  if (retention_ms < 0) throw InvalidArgument("inbox prune options: retention_ms cannot be negative");
}

InboxPruneService::InboxPruneService(InboxPruneOptions options) : options_(options) { options_.validate(); }

std::int64_t InboxPruneService::run(Transaction& tx) {
  return Inbox(tx).prune(options_.retention_ms, options_.schedule.batch_count_max);
}

}  // namespace payq

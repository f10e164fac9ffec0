// Hold expiry: ledger holds past their expiry are released.
#include "payq/ledger.hpp"
#include "worker/services.hpp"

namespace payq {

HoldExpiryService::HoldExpiryService(HoldExpiryOptions options) : options_(options) { options_.validate(); }

std::int64_t HoldExpiryService::run(Transaction& tx) {
  return Ledger(tx).holds_expire(options_.schedule.batch_count_max);
}

}  // namespace payq

// SQL of the worker's own machinery (not of the queue it serves), by name:
// the maintenance election and the queue notifications.
#pragma once

#include "payq/db.hpp"

namespace payq::worker_sql {

// Takes the maintenance lease if it is free or has run out, or renews it
// if this worker holds it; a row comes back exactly when this worker holds
// it afterwards. $1: the worker id, $2: the lease in milliseconds.
inline const Statement maintenance_lease_take{"payq_maintenance_lease_take", R"sql(
INSERT INTO @schema@.maintenance_lease AS l (id, holder, expires_at)
VALUES (1, $1, now() + $2::bigint * interval '1 millisecond')
ON CONFLICT (id) DO UPDATE
SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at,
    acquired_at = CASE WHEN l.holder = EXCLUDED.holder THEN l.acquired_at ELSE now() END
WHERE l.holder = EXCLUDED.holder OR l.expires_at < now()
RETURNING holder)sql"};

// Gives the lease up at stop, so another worker takes it at its next tick.
inline const Statement maintenance_lease_give_up{"payq_maintenance_lease_give_up", R"sql(
UPDATE @schema@.maintenance_lease SET expires_at = now() - interval '1 millisecond' WHERE holder = $1)sql"};

// Wakes the workers listening on a schema's channel. $1: the channel,
// $2: the queue (the payload). Run after the enqueueing commit.
inline const Statement queue_notify{"payq_worker_notify", "SELECT pg_notify($1, $2)"};

// The listener's keep-alive on a silent connection (outside any transaction
// object, so plain text).
inline const char* const listener_ping = "SELECT 1";

}  // namespace payq::worker_sql

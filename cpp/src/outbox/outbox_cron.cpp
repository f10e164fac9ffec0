// Cron entries: each slot becomes exactly one task. PostgreSQL converts
// between instants and wall-clock minutes in the entry's time zone; the
// schedule is matched on wall-clock minutes (cron.hpp).
#include <cstdio>

#include "outbox/outbox_internal.hpp"
#include "payq/cron.hpp"
#include "payq/error.hpp"

namespace payq {

using namespace outbox_detail;

namespace {

const Statement cron_upsert{"payq_cron_upsert", R"sql(
INSERT INTO @schema@.cron_entry (name, schedule, time_zone, queue, kind, payload)
VALUES ($1, $2, $3, $4, $5, $6::jsonb)
ON CONFLICT (name) DO UPDATE
SET schedule = EXCLUDED.schedule, time_zone = EXCLUDED.time_zone, queue = EXCLUDED.queue,
    kind = EXCLUDED.kind, payload = EXCLUDED.payload)sql"};

const Statement cron_delete{"payq_cron_delete", R"sql(
DELETE FROM @schema@.cron_entry WHERE name = $1)sql"};

const Statement time_zone_known{"payq_time_zone_known", R"sql(
SELECT EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = $1) AS known)sql"};

// Wall-clock "now" and "fired up to" per entry, in the entry's time zone.
// An entry that never fired starts from the first minute that begins at or
// after its creation, so a new entry never fires a slot from before it existed.
const Statement cron_due{"payq_cron_due", R"sql(
SELECT name, schedule, time_zone, queue, kind, payload::text AS payload,
       to_char(now() AT TIME ZONE time_zone, 'YYYY MM DD HH24 MI') AS now_local,
       to_char(coalesce(last_slot + interval '1 minute',
                        date_trunc('minute', created_at - interval '1 microsecond') + interval '1 minute')
               AT TIME ZONE time_zone,
               'YYYY MM DD HH24 MI') AS from_local
FROM @schema@.cron_entry ORDER BY name)sql"};

// Claims the slot: only one caller moves last_slot past it.
const Statement cron_claim_slot{"payq_cron_claim_slot", R"sql(
UPDATE @schema@.cron_entry SET last_slot = ($2::timestamp AT TIME ZONE time_zone)
WHERE name = $1 AND (last_slot IS NULL OR last_slot < ($2::timestamp AT TIME ZONE time_zone))
RETURNING to_char(last_slot AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI"Z"') AS slot_utc)sql"};

CivilMinute civil_from(const std::string& text) {
  CivilMinute m{};
  if (std::sscanf(text.c_str(), "%d %d %d %d %d", &m.year, &m.month, &m.day, &m.hour, &m.minute) != 5) {
    throw DatabaseError("unexpected wall-clock time from the database: " + text);
  }
  return m;
}

std::string civil_text(const CivilMinute& m) {
  char text[32];
  std::snprintf(text, sizeof text, "%04d-%02d-%02d %02d:%02d", m.year, m.month, m.day, m.hour, m.minute);
  return text;
}

}  // namespace

void Outbox::cron_set(const CronEntry& entry) {
  text_bounded(entry.name, 200, "cron entry name");
  text_bounded(entry.kind, kind_bytes_max, "task kind");
  queue_name_validate(entry.queue);
  CronSchedule::parse(entry.schedule);  // throws InvalidArgument
  const std::string payload = detail::json_input_canonical(entry.payload_json, "cron payload", task_payload_bytes_max);
  if (!executor_.exec(time_zone_known, {entry.time_zone}).boolean(0, "known")) {
    throw InvalidArgument("unknown time zone '" + entry.time_zone + "'");
  }
  executor_.exec(cron_upsert, {entry.name, entry.schedule, entry.time_zone, entry.queue, entry.kind, payload});
}

void Outbox::cron_remove(const std::string& name) { executor_.exec(cron_delete, {name}); }

std::vector<CronEntry> Outbox::cron_list() {
  Rows rows = executor_.exec(cron_due, {});
  std::vector<CronEntry> entries;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    entries.push_back({rows.text(i, "name"), rows.text(i, "schedule"), rows.text(i, "time_zone"),
                       rows.text(i, "queue"), rows.text(i, "kind"), rows.text(i, "payload")});
  }
  return entries;
}

std::int64_t Outbox::cron_fire() {
  Rows rows = executor_.exec(cron_due, {});
  std::int64_t fired = 0;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const CronSchedule schedule = CronSchedule::parse(rows.text(i, "schedule"));
    const CivilMinute now = civil_from(rows.text(i, "now_local"));
    const CivilMinute from = civil_from(rows.text(i, "from_local"));
    const auto slot = schedule.latest_at_or_before(now, from);
    if (!slot) continue;
    Rows claimed = executor_.exec(cron_claim_slot, {rows.text(i, "name"), civil_text(*slot)});
    if (claimed.empty()) continue;  // another worker fired this slot
    TaskSpec spec;
    spec.kind = rows.text(i, "kind");
    spec.queue = rows.text(i, "queue");
    spec.payload_json = rows.text(i, "payload");
    spec.unique_key = "cron:" + rows.text(i, "name") + ":" + claimed.text(0, "slot_utc");
    if (enqueue(spec).created) ++fired;
  }
  return fired;
}

}  // namespace payq

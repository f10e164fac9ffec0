// Cron schedules for the outbox queue, as pure calendar arithmetic: no
// clock, no time zone database, no database access. The caller converts
// "now" to wall-clock time in the entry's time zone (PostgreSQL does that
// well), asks this file which wall-clock minute fires, and converts back.
//
// Expressions are the standard five fields
//
//     minute  hour  day-of-month  month  day-of-week
//     0-59    0-23  1-31          1-12   0-7 (0 and 7 are Sunday)
//
// each a comma-separated list of items; an item is `*`, a value `a`, a range
// `a-b`, or `*` or a range with a step (`*/15`, `1-30/5`). Month names
// JAN-DEC and weekday names SUN-SAT may stand for numbers in their fields,
// in any letter case. The macros are @yearly @annually @monthly @weekly
// @daily @midnight @hourly.
//
// Day matching follows Vixie cron, which most deployed crons (cronie,
// pg_cron) share: when both day fields are restricted a day matches if
// EITHER matches ("0 0 13 * FRI" fires on every 13th and every Friday);
// otherwise both must. A day field counts as unrestricted exactly when its
// text starts with `*`, so `*/2` is unrestricted for this rule although it
// names only odd days, again as in Vixie cron.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace payq {

// ---- wall-clock minutes

// The years a CivilMinute may have: Python's datetime range, which is where
// these values come from and go to.
inline constexpr int civil_year_min = 1;
inline constexpr int civil_year_max = 9999;

// A minute on a wall clock with no time zone attached, in the proleptic
// Gregorian calendar. Ordering is chronological.
struct CivilMinute {
  int year = civil_year_min;
  int month = 1;
  int day = 1;
  int hour = 0;
  int minute = 0;
};

bool operator==(const CivilMinute& a, const CivilMinute& b);
bool operator!=(const CivilMinute& a, const CivilMinute& b);
bool operator<(const CivilMinute& a, const CivilMinute& b);
bool operator<=(const CivilMinute& a, const CivilMinute& b);
bool operator>(const CivilMinute& a, const CivilMinute& b);
bool operator>=(const CivilMinute& a, const CivilMinute& b);

// "2024-02-29 13:05", for messages and test output.
std::string civil_minute_format(const CivilMinute& minute);

// 28..31; InvalidArgument for a month outside 1..12.
int civil_days_in_month(int year, int month);

// Whether every field is in range (the year in civil_year_min..max, the day
// within its month, and so on).
bool civil_minute_valid(const CivilMinute& minute);

// The next minute, carrying into hours, days, months and years.
// InvalidArgument for an invalid minute or for the last minute of
// civil_year_max, which has no successor in range.
CivilMinute civil_minute_next(const CivilMinute& minute);

// 0 = Sunday .. 6 = Saturday. InvalidArgument for an invalid minute.
int civil_weekday(const CivilMinute& minute);

// ---- schedules

// Longer text is refused before parsing, so a hostile string costs nothing.
inline constexpr std::size_t cron_expression_bytes_max = 1024;

// How many calendar years past the starting one a search looks. Forty is
// the longest gap between two firings of any schedule that fires at all:
// "0 0 29 2 */7" (Feb 29 that is also a Sunday, by the rule above) can go 40
// years without firing around a century year that is not a leap year.
// Schedules that never fire ("0 0 30 2 *") are recognised when parsed, so
// their searches return at once instead of walking the whole window.
inline constexpr int cron_search_years_max = 40;

class CronSchedule {
 public:
  // InvalidArgument naming the field and the problem: wrong field count,
  // value out of range, bad step, empty list item, reversed range, unknown
  // name or macro.
  static CronSchedule parse(std::string_view expression);

  // InvalidArgument if `minute` is not valid (civil_minute_valid).
  bool matches(const CivilMinute& minute) const;

  // The first matching minute strictly after `after`, or nullopt when the
  // schedule never fires (like "0 0 30 2 *") or next fires after the end of
  // civil_year_max. InvalidArgument if `after` is not valid.
  std::optional<CivilMinute> next_after(const CivilMinute& after) const;

  // The latest matching minute m with not_before <= m <= now, or nullopt:
  // the one slot to fire when a scheduler wakes after missing several, so a
  // backlog fires once rather than once per missed slot. nullopt when
  // not_before > now. InvalidArgument if either minute is not valid.
  std::optional<CivilMinute> latest_at_or_before(const CivilMinute& now, const CivilMinute& not_before) const;

  // The text this schedule was parsed from, as given.
  const std::string& expression() const { return expression_; }

 private:
  CronSchedule() = default;

  bool month_matches(int month) const;
  bool day_matches(int year, int month, int day) const;
  std::optional<CivilMinute> first_time_in_day(int year, int month, int day, int hour_from, int minute_from) const;
  std::optional<CivilMinute> last_time_in_day(int year, int month, int day, int hour_to, int minute_to) const;

  std::string expression_;
  // Bit v set means value v matches. Day-of-week folds 7 into 0.
  std::uint64_t minutes_ = 0;
  std::uint64_t hours_ = 0;
  std::uint64_t days_of_month_ = 0;
  std::uint64_t months_ = 0;
  std::uint64_t days_of_week_ = 0;
  bool day_of_month_star_ = false;
  bool day_of_week_star_ = false;
  // False when no day of any year can match, decided once when parsed.
  bool fires_ = false;
};

}  // namespace payq

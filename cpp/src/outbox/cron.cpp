#include "payq/cron.hpp"

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <iterator>
#include <string>
#include <tuple>
#include <vector>

#include "payq/error.hpp"

namespace payq {
namespace {

// ---- calendar arithmetic

constexpr int minutes_per_hour = 60;
constexpr int hours_per_day = 24;
constexpr int months_per_year = 12;
constexpr int days_per_week = 7;

// The last minute a search may return; civil_minute_next refuses to pass it.
constexpr CivilMinute civil_minute_last{civil_year_max, 12, 31, 23, 59};

bool leap_year(int year) { return year % 4 == 0 && (year % 100 != 0 || year % 400 == 0); }

// No range checks: the searches step one day outside the valid years (to
// year 0 or civil_year_max + 1) only to notice that they have left them.
int month_days(int year, int month) {
  static constexpr int days_by_month[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return month == 2 && leap_year(year) ? 29 : days_by_month[month - 1];
}

// Days since 1970-01-01 in the proleptic Gregorian calendar: Howard
// Hinnant's days_from_civil. Shifting the year to start in March puts the
// leap day last, so a day's offset within its 400-year era is closed form.
std::int64_t days_from_civil(int year, int month, int day) {
  const std::int64_t shifted_year = month <= 2 ? year - 1 : year;
  const std::int64_t era = (shifted_year >= 0 ? shifted_year : shifted_year - 399) / 400;
  const std::int64_t year_of_era = shifted_year - era * 400;
  const std::int64_t day_of_year = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1;
  const std::int64_t day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
  return era * 146097 + day_of_era - 719468;
}

int weekday_of(int year, int month, int day) {
  // 1970-01-01 was a Thursday (4); the modulo is made non-negative because
  // days before 1970 are negative.
  const std::int64_t days = days_from_civil(year, month, day);
  return static_cast<int>(((days + 4) % days_per_week + days_per_week) % days_per_week);
}

// Midnight of the next day, the first day of the next month, and the mirror
// images: the steps of the searches, which skip whatever cannot match.
CivilMinute day_next(const CivilMinute& at) {
  if (at.day < month_days(at.year, at.month)) return {at.year, at.month, at.day + 1, 0, 0};
  if (at.month < months_per_year) return {at.year, at.month + 1, 1, 0, 0};
  return {at.year + 1, 1, 1, 0, 0};
}

CivilMinute month_next_first_day(const CivilMinute& at) {
  if (at.month < months_per_year) return {at.year, at.month + 1, 1, 0, 0};
  return {at.year + 1, 1, 1, 0, 0};
}

CivilMinute day_prev(const CivilMinute& at) {
  if (at.day > 1) return {at.year, at.month, at.day - 1, 0, 0};
  if (at.month > 1) return {at.year, at.month - 1, month_days(at.year, at.month - 1), 0, 0};
  return {at.year - 1, months_per_year, 31, 0, 0};
}

CivilMinute month_prev_last_day(const CivilMinute& at) {
  if (at.month > 1) return {at.year, at.month - 1, month_days(at.year, at.month - 1), 0, 0};
  return {at.year - 1, months_per_year, 31, 0, 0};
}

CivilMinute day_start(const CivilMinute& at) { return {at.year, at.month, at.day, 0, 0}; }

void civil_minute_require_valid(const CivilMinute& minute, const char* what) {
  if (!civil_minute_valid(minute)) {
    throw InvalidArgument(std::string(what) + ": not a valid wall-clock minute: " + civil_minute_format(minute));
  }
}

// ---- bit sets of field values

bool bit_test(std::uint64_t mask, int value) { return ((mask >> value) & 1u) != 0; }

// The smallest value in `mask` that is >= from.
std::optional<int> bit_first_at_or_after(std::uint64_t mask, int from) {
  const std::uint64_t above = from >= 64 ? 0 : mask >> from;
  if (above == 0) return std::nullopt;
  return from + __builtin_ctzll(above);
}

// The largest value in `mask` that is <= to.
std::optional<int> bit_last_at_or_before(std::uint64_t mask, int to) {
  if (to < 0) return std::nullopt;
  const std::uint64_t below = to >= 63 ? mask : mask & ((std::uint64_t{1} << (to + 1)) - 1);
  if (below == 0) return std::nullopt;
  return 63 - __builtin_clzll(below);
}

// ---- parsing

// Echoed input is cut short so a hostile string does not become a huge
// error message.
constexpr std::size_t quoted_bytes_max = 48;

std::string quoted(std::string_view text) {
  if (text.size() <= quoted_bytes_max) return "'" + std::string(text) + "'";
  return "'" + std::string(text.substr(0, quoted_bytes_max)) + "...'";
}

constexpr std::string_view month_names[] = {"JAN", "FEB", "MAR", "APR", "MAY", "JUN",
                                            "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"};
constexpr std::string_view weekday_names[] = {"SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"};

struct FieldSpec {
  const char* name;
  int value_min;
  int value_max;
  // Names stand for value_min, value_min + 1, ... in order; empty if none.
  const std::string_view* names;
  std::size_t name_count;
};

constexpr FieldSpec field_minute{"minute", 0, 59, nullptr, 0};
constexpr FieldSpec field_hour{"hour", 0, 23, nullptr, 0};
constexpr FieldSpec field_day_of_month{"day-of-month", 1, 31, nullptr, 0};
constexpr FieldSpec field_month{"month", 1, 12, month_names, std::size(month_names)};
constexpr FieldSpec field_day_of_week{"day-of-week", 0, 7, weekday_names, std::size(weekday_names)};
constexpr std::size_t field_count = 5;

// Values are at most two digits; a few more are read so "0099" still
// works, and longer digit strings are out of range without being converted.
constexpr std::size_t value_digits_max = 4;

struct Macro {
  std::string_view name;
  std::string_view expansion;
};

constexpr Macro macros[] = {
    {"@yearly", "0 0 1 1 *"}, {"@annually", "0 0 1 1 *"}, {"@monthly", "0 0 1 * *"}, {"@weekly", "0 0 * * 0"},
    {"@daily", "0 0 * * *"},  {"@midnight", "0 0 * * *"}, {"@hourly", "0 * * * *"},
};

[[noreturn]] void field_error(const FieldSpec& field, std::string_view field_text, const std::string& problem) {
  throw InvalidArgument("cron " + std::string(field.name) + " field " + quoted(field_text) + ": " + problem);
}

bool equal_ignoring_case(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::toupper(static_cast<unsigned char>(x)) == std::toupper(static_cast<unsigned char>(y));
         });
}

bool digits_only(std::string_view text) {
  return !text.empty() && std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
}

int digits_value(std::string_view digits) {
  int value = 0;
  for (char c : digits) value = value * 10 + (c - '0');
  return value;
}

// One value: a number within the field's range or one of its names.
int value_parse(const FieldSpec& field, std::string_view text, std::string_view field_text) {
  if (text.empty()) field_error(field, field_text, "a value is missing");
  const std::string range = std::to_string(field.value_min) + "-" + std::to_string(field.value_max);
  if (digits_only(text)) {
    const int value = text.size() > value_digits_max ? field.value_max + 1 : digits_value(text);
    if (value < field.value_min || value > field.value_max) {
      field_error(field, field_text, "value " + quoted(text) + " is out of range " + range);
    }
    return value;
  }
  for (std::size_t i = 0; i < field.name_count; ++i) {
    if (equal_ignoring_case(text, field.names[i])) return field.value_min + static_cast<int>(i);
  }
  if (field.name_count == 0) field_error(field, field_text, quoted(text) + " is not a number");
  field_error(field, field_text, "unknown name " + quoted(text));
}

// The step after '/': at least 1 and at most the width of the field, since a
// wider step could only ever select the first value.
int step_parse(const FieldSpec& field, std::string_view text, std::string_view field_text) {
  const int width = field.value_max - field.value_min + 1;
  const int step = digits_only(text) && text.size() <= value_digits_max ? digits_value(text) : 0;
  if (step < 1 || step > width) {
    field_error(field, field_text, "bad step " + quoted(text) + ": must be a number 1-" + std::to_string(width));
  }
  return step;
}

// One list item: `*`, `a`, `a-b`, `*/n` or `a-b/n`.
std::uint64_t item_parse(const FieldSpec& field, std::string_view item, std::string_view field_text) {
  if (item.empty()) field_error(field, field_text, "empty list item");
  const std::size_t slash = item.find('/');
  const std::string_view base = item.substr(0, slash);
  const bool stepped = slash != std::string_view::npos;
  const int step = stepped ? step_parse(field, item.substr(slash + 1), field_text) : 1;
  int low = field.value_min;
  int high = field.value_max;
  if (base != "*") {
    const std::size_t dash = base.find('-');
    low = value_parse(field, base.substr(0, dash), field_text);
    if (dash != std::string_view::npos) {
      high = value_parse(field, base.substr(dash + 1), field_text);
    } else if (stepped) {
      // "5/15" means "5-59/15" to some crons and is an error to others;
      // refusing it keeps a schedule from meaning what its author did not.
      field_error(field, field_text, "a step needs '*' or a range before it, as in '*/n' or 'a-b/n'");
    } else {
      high = low;
    }
    if (low > high) field_error(field, field_text, "reversed range " + quoted(base));
  }
  std::uint64_t mask = 0;
  for (int value = low; value <= high; value += step) mask |= std::uint64_t{1} << value;
  return mask;
}

std::uint64_t field_parse(const FieldSpec& field, std::string_view field_text) {
  std::uint64_t mask = 0;
  std::size_t item_start = 0;
  // Each pass consumes one item and its comma, so the walk ends with the text.
  while (true) {
    const std::size_t comma = field_text.find(',', item_start);
    mask |= item_parse(field, field_text.substr(item_start, comma - item_start), field_text);
    if (comma == std::string_view::npos) return mask;
    item_start = comma + 1;
  }
}

bool blank(char c) { return c == ' ' || c == '\t'; }

std::vector<std::string_view> fields_split(std::string_view text) {
  std::vector<std::string_view> fields;
  std::size_t i = 0;
  while (i < text.size()) {
    if (blank(text[i])) {
      ++i;
      continue;
    }
    const std::size_t start = i;
    while (i < text.size() && !blank(text[i])) ++i;
    fields.push_back(text.substr(start, i - start));
  }
  return fields;
}

std::string_view macro_expand(std::string_view name) {
  for (const auto& macro : macros) {
    if (equal_ignoring_case(name, macro.name)) return macro.expansion;
  }
  std::string known;
  for (const auto& macro : macros) known += std::string(known.empty() ? "" : " ") + std::string(macro.name);
  throw InvalidArgument("unknown cron macro " + quoted(name) + "; known: " + known);
}

// Whether some day of some year can match. Every month holds every weekday,
// and over the 400-year cycle every date (Feb 29 included) falls on every
// weekday, so weekdays never make a schedule impossible. When both day
// fields are restricted a day matches if either does, and every month has
// matching weekdays. Otherwise a day-of-month must exist in an allowed month.
bool schedule_fires(std::uint64_t months, std::uint64_t days_of_month, bool day_of_month_star,
                    bool day_of_week_star) {
  if (!day_of_month_star && !day_of_week_star) return true;
  constexpr int leap_year_example = 2000;
  for (int month = 1; month <= months_per_year; ++month) {
    const int days = month_days(leap_year_example, month);
    if (bit_test(months, month) && bit_first_at_or_after(days_of_month, 1).value_or(days + 1) <= days) return true;
  }
  return false;
}

}  // namespace

// ---- wall-clock minutes

bool operator==(const CivilMinute& a, const CivilMinute& b) {
  return std::tie(a.year, a.month, a.day, a.hour, a.minute) == std::tie(b.year, b.month, b.day, b.hour, b.minute);
}
bool operator!=(const CivilMinute& a, const CivilMinute& b) { return !(a == b); }
bool operator<(const CivilMinute& a, const CivilMinute& b) {
  return std::tie(a.year, a.month, a.day, a.hour, a.minute) < std::tie(b.year, b.month, b.day, b.hour, b.minute);
}
bool operator<=(const CivilMinute& a, const CivilMinute& b) { return !(b < a); }
bool operator>(const CivilMinute& a, const CivilMinute& b) { return b < a; }
bool operator>=(const CivilMinute& a, const CivilMinute& b) { return !(a < b); }

std::string civil_minute_format(const CivilMinute& minute) {
  char text[64];
  std::snprintf(text, sizeof text, "%04d-%02d-%02d %02d:%02d", minute.year, minute.month, minute.day, minute.hour,
                minute.minute);
  return text;
}

int civil_days_in_month(int year, int month) {
  if (month < 1 || month > months_per_year) throw InvalidArgument("month must be 1-12, got " + std::to_string(month));
  return month_days(year, month);
}

bool civil_minute_valid(const CivilMinute& minute) {
  return minute.year >= civil_year_min && minute.year <= civil_year_max && minute.month >= 1 &&
         minute.month <= months_per_year && minute.day >= 1 && minute.day <= month_days(minute.year, minute.month) &&
         minute.hour >= 0 && minute.hour < hours_per_day && minute.minute >= 0 && minute.minute < minutes_per_hour;
}

CivilMinute civil_minute_next(const CivilMinute& minute) {
  civil_minute_require_valid(minute, "civil_minute_next");
  if (minute == civil_minute_last) {
    throw InvalidArgument("civil_minute_next: " + civil_minute_format(minute) + " is the last minute of year " +
                          std::to_string(civil_year_max));
  }
  if (minute.minute + 1 < minutes_per_hour) return {minute.year, minute.month, minute.day, minute.hour, minute.minute + 1};
  if (minute.hour + 1 < hours_per_day) return {minute.year, minute.month, minute.day, minute.hour + 1, 0};
  return day_next(minute);
}

int civil_weekday(const CivilMinute& minute) {
  civil_minute_require_valid(minute, "civil_weekday");
  return weekday_of(minute.year, minute.month, minute.day);
}

// ---- schedules

CronSchedule CronSchedule::parse(std::string_view expression) {
  if (expression.size() > cron_expression_bytes_max) {
    throw InvalidArgument("cron expression is " + std::to_string(expression.size()) + " bytes; at most " +
                          std::to_string(cron_expression_bytes_max) + " are allowed");
  }
  std::vector<std::string_view> fields = fields_split(expression);
  if (fields.size() == 1 && fields[0].front() == '@') fields = fields_split(macro_expand(fields[0]));
  if (fields.size() != field_count) {
    throw InvalidArgument("cron expression " + quoted(expression) + " has " + std::to_string(fields.size()) +
                          " fields; expected 5 (minute hour day-of-month month day-of-week) or a macro such as "
                          "@daily");
  }
  CronSchedule schedule;
  schedule.expression_ = std::string(expression);
  schedule.minutes_ = field_parse(field_minute, fields[0]);
  schedule.hours_ = field_parse(field_hour, fields[1]);
  schedule.days_of_month_ = field_parse(field_day_of_month, fields[2]);
  schedule.months_ = field_parse(field_month, fields[3]);
  const std::uint64_t days_of_week = field_parse(field_day_of_week, fields[4]);
  // 7 is a second name for Sunday.
  schedule.days_of_week_ = (days_of_week | (days_of_week >> days_per_week)) & ((std::uint64_t{1} << days_per_week) - 1);
  schedule.day_of_month_star_ = fields[2].front() == '*';
  schedule.day_of_week_star_ = fields[4].front() == '*';
  schedule.fires_ = schedule_fires(schedule.months_, schedule.days_of_month_, schedule.day_of_month_star_,
                                   schedule.day_of_week_star_);
  return schedule;
}

bool CronSchedule::month_matches(int month) const { return bit_test(months_, month); }

bool CronSchedule::day_matches(int year, int month, int day) const {
  const bool day_of_month_matches = bit_test(days_of_month_, day);
  const bool day_of_week_matches = bit_test(days_of_week_, weekday_of(year, month, day));
  if (day_of_month_star_ || day_of_week_star_) return day_of_month_matches && day_of_week_matches;
  return day_of_month_matches || day_of_week_matches;
}

bool CronSchedule::matches(const CivilMinute& minute) const {
  civil_minute_require_valid(minute, "CronSchedule::matches");
  return bit_test(minutes_, minute.minute) && bit_test(hours_, minute.hour) && month_matches(minute.month) &&
         day_matches(minute.year, minute.month, minute.day);
}

// The earliest matching time of a matching day at or after hour_from:minute_from.
std::optional<CivilMinute> CronSchedule::first_time_in_day(int year, int month, int day, int hour_from,
                                                           int minute_from) const {
  std::optional<int> hour = bit_first_at_or_after(hours_, hour_from);
  if (!hour) return std::nullopt;
  std::optional<int> minute = bit_first_at_or_after(minutes_, *hour == hour_from ? minute_from : 0);
  if (!minute) {
    // No minute is left in hour_from itself; any later hour has them all.
    hour = bit_first_at_or_after(hours_, hour_from + 1);
    if (!hour) return std::nullopt;
    minute = bit_first_at_or_after(minutes_, 0);
  }
  return CivilMinute{year, month, day, *hour, *minute};
}

// The latest matching time of a matching day at or before hour_to:minute_to.
std::optional<CivilMinute> CronSchedule::last_time_in_day(int year, int month, int day, int hour_to,
                                                          int minute_to) const {
  std::optional<int> hour = bit_last_at_or_before(hours_, hour_to);
  if (!hour) return std::nullopt;
  std::optional<int> minute = bit_last_at_or_before(minutes_, *hour == hour_to ? minute_to : minutes_per_hour - 1);
  if (!minute) {
    hour = bit_last_at_or_before(hours_, hour_to - 1);
    if (!hour) return std::nullopt;
    minute = bit_last_at_or_before(minutes_, minutes_per_hour - 1);
  }
  return CivilMinute{year, month, day, *hour, *minute};
}

std::optional<CivilMinute> CronSchedule::next_after(const CivilMinute& after) const {
  civil_minute_require_valid(after, "CronSchedule::next_after");
  if (!fires_ || after == civil_minute_last) return std::nullopt;
  const CivilMinute start = civil_minute_next(after);
  const int year_last = std::min(after.year + cron_search_years_max, civil_year_max);
  CivilMinute day = day_start(start);
  int hour_from = start.hour;
  int minute_from = start.minute;
  // Every pass moves `day` forward by a day or a month, so the year bound
  // ends the walk after at most cron_search_years_max * 366 passes.
  while (day.year <= year_last) {
    if (!month_matches(day.month)) {
      day = month_next_first_day(day);
    } else {
      if (day_matches(day.year, day.month, day.day)) {
        if (auto found = first_time_in_day(day.year, day.month, day.day, hour_from, minute_from)) return found;
      }
      day = day_next(day);
    }
    hour_from = 0;
    minute_from = 0;
  }
  return std::nullopt;
}

std::optional<CivilMinute> CronSchedule::latest_at_or_before(const CivilMinute& now,
                                                             const CivilMinute& not_before) const {
  civil_minute_require_valid(now, "CronSchedule::latest_at_or_before (now)");
  civil_minute_require_valid(not_before, "CronSchedule::latest_at_or_before (not_before)");
  if (!fires_ || not_before > now) return std::nullopt;
  // A schedule that fires at all fires within any cron_search_years_max
  // years, so looking further back than that cannot find a later slot.
  const CivilMinute window_start{std::max(now.year - cron_search_years_max, civil_year_min), 1, 1, 0, 0};
  const CivilMinute floor = std::max(not_before, window_start);
  const CivilMinute floor_day = day_start(floor);
  CivilMinute day = day_start(now);
  int hour_to = now.hour;
  int minute_to = now.minute;
  // Every pass moves `day` back by a day or a month, and floor_day is at
  // most cron_search_years_max years back.
  while (day >= floor_day) {
    if (!month_matches(day.month)) {
      day = month_prev_last_day(day);
    } else {
      if (day_matches(day.year, day.month, day.day)) {
        // The latest slot of the latest matching day: if it is before the
        // floor, every earlier slot is too.
        if (auto found = last_time_in_day(day.year, day.month, day.day, hour_to, minute_to)) {
          return *found >= floor ? found : std::nullopt;
        }
      }
      day = day_prev(day);
    }
    hour_to = hours_per_day - 1;
    minute_to = minutes_per_hour - 1;
  }
  return std::nullopt;
}

}  // namespace payq

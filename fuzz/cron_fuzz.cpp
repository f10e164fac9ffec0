// Cron expressions (cron.hpp): parse, then the next slot after a minute and
// the latest slot in a window.
//
// Input: 7 bytes give a wall-clock minute `at` and how far back
// `not_before` lies (0..44 years); the rest is the expression.
//
// Properties:
//   - parse refuses only with InvalidArgument, and keeps the text as given;
//   - next_after(at) = n is valid, matches, lies after `at`, and nothing
//     matches in between: a minute-by-minute walk agrees for the first two
//     hours, and latest_at_or_before, a separate search running backwards,
//     finds nothing in (at, n);
//   - when next_after finds nothing, latest_at_or_before finds nothing in
//     the same 40-year window either;
//   - latest_at_or_before(at, not_before) = l is valid, matches, lies in
//     [not_before, at], and next_after(l) is past `at`; when it finds
//     nothing, next_after from not_before finds nothing up to `at`.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "fuzz_check.hpp"
#include "payq/cron.hpp"
#include "payq/error.hpp"

namespace {

using payq::CivilMinute;
using payq::CronSchedule;
using payq::fuzz::printable;

constexpr std::size_t control_bytes = 7;
// Minutes walked one by one after `at`, as an oracle for next_after.
constexpr int walk_minutes_max = 120;
constexpr CivilMinute civil_minute_first{payq::civil_year_min, 1, 1, 0, 0};
constexpr CivilMinute civil_minute_last{payq::civil_year_max, 12, 31, 23, 59};

std::string shown(const std::optional<CivilMinute>& minute) {
  return minute ? payq::civil_minute_format(*minute) : std::string("none");
}

// The minute before; `minute` is valid and not the first.
CivilMinute minute_prev(CivilMinute m) {
  if (m.minute > 0) return {m.year, m.month, m.day, m.hour, m.minute - 1};
  if (m.hour > 0) return {m.year, m.month, m.day, m.hour - 1, 59};
  if (m.day > 1) return {m.year, m.month, m.day - 1, 23, 59};
  if (m.month > 1) return {m.year, m.month - 1, payq::civil_days_in_month(m.year, m.month - 1), 23, 59};
  return {m.year - 1, 12, 31, 23, 59};
}

CivilMinute minute_from(const std::uint8_t* control) {
  CivilMinute m;
  m.year = payq::civil_year_min + (control[0] << 8 | control[1]) % payq::civil_year_max;
  m.month = 1 + control[2] % 12;
  m.day = 1 + control[3] % payq::civil_days_in_month(m.year, m.month);
  m.hour = control[4] % 24;
  m.minute = control[5] % 60;
  return m;
}

void check_next(const CronSchedule& schedule, const CivilMinute& at) {
  const std::optional<CivilMinute> next = schedule.next_after(at);
  const std::string where = "'" + printable(schedule.expression()) + "' after " + payq::civil_minute_format(at);
  if (next) {
    PAYQ_FUZZ_CHECK(payq::civil_minute_valid(*next), where + ": invalid " + shown(next));
    PAYQ_FUZZ_CHECK(*next > at, where + ": " + shown(next) + " is not later");
    PAYQ_FUZZ_CHECK(schedule.matches(*next), where + ": " + shown(next) + " does not match");
  }
  // The walk: the first matching minute within two hours must be `next`.
  CivilMinute walk = at;
  for (int i = 0; i < walk_minutes_max && walk != civil_minute_last; ++i) {
    walk = payq::civil_minute_next(walk);
    if (schedule.matches(walk)) {
      PAYQ_FUZZ_CHECK(next == walk, where + ": next is " + shown(next) + " but " + shown(walk) + " matches");
      break;
    }
  }
  if (at == civil_minute_last) {
    PAYQ_FUZZ_CHECK(!next, where + ": a minute after the last one");
    return;
  }
  const CivilMinute after = payq::civil_minute_next(at);
  if (next) {
    // Nothing matches in (at, next), by the backward search.
    if (after < *next) {
      const std::optional<CivilMinute> between = schedule.latest_at_or_before(minute_prev(*next), after);
      PAYQ_FUZZ_CHECK(!between, where + ": next is " + shown(next) + " but " + shown(between) + " matches");
    }
  } else if (at.year + payq::cron_search_years_max <= payq::civil_year_max) {
    // The same window, searched backwards from its end.
    const CivilMinute window_end{at.year + payq::cron_search_years_max, 12, 31, 23, 59};
    const std::optional<CivilMinute> found = schedule.latest_at_or_before(window_end, after);
    PAYQ_FUZZ_CHECK(!found, where + ": next_after found nothing, latest_at_or_before found " + shown(found));
  }
}

void check_latest(const CronSchedule& schedule, const CivilMinute& now, const CivilMinute& not_before) {
  const std::optional<CivilMinute> latest = schedule.latest_at_or_before(now, not_before);
  const std::string where = "'" + printable(schedule.expression()) + "' in [" +
                            payq::civil_minute_format(not_before) + ", " + payq::civil_minute_format(now) + "]";
  if (latest) {
    PAYQ_FUZZ_CHECK(payq::civil_minute_valid(*latest), where + ": invalid " + shown(latest));
    PAYQ_FUZZ_CHECK(not_before <= *latest && *latest <= now, where + ": " + shown(latest) + " is outside");
    PAYQ_FUZZ_CHECK(schedule.matches(*latest), where + ": " + shown(latest) + " does not match");
    const std::optional<CivilMinute> later = schedule.next_after(*latest);
    PAYQ_FUZZ_CHECK(!later || *later > now, where + ": latest is " + shown(latest) + " but " + shown(later) +
                                                " matches too");
    return;
  }
  if (not_before > now) return;
  if (schedule.matches(not_before)) PAYQ_FUZZ_CHECK(false, where + ": found nothing, but not_before matches");
  const std::optional<CivilMinute> first = schedule.next_after(not_before);
  PAYQ_FUZZ_CHECK(!first || *first > now, where + ": found nothing, but " + shown(first) + " matches");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < control_bytes) return 0;
  const CivilMinute at = minute_from(data);
  const int years_back = data[6] % (payq::cron_search_years_max + 5);
  CivilMinute not_before = at;
  not_before.year = std::max(payq::civil_year_min, at.year - years_back);
  not_before.day = std::min(not_before.day, payq::civil_days_in_month(not_before.year, not_before.month));
  const std::string expression(reinterpret_cast<const char*>(data + control_bytes), size - control_bytes);

  std::optional<CronSchedule> schedule;
  try {
    schedule = CronSchedule::parse(expression);
  } catch (const payq::InvalidArgument&) {
    return 0;
  } catch (...) {
    payq::fuzz::unexpected_exception("CronSchedule::parse");
  }
  PAYQ_FUZZ_CHECK(expression.size() <= payq::cron_expression_bytes_max, "accepted an over-long expression");
  PAYQ_FUZZ_CHECK(schedule->expression() == expression, "expression() differs from the text");
  try {
    check_next(*schedule, at);
    check_latest(*schedule, at, not_before);
    check_next(*schedule, civil_minute_last);
    check_latest(*schedule, at, civil_minute_first);
  } catch (...) {
    payq::fuzz::unexpected_exception("cron search");
  }
  return 0;
}

#include "payq/cron.hpp"

#include <gtest/gtest.h>

#include <initializer_list>
#include <optional>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "payq/error.hpp"

namespace payq {

// Lets gtest print a CivilMinute in failure messages.
void PrintTo(const CivilMinute& minute, std::ostream* out) { *out << civil_minute_format(minute); }

namespace {

CivilMinute at(int year, int month, int day, int hour = 0, int minute = 0) {
  return CivilMinute{year, month, day, hour, minute};
}

std::optional<CivilMinute> next_of(std::string_view expression, const CivilMinute& after) {
  return CronSchedule::parse(expression).next_after(after);
}

// The minutes a schedule fires on from `after` (exclusive), `count` of them.
std::vector<CivilMinute> firings(std::string_view expression, CivilMinute after, int count) {
  const CronSchedule schedule = CronSchedule::parse(expression);
  std::vector<CivilMinute> out;
  for (int i = 0; i < count; ++i) {
    const std::optional<CivilMinute> next = schedule.next_after(after);
    if (!next) break;
    out.push_back(*next);
    after = *next;
  }
  return out;
}

// Parsing must fail with InvalidArgument whose message holds every fragment.
void expect_invalid(std::string_view expression, std::initializer_list<std::string_view> fragments) {
  try {
    CronSchedule::parse(expression);
    ADD_FAILURE() << "parsed without error: '" << expression << "'";
  } catch (const InvalidArgument& error) {
    const std::string message = error.what();
    for (std::string_view fragment : fragments) {
      EXPECT_NE(message.find(fragment), std::string::npos)
          << "'" << expression << "': message \"" << message << "\" lacks \"" << fragment << "\"";
    }
  }
}

// ---- wall-clock minutes

TEST(CronCivil, ComparisonIsChronological) {
  EXPECT_LT(at(2024, 1, 1, 0, 0), at(2024, 1, 1, 0, 1));
  EXPECT_LT(at(2023, 12, 31, 23, 59), at(2024, 1, 1));
  EXPECT_LT(at(2024, 2, 1), at(2024, 10, 1));
  EXPECT_GT(at(2024, 1, 2), at(2024, 1, 1, 23, 59));
  EXPECT_LE(at(2024, 1, 1), at(2024, 1, 1));
  EXPECT_GE(at(2024, 1, 1), at(2024, 1, 1));
  EXPECT_EQ(at(2024, 5, 6, 7, 8), at(2024, 5, 6, 7, 8));
  EXPECT_NE(at(2024, 5, 6, 7, 8), at(2024, 5, 6, 7, 9));
}

TEST(CronCivil, DaysInMonthFollowTheGregorianLeapRule) {
  EXPECT_EQ(civil_days_in_month(2024, 2), 29);
  EXPECT_EQ(civil_days_in_month(2023, 2), 28);
  EXPECT_EQ(civil_days_in_month(1900, 2), 28);
  EXPECT_EQ(civil_days_in_month(2000, 2), 29);
  EXPECT_EQ(civil_days_in_month(2100, 2), 28);
  EXPECT_EQ(civil_days_in_month(2023, 4), 30);
  EXPECT_EQ(civil_days_in_month(2023, 12), 31);
  EXPECT_THROW(civil_days_in_month(2023, 0), InvalidArgument);
  EXPECT_THROW(civil_days_in_month(2023, 13), InvalidArgument);
}

TEST(CronCivil, ValidRejectsEveryFieldOutOfRange) {
  EXPECT_TRUE(civil_minute_valid(at(2024, 2, 29, 23, 59)));
  EXPECT_TRUE(civil_minute_valid(at(civil_year_min, 1, 1)));
  EXPECT_TRUE(civil_minute_valid(at(civil_year_max, 12, 31, 23, 59)));
  EXPECT_FALSE(civil_minute_valid(at(2023, 2, 29)));
  EXPECT_FALSE(civil_minute_valid(at(2023, 4, 31)));
  EXPECT_FALSE(civil_minute_valid(at(2023, 1, 0)));
  EXPECT_FALSE(civil_minute_valid(at(2023, 0, 1)));
  EXPECT_FALSE(civil_minute_valid(at(2023, 13, 1)));
  EXPECT_FALSE(civil_minute_valid(at(2023, 1, 1, 24, 0)));
  EXPECT_FALSE(civil_minute_valid(at(2023, 1, 1, -1, 0)));
  EXPECT_FALSE(civil_minute_valid(at(2023, 1, 1, 0, 60)));
  EXPECT_FALSE(civil_minute_valid(at(2023, 1, 1, 0, -1)));
  EXPECT_FALSE(civil_minute_valid(at(civil_year_min - 1, 12, 31)));
  EXPECT_FALSE(civil_minute_valid(at(civil_year_max + 1, 1, 1)));
}

TEST(CronCivil, NextCarriesIntoHoursDaysMonthsAndYears) {
  EXPECT_EQ(civil_minute_next(at(2024, 3, 5, 10, 7)), at(2024, 3, 5, 10, 8));
  EXPECT_EQ(civil_minute_next(at(2024, 3, 5, 10, 59)), at(2024, 3, 5, 11, 0));
  EXPECT_EQ(civil_minute_next(at(2024, 3, 5, 23, 59)), at(2024, 3, 6, 0, 0));
  EXPECT_EQ(civil_minute_next(at(2024, 4, 30, 23, 59)), at(2024, 5, 1, 0, 0));
  EXPECT_EQ(civil_minute_next(at(2024, 12, 31, 23, 59)), at(2025, 1, 1, 0, 0));
}

TEST(CronCivil, NextKnowsLeapYears) {
  EXPECT_EQ(civil_minute_next(at(2024, 2, 28, 23, 59)), at(2024, 2, 29, 0, 0));
  EXPECT_EQ(civil_minute_next(at(2024, 2, 29, 23, 59)), at(2024, 3, 1, 0, 0));
  EXPECT_EQ(civil_minute_next(at(2023, 2, 28, 23, 59)), at(2023, 3, 1, 0, 0));
  EXPECT_EQ(civil_minute_next(at(2100, 2, 28, 23, 59)), at(2100, 3, 1, 0, 0));
  EXPECT_EQ(civil_minute_next(at(2000, 2, 28, 23, 59)), at(2000, 2, 29, 0, 0));
}

TEST(CronCivil, NextRefusesInvalidMinutesAndTheLastOne) {
  EXPECT_THROW(civil_minute_next(at(2023, 2, 29)), InvalidArgument);
  EXPECT_THROW(civil_minute_next(at(civil_year_max, 12, 31, 23, 59)), InvalidArgument);
}

TEST(CronCivil, WeekdayOfKnownDates) {
  EXPECT_EQ(civil_weekday(at(1970, 1, 1)), 4);  // Thursday
  EXPECT_EQ(civil_weekday(at(2000, 1, 1)), 6);  // Saturday
  EXPECT_EQ(civil_weekday(at(2024, 2, 29)), 4);
  EXPECT_EQ(civil_weekday(at(2024, 10, 13)), 0);
  EXPECT_EQ(civil_weekday(at(1969, 12, 31)), 3);
  EXPECT_EQ(civil_weekday(at(1, 1, 1)), 1);  // Monday, in the proleptic Gregorian calendar
  EXPECT_EQ(civil_weekday(at(9999, 12, 31)), 5);
  EXPECT_THROW(civil_weekday(at(2023, 2, 29)), InvalidArgument);
}

TEST(CronCivil, WeekdayAdvancesByOneEachDayAcrossCenturies) {
  CivilMinute day = at(1899, 1, 1, 23, 59);
  int weekday = civil_weekday(day);
  // Last minute of each day, so one step is one day.
  constexpr int days_checked = 366 * 210;
  for (int i = 0; i < days_checked; ++i) {
    day = civil_minute_next(day);
    day.hour = 23;
    day.minute = 59;
    weekday = (weekday + 1) % 7;
    ASSERT_EQ(civil_weekday(day), weekday) << civil_minute_format(day);
  }
}

// ---- parsing: every form

TEST(CronParse, StarMatchesEveryMinute) {
  const CronSchedule schedule = CronSchedule::parse("* * * * *");
  EXPECT_TRUE(schedule.matches(at(2024, 2, 29, 13, 37)));
  EXPECT_EQ(schedule.next_after(at(2024, 12, 31, 23, 59)), at(2025, 1, 1, 0, 0));
}

TEST(CronParse, SingleValues) {
  const CronSchedule schedule = CronSchedule::parse("30 9 15 6 *");
  EXPECT_TRUE(schedule.matches(at(2024, 6, 15, 9, 30)));
  EXPECT_FALSE(schedule.matches(at(2024, 6, 15, 9, 31)));
  EXPECT_FALSE(schedule.matches(at(2024, 6, 15, 10, 30)));
  EXPECT_FALSE(schedule.matches(at(2024, 6, 16, 9, 30)));
  EXPECT_FALSE(schedule.matches(at(2024, 7, 15, 9, 30)));
}

TEST(CronParse, ListsRangesAndSteps) {
  const CronSchedule schedule = CronSchedule::parse("0,30 9-17 * * 1-5");
  EXPECT_TRUE(schedule.matches(at(2024, 10, 14, 9, 0)));    // Monday
  EXPECT_TRUE(schedule.matches(at(2024, 10, 18, 17, 30)));  // Friday
  EXPECT_FALSE(schedule.matches(at(2024, 10, 19, 9, 0)));   // Saturday
  EXPECT_FALSE(schedule.matches(at(2024, 10, 14, 8, 30)));
  EXPECT_FALSE(schedule.matches(at(2024, 10, 14, 18, 0)));
  EXPECT_FALSE(schedule.matches(at(2024, 10, 14, 9, 15)));
}

TEST(CronParse, EveryFifteenMinutes) {
  EXPECT_EQ(firings("*/15 * * * *", at(2024, 3, 5, 23, 7), 4),
            (std::vector<CivilMinute>{at(2024, 3, 5, 23, 15), at(2024, 3, 5, 23, 30), at(2024, 3, 5, 23, 45),
                                      at(2024, 3, 6, 0, 0)}));
}

TEST(CronParse, StepRangesStartAtTheRangeStart) {
  EXPECT_EQ(firings("10-30/10 * * * *", at(2024, 3, 5, 10, 30), 4),
            (std::vector<CivilMinute>{at(2024, 3, 5, 11, 10), at(2024, 3, 5, 11, 20), at(2024, 3, 5, 11, 30),
                                      at(2024, 3, 5, 12, 10)}));
  // The step need not divide the range: 1-10/4 is 1, 5, 9.
  EXPECT_EQ(firings("0 1-10/4 * * *", at(2024, 3, 5), 4),
            (std::vector<CivilMinute>{at(2024, 3, 5, 1, 0), at(2024, 3, 5, 5, 0), at(2024, 3, 5, 9, 0),
                                      at(2024, 3, 6, 1, 0)}));
}

TEST(CronParse, StepsOnDayAndMonthFieldsStartAtOne) {
  // */2 on months is Jan, Mar, May...; on days 1, 3, 5...
  EXPECT_EQ(firings("0 0 1 */2 *", at(2024, 1, 1), 3),
            (std::vector<CivilMinute>{at(2024, 3, 1), at(2024, 5, 1), at(2024, 7, 1)}));
  EXPECT_EQ(firings("0 0 */10 * *", at(2024, 1, 1), 4),
            (std::vector<CivilMinute>{at(2024, 1, 11), at(2024, 1, 21), at(2024, 1, 31), at(2024, 2, 1)}));
}

TEST(CronParse, MonthAndWeekdayNamesInAnyCase) {
  EXPECT_EQ(firings("0 12 1 jan,Jul *", at(2024, 2, 1), 2),
            (std::vector<CivilMinute>{at(2024, 7, 1, 12, 0), at(2025, 1, 1, 12, 0)}));
  const CronSchedule weekdays = CronSchedule::parse("0 8 * * MON-fri");
  EXPECT_TRUE(weekdays.matches(at(2024, 10, 14, 8, 0)));
  EXPECT_TRUE(weekdays.matches(at(2024, 10, 18, 8, 0)));
  EXPECT_FALSE(weekdays.matches(at(2024, 10, 19, 8, 0)));
  EXPECT_FALSE(weekdays.matches(at(2024, 10, 20, 8, 0)));
  EXPECT_EQ(firings("0 0 1 FEB-DEC/3 *", at(2024, 1, 1), 4),
            (std::vector<CivilMinute>{at(2024, 2, 1), at(2024, 5, 1), at(2024, 8, 1), at(2024, 11, 1)}));
}

TEST(CronParse, SevenAndZeroAreBothSunday) {
  const CivilMinute sunday = at(2024, 10, 13, 0, 0);
  const CivilMinute saturday = at(2024, 10, 12, 0, 0);
  for (const char* expression : {"0 0 * * 0", "0 0 * * 7", "0 0 * * SUN", "0 0 * * sun"}) {
    const CronSchedule schedule = CronSchedule::parse(expression);
    EXPECT_TRUE(schedule.matches(sunday)) << expression;
    EXPECT_FALSE(schedule.matches(saturday)) << expression;
  }
  const CronSchedule weekend = CronSchedule::parse("0 0 * * 6-7");
  EXPECT_TRUE(weekend.matches(sunday));
  EXPECT_TRUE(weekend.matches(saturday));
  EXPECT_FALSE(weekend.matches(at(2024, 10, 14)));
  const CronSchedule every_day = CronSchedule::parse("0 0 * * 0-7");
  for (int day = 13; day <= 19; ++day) EXPECT_TRUE(every_day.matches(at(2024, 10, day)));
}

TEST(CronParse, MacrosEqualTheirExpansions) {
  const CivilMinute start = at(2024, 2, 27, 13, 7);
  const std::pair<const char*, const char*> pairs[] = {
      {"@yearly", "0 0 1 1 *"}, {"@annually", "0 0 1 1 *"}, {"@monthly", "0 0 1 * *"}, {"@weekly", "0 0 * * 0"},
      {"@daily", "0 0 * * *"},  {"@midnight", "0 0 * * *"}, {"@hourly", "0 * * * *"},  {"@DAILY", "0 0 * * *"},
  };
  for (const auto& [macro, expansion] : pairs) {
    EXPECT_EQ(firings(macro, start, 3), firings(expansion, start, 3)) << macro;
  }
  EXPECT_EQ(next_of("@weekly", start), at(2024, 3, 3));
  EXPECT_EQ(next_of("@hourly", start), at(2024, 2, 27, 14, 0));
  EXPECT_EQ(next_of("  @daily\t", start), at(2024, 2, 28));
}

TEST(CronParse, FieldsMaySeparateByAnyRunOfBlanks) {
  EXPECT_EQ(next_of("  5\t 4  *   * *  ", at(2024, 1, 1)), at(2024, 1, 1, 4, 5));
}

TEST(CronParse, ExpressionIsKeptAsGiven) {
  EXPECT_EQ(CronSchedule::parse("@daily").expression(), "@daily");
  EXPECT_EQ(CronSchedule::parse(" */5 * * * * ").expression(), " */5 * * * * ");
}

// ---- parsing: every error

TEST(CronParse, RejectsWrongFieldCount) {
  expect_invalid("", {"0 fields", "expected 5"});
  expect_invalid("   ", {"0 fields"});
  expect_invalid("* * * *", {"4 fields", "expected 5"});
  expect_invalid("* * * * * *", {"6 fields"});
  expect_invalid("@daily 5", {"2 fields"});
}

TEST(CronParse, RejectsValuesOutOfRange) {
  expect_invalid("60 * * * *", {"minute", "60", "out of range 0-59"});
  expect_invalid("* 24 * * *", {"hour", "out of range 0-23"});
  expect_invalid("* * 0 * *", {"day-of-month", "out of range 1-31"});
  expect_invalid("* * 32 * *", {"day-of-month", "out of range 1-31"});
  expect_invalid("* * * 0 *", {"month", "out of range 1-12"});
  expect_invalid("* * * 13 *", {"month", "out of range 1-12"});
  expect_invalid("* * * * 8", {"day-of-week", "out of range 0-7"});
  expect_invalid("0-60 * * * *", {"minute", "out of range"});
  expect_invalid("99999999999999999999 * * * *", {"minute", "out of range"});
  expect_invalid("-1 * * * *", {"minute", "missing"});
}

TEST(CronParse, RejectsBadSteps) {
  expect_invalid("*/0 * * * *", {"minute", "bad step '0'"});
  expect_invalid("*/61 * * * *", {"minute", "bad step", "1-60"});
  expect_invalid("*/x * * * *", {"minute", "bad step 'x'"});
  expect_invalid("*/ * * * *", {"minute", "bad step"});
  expect_invalid("* */25 * * *", {"hour", "bad step", "1-24"});
  expect_invalid("5/15 * * * *", {"minute", "a step needs '*' or a range"});
  expect_invalid("1-5/2/3 * * * *", {"minute", "bad step"});
}

TEST(CronParse, RejectsEmptyListItems) {
  expect_invalid("1,,2 * * * *", {"minute", "empty list item"});
  expect_invalid("* 1, * * *", {"hour", "empty list item"});
  expect_invalid("* * ,1 * *", {"day-of-month", "empty list item"});
  expect_invalid("* * * * ,", {"day-of-week", "empty list item"});
}

TEST(CronParse, RejectsReversedRanges) {
  expect_invalid("30-10 * * * *", {"minute", "reversed range '30-10'"});
  expect_invalid("* * * DEC-JAN *", {"month", "reversed range"});
  expect_invalid("* * * * FRI-MON", {"day-of-week", "reversed range"});
  expect_invalid("1- * * * *", {"minute", "missing"});
}

TEST(CronParse, RejectsUnknownNames) {
  expect_invalid("* * * JANUARY *", {"month", "unknown name 'JANUARY'"});
  expect_invalid("* * * MON *", {"month", "unknown name 'MON'"});
  expect_invalid("* * * * JAN", {"day-of-week", "unknown name 'JAN'"});
  expect_invalid("MON * * * *", {"minute", "'MON' is not a number"});
  expect_invalid("* * L * *", {"day-of-month", "not a number"});
  expect_invalid("? * * * *", {"minute", "not a number"});
  expect_invalid("@reboot", {"unknown cron macro '@reboot'", "@daily"});
}

TEST(CronParse, RejectsOverlongExpressions) {
  expect_invalid(std::string(cron_expression_bytes_max + 1, '*'), {"bytes"});
}

// ---- day-of-month and day-of-week

TEST(CronDays, BothRestrictedMatchEitherDay) {
  // October 2024: the 13th is a Sunday; the Fridays are 4, 11, 18, 25.
  EXPECT_EQ(firings("0 0 13 * FRI", at(2024, 10, 1), 5),
            (std::vector<CivilMinute>{at(2024, 10, 4), at(2024, 10, 11), at(2024, 10, 13), at(2024, 10, 18),
                                      at(2024, 10, 25)}));
}

TEST(CronDays, StarDayOfWeekLeavesOnlyDayOfMonth) {
  EXPECT_EQ(firings("0 0 13 * *", at(2024, 10, 1), 2),
            (std::vector<CivilMinute>{at(2024, 10, 13), at(2024, 11, 13)}));
}

TEST(CronDays, StarDayOfMonthLeavesOnlyDayOfWeek) {
  EXPECT_EQ(firings("0 0 * * FRI", at(2024, 10, 1), 2),
            (std::vector<CivilMinute>{at(2024, 10, 4), at(2024, 10, 11)}));
}

TEST(CronDays, AFieldStartingWithStarCountsAsUnrestricted) {
  // As in Vixie cron, "*/2" keeps AND: odd days that are also Mondays.
  // October 2024 Mondays: 7, 14, 21, 28; odd days are 1, 3, 5, ...
  EXPECT_EQ(firings("0 0 */2 * MON", at(2024, 10, 1), 3),
            (std::vector<CivilMinute>{at(2024, 10, 7), at(2024, 10, 21), at(2024, 11, 11)}));
  const CronSchedule schedule = CronSchedule::parse("0 0 */2 * MON");
  EXPECT_FALSE(schedule.matches(at(2024, 10, 14)));  // an even Monday
  EXPECT_FALSE(schedule.matches(at(2024, 10, 9)));   // an odd Wednesday
}

TEST(CronDays, RangeOverTheWholeMonthStillCountsAsRestricted) {
  // "1-31" is not "*": with a weekday it means every day.
  EXPECT_EQ(firings("0 0 1-31 * MON", at(2024, 10, 1), 2),
            (std::vector<CivilMinute>{at(2024, 10, 2), at(2024, 10, 3)}));
}

// ---- calendar edges

TEST(CronCalendar, LeapDayFiresOnlyInLeapYears) {
  EXPECT_EQ(firings("0 0 29 2 *", at(2024, 3, 1), 3),
            (std::vector<CivilMinute>{at(2028, 2, 29), at(2032, 2, 29), at(2036, 2, 29)}));
  // 2100 is not a leap year: an eight-year gap.
  EXPECT_EQ(next_of("0 0 29 2 *", at(2096, 2, 29)), at(2104, 2, 29));
}

TEST(CronCalendar, RareLeapDayWeekdaysAreFoundAcrossFortyYears) {
  // Feb 29 that is a Sunday ("*/7" keeps AND): 2088, then 2128.
  EXPECT_EQ(next_of("0 0 29 2 */7", at(2088, 2, 29)), at(2128, 2, 29));
  EXPECT_EQ(CronSchedule::parse("0 0 29 2 */7").latest_at_or_before(at(2128, 2, 28), at(2000, 1, 1)),
            at(2088, 2, 29));
}

TEST(CronCalendar, ThirtyFirstSkipsShortMonths) {
  EXPECT_EQ(firings("0 0 31 * *", at(2024, 1, 31), 4),
            (std::vector<CivilMinute>{at(2024, 3, 31), at(2024, 5, 31), at(2024, 7, 31), at(2024, 8, 31)}));
}

TEST(CronCalendar, YearRollsOver) {
  EXPECT_EQ(next_of("0 0 1 1 *", at(2024, 12, 31, 23, 59)), at(2025, 1, 1));
  EXPECT_EQ(next_of("0 0 1 1 *", at(2024, 1, 1, 0, 0)), at(2025, 1, 1));
  EXPECT_EQ(next_of("59 23 31 12 *", at(2024, 12, 31, 23, 59)), at(2025, 12, 31, 23, 59));
}

TEST(CronCalendar, NextIsStrictlyAfter) {
  EXPECT_EQ(next_of("30 10 * * *", at(2024, 3, 5, 10, 30)), at(2024, 3, 6, 10, 30));
  EXPECT_EQ(next_of("30 10 * * *", at(2024, 3, 5, 10, 29)), at(2024, 3, 5, 10, 30));
}

TEST(CronCalendar, LaterHoursStartFromTheirFirstMinute) {
  // Past 10:50 in hour 10, the next slot is the first minute of hour 14.
  EXPECT_EQ(next_of("15,45 10,14 * * *", at(2024, 3, 5, 10, 50)), at(2024, 3, 5, 14, 15));
  EXPECT_EQ(next_of("15,45 10,14 * * *", at(2024, 3, 5, 14, 45)), at(2024, 3, 6, 10, 15));
}

TEST(CronCalendar, ImpossibleSchedulesNeverFire) {
  for (const char* expression : {"0 0 30 2 *", "0 0 31 2 *", "0 0 31 4,6,9,11 *", "* * 30-31 FEB *",
                                 "0 0 30 2 */7"}) {
    SCOPED_TRACE(expression);
    const CronSchedule schedule = CronSchedule::parse(expression);
    EXPECT_EQ(schedule.next_after(at(2024, 1, 1)), std::nullopt);
    EXPECT_EQ(schedule.latest_at_or_before(at(2024, 1, 1), at(1, 1, 1)), std::nullopt);
    EXPECT_EQ(schedule.latest_at_or_before(at(civil_year_max, 12, 31, 23, 59), at(1, 1, 1)), std::nullopt);
  }
}

TEST(CronCalendar, ImpossibleDayOfMonthStillFiresOnItsWeekday) {
  // Both days restricted: Feb 30 never comes, but Mondays in February do.
  EXPECT_EQ(next_of("0 0 30 2 MON", at(2024, 1, 1)), at(2024, 2, 5));
}

TEST(CronCalendar, NothingAfterTheLastRepresentableYear) {
  EXPECT_EQ(next_of("* * * * *", at(civil_year_max, 12, 31, 23, 59)), std::nullopt);
  EXPECT_EQ(next_of("0 0 1 1 *", at(civil_year_max, 1, 1, 0, 0)), std::nullopt);
  EXPECT_EQ(next_of("59 23 31 12 *", at(civil_year_max, 1, 1)), at(civil_year_max, 12, 31, 23, 59));
}

TEST(CronCalendar, SearchesRefuseInvalidMinutes) {
  const CronSchedule schedule = CronSchedule::parse("* * * * *");
  EXPECT_THROW(schedule.matches(at(2023, 2, 29)), InvalidArgument);
  EXPECT_THROW(schedule.next_after(at(2023, 13, 1)), InvalidArgument);
  EXPECT_THROW(schedule.latest_at_or_before(at(2023, 1, 1, 24, 0), at(2023, 1, 1)), InvalidArgument);
  EXPECT_THROW(schedule.latest_at_or_before(at(2023, 1, 1), at(2023, 1, 32)), InvalidArgument);
}

// ---- latest_at_or_before

TEST(CronLatest, PicksTheLatestSlotOfABacklog) {
  const CronSchedule schedule = CronSchedule::parse("*/15 * * * *");
  EXPECT_EQ(schedule.latest_at_or_before(at(2024, 3, 5, 10, 7), at(2024, 3, 5, 9, 0)), at(2024, 3, 5, 10, 0));
  EXPECT_EQ(schedule.latest_at_or_before(at(2024, 3, 6, 0, 14), at(2024, 3, 5, 9, 0)), at(2024, 3, 6, 0, 0));
  const CronSchedule daily = CronSchedule::parse("0 9 * * *");
  EXPECT_EQ(daily.latest_at_or_before(at(2024, 3, 5, 8, 0), at(2024, 3, 1)), at(2024, 3, 4, 9, 0));
  EXPECT_EQ(daily.latest_at_or_before(at(2024, 3, 1, 8, 59), at(2023, 1, 1)), at(2024, 2, 29, 9, 0));
}

TEST(CronLatest, IncludesBothEnds) {
  const CronSchedule schedule = CronSchedule::parse("*/15 * * * *");
  EXPECT_EQ(schedule.latest_at_or_before(at(2024, 3, 5, 10, 15), at(2024, 3, 5, 10, 15)), at(2024, 3, 5, 10, 15));
  EXPECT_EQ(schedule.latest_at_or_before(at(2024, 3, 5, 10, 29), at(2024, 3, 5, 10, 15)), at(2024, 3, 5, 10, 15));
}

TEST(CronLatest, RespectsNotBefore) {
  const CronSchedule schedule = CronSchedule::parse("*/15 * * * *");
  EXPECT_EQ(schedule.latest_at_or_before(at(2024, 3, 5, 10, 14), at(2024, 3, 5, 10, 1)), std::nullopt);
  EXPECT_EQ(schedule.latest_at_or_before(at(2024, 3, 5, 10, 7), at(2024, 3, 5, 10, 8)), std::nullopt);
  const CronSchedule yearly = CronSchedule::parse("@yearly");
  EXPECT_EQ(yearly.latest_at_or_before(at(2024, 12, 31), at(2024, 1, 1, 0, 1)), std::nullopt);
  EXPECT_EQ(yearly.latest_at_or_before(at(2024, 12, 31), at(2020, 6, 1)), at(2024, 1, 1));
}

TEST(CronLatest, WalksBackOverMonthsAndYears) {
  EXPECT_EQ(CronSchedule::parse("0 0 31 * *").latest_at_or_before(at(2024, 5, 30), at(2000, 1, 1)), at(2024, 3, 31));
  EXPECT_EQ(CronSchedule::parse("0 0 29 2 *").latest_at_or_before(at(2104, 2, 28), at(2000, 1, 1)),
            at(2096, 2, 29));
  EXPECT_EQ(CronSchedule::parse("* * * * *").latest_at_or_before(at(1, 1, 1), at(1, 1, 1)), at(1, 1, 1));
  EXPECT_EQ(CronSchedule::parse("1 0 1 1 *").latest_at_or_before(at(1, 1, 1), at(1, 1, 1)), std::nullopt);
}

// ---- against brute force

// A random field: a mix of the forms real schedules use, biased so that
// most schedules fire often enough for a brute-force window.
std::string random_field(std::mt19937& random, int value_min, int value_max) {
  auto pick = [&](int low, int high) { return std::uniform_int_distribution<int>(low, high)(random); };
  const int a = pick(value_min, value_max);
  const int b = pick(a, value_max);
  switch (pick(0, 5)) {
    case 0: return "*";
    case 1: return std::to_string(a);
    case 2: return std::to_string(a) + "-" + std::to_string(b);
    case 3: return "*/" + std::to_string(pick(1, value_max - value_min + 1));
    case 4: return std::to_string(a) + "-" + std::to_string(b) + "/" + std::to_string(pick(1, 5));
    default: return std::to_string(a) + "," + std::to_string(pick(value_min, value_max));
  }
}

TEST(CronBruteForce, NextAndLatestAgreeWithMinuteByMinuteSearch) {
  std::mt19937 random(20240229);
  constexpr int schedules_checked = 150;
  // Sixty days of minutes: beyond this the brute force only checks that
  // the search found nothing earlier.
  constexpr int window_minutes = 60 * 24 * 60;
  for (int i = 0; i < schedules_checked; ++i) {
    const std::string expression = random_field(random, 0, 59) + " " + random_field(random, 0, 23) + " " +
                                   random_field(random, 1, 31) + " " + random_field(random, 1, 12) + " " +
                                   random_field(random, 0, 7);
    SCOPED_TRACE(expression);
    const CronSchedule schedule = CronSchedule::parse(expression);
    const CivilMinute start{std::uniform_int_distribution<int>(1999, 2101)(random),
                            std::uniform_int_distribution<int>(1, 12)(random),
                            std::uniform_int_distribution<int>(1, 28)(random),
                            std::uniform_int_distribution<int>(0, 23)(random),
                            std::uniform_int_distribution<int>(0, 59)(random)};
    std::optional<CivilMinute> brute_next;
    std::optional<CivilMinute> brute_latest;
    CivilMinute minute = start;
    for (int step = 0; step < window_minutes && !brute_next; ++step) {
      minute = civil_minute_next(minute);
      if (schedule.matches(minute)) brute_next = minute;
    }
    const CivilMinute window_end = minute;
    const std::optional<CivilMinute> next = schedule.next_after(start);
    if (brute_next) {
      EXPECT_EQ(next, brute_next);
    } else if (next) {
      EXPECT_GT(*next, window_end);
      EXPECT_TRUE(schedule.matches(*next));
    }
    if (brute_next) {
      // Walking forward from start, the latest slot at or before each minute
      // is the last match seen, so check a few points against that.
      brute_latest = std::nullopt;
      minute = start;
      for (int step = 0; step < 3 * 24 * 60; ++step) {
        if (schedule.matches(minute)) brute_latest = minute;
        ASSERT_EQ(schedule.latest_at_or_before(minute, start), brute_latest) << civil_minute_format(minute);
        minute = civil_minute_next(minute);
        // Checking every minute is slow; jump ahead a little each time.
        for (int skip = 0; skip < 37; ++skip) {
          if (schedule.matches(minute)) brute_latest = minute;
          minute = civil_minute_next(minute);
        }
      }
    }
  }
}

}  // namespace
}  // namespace payq

import copy
import decimal
import pickle
import random

import pytest

import payq
from payq import Currency, Fee, Money, Rounding, to_minor
from payq._native import core

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)


# ---- to_minor: what crosses into the core


def test_int_is_taken_as_minor_units():
    assert to_minor(1234, "CNY") == 1234
    assert to_minor(-5, "JPY") == -5


@pytest.mark.parametrize(
    "value, currency, minor",
    [
        ("12.34", "CNY", 1234),
        ("12", "CNY", 1200),
        ("-0.05", "CNY", -5),
        ("1.500", "CNY", 150),
        ("1234", "JPY", 1234),
        ("1.234", "BHD", 1234),
        ("0.00000001", "BTC", 1),
        ("0.000000000000000001", "ETH", 1),
        ("-0", "CNY", 0),
    ],
)
def test_str_is_taken_as_major_units_exactly(value, currency, minor):
    assert to_minor(value, currency) == minor


@pytest.mark.parametrize(
    "value, minor",
    [
        (decimal.Decimal("12.34"), 1234),
        (decimal.Decimal("1E+2"), 10000),
        (decimal.Decimal("1.5000000000000000000000000000000000000000"), 150),
        (decimal.Decimal("-0.00"), 0),
        (decimal.Decimal("0E-999999999"), 0),
        (decimal.Decimal("92233720368547758.07"), INT64_MAX),
        (decimal.Decimal("-92233720368547758.08"), INT64_MIN),
    ],
)
def test_decimal_is_converted_exactly(value, minor):
    assert to_minor(value, "CNY") == minor


def test_decimal_conversion_ignores_the_decimal_context():
    with decimal.localcontext() as context:
        context.prec = 3
        assert to_minor(decimal.Decimal("123456789.12"), "CNY") == 12345678912


@pytest.mark.parametrize("value", [1.0, 12.34, float("nan"), float("inf"), 0.0])
def test_float_is_rejected(value):
    with pytest.raises(payq.InvalidAmount, match="float"):
        to_minor(value, "CNY")


@pytest.mark.parametrize("value", [True, False])
def test_bool_is_rejected(value):
    with pytest.raises(payq.InvalidAmount):
        to_minor(value, "CNY")


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, 10**100, -(10**100)])
def test_int_beyond_int64_is_rejected(value):
    with pytest.raises(payq.InvalidAmount):
        to_minor(value, "CNY")


def test_int64_edges_are_accepted():
    assert to_minor(INT64_MAX, "CNY") == INT64_MAX
    assert to_minor(INT64_MIN, "CNY") == INT64_MIN


@pytest.mark.parametrize(
    "value",
    [
        decimal.Decimal("NaN"),
        decimal.Decimal("sNaN"),
        decimal.Decimal("Infinity"),
        decimal.Decimal("-Infinity"),
        decimal.Decimal("1.005"),
        decimal.Decimal("1E-999999999"),
        decimal.Decimal("1E+999999999"),
        decimal.Decimal("92233720368547758.08"),
        decimal.Decimal("1E+17"),
    ],
)
def test_decimal_that_is_not_exact_cny_is_rejected(value):
    with pytest.raises(payq.InvalidAmount):
        to_minor(value, "CNY")


@pytest.mark.parametrize(
    "value",
    ["", "1.", ".5", "+1", " 1", "1 ", "1e3", "NaN", "Infinity", "1,000", "12.345", "１２", "1\x002", "\ud800"],
)
def test_malformed_or_inexact_str_is_rejected(value):
    with pytest.raises(payq.InvalidAmount):
        to_minor(value, "CNY")


@pytest.mark.parametrize("value", [None, [1], b"12", object(), 1j])
def test_other_types_are_rejected(value):
    with pytest.raises(payq.InvalidAmount):
        to_minor(value, "CNY")


def test_unknown_currency_is_rejected():
    with pytest.raises(payq.UnknownCurrency):
        to_minor(1, "XYZ")
    with pytest.raises(payq.UnknownCurrency):
        to_minor(1, "cny")
    with pytest.raises(payq.UnknownCurrency):
        to_minor(1, "€UR")


def test_money_of_the_same_currency_is_accepted_and_another_is_not():
    assert to_minor(Money(5, "CNY"), "CNY") == 5
    with pytest.raises(payq.CurrencyMismatch):
        to_minor(Money(5, "USD"), "CNY")


# ---- Money


def test_money_formats_with_the_currency_exponent():
    assert str(Money(1234, "CNY")) == "12.34 CNY"
    assert str(Money(-5, "CNY")) == "-0.05 CNY"
    assert str(Money(7, "JPY")) == "7 JPY"
    assert str(Money(INT64_MIN, "CNY")) == "-92233720368547758.08 CNY"
    assert repr(Money("12.34", "CNY")) == "Money('12.34', 'CNY')"


def test_money_repr_round_trips():
    for money in [Money(1234, "CNY"), Money(-1, "BTC"), Money(INT64_MIN, "ETH"), Money(0, "KWD")]:
        assert eval(repr(money)) == money


def test_money_decimal_is_exact():
    assert Money(1234, "CNY").decimal == decimal.Decimal("12.34")
    assert Money(1, "ETH").decimal.as_tuple() == (0, (1,), -18)
    assert Money(100, "CNY").decimal.as_tuple() == (0, (1, 0, 0), -2)  # keeps its exponent
    assert Money(INT64_MAX, "CNY").decimal == decimal.Decimal("92233720368547758.07")
    with decimal.localcontext() as context:
        context.prec = 2
        assert str(Money(INT64_MAX, "CNY").decimal) == "92233720368547758.07"


def test_money_properties():
    money = Money("1.234", "BHD")
    assert (money.minor, money.currency, money.exponent) == (1234, "BHD", 3)


def test_money_equality_and_hash_are_by_minor_and_currency():
    assert Money(1234, "CNY") == Money("12.34", "CNY") == Money(decimal.Decimal("12.340"), "CNY")
    assert hash(Money(1234, "CNY")) == hash(Money("12.34", "CNY"))
    assert Money(1, "CNY") != Money(1, "USD")
    assert Money(1, "CNY") != 1
    assert len({Money(1, "CNY"), Money("0.01", "CNY"), Money(1, "USD")}) == 2


def test_money_is_immutable():
    money = Money(1, "CNY")
    with pytest.raises(AttributeError):
        money.minor = 2
    with pytest.raises(AttributeError):
        money.currency = "USD"
    with pytest.raises(AttributeError):
        del money.minor


def test_money_has_no_float_conversion():
    assert not hasattr(Money, "__float__")
    with pytest.raises(TypeError):
        float(Money(1, "CNY"))


def test_money_adds_and_subtracts_exactly():
    assert Money("0.10", "CNY") + Money("0.20", "CNY") == Money("0.30", "CNY")
    assert Money("0.10", "CNY") - Money("0.20", "CNY") == Money("-0.10", "CNY")
    assert -Money(5, "CNY") == Money(-5, "CNY")


def test_money_arithmetic_overflow_is_invalid_amount():
    with pytest.raises(payq.InvalidAmount):
        Money(INT64_MAX, "CNY") + Money(1, "CNY")
    with pytest.raises(payq.InvalidAmount):
        Money(INT64_MIN, "CNY") - Money(1, "CNY")
    with pytest.raises(payq.InvalidAmount):
        -Money(INT64_MIN, "CNY")


def test_money_arithmetic_across_currencies_is_a_mismatch():
    with pytest.raises(payq.CurrencyMismatch):
        Money(1, "CNY") + Money(1, "USD")
    with pytest.raises(payq.CurrencyMismatch):
        Money(1, "CNY") - Money(1, "USD")
    with pytest.raises(payq.CurrencyMismatch):
        Money(1, "CNY") < Money(1, "USD")


def test_money_does_not_mix_with_plain_numbers():
    with pytest.raises(TypeError):
        Money(1, "CNY") + 1
    with pytest.raises(TypeError):
        Money(1, "CNY") - decimal.Decimal("0.01")
    with pytest.raises(TypeError):
        Money(1, "CNY") < 2


def test_money_orders_within_a_currency():
    assert Money(1, "CNY") < Money(2, "CNY") <= Money(2, "CNY")
    assert max([Money(3, "CNY"), Money(-1, "CNY"), Money(7, "CNY")]) == Money(7, "CNY")


def test_money_pickles_and_copies():
    money = Money("12.34", "CNY")
    assert pickle.loads(pickle.dumps(money)) == money
    assert copy.deepcopy(money) == money


def test_money_split_sums_to_the_amount():
    parts = Money(100, "CNY").split([1, 1, 1])
    assert parts == [Money(34, "CNY"), Money(33, "CNY"), Money(33, "CNY")]
    assert Money(-100, "CNY").split((1, 1, 1)) == [Money(-34, "CNY"), Money(-33, "CNY"), Money(-33, "CNY")]
    assert sum(p.minor for p in Money(INT64_MIN, "CNY").split([3, 5, 7])) == INT64_MIN


@pytest.mark.parametrize("weights", [[], [0, 0], [1, -1], [1.5], [True], ["1"], [2**63], "12"])
def test_money_split_rejects_bad_weights(weights):
    with pytest.raises(payq.InvalidArgument):
        Money(100, "CNY").split(weights)


# ---- rounding and fees


def test_rounding_enum_matches_the_core():
    assert [r.value for r in Rounding] == core.rounding_names()
    assert Rounding("half_even") is Rounding.HALF_EVEN
    assert Rounding.HALF_UP == "half_up"
    assert str(Rounding.CEILING) == "ceiling"


def test_rounding_rules_match_python_decimal():
    # The C++ rules are named after decimal's; prove they agree on ties,
    # near-ties and both signs.
    decimal_rule = {
        Rounding.HALF_UP: decimal.ROUND_HALF_UP,
        Rounding.HALF_EVEN: decimal.ROUND_HALF_EVEN,
        Rounding.HALF_DOWN: decimal.ROUND_HALF_DOWN,
        Rounding.DOWN: decimal.ROUND_DOWN,
        Rounding.UP: decimal.ROUND_UP,
        Rounding.FLOOR: decimal.ROUND_FLOOR,
        Rounding.CEILING: decimal.ROUND_CEILING,
    }
    rng = random.Random(4217)
    cases = [(a, n, d) for a in range(-30, 31) for n in (1, 3, 7) for d in (2, 4, 6, 10)]
    cases += [(rng.randint(-(10**12), 10**12), rng.randint(0, 10**6), rng.randint(1, 10**6)) for _ in range(300)]
    with decimal.localcontext() as context:
        context.prec = 80
        for amount, numerator, denominator in cases:
            exact = decimal.Decimal(amount * numerator) / decimal.Decimal(denominator)
            for rounding, rule in decimal_rule.items():
                expected = int(exact.quantize(decimal.Decimal(1), rounding=rule))
                got = core.amount_mul_div(amount, numerator, denominator, rounding.value)
                assert got == expected, (amount, numerator, denominator, rounding)


def test_fee_computes_rate_plus_fixed_in_the_transfer_currency():
    fee = Fee(bps=250, fixed="0.30")
    assert fee.compute(Money("100", "CNY")) == Money("2.80", "CNY")
    assert fee.compute(Money("100", "USD")) == Money("2.80", "USD")
    # Int fixed parts are minor units in whatever currency the transfer has.
    assert Fee(fixed=30).compute(Money(1, "JPY")) == Money(30, "JPY")


def test_fee_clamps_to_min_and_max():
    fee = Fee(bps=100, min="0.50", max=decimal.Decimal("5"))
    assert fee.compute(Money("10", "CNY")) == Money("0.50", "CNY")
    assert fee.compute(Money("200", "CNY")) == Money("2.00", "CNY")
    assert fee.compute(Money("100000", "CNY")) == Money("5.00", "CNY")


def test_fee_rounding_is_named():
    # 2.5% of 0.20 is 0.005: a tie.
    assert Fee(bps=250).compute(Money(20, "CNY")) == Money(1, "CNY")
    assert Fee(bps=250, rounding="half_even").compute(Money(20, "CNY")) == Money(0, "CNY")
    assert Fee(bps=250, rounding=Rounding.FLOOR).rounding is Rounding.FLOOR


def test_fee_fixed_part_with_too_many_decimals_for_the_currency_is_rejected():
    with pytest.raises(payq.InvalidAmount):
        Fee(fixed="0.30").compute(Money(100, "JPY"))


@pytest.mark.parametrize(
    "make",
    [
        lambda: Fee(bps=-1).to_core("CNY"),
        lambda: Fee(bps=10001).to_core("CNY"),
        lambda: Fee(fixed=-1).to_core("CNY"),
        lambda: Fee(min=5, max=4).to_core("CNY"),
        lambda: Fee(rounding="bankers"),
        lambda: Fee(bps=1.5),
        lambda: Fee(bps=True),
    ],
)
def test_malformed_fee_is_invalid_argument(make):
    with pytest.raises(payq.InvalidArgument):
        make()


def test_fee_rejects_float_parts_and_non_positive_amounts():
    with pytest.raises(payq.InvalidAmount):
        Fee(fixed=0.3).to_core("CNY")
    with pytest.raises(payq.InvalidAmount):
        Fee(bps=100).compute(Money(0, "CNY"))
    with pytest.raises(payq.InvalidAmount):
        Fee(bps=100).compute(100)


def test_fee_to_core_carries_minor_units():
    core_fee = Fee(bps=30, fixed="1.5", min=None, max="9", rounding="up").to_core("CNY")
    assert (core_fee.rate_bps, core_fee.fixed_minor, core_fee.min_minor, core_fee.max_minor) == (30, 150, None, 900)
    assert core_fee.rounding == "up"


# ---- currencies


def test_builtin_currencies_have_iso_exponents():
    assert payq.currency_get("CNY") == Currency("CNY", 2)
    assert payq.currency_get("JPY").exponent == 0
    assert payq.currency_get("KWD").exponent == 3
    assert payq.currency_get("CLF").exponent == 4
    assert payq.currency_get("ETH").exponent == 18
    assert payq.currency_known("USD")
    assert not payq.currency_known("usd")


def test_custom_currency_can_be_registered_and_used():
    payq.currency_register("PYTEST_PTS", 0)
    payq.currency_register("PYTEST_PTS", 0)  # Same exponent again: fine.
    assert Money("42", "PYTEST_PTS").minor == 42
    assert str(Money(42, "PYTEST_PTS")) == "42 PYTEST_PTS"
    with pytest.raises(payq.InvalidAmount):
        Money("4.2", "PYTEST_PTS")
    with pytest.raises(payq.InvalidArgument):
        payq.currency_register("PYTEST_PTS", 2)


@pytest.mark.parametrize(
    "code, exponent",
    [("ab", 2), ("lower", 2), ("TOO_LONG_CODE", 2), ("ÄBC", 2), ("PYTEST_E", -1), ("PYTEST_E", 19),
     ("PYTEST_E", 2**70), ("PYTEST_E", True), ("PYTEST_E", 2.0), (123, 2)],
)
def test_custom_currency_rejects_bad_code_or_exponent(code, exponent):
    with pytest.raises(payq.InvalidArgument):
        payq.currency_register(code, exponent)

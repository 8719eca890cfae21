"""The input schema: field lists, parsing rules for raw values, and the one-hot column layout."""
from __future__ import annotations

import math
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ad_purchase import schema
from ad_purchase.core import decoding
from ad_purchase.schema import CATEGORICAL_FIELDS, CATEGORICAL_LEVELS, FIELDS, NUMERIC_FIELDS, all_model_columns, dummy_columns, split_dummy
from ad_purchase.core.decoding import FieldError, numeric_parser, read_numbers, parse_currency, parse_level, parse_number, parse_percent
from ad_purchase.resources import Profile

MISSING_MARKERS = [None, float("nan"), "", "   ", "nan", "NaN", "NAN", "NA", "na", " nan ", "\tNaN\n"]


# --------------------------------------------------------------------------- field lists

def test_field_lists():
    assert FIELDS == tuple(f"x{i}" for i in range(100))
    assert set(CATEGORICAL_FIELDS) == {"x5", "x31", "x81", "x82"}
    assert len(NUMERIC_FIELDS) == 96
    assert set(NUMERIC_FIELDS).isdisjoint(CATEGORICAL_FIELDS)
    assert set(NUMERIC_FIELDS) | set(CATEGORICAL_FIELDS) == set(FIELDS)
    assert schema.CURRENCY_FIELD in NUMERIC_FIELDS and schema.PERCENT_FIELD in NUMERIC_FIELDS


def test_levels_match_the_published_profile():
    published = Profile.load().raw["categorical_fields"]
    assert set(published) == set(CATEGORICAL_LEVELS)
    for field, levels in CATEGORICAL_LEVELS.items():
        assert list(levels) == published[field]["levels"]


def test_profile_has_stats_for_every_numeric_field_and_25_coefficients():
    profile = Profile.load()
    assert set(profile.numeric_stats) == set(NUMERIC_FIELDS)
    assert all(stats["var"] > 0 for stats in profile.numeric_stats.values())
    assert len(profile.coefficients) == 25
    assert set(profile.coefficients) <= set(all_model_columns())
    assert 0.5 < profile.auc < 1


# --------------------------------------------------------------------------- x12 currency

@pytest.mark.parametrize("raw, expected", [
    ("$6,882.34", 6882.34),
    ("$6,882.34 ", 6882.34),
    ("$-5,032.58", -5032.58),
    ("($5,032.58)", -5032.58),
    ("($1,920.03)", -1920.03),
    ("$66.55", 66.55),
    ("3709.93", 3709.93),
    ("-3709.93", -3709.93),
    ("$1,234,567.89", 1234567.89),
    ("$0.00", 0.0),
    (" $12 ", 12.0),
    (12, 12.0),
    (-7, -7.0),
    (3709.93, 3709.93),
    (-0.5, -0.5),
])
def test_parse_currency_spellings(raw, expected):
    assert parse_currency(raw) == expected


def test_every_published_currency_example_parses():
    examples = Profile.load().raw["formatted_fields"]["x12"]["raw_examples"]
    assert "($1,920.03)" in examples
    for raw in (*examples, *schema.CURRENCY_EXAMPLES):
        value = parse_currency(raw)
        assert math.isnan(value) if raw == "nan" else math.isfinite(value)


@pytest.mark.parametrize("raw", MISSING_MARKERS)
def test_parse_currency_missing_markers(raw):
    assert math.isnan(parse_currency(raw))


@pytest.mark.parametrize("raw", [
    "(-$5)", "($-5)", "(5", "5)", "abc", "$", "$$", "()", "1,2x", "12.34.56", "$1e", "--5", "5-",
    True, False, float("inf"), float("-inf"), "inf", "-inf", "$inf", "1e999", "$1e999", "(1e999)",
    [5], {"amount": 5}, 10 ** 400,
])
def test_parse_currency_rejects(raw):
    with pytest.raises(FieldError) as caught:
        parse_currency(raw)
    assert str(caught.value)


def _cents_text(cents: int) -> str:
    return f"{abs(cents) // 100:,}.{abs(cents) % 100:02d}"


@settings(max_examples=150, deadline=None)
@given(st.integers(min_value=-10 ** 12, max_value=10 ** 12))
def test_parse_currency_reads_every_client_spelling_of_an_amount(cents):
    amount = cents / 100
    grouped = _cents_text(cents)
    plain = grouped.replace(",", "")
    spellings = ["$" + grouped, "$" + grouped + " ", plain] if cents >= 0 else \
        ["$-" + grouped, "($" + grouped + ")", "-" + plain]
    for text in spellings:
        assert parse_currency(text) == amount, text


@pytest.mark.parametrize("raw, expected", [
    ("-$5,032.58", -5032.58), ("$+5", 5.0), ("+$5", 5.0), ("$ 1,000", 1000.0), ("- $ 5", -5.0), ("( $5 )", -5.0),
    ("(5)", -5.0), ("1,234.", 1234.0), ("$.5", 0.5), ("1e3", 1000.0), ("\t$6,882.34\n", 6882.34),
])
def test_parse_currency_reads_signs_and_spaces_around_the_amount(raw, expected):
    assert parse_currency(raw) == expected


@pytest.mark.parametrize("raw", [
    "$1.234,56", "12,34", "1,2,3,4", ",1", "$,,1,,", "1..2", "$1,2345", "1234,567", "1,234,56", "1,234,567,89",
    "$1,234.56,7", "1,234.5.6", "1 234", "$ 1 000", ",", "$,", "(,5)", "-$-5", "$--5", "(1,23)",
])
def test_parse_currency_refuses_any_other_separator(raw):
    """A comma stands only between groups of exactly three digits before the point; anything
    else (a European "1.234,56", a group of two) is an error, never a misread amount."""
    with pytest.raises(FieldError) as caught:
        parse_currency(raw)
    assert "groups of three digits" in str(caught.value)


def grouped_digits(digits: str) -> str:
    """"1234567" as "1,234,567": written here from the rule, not with the format() of the parser."""
    head = len(digits) % 3 or 3
    return ",".join([digits[:head]] + [digits[i:i + 3] for i in range(head, len(digits), 3)])


AMOUNT_PARTS = st.tuples(st.integers(0, 10 ** 15).map(str), st.text("0123456789", max_size=4),
                         st.booleans(), st.booleans())


@settings(max_examples=300, deadline=None)
@given(parts=AMOUNT_PARTS, form=st.sampled_from(["{a}", "${a}", "-${a}", "$-{a}", "(${a})", "({a})", "+{a}",
                                                   "$ {a}", "- $ {a}"]),
       pad=st.sampled_from(["", " ", "\t", "  "]))
def test_parse_currency_reads_every_well_formed_spelling(parts, form, pad):
    whole, fraction, grouped, with_point = parts
    amount = (grouped_digits(whole) if grouped else whole) + ("." + fraction if with_point else "")
    expected = float(whole + ("." + fraction if with_point else ""))
    if "-" in form or "(" in form:
        expected = -expected
    assert parse_currency(pad + form.format(a=amount) + pad) == expected


@settings(max_examples=300, deadline=None)
@given(whole=st.integers(1000, 10 ** 12).map(str), cut=st.integers(1, 11), fraction=st.text("0123456789", max_size=3),
       mistake=st.sampled_from(["short group", "long group", "european", "leading comma", "trailing comma",
                                "two points", "comma after point", "double comma"]))
def test_parse_currency_refuses_every_misgrouped_spelling(whole, cut, fraction, mistake):
    grouped = grouped_digits(whole)
    if mistake == "short group":          # a group of one or two digits after a comma
        text = whole[:-2] + "," + whole[-2:] if cut % 2 else whole[:-1] + "," + whole[-1:]
    elif mistake == "long group":         # four or more digits after a comma
        text = whole[:1] + "," + whole[1:] if len(whole) - 1 > 3 else whole + "0,0000"
    elif mistake == "european":           # points between the groups, a comma before the cents
        text = grouped.replace(",", ".") + "," + (fraction or "00")
    elif mistake == "leading comma":
        text = "," + grouped
    elif mistake == "trailing comma":
        text = grouped + ","
    elif mistake == "two points":
        text = grouped + "." + fraction + "." + fraction
    elif mistake == "comma after point":
        text = grouped + "." + (fraction or "0") + ",000"
    else:
        text = grouped.replace(",", ",,", 1)
    for spelled in (text, "$" + text, "($" + text + ")"):
        with pytest.raises(FieldError):
            parse_currency(spelled)


# --------------------------------------------------------------------------- x63 percentage

@pytest.mark.parametrize("raw, expected", [
    ("62.59%", 62.59),
    ("3.11%", 3.11),
    ("45.85", 45.85),
    ("0%", 0.0),
    ("100%", 100.0),
    ("-2.5%", -2.5),
    (" 45.85% ", 45.85),
    (45.85, 45.85),
    (7, 7.0),
])
def test_parse_percent(raw, expected):
    assert parse_percent(raw) == expected


def test_every_published_percent_example_parses():
    examples = Profile.load().raw["formatted_fields"]["x63"]["raw_examples"]
    for raw in (*examples, *schema.PERCENT_EXAMPLES):
        value = parse_percent(raw)
        assert math.isnan(value) if raw == "nan" else math.isfinite(value)


@pytest.mark.parametrize("raw", MISSING_MARKERS)
def test_parse_percent_missing_markers(raw):
    assert math.isnan(parse_percent(raw))


@pytest.mark.parametrize("raw", ["%", "abc%", "abc", "%5", "5%%", "5 5%", "inf%", "1e999%", "nan%",
                                 True, False, float("inf"), [1], {"p": 1}, -10 ** 400])
def test_parse_percent_rejects(raw):
    with pytest.raises(FieldError):
        parse_percent(raw)


# --------------------------------------------------------------------------- plain numbers

@pytest.mark.parametrize("raw, expected", [
    ("0.137", 0.137),
    (" 1.5 ", 1.5),
    ("-1e-3", -0.001),
    (".5", 0.5),
    ("5.", 5.0),
    ("+2", 2.0),
    ("1E3", 1000.0),
    ("-0", 0.0),
    (3, 3.0),
    (-2.25, -2.25),
    (0, 0.0),
])
def test_parse_number(raw, expected):
    assert parse_number(raw) == expected


@pytest.mark.parametrize("raw", MISSING_MARKERS)
def test_parse_number_missing_markers(raw):
    assert math.isnan(parse_number(raw))


@pytest.mark.parametrize("raw", [
    "1_000", "0x10", "0b1", "inf", "-inf", "Infinity", "infinity", "1e999", "-1e999", "1,000", "1 000",
    "$5", "5%", "abc", "e5", "1e", "--1", "1..2", "½",
    True, False, float("inf"), float("-inf"), 10 ** 400, -10 ** 400, [1], [], {"x": 1}, {}, (1,), b"1",
])
def test_parse_number_rejects(raw):
    with pytest.raises(FieldError):
        parse_number(raw)


def test_field_error_is_a_value_error():
    assert issubclass(FieldError, ValueError)


@settings(max_examples=150, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_parse_number_round_trips_the_text_of_any_finite_float(number):
    assert parse_number(repr(number)) == number
    assert parse_number(number) == number


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.text(max_size=12), st.text(alphabet="0123456789.,-+eE$%() nai", max_size=12)))
def test_parsers_either_return_a_float_or_raise_field_error(text):
    for parser in (parse_number, parse_currency, parse_percent):
        try:
            value = parser(text)
        except FieldError:
            continue
        assert isinstance(value, float)
        assert math.isfinite(value) or (math.isnan(value) and decoding.is_missing(text))


def test_numeric_parser_per_field():
    assert numeric_parser("x12") is parse_currency
    assert numeric_parser("x63") is parse_percent
    assert all(numeric_parser(f) is parse_number for f in NUMERIC_FIELDS if f not in ("x12", "x63"))


# --------------------------------------------------------------------------- categorical levels

@pytest.mark.parametrize("field, raw, expected", [
    ("x5", "  SUNDAY ", "sunday"),
    ("x5", "Monday", "monday"),
    ("x81", "november", "November"),
    ("x81", "DECEMBER", "December"),
    ("x31", " Japan", "japan"),
    ("x82", "male", "Male"),
    ("x82", "FEMALE\t", "Female"),
])
def test_parse_level_ignores_case_and_spaces(field, raw, expected):
    assert parse_level(field, raw) == expected


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_parse_level_any_casing_of_any_level(data):
    field = data.draw(st.sampled_from(CATEGORICAL_FIELDS))
    level = data.draw(st.sampled_from(CATEGORICAL_LEVELS[field]))
    upper = data.draw(st.lists(st.booleans(), min_size=len(level), max_size=len(level)))
    text = "".join(c.upper() if u else c.lower() for c, u in zip(level, upper))
    padding = data.draw(st.sampled_from(["", " ", "  ", "\t"]))
    assert parse_level(field, padding + text + padding) == level


@pytest.mark.parametrize("field, raw", [
    ("x5", "funday"), ("x5", "mon"), ("x5", "sunday!"), ("x31", "europe"), ("x81", "Sept"),
    ("x82", "other"), ("x5", 5), ("x82", True), ("x31", ["asia"]),
])
def test_parse_level_rejects_unknown_values(field, raw):
    with pytest.raises(FieldError) as caught:
        parse_level(field, raw)
    for level in CATEGORICAL_LEVELS[field]:
        assert level in str(caught.value)


@pytest.mark.parametrize("field", CATEGORICAL_FIELDS)
@pytest.mark.parametrize("raw", MISSING_MARKERS)
def test_parse_level_missing(field, raw):
    assert parse_level(field, raw) is None


# --------------------------------------------------------------------------- one-hot layout

def test_dummy_columns_drop_the_alphabetically_first_level():
    assert dummy_columns("x5") == ["x5_monday", "x5_saturday", "x5_sunday", "x5_thursday", "x5_tuesday",
                                   "x5_wednesday", "x5_nan"]
    assert dummy_columns("x31") == ["x31_asia", "x31_germany", "x31_japan", "x31_nan"]
    assert dummy_columns("x82") == ["x82_Male", "x82_nan"]
    months = dummy_columns("x81")
    assert "x81_April" not in months and months[-1] == "x81_nan" and len(months) == 12
    assert months[:-1] == sorted(months[:-1])
    references = {"x5": "friday", "x31": "america", "x81": "April", "x82": "Female"}
    for field, reference in references.items():
        columns = dummy_columns(field)
        assert f"{field}_{reference}" not in columns
        assert {f"{field}_{level}" for level in CATEGORICAL_LEVELS[field]} - set(columns) == \
            {f"{field}_{reference}"}


def test_all_model_columns():
    columns = all_model_columns()
    assert len(columns) == 121
    assert len(set(columns)) == 121
    assert columns[:96] == list(NUMERIC_FIELDS)
    assert columns[96:] == [c for f in CATEGORICAL_FIELDS for c in dummy_columns(f)]


def test_split_dummy_inverts_the_column_names():
    for column in all_model_columns():
        parts = split_dummy(column)
        if column in NUMERIC_FIELDS:
            assert parts is None
            continue
        field, level = parts
        assert field in CATEGORICAL_FIELDS
        if column.endswith("_nan"):
            assert level is None
        else:
            assert level in CATEGORICAL_LEVELS[field] and column == f"{field}_{level}"


# --------------------------------------------------------------------------- whole-column reading

NUMBERISH = "0123456789.eE+-() \t%nNaA$,\n"


@pytest.mark.parametrize("parser", [parse_number, parse_currency, parse_percent])
@pytest.mark.parametrize("filler", [" ", "5", "0,000", "$ ", "( "])
def test_a_long_value_that_does_not_match_is_refused_in_linear_time(parser, filler):
    """Every shape reads one way only: a value that nearly matches does not make the pattern try
    every way of splitting it (quadratic time would take minutes here, linear takes milliseconds)."""
    value = "5" + filler * 100_000 + "x"
    started = time.perf_counter()
    with pytest.raises(FieldError):
        parser(value)
    assert time.perf_counter() - started < 5


@pytest.mark.parametrize("field", ["x12", "x63"])
def test_a_long_column_that_does_not_match_is_read_in_linear_time(field):
    values = ["5"] * 10 + ["5" + " " * 200_000 + "%x"]
    started = time.perf_counter()
    with pytest.raises(FieldError):
        parse_column(field, values)
    assert time.perf_counter() - started < 5


def parse_column(field: str, values: list) -> np.ndarray:
    """A whole column read by the decoding core's column rule; FieldError where a value is bad."""
    numbers, bad = read_numbers(field, values)
    if bad:
        raise FieldError(bad[0][2])
    return numbers


def column_values(field: str):
    spelled = st.text(alphabet=NUMBERISH.replace("\n", ""), max_size=10)
    if field == "x12":
        typical = st.sampled_from(["$6,882.34", "$6,882.34 ", "$-5,032.58", "($5,032.58)", "3709.93", "nan"])
    else:
        typical = st.sampled_from(["62.59%", "3.11%", "45.85", " 7 % ", "nan", "NaN"])
    return st.lists(st.one_of(typical, spelled), min_size=8, max_size=30)


def assert_column_read_like_each_value(field: str, values: list) -> None:
    """The column rule gives the per-value parser's numbers, or raises FieldError where it does."""
    parser = numeric_parser(field)
    try:
        expected = np.array([parser(v) for v in values])
    except FieldError:
        with pytest.raises(FieldError):
            parse_column(field, values)
        return
    np.testing.assert_array_equal(parse_column(field, values), expected)


TRICKY_VALUES = ["5%%", "%5", "5 5%", "5%5", "(5", "5)", "((5))", "(-5)", "-(5)", "$(5)", "1e", "1e+", ".", "+", "-",
                 "-.5e-3", "5.", "+.5", "1_0", "inf", "-Infinity", "1e999", "nan%", "NA", "-nan", " 7 % ", "\t8",
                 "8\t", "", " ", "0x10", "1,2.5", "$$5", "5 $", 12.5, None, float("nan")]


@pytest.mark.parametrize("field", ["x12", "x63"])
@pytest.mark.parametrize("value", TRICKY_VALUES)
def test_parse_column_agrees_with_the_parser_on_tricky_values(field, value):
    typical = ["$6,882.34", "($5,032.58)", "3709.93", "nan"] if field == "x12" else ["62.59%", "45.85", "nan", "3.11%"]
    values = typical * 3 + [value]
    assert_column_read_like_each_value(field, values)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_parse_column_reads_a_column_as_the_parser_reads_each_value(data):
    field = data.draw(st.sampled_from(["x12", "x63"]))
    values = data.draw(column_values(field))
    assert_column_read_like_each_value(field, values)

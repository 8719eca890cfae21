"""How raw values are written: missing markers, the shapes of numbers, amounts and percentages,
and what a well-formed amount or percentage carries besides its number.  The decoding core
(ad_purchase.core.decoding) reads values by these facts; the OpenAPI document shows them as
patterns."""
from __future__ import annotations

import itertools

# A value is missing when it is null or one of these strings (any case, surrounding spaces ignored).
# "null" and a signed "nan" are included because JSON decoders commonly read them as missing.
MISSING_STRINGS = frozenset({"", "nan", "na", "null", "-nan", "+nan"})
SPACE_CHARS = " \t\n\r\f\v"          # what may surround a value; ASCII only, as in the document


def missing_spellings() -> list[str]:
    """Every upper- and lower-case spelling of the missing markers, for readers that match text
    exactly (pandas' na_values, a CSV column read in bulk)."""
    return sorted({"".join(letters) for word in MISSING_STRINGS
                   for letters in itertools.product(*({c.lower(), c.upper()} for c in word))})

# ------------------------------------------------------------------ how numbers are written
# Each shape is written once, in the regular-expression syntax Python and JSON Schema share: the
# decoding core uses it, and the OpenAPI document shows it (with bounded digit counts).  Every
# shape reads one way only (no two adjacent parts can take the same characters), so a long
# value that fails to match is refused in linear time.  For the same reason Python may match
# them possessively (`possessive=True`: no backtracking positions are kept, which makes checking
# a whole column several times faster); the document gets the plain form JSON Schema reads.
SPACE = r"[ \t\n\r\f\v]"


def unsigned_pattern(digits: str = "+", exponent: str = "+", possessive: bool = False) -> str:
    """A decimal number without its sign: "12", "0.5", ".5", "12.", with an optional exponent."""
    p = "+" if possessive else ""
    return rf"(?:[0-9]{digits}{p}(?:\.[0-9]*{p})?{p}|\.[0-9]+{p})(?:[eE][+-]?{p}[0-9]{exponent}{p})?{p}"


def number_pattern(digits: str = "+", exponent: str = "+", possessive: bool = False) -> str:
    return "[+-]?" + ("+" if possessive else "") + unsigned_pattern(digits, exponent, possessive)


def amount_pattern(groups: str = "+", digits: str = "+", exponent: str = "+", possessive: bool = False) -> str:
    """A currency amount without its sign: thousands separators are commas between groups of
    exactly three digits before the decimal point ("6,882.34"); without them, any number."""
    p = "+" if possessive else ""
    grouped = rf"[0-9]{{1,3}}{p}(?:,[0-9]{{3}}){groups}{p}(?:\.[0-9]*{p})?{p}"
    return f"(?:{grouped}|{unsigned_pattern(digits, exponent, possessive)})"


def currency_pattern(groups: str = "+", digits: str = "+", exponent: str = "+", space: str = SPACE,
                     possessive: bool = False) -> str:
    """x12: "$6,882.34", "$-5,032.58", "-$5,032.58", "($5,032.58)" (negative), "3709.93"; spaces
    may follow "$", "(" or a sign, as in "$ 1,000", never sit inside the digits."""
    p = "+" if possessive else ""
    amount, s = amount_pattern(groups, digits, exponent, possessive), f"{space}*{p}"
    return (rf"(?:\({s}(?:\${s})?{p}{amount}{s}\)"
            rf"|(?:[+-]{s})?{p}(?:\${s})?{p}{amount}"
            rf"|\${s}[+-]{s}{amount})")


def percent_pattern(digits: str = "+", exponent: str = "+", space: str = SPACE, possessive: bool = False) -> str:
    """x63: "62.59%" or "45.85", on the 0-100 scale."""
    p = "+" if possessive else ""
    return rf"{number_pattern(digits, exponent, possessive)}(?:{space}*{p}%)?{p}"



# What a well-formed value carries besides its signed number: dropping these characters from an
# amount leaves the number ("(" then stands for the minus sign), and likewise for a percentage.
AMOUNT_MARKS = "$,"
NEGATIVE_OPEN, NEGATIVE_CLOSE = "(", ")"
PERCENT_MARK = "%"

"""Reading the values fragments hold: amounts exactly (with the writer's uncertainty kept),
times as UTC microseconds (saying when a zone had to be assumed), assets and markets.

Pure.  Nothing here rounds: ``0.15?`` is the decimal 0.15 marked uncertain, ``1,234.5`` is
1234.5, ``1e-3`` is 0.001; text that is no number is None, never zero.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

# Marks a writer puts on an amount it is not sure of.
_UNCERTAIN_PREFIX = ("~", "≈", "about ", "approx. ", "approx ", "around ", "circa ", "ca. ")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_GROUPED = re.compile(r"^[+-]?\d{1,3}(,\d{3})+(\.\d*)?$")


@dataclass(frozen=True, slots=True)
class Amount:
    value: Decimal
    uncertain: bool = False
    text: str = ""  # as the fragment wrote it

    def __str__(self) -> str:
        return format_decimal(self.value) + ("?" if self.uncertain else "")


def format_decimal(d: Decimal) -> str:
    """A decimal as plain text, exactly, without exponent or trailing zeros after the point."""
    text = format(d, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def parse_amount(raw: object) -> Amount | None:
    """An amount as written (``0.15``, ``0.15?``, ``~0.15``, ``1,234.50``, ``-3``, ``1e-3``,
    an int); None for an empty cell or text that is not a number."""
    if raw is None or isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return Amount(Decimal(raw), False, str(raw))
    if isinstance(raw, float):
        # JSON numbers arrive as floats: their shortest repr is what the writer wrote.
        return Amount(Decimal(repr(raw)), False, repr(raw))
    text = str(raw).strip()
    original = text
    uncertain = False
    lowered = text.lower()
    for mark in _UNCERTAIN_PREFIX:
        if lowered.startswith(mark):
            text = text[len(mark) :].strip()
            uncertain = True
            break
    while text.endswith("?"):
        text = text[:-1].strip()
        uncertain = True
    if _GROUPED.match(text):
        text = text.replace(",", "")
    if not _NUMBER.match(text):
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    return Amount(value, uncertain, original)


@dataclass(frozen=True, slots=True)
class Instant:
    us: int  # UTC epoch microseconds
    zone_assumed: bool = False  # the text named no zone: UTC was assumed
    text: str = ""


_ISO = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?)?"
    r"\s*(Z|z|UTC|GMT|[+-]\d{2}(?::?\d{2})?|UTC[+-]\d{1,2}(?::?\d{2})?)?$"
)
_US_DATE = re.compile(
    r"^(\d{1,2})/(\d{1,2})/(\d{4})(?:,?\s+(\d{1,2}):(\d{2})(?::(\d{2}))?\s*(AM|PM|am|pm)?)?"
    r"\s*(Z|UTC|GMT|[+-]\d{2}(?::?\d{2})?)?$"
)


def _zone_offset_s(zone: str | None) -> int | None:
    if zone is None:
        return None
    z = zone.upper().removeprefix("UTC").removeprefix("GMT")
    if z in ("", "Z"):
        return 0
    sign = -1 if z[0] == "-" else 1
    digits = z[1:].replace(":", "")
    hours = int(digits[:-2]) if len(digits) > 2 else int(digits)
    minutes = int(digits[-2:]) if len(digits) > 2 else 0
    return sign * (hours * 3600 + minutes * 60)


def parse_time(raw: object) -> Instant | None:
    """A time as fragments write it: ISO-8601 with or without a zone (``Z``, ``+08:00``,
    ``UTC+8``), ``MM/DD/YYYY hh:mm[:ss] [AM|PM]``, or epoch seconds, milliseconds or
    microseconds (by magnitude).  No zone: UTC, with ``zone_assumed`` set."""
    if raw is None or isinstance(raw, bool):
        return None
    if isinstance(raw, (int, float)) or (
        isinstance(raw, str) and re.fullmatch(r"\d{9,17}(\.\d+)?", raw.strip())
    ):
        return _epoch(Decimal(str(raw).strip()))
    text = str(raw).strip()
    m = _ISO.match(text)
    if m:
        year, month, day = int(m[1]), int(m[2]), int(m[3])
        hour, minute, second = int(m[4] or 0), int(m[5] or 0), int(m[6] or 0)
        frac = int(((m[7] or "") + "000000")[:6])
        return _instant(year, month, day, hour, minute, second, frac, m[8], text)
    m = _US_DATE.match(text)
    if m:
        month, day, year = int(m[1]), int(m[2]), int(m[3])
        hour, minute, second = int(m[4] or 0), int(m[5] or 0), int(m[6] or 0)
        if m[7]:
            hour = hour % 12 + (12 if m[7].upper() == "PM" else 0)
        return _instant(year, month, day, hour, minute, second, 0, m[8], text)
    return None


def _instant(
    year: int,
    month: int,
    day: int,
    hour: int,
    minute: int,
    second: int,
    micros: int,
    zone: str | None,
    text: str,
) -> Instant | None:
    try:
        seconds = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    except (ValueError, OverflowError):
        return None
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and second < 61):
        return None
    offset = _zone_offset_s(zone)
    us = (seconds - (offset or 0)) * 1_000_000 + micros
    return Instant(us, offset is None, text)


def _epoch(value: Decimal) -> Instant | None:
    if value >= Decimal(10) ** 15:
        us = int(value)  # microseconds
    elif value >= Decimal(10) ** 12:
        us = int(value * 1000)  # milliseconds
    else:
        us = int(value * 1_000_000)  # seconds
    return Instant(us, False, str(value))


def iso_utc(us: int) -> str:
    """Epoch microseconds as ISO-8601 UTC with microseconds (``2022-11-08T14:03:22.123456Z``)."""
    import time

    seconds, micros = divmod(us, 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{micros:06d}Z"


def normalize_asset(raw: object) -> str | None:
    if raw is None:
        return None
    text = str(raw).strip().upper()
    return text or None


@dataclass(frozen=True, slots=True)
class Market:
    name: str
    base: str
    quote: str | None  # None for futures (``BTC-PERP``, ``BTC-1230``): quoted in USD
    future: bool


def parse_market(raw: object) -> Market | None:
    """``BTC/USD`` (spot: base and quote) or ``BTC-PERP`` / ``ETH-1230`` (FTX futures)."""
    if raw is None:
        return None
    text = str(raw).strip().upper()
    if "/" in text:
        base, _, quote = text.partition("/")
        if base and quote:
            return Market(text, base, quote, False)
        return None
    if "-" in text:
        base, _, _ = text.partition("-")
        if base:
            return Market(text, text, "USD", True)
    return None

"""Exact conversions of capture timestamps to integer epoch microseconds."""

from __future__ import annotations

import calendar
import time

_SECOND_CACHE: dict[bytes, int] = {}


def epoch_text_to_us(text: bytes) -> int:
    """``1626992741.06217`` (seconds) or an integer in s/ms/us/ns, to microseconds, exactly.

    Raises ValueError for anything else.
    """
    if b"." in text:
        whole, _, frac = text.partition(b".")
        if not whole.isdigit() or (frac and not frac.isdigit()):
            raise ValueError(f"not an epoch time: {text[:40]!r}")
        return int(whole) * 1_000_000 + int((frac + b"000000")[:6])
    if not text.isdigit():
        raise ValueError(f"not an epoch time: {text[:40]!r}")
    value = int(text)
    if value >= 10**17:  # nanoseconds
        return value // 1000
    if value >= 10**14:  # microseconds
        return value
    if value >= 10**11:  # milliseconds
        return value * 1000
    return value * 1_000_000


def iso_to_us(text: bytes) -> int:
    """``2020-03-01T00:00:00.0565201Z`` to epoch microseconds (any number of fraction digits)."""
    if len(text) < 20 or text[10:11] not in (b"T", b" ") or text[-1:] not in (b"Z", b"z"):
        raise ValueError(f"not an ISO-8601 UTC time: {text[:40]!r}")
    seconds = iso_seconds(text[:19])
    frac = text[19:-1]
    micros = 0
    if frac:
        if frac[:1] != b"." or not frac[1:].isdigit():
            raise ValueError(f"not an ISO-8601 UTC time: {text[:40]!r}")
        micros = int((frac[1:] + b"000000")[:6])
    return seconds * 1_000_000 + micros


def iso_seconds(head: bytes) -> int:
    """``2020-03-01T00:00:00`` (or with a space for the ``T``) to epoch seconds; ValueError
    for anything else.  Cached: a capture has many lines per second."""
    seconds = _SECOND_CACHE.get(head)
    if seconds is None:
        parsed = time.strptime(
            head.decode("ascii"), "%Y-%m-%dT%H:%M:%S" if head[10:11] == b"T" else "%Y-%m-%d %H:%M:%S"
        )
        seconds = calendar.timegm(parsed)
        if len(_SECOND_CACHE) > 100_000:
            _SECOND_CACHE.clear()
        _SECOND_CACHE[head] = seconds
    return seconds


def us_to_iso(us: int) -> str:
    seconds, micros = divmod(us, 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{micros:06d}Z"

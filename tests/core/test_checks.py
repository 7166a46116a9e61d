"""Clock and funding checks, and exact number handling."""

from __future__ import annotations

from decimal import Decimal

from shared.checks.funding import FundingCheck
from shared.checks.timing import Timing
from shared.formats.timestamps import epoch_text_to_us, iso_to_us, us_to_iso
from shared.numbers import INVALID, POSITIVE, ZERO, classify_qty, order_key

H = 3_600_000_000


def test_one_late_message_is_one_drift_and_does_not_move_the_median() -> None:
    t = Timing(100.0)
    found = []
    for i in range(200):
        offset = 5_000 + (i % 7) * 100 + (300_000 if i == 100 else 0)
        found.append(t.check(1_000_000 * i + offset, 1_000_000 * i))
    assert [i for i, f in enumerate(found) if f] == [100]
    lat = t.latency_ms()
    assert lat is not None and lat["max"] == 305.2 and 5.0 <= lat["p50"] <= 5.7


def test_exchange_time_going_backwards_is_drift() -> None:
    t = Timing(100.0)
    assert t.check(None, 10) is None
    assert t.check(None, 9) is not None
    assert t.check(None, 11) is None


def test_funding_schedule_rate_and_backwards() -> None:
    f = FundingCheck(8 * H, Decimal("0.03"))
    assert f.check(8 * H, "0.0001") == []
    assert f.check(8 * H, "0.0001") == []
    assert f.check(16 * H, "0.0001") == []
    ((kind, detail),) = f.check(32 * H, "0.0001")
    assert kind == "funding_discontinuity" and detail["skipped"] == 1
    ((kind, detail),) = f.check(24 * H, "0.0001")
    assert detail["reason"] == "funding time moved backwards"
    ((kind, _),) = f.check(None, "-0.04")
    assert kind == "funding_discontinuity"
    ((kind, _),) = f.check(None, "abc")
    assert kind == "invalid_value"


def test_four_hour_schedule_is_learned_not_reported() -> None:
    f = FundingCheck(8 * H, None)
    assert f.check(4 * H, None) == [] and f.check(8 * H, None) == [] and f.check(12 * H, None) == []


def test_numbers_are_exact() -> None:
    assert order_key("61800.20") == order_key("61800.2")
    assert classify_qty("0.000") == ZERO and classify_qty("0.001") == POSITIVE
    for bad in ("-1", "NaN", "inf", "1e999", "", "1.2.3", "0x10", None, [], True):
        assert classify_qty(bad) == INVALID


def test_timestamps() -> None:
    assert epoch_text_to_us(b"1626992741.06217") == 1626992741062170
    assert epoch_text_to_us(b"1723161255030314667") == 1723161255030314
    assert epoch_text_to_us(b"1723161255030") == 1723161255030000
    assert iso_to_us(b"2020-03-01T00:00:00.0565201Z") == 1583020800056520
    assert us_to_iso(1583020800056520) == "2020-03-01T00:00:00.056520Z"

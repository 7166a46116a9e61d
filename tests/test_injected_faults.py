"""Faults injected into a real capture, whose truth is known: each is found, and nothing else.

The capture is hftbacktest's Binance USD-M BTCUSDT file (REST snapshot, depth diffs
with ``pu``, trades, book tickers).  Each test changes one thing, audits the clean and the
changed file, and compares the two sets of findings.
"""

from __future__ import annotations

import gzip
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from shared.auditors import AuditConfig
from shared.engine import AuditOutcome, Engine

DATA = Path(__file__).parent / "data"
USDM = DATA / "hftbacktest" / "usdm" / "btcusdt_20240808.gz"
BOOK = ("binance-futures", "BTCUSDT", "book")
TRADES = ("binance-futures", "BTCUSDT", "trades")


def _lines() -> list[bytes]:
    with gzip.open(USDM, "rb") as fh:
        return fh.read().split(b"\n")[:-1]


LINES = _lines()


def _write(tmp_path: Path, lines: list[bytes]) -> Path:
    path = tmp_path / "btcusdt_20240808.gz"
    with gzip.open(path, "wb") as fh:
        fh.write(b"\n".join(lines) + b"\n")
    return path


def _audit(path: Path) -> AuditOutcome:
    return Engine(AuditConfig()).run([str(path)])


def _counts(outcome: AuditOutcome) -> Counter[tuple[tuple[str, str, str], str]]:
    c: Counter[tuple[tuple[str, str, str], str]] = Counter()
    for s in outcome.streams:
        for kind, n in s.faults.items():
            if n:
                c[(tuple(s.key), kind)] += n
    return c


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> AuditOutcome:
    return _audit(_write(tmp_path_factory.mktemp("clean"), LINES))


def _depth_indexes() -> list[int]:
    """Indexes of depth lines after the REST snapshot."""
    snap = next(i for i, line in enumerate(LINES) if b'"lastUpdateId"' in line[:60])
    return [i for i, line in enumerate(LINES) if i > snap and b"@depth" in line[:60]]


DEPTH = _depth_indexes()


def _data(i: int) -> dict:
    return orjson.loads(LINES[i].split(b" ", 1)[1])["data"]


def _set_data(lines: list[bytes], i: int, change: Callable[[dict], None]) -> None:
    ts, raw = lines[i].split(b" ", 1)
    obj = orjson.loads(raw)
    change(obj["data"])
    lines[i] = ts + b" " + orjson.dumps(obj)


def _diff(clean: AuditOutcome, faulty: AuditOutcome) -> Counter:
    got = _counts(faulty)
    got.subtract(_counts(clean))
    return +got


def test_clean_capture_has_no_sequence_faults(clean: AuditOutcome) -> None:
    counts = _counts(clean)
    for kind in ("gap", "duplicate", "out_of_order", "crossed_book", "invalid_value", "disconnect"):
        assert counts[(BOOK, kind)] == 0
        assert counts[(TRADES, kind)] == 0
    book = next(s for s in clean.streams if tuple(s.key) == BOOK)
    all_depth = sum(1 for line in LINES if b"@depth" in line[:60])
    assert book.messages == all_depth + 1  # every diff (before and after the snapshot) and the snapshot
    assert book.notes == {"before_snapshot": 4}  # diffs older than the snapshot, not applied


def test_dropped_diff_is_one_gap_at_the_right_place(tmp_path: Path, clean: AuditOutcome) -> None:
    k = DEPTH[3000]
    before, after = _data(DEPTH[2999]), _data(DEPTH[3001])
    lines = LINES[:k] + LINES[k + 1 :]
    faulty = _audit(_write(tmp_path, lines))
    assert _diff(clean, faulty) == Counter({(BOOK, "gap"): 1})
    book = next(s for s in faulty.streams if tuple(s.key) == BOOK)
    assert [(g.after, g.before, g.missing) for g in book.gaps] == [(before["u"], after["U"], None)]


def test_repeated_diff_is_one_duplicate(tmp_path: Path, clean: AuditOutcome) -> None:
    k = DEPTH[2000]
    lines = LINES[: k + 3] + [LINES[k]] + LINES[k + 3 :]
    assert _diff(clean, _audit(_write(tmp_path, lines))) == Counter({(BOOK, "duplicate"): 1})


def test_swapped_diffs_are_one_reordering_and_no_gap(tmp_path: Path, clean: AuditOutcome) -> None:
    a, b = DEPTH[1500], DEPTH[1501]
    lines = list(LINES)
    lines[a], lines[b] = lines[b], lines[a]
    faulty = _audit(_write(tmp_path, lines))
    assert _diff(clean, faulty) == Counter({(BOOK, "out_of_order"): 1})


def test_crossing_level_is_one_crossed_book(tmp_path: Path, clean: AuditOutcome) -> None:
    lines = list(LINES)
    _set_data(lines, DEPTH[4000], lambda d: d["b"].append(["99999.90", "1.000"]))
    assert _diff(clean, _audit(_write(tmp_path, lines))) == Counter({(BOOK, "crossed_book"): 1})


def test_negative_quantity_is_one_invalid_value(tmp_path: Path, clean: AuditOutcome) -> None:
    lines = list(LINES)
    _set_data(lines, DEPTH[2500], lambda d: d["a"][0].__setitem__(1, "-1.000"))
    faulty = _audit(_write(tmp_path, lines))
    assert _diff(clean, faulty) == Counter({(BOOK, "invalid_value"): 1})


def test_nan_and_huge_values_are_invalid_not_crashes(tmp_path: Path, clean: AuditOutcome) -> None:
    lines = list(LINES)
    _set_data(lines, DEPTH[2600], lambda d: d["a"][0].__setitem__(1, "NaN"))
    _set_data(lines, DEPTH[2601], lambda d: d["b"][0].__setitem__(0, "1e999"))
    faulty = _audit(_write(tmp_path, lines))
    # The book is unsafe after the first one; both are still recorded.
    assert _diff(clean, faulty) == Counter({(BOOK, "invalid_value"): 2})


def test_corrupted_trade_line_is_malformed_and_a_trade_gap(tmp_path: Path, clean: AuditOutcome) -> None:
    trades = [i for i, line in enumerate(LINES) if b"@trade" in line[:60]]
    k = trades[5000]
    lost = orjson.loads(LINES[k].split(b" ", 1)[1])["data"]["t"]
    lines = list(LINES)
    lines[k] = lines[k][: len(lines[k]) // 2]  # cut in the middle of the JSON
    faulty = _audit(_write(tmp_path, lines))
    assert _diff(clean, faulty) == Counter({(TRADES, "gap"): 1})
    assert faulty.inputs[0].malformed == 1 and clean.inputs[0].malformed == 0
    assert [(m.line, "invalid JSON" in m.reason) for m in faulty.malformed] == [(k + 1, True)]
    gaps = next(s for s in faulty.streams if tuple(s.key) == TRADES).gaps
    assert [(g.after, g.before, g.missing) for g in gaps] == [(lost - 1, lost + 1, 1)]


def test_shifted_receive_time_is_one_drift(tmp_path: Path, clean: AuditOutcome) -> None:
    k = DEPTH[3500]
    ts, raw = LINES[k].split(b" ", 1)
    lines = list(LINES)
    lines[k] = b"%d " % (int(ts) + 2_000_000_000) + raw  # two seconds late
    assert _diff(clean, _audit(_write(tmp_path, lines))) == Counter({(BOOK, "timestamp_drift"): 1})


def test_all_injections_together_are_found_together(tmp_path: Path, clean: AuditOutcome) -> None:
    lines = list(LINES)
    a, b = DEPTH[1500], DEPTH[1501]
    lines[a], lines[b] = lines[b], lines[a]
    dup = DEPTH[2000]
    drop = DEPTH[5000]
    lines = lines[: dup + 3] + [lines[dup]] + lines[dup + 3 : drop] + lines[drop + 1 :]
    faulty = _audit(_write(tmp_path, lines))
    assert _diff(clean, faulty) == Counter(
        {(BOOK, "out_of_order"): 1, (BOOK, "duplicate"): 1, (BOOK, "gap"): 1}
    )


# -- funding: Binance mark-price stream ------------------------------------------------
# No real funding capture with a long enough history exists in the team's data (see
# PROVENANCE.md), so this stream is generated: hourly markPriceUpdate messages whose ``T``
# is the next 8-hour settlement, in the exact shape Binance sends.

H = 3_600_000


def _mark_price_lines(hours: int, skip: range | None = None, rate: str = "0.00010000") -> list[bytes]:
    start = 1_723_075_200_000  # 2024-08-08T00:00:00Z
    out = []
    for h in range(hours):
        if skip is not None and h in skip:
            continue
        e = start + h * H + 1000
        settle = (e // (8 * H) + 1) * 8 * H
        data = {
            "e": "markPriceUpdate",
            "E": e,
            "s": "BTCUSDT",
            "p": "61000.10000000",
            "P": "61001.2",
            "i": "61002.33",
            "r": rate,
            "T": settle,
        }
        msg = {"stream": "btcusdt@markPrice", "data": data}
        out.append(b"%d " % ((e + 5) * 1_000_000) + orjson.dumps(msg))
    return out


FUNDING = ("binance-futures", "BTCUSDT", "funding")


def _funding_faults(tmp_path: Path, lines: list[bytes]) -> Counter:
    path = tmp_path / "markprice.txt"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return _counts(Engine(AuditConfig()).run([str(path)]))


def test_funding_clean_series_has_no_discontinuity(tmp_path: Path) -> None:
    assert _funding_faults(tmp_path, _mark_price_lines(72)) == Counter()


def test_skipped_settlement_is_one_funding_discontinuity(tmp_path: Path) -> None:
    # Hours 9..23 missing: T jumps from 16:00 on day 1 to 00:00 on day 2 + 8h... one settlement skipped.
    got = _funding_faults(tmp_path, _mark_price_lines(72, skip=range(8, 16)))
    assert got == Counter({(FUNDING, "funding_discontinuity"): 1})


def test_funding_rate_beyond_cap_is_reported(tmp_path: Path) -> None:
    got = _funding_faults(tmp_path, _mark_price_lines(5, rate="0.05000000"))
    assert got == Counter({(FUNDING, "funding_discontinuity"): 5})

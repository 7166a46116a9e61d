"""Tardis raw files (``<ISO-8601> <JSON>``, an empty line for a disconnect).

The messages are the real hftbacktest Binance USD-M capture, re-timed as Tardis writes its
local timestamps (the same instants, ISO-8601 with 7 fraction digits).
"""

from __future__ import annotations

import gzip
import time
from pathlib import Path

import orjson

from shared.auditors import AuditConfig
from shared.engine import Engine, rebuild_book
from shared.formats.detect import detect
from shared.formats.timestamps import iso_to_us
from shared.jsonout import materialize

USDM = Path(__file__).parent / "data" / "hftbacktest" / "usdm" / "btcusdt_20240808.gz"


def _iso(ns: int) -> bytes:
    seconds, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)).encode() + b".%07dZ" % (frac // 100)


def _tardis_lines() -> list[bytes]:
    out = []
    with gzip.open(USDM, "rb") as fh:
        for line in fh:
            ts, raw = line.rstrip(b"\n").split(b" ", 1)
            out.append(_iso(int(ts)) + b" " + raw)
    return out


def test_tardis_raw_capture_reads_like_the_original(tmp_path: Path) -> None:
    path = tmp_path / "binance-futures_2024-08-08.json.gz"
    with gzip.open(path, "wb") as fh:
        fh.write(b"\n".join(_tardis_lines()) + b"\n")
    assert detect(str(path)) == "tardis-raw"
    tardis = Engine(AuditConfig()).run([str(path)])
    original = Engine(AuditConfig()).run([str(USDM)])
    assert [(tuple(s.key), s.messages, s.faults) for s in tardis.streams] == [
        (tuple(s.key), s.messages, s.faults) for s in original.streams
    ]
    at = 1723161300_000_000
    a = rebuild_book([str(path)], "binance-futures", "BTCUSDT", at)
    b = rebuild_book([str(USDM)], "binance-futures", "BTCUSDT", at)
    assert a["bids"] == b["bids"] and a["asks"] == b["asks"] and a["safe"] and b["safe"]


def test_an_empty_line_is_a_disconnect_and_the_book_is_unknown_until_the_next_snapshot(
    tmp_path: Path,
) -> None:
    lines = _tardis_lines()
    snap = next(i for i, line in enumerate(lines) if b'"lastUpdateId"' in line[:80])
    cut = snap + 20_000
    # After the disconnect the recorder resubscribes: a fresh REST snapshot opens the rest.
    resync = next(i for i in range(cut + 500, len(lines)) if b"@depth" in lines[i][:80])
    first_after = lines[resync]
    d = orjson.loads(first_after.split(b" ", 1)[1])["data"]
    # The true book just before ``first_after`` (rebuilt from the unbroken capture) as a REST answer.
    before_resync = iso_to_us(lines[resync].split(b" ", 1)[0]) - 1
    true_book = rebuild_book([str(USDM)], "binance-futures", "BTCUSDT", before_resync, depth=100_000)
    rest = {
        "lastUpdateId": d["pu"],
        "E": d["E"],
        "T": d["T"],
        "bids": true_book["bids"],
        "asks": true_book["asks"],
    }
    rest_snapshot = first_after.split(b" ", 1)[0] + b" " + orjson.dumps(rest)
    faulty = [*lines[:cut], b"", *lines[cut:resync], rest_snapshot, *lines[resync:]]
    path = tmp_path / "capture.json"
    path.write_bytes(b"\n".join(faulty) + b"\n")
    outcome = Engine(AuditConfig()).run([str(path)])
    book = next(s for s in outcome.streams if s.key.channel == "book")
    assert book.faults["disconnect"] == 1
    assert book.faults["gap"] == 0 and book.faults["crossed_book"] == 0
    assert book.notes["before_snapshot"] > 0  # diffs between the disconnect and the new snapshot
    between = iso_to_us(lines[cut + 100].split(b" ", 1)[0])
    after = iso_to_us(lines[resync + 100].split(b" ", 1)[0])
    assert rebuild_book([str(path)], "binance-futures", "BTCUSDT", between)["safe"] is False
    assert rebuild_book([str(path)], "binance-futures", "BTCUSDT", after)["safe"] is True


def test_a_disconnect_opens_an_unsafe_interval_from_the_last_message_before_it(tmp_path: Path) -> None:
    from shared.report import report_json

    lines = _tardis_lines()
    cut = len(lines) - 5000
    path = tmp_path / "capture.json"
    path.write_bytes(b"\n".join([*lines[:cut], b"", *lines[cut:]]) + b"\n")  # no resubscription
    report = materialize(report_json(Engine(AuditConfig()).run([str(path)])))
    book = next(s for s in report["streams"] if s["channel"] == "book")
    interval = book["unsafe"][-1]
    last_before = max(iso_to_us(line.split(b" ", 1)[0]) for line in lines[:cut] if b"@depth" in line[:80])
    assert interval["cause"] == "disconnect" and interval["from_us"] == last_before
    assert interval["to"] is None  # unsafe to the end: no snapshot came
    assert book["unsafe_by_cause"]["disconnect"] == round((book["last_us"] - last_before) / 1e6, 6)

"""Engine edge cases: reading up to a time, disconnects, numbers that JSON cannot hold."""

from __future__ import annotations

from pathlib import Path

import orjson

from shared.auditors import AuditConfig
from shared.engine import Engine, rebuild_book
from shared.report import verify_records, write_outputs


def _tardis(tmp_path: Path, lines: list[bytes]) -> Path:
    path = tmp_path / "capture.json"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _depth(u: int, bids: list) -> bytes:
    data = {"e": "depthUpdate", "E": 1723161255000 + u, "s": "BTCUSDT", "U": u, "u": u, "b": bids, "a": []}
    return orjson.dumps({"stream": "btcusdt@depth", "data": data})


def test_book_at_a_time_ignores_a_disconnect_that_came_after_it(tmp_path: Path) -> None:
    snap = orjson.dumps(
        {
            "stream": "btcusdt@depthSnapshot",
            "generated": True,
            "data": {"lastUpdateId": 1, "bids": [["100", "1"]], "asks": [["101", "1"]]},
        }
    )
    path = _tardis(
        tmp_path,
        [
            b"2024-08-08T00:00:16.0000000Z " + snap,
            b"2024-08-08T00:00:17.0000000Z " + _depth(2, [["99", "1"]]),
            b"2024-08-08T00:00:18.0000000Z " + _depth(3, [["98", "1"]]),
            b"",
            b"2024-08-08T00:00:20.0000000Z " + _depth(4, [["97", "1"]]),
        ],
    )
    at = 1723075217_500_000  # 17.5 s: before the marker
    got = rebuild_book([str(path)], "binance", "BTCUSDT", at)
    assert got["safe"] is True and [p for p, _ in got["bids"]] == ["100", "99"]
    # Between 18 s and 20 s the marker's own time is unknown: the book cannot be vouched for.
    got = rebuild_book([str(path)], "binance", "BTCUSDT", at + 1_000_000)
    assert got["safe"] is False and [p for p, _ in got["bids"]] == ["100", "99", "98"]
    # Once a message past the time is read, nothing after it counts, not even a marker.
    lines = path.read_bytes().split(b"\n")
    path.write_bytes(b"\n".join([*lines[:3], lines[4], b"", b""]))
    got = rebuild_book([str(path)], "binance", "BTCUSDT", at + 1_500_000)
    assert got["safe"] is True and [p for p, _ in got["bids"]] == ["100", "99", "98"]


def test_a_disconnect_reaches_trade_streams_and_is_never_dropped(tmp_path: Path) -> None:
    def trade(t: int) -> bytes:
        return orjson.dumps(
            {
                "stream": "btcusdt@trade",
                "data": {
                    "e": "trade",
                    "E": 1723161255000 + t,
                    "s": "BTCUSDT",
                    "t": t,
                    "p": "1",
                    "q": "1",
                    "T": 1,
                    "m": True,
                    "M": True,
                },
            }
        )

    path = _tardis(
        tmp_path,
        [
            b"",
            b"2024-08-08T00:00:16.0000000Z " + trade(1),
            b"2024-08-08T00:00:17.0000000Z " + trade(2),
            b"",
            b"2024-08-08T00:00:18.0000000Z " + trade(3),
        ],
    )
    outcome = Engine(AuditConfig()).run([str(path)])
    (trades,) = outcome.streams
    assert trades.faults["disconnect"] == 1 and trades.faults["gap"] == 0
    (summary,) = outcome.inputs
    assert summary.lines == 5 and summary.ignored == 1  # the marker before anything was recorded


def test_integers_beyond_64_bits_are_written_as_text(tmp_path: Path) -> None:
    csv = tmp_path / "binance_trades_2024-08-08_BTCUSDT.csv"
    csv.write_text(
        "exchange,symbol,timestamp,local_timestamp,id,side,price,amount\n"
        "binance,BTCUSDT,1723161255000000,1723161255000100,1,buy,1,1\n"
        "binance,BTCUSDT,1723161255000000,1723161255000200,99999999999999999999999,buy,1,1\n"
    )
    outcome = Engine(AuditConfig()).run([str(csv)])
    write_outputs(outcome, str(tmp_path / "out"))
    (stream,) = orjson.loads((tmp_path / "out" / "report.json").read_bytes())["streams"]
    assert stream["gaps"][0]["before"] == "99999999999999999999999"
    assert verify_records(str(tmp_path / "out"))[0]

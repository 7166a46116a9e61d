"""The spool keeps order, counts, sorts stably and survives integers JSON cannot hold."""

from __future__ import annotations

import random

import orjson

from shared.auditors import finding_spool
from shared.model import Finding, StreamKey
from shared.spool import Spool, encode_row


def _pairs(items: list[tuple[int, str]], limit: int) -> Spool[tuple[int, str]]:
    return Spool(list, lambda row: (row[0], row[1]), items, limit=limit)


def test_order_and_count_across_memory_and_disk() -> None:
    items = [(i, f"x{i}") for i in range(1000)]
    spool = _pairs(items, limit=7)
    assert len(spool) == 1000 and bool(spool)
    assert list(spool) == items
    spool.append((1000, "x1000"))  # appending after a read goes to the end, not over it
    assert list(spool)[-2:] == [(999, "x999"), (1000, "x1000")]
    assert [orjson.loads(line)[0] for line in spool.lines()] == list(range(1001))
    spool.close()


def test_copying_lines_keeps_order_and_memory_items() -> None:
    first = _pairs([(i, "a") for i in range(10)], limit=3)
    second = _pairs([(100, "b")], limit=50)
    second.extend(first)
    second.append((200, "c"))
    assert [i for i, _ in second] == [100, *range(10), 200]
    assert len(second) == 12


def test_sorted_is_stable_and_bounded() -> None:
    rng = random.Random(5)
    items = [(rng.randrange(20), f"{n}") for n in range(5000)]
    spool = _pairs(items, limit=64)
    assert list(spool.sorted(key=lambda p: p[0])) == sorted(items, key=lambda p: p[0])
    assert list(_pairs(items[:10], limit=64).sorted(key=lambda p: p[0])) == sorted(
        items[:10], key=lambda p: p[0]
    )


def test_empty_spool() -> None:
    spool = _pairs([], limit=4)
    assert not spool and len(spool) == 0 and list(spool) == [] and list(spool.sorted(key=str)) == []


def test_big_integers_are_written_as_text() -> None:
    assert orjson.loads(encode_row({"seq": 2**70, "n": [1, 2**64]})) == {
        "seq": str(2**70),
        "n": [1, str(2**64)],
    }


def test_findings_round_trip_through_disk() -> None:
    key = StreamKey("binance-futures", "BTCUSDT", "depth")
    found = [Finding(key, "gap", "a.gz", n, n * 10, {"n": n, "seq": 2**65}) for n in range(50)]
    spool = finding_spool(key, found[:3])
    assert list(spool) == found[:3]  # in memory: as they were
    spool.limit = 8
    spool.extend(found[3:])
    again = list(spool)
    assert len(again) == 50 and [f.line for f in again] == list(range(50))
    assert again[7] == Finding(key, "gap", "a.gz", 7, 70, {"n": 7, "seq": str(2**65)})

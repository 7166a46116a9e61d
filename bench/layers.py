"""Benchmark: where the time of one message goes, layer by layer, on the small-message stream.

Each row runs everything above it plus one more layer over the same plain-text capture (the
USD-M-like stream of small messages ``bench/run.py`` builds, about 8.5 level updates a message)
and prints the best of three in microseconds per message, and what the layer added:
reading lines; splitting the epoch and building the raw record; ``orjson.loads``; the shape
watch (format changes); the venue's parse into a book message; and the whole engine (dispatch,
sequencing, the exact book, every check).  No profiler: profilers inflate small calls.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from bench.run import OUT, build_small_messages
from shared.auditors import AuditConfig
from shared.checks.shapes import ShapeWatch
from shared.engine import Engine
from shared.exchanges import venue_for_message
from shared.formats.lines import iter_lines
from shared.formats.readers import read_epoch


def layers(path: str) -> list[tuple[str, Callable[[], object]]]:
    def lines() -> None:
        for _ in iter_lines(path):
            pass

    def records() -> None:
        for _ in read_epoch(path):
            pass

    def parsed() -> None:
        for r in read_epoch(path):
            orjson.loads(r.raw)

    def shapes() -> None:
        watch = ShapeWatch()
        for r in read_epoch(path):
            watch.check(orjson.loads(r.raw))

    def venue() -> None:
        watch = ShapeWatch()
        session = None
        for r in read_epoch(path):
            obj = orjson.loads(r.raw)
            watch.check(obj)
            if session is None:
                found = venue_for_message(obj)
                assert found is not None
                session = found.session(None)
            session.parse(r, obj)

    def engine() -> None:
        Engine(AuditConfig()).run([path])

    return [
        ("read lines", lines),
        ("+ split the epoch, build the raw record", records),
        ("+ orjson.loads", parsed),
        ("+ shape watch (format changes)", shapes),
        ("+ venue parse into a book message", venue),
        ("+ dispatch, sequencing, exact book, checks", engine),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=250_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "usdm_small_messages.txt"
    count, _ = build_small_messages(Path(path), args.messages)
    count += 1  # the snapshot line
    previous = 0.0
    for name, fn in layers(str(path)):
        best = float("inf")
        for _ in range(args.repeat):
            t = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t)
        us = best / count * 1e6
        print(f"{name:<45} {us:6.2f} us/message  (+{us - previous:5.2f})")
        previous = us


if __name__ == "__main__":
    main()

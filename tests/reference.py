"""A deliberately simple, independent Binance order-book rebuild, used only by tests.

It shares no code with ``shared/``: its own line parsing (stdlib ``json`` with
``parse_float=Decimal``), plain dicts keyed by ``Decimal`` price, ``sorted()`` for output.
Prices and quantities are returned as the exact text of the input.

Inputs:
- hftbacktest captures: gzip text, ``<epoch ns> <raw JSON>`` per line; the REST snapshot is
  a bare ``{"lastUpdateId": ...}`` object (one symbol per file);
- cryptofeed captures: ``*.ws.N.0`` (``<epoch s>: <json>`` received lines) and
  ``*.http.0.0`` (``<url> -> <epoch s>: <body>``, the symbol in the URL), merged by
  receive time.

Bridging (Binance's documented procedure, diffs received before the snapshot are buffered):
spot drops diffs with ``u <= L`` and the first kept needs ``U <= L + 1 <= u``, then
``U == previous u + 1``; futures drop ``u < L`` and the first kept needs ``U <= L <= u`` or
``pu == L``, then ``pu == previous u``.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from typing import Any

_HTTP = re.compile(r"^(\S+) -> (\d+(?:\.\d*)?): (.*)$", re.S)
_RECEIVED = re.compile(r"^(\d+\.\d*): (.*)$", re.S)
_EPOCH = re.compile(r"^(\d{16,20}) (.*)$", re.S)
_URL_SYMBOL = re.compile(r"[?&]symbol=([A-Za-z0-9_]+)")


def _seconds_to_us(text: str) -> int:
    whole, _, frac = text.partition(".")
    return int(whole) * 1_000_000 + int((frac + "000000")[:6])


def _open_text(path: str) -> Iterator[str]:
    with open(path, "rb") as fh:
        magic = fh.read(2)
    opener = gzip.open if magic == b"\x1f\x8b" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            yield line.rstrip("\r\n")


@dataclass(order=True)
class _Event:
    """One book message for the requested symbol: a REST snapshot or a depth diff."""

    recv_us: int
    file_no: int
    line_no: int
    snapshot: bool = field(compare=False)
    data: dict[str, Any] = field(compare=False)


@lru_cache(maxsize=16)
def _events(path: str, file_no: int, symbol: str) -> tuple[_Event, ...]:
    """The symbol's book messages in one file (cached: tests ask for the same captures repeatedly)."""
    out: list[_Event] = []
    for line_no, line in enumerate(_open_text(path), 1):
        url: str | None = None
        m = _EPOCH.match(line)
        if m is not None:
            recv_us = int(m.group(1)) // 1000  # nanoseconds
            body = m.group(2)
        elif (m := _RECEIVED.match(line)) is not None:
            recv_us = _seconds_to_us(m.group(1))
            body = m.group(2)
        elif (m := _HTTP.match(line)) is not None:
            url = m.group(1)
            recv_us = _seconds_to_us(m.group(2))
            body = m.group(3)
        else:
            continue  # headers, sent messages, blank lines
        if '"depthUpdate"' not in body and '"lastUpdateId"' not in body:
            continue  # cheap skip of trades, tickers, klines
        obj = json.loads(body, parse_float=Decimal)
        if not isinstance(obj, dict):
            continue
        data = obj.get("data", obj) if "stream" in obj else obj
        if "lastUpdateId" in data:
            if url is not None:
                found = _URL_SYMBOL.search(url)
                if found is None or found.group(1).upper() != symbol:
                    continue
            out.append(_Event(recv_us, file_no, line_no, True, data))
        elif data.get("e") == "depthUpdate" and str(data.get("s", "")).upper() == symbol:
            out.append(_Event(recv_us, file_no, line_no, False, data))
    return tuple(out)


class _RefBook:
    def __init__(self, futures: bool) -> None:
        self.futures = futures
        self.bids: dict[Decimal, tuple[str, str]] = {}
        self.asks: dict[Decimal, tuple[str, str]] = {}
        self.have_snapshot = False
        self.snapshot_id = 0
        self.last: int | None = None  # last applied u; None while bridging
        self.safe = False
        self.buffered: list[dict[str, Any]] = []
        self.gaps = 0

    @staticmethod
    def _set(side: dict[Decimal, tuple[str, str]], levels: list[list[str]]) -> None:
        for price, qty in levels:
            key = Decimal(price)
            if Decimal(qty) == 0:
                side.pop(key, None)
            elif key in side:
                side[key] = (side[key][0], qty)  # same price written another way keeps its text
            else:
                side[key] = (price, qty)

    def snapshot(self, data: dict[str, Any]) -> None:
        if self.have_snapshot and self.last is not None and self.safe:
            return  # in sync: a later REST snapshot only confirms the book
        self.bids = {}
        self.asks = {}
        self._set(self.bids, data["bids"])
        self._set(self.asks, data["asks"])
        self.have_snapshot = True
        self.snapshot_id = int(data["lastUpdateId"])
        self.last = None
        self.safe = True
        pending, self.buffered = self.buffered, []
        for d in pending:
            self.diff(d)

    def diff(self, d: dict[str, Any]) -> None:
        if not self.have_snapshot:
            self.buffered.append(d)
            return
        first, last = int(d["U"]), int(d["u"])
        prev = d.get("pu")
        if self.last is None:
            big_l = self.snapshot_id
            if self.futures:
                if last < big_l:
                    return
                ok = first <= big_l <= last or prev == big_l
            else:
                if last <= big_l:
                    return
                ok = first <= big_l + 1 <= last
        else:
            if last <= self.last:
                return  # already applied
            ok = prev == self.last if self.futures else first == self.last + 1
        if not ok:
            self.gaps += 1
            self.safe = False
        self._set(self.bids, d["b"])
        self._set(self.asks, d["a"])
        self.last = last

    def view(self) -> dict[str, Any]:
        return {
            "bids": [list(self.bids[k]) for k in sorted(self.bids, reverse=True)],
            "asks": [list(self.asks[k]) for k in sorted(self.asks)],
            "safe": self.have_snapshot and self.last is not None and self.safe,
        }


def reference_books(paths: Sequence[str], symbol: str, points: Sequence[int]) -> dict[int, dict[str, Any]]:
    """The book at each of ``points`` (epoch us) in one pass: after every message received at or before it.

    Each value is ``{"bids": [[price, qty], ...], "asks": [...], "safe": bool}``, best first, full depth.
    """
    symbol = symbol.upper()
    events: list[_Event] = []
    for file_no, path in enumerate(paths):
        events.extend(_events(path, file_no, symbol))
    events.sort()  # by receive time, then file, then line
    futures = any("pu" in e.data for e in events if not e.snapshot)
    book = _RefBook(futures)
    todo = sorted(set(points))
    out: dict[int, dict[str, Any]] = {}
    i = 0
    for at in todo:
        while i < len(events) and events[i].recv_us <= at:
            e = events[i]
            if e.snapshot:
                book.snapshot(e.data)
            else:
                book.diff(e.data)
            i += 1
        out[at] = book.view()
    return out


def reference_book(paths: Sequence[str], symbol: str, at_us: int) -> dict[str, Any]:
    return reference_books(paths, symbol, [at_us])[at_us]


def receive_times(paths: Sequence[str], symbol: str) -> tuple[list[int], list[int]]:
    """Receive times (us) of the symbol's REST snapshots and of its depth diffs (for picking test points)."""
    snaps: list[int] = []
    diffs: list[int] = []
    for file_no, path in enumerate(paths):
        for e in _events(path, file_no, symbol.upper()):
            (snaps if e.snapshot else diffs).append(e.recv_us)
    return sorted(snaps), sorted(diffs)

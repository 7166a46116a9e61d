"""A deliberately simple, independent order-book rebuild (Binance, and below OKX, Kraken spot, Deribit,
Bybit v5, Kraken Futures and Coinbase), used only by tests.

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

Other venues (``venue_books``): a snapshot message resets the book; updates before the first snapshot
are dropped; a break in the venue's ids (Deribit ``prev_change_id``, Kraken Futures ``seq``, Bybit ``u``,
OKX ``prevSeqId`` when sent) or a checksum that differs from the reference's own CRC (OKX, Kraken) makes
the book unsafe until the next snapshot.
"""

from __future__ import annotations

import gzip
import json
import re
import zlib
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


# ---------------------------------------------------------------------------------------------------------
# Other venues: OKX v5, Kraken spot v1, Deribit, Bybit v5, Kraken Futures, Coinbase.
#
# Same approach: stdlib ``json`` (JSON numbers become ``Decimal``, so their text is the number as sent),
# plain dicts keyed by ``Decimal`` price, ``sorted()`` for output.  Every venue is reduced to a list of
# messages per instrument (snapshot or update; levels ``(price, qty)`` where qty ``None`` deletes), then one
# replay applies them in receive order with the venue's continuity rule, depth limit and checksum.
# ---------------------------------------------------------------------------------------------------------

Level = tuple[str, str | None]  # (price text, qty text); qty None: remove the price


@dataclass(frozen=True)
class VenueMsg:
    """One book message of one instrument."""

    recv_us: int | None  # None: the capture has no receive time (plain JSON lines)
    file_no: int
    line_no: int
    snapshot: bool
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]
    checksum: int | None = None  # as sent, compared with the book after the message
    first: int | None = None  # sequence ids, when the venue has them
    prev: int | None = None
    last: int | None = None
    depth: int | None = None  # keep only this many levels per side after the message


def _text(value: Any) -> str:
    """A JSON string as sent, or the text of a JSON number (decoded as Decimal or int)."""
    return value if isinstance(value, str) else str(value)


def _levels(rows: Any, price_at: int = 0, qty_at: int = 1) -> tuple[Level, ...]:
    out: list[Level] = []
    for row in rows:
        qty = _text(row[qty_at])
        out.append((_text(row[price_at]), None if Decimal(qty) == 0 else qty))
    return tuple(out)


_Parsed = list[tuple[str, dict[str, Any]]]  # (instrument, VenueMsg fields other than position)


def _parse_okx(obj: Any) -> _Parsed:
    """v5 ``books``: ``{"arg": {"channel", "instId"}, "action", "data": [{asks, bids, checksum}]}``."""
    if not isinstance(obj, dict) or not str(obj.get("arg", {}).get("channel", "")).startswith("books"):
        return []
    if obj.get("action") not in ("snapshot", "update"):
        return []
    out: _Parsed = []
    for d in obj["data"]:
        out.append(
            (
                obj["arg"]["instId"],
                {
                    "snapshot": obj["action"] == "snapshot",
                    "bids": _levels(d["bids"]),
                    "asks": _levels(d["asks"]),
                    "checksum": d.get("checksum"),
                    "prev": d.get("prevSeqId"),
                    "last": d.get("seqId"),
                },
            )
        )
    return out


def _parse_kraken(obj: Any) -> _Parsed:
    """v1 ``[channelID, {as, bs} | {a} | {b} | {a}, {b}, ..., "book-N", pair]``; ``c`` in the last dict."""
    if not isinstance(obj, list) or len(obj) < 4 or not str(obj[-2]).startswith("book-"):
        return []
    parts = [p for p in obj[1:-2] if isinstance(p, dict)]
    snapshot = any("as" in p or "bs" in p for p in parts)
    bids: list[Level] = []
    asks: list[Level] = []
    checksum = None
    for p in parts:
        bids.extend(_levels(p.get("bs" if snapshot else "b", ())))
        asks.extend(_levels(p.get("as" if snapshot else "a", ())))
        if "c" in p:
            checksum = int(p["c"])
    depth = int(str(obj[-2]).split("-", 1)[1])
    fields = {"snapshot": snapshot, "bids": tuple(bids), "asks": tuple(asks), "checksum": checksum}
    return [(str(obj[-1]), {**fields, "depth": depth})]


def _parse_deribit(obj: Any) -> _Parsed:
    """``book.<inst>.raw``: ``data`` snapshot, then ``change`` with ``[action, price, amount]``."""
    if not isinstance(obj, dict) or obj.get("method") != "subscription":
        return []
    params = obj["params"]
    channel = str(params.get("channel", ""))
    if not channel.startswith("book.") or not channel.endswith(".raw"):
        return []
    d = params["data"]

    def side(rows: Any) -> tuple[Level, ...]:
        return tuple(
            (_text(price), None if action == "delete" else _text(amount)) for action, price, amount in rows
        )

    return [
        (
            d["instrument_name"],
            {
                "snapshot": d["type"] == "snapshot",
                "bids": side(d["bids"]),
                "asks": side(d["asks"]),
                "prev": d.get("prev_change_id"),
                "last": d["change_id"],
            },
        )
    ]


def _parse_bybit(obj: Any) -> _Parsed:
    """v5 ``orderbook.N.SYMBOL``: ``type`` snapshot/delta, ``data {s, b, a, u, seq}``; ``u == 1`` resets."""
    if not isinstance(obj, dict) or not str(obj.get("topic", "")).startswith("orderbook."):
        return []
    d = obj["data"]
    u = int(d["u"])
    return [
        (
            d["s"],
            {
                "snapshot": obj["type"] == "snapshot" or u == 1,
                "bids": _levels(d["b"]),
                "asks": _levels(d["a"]),
                "first": u,
                "last": u,
            },
        )
    ]


def _parse_kraken_futures(obj: Any) -> _Parsed:
    """``book_snapshot`` (``bids``/``asks`` of ``{price, qty}``) and ``book`` (one ``side, price, qty``)."""
    if not isinstance(obj, dict) or "event" in obj:
        return []
    feed = obj.get("feed")
    if feed == "book_snapshot":
        fields = {
            "snapshot": True,
            "bids": _levels([(x["price"], x["qty"]) for x in obj["bids"]]),
            "asks": _levels([(x["price"], x["qty"]) for x in obj["asks"]]),
        }
    elif feed == "book":
        level = _levels([(obj["price"], obj["qty"])])
        buy = obj["side"] == "buy"
        fields = {"snapshot": False, "bids": level if buy else (), "asks": () if buy else level}
    else:
        return []
    seq = int(obj["seq"])
    return [(str(obj["product_id"]).upper(), {**fields, "first": seq, "last": seq})]


def _parse_coinbase(obj: Any) -> _Parsed:
    """level2: ``snapshot`` (``bids``/``asks``: ``[price, size]``), ``l2update`` (``[side, price, size]``)."""
    if not isinstance(obj, dict):
        return []
    kind = obj.get("type")
    if kind == "snapshot":
        fields = {"snapshot": True, "bids": _levels(obj["bids"]), "asks": _levels(obj["asks"])}
    elif kind == "l2update":
        changes = obj["changes"]
        fields = {
            "snapshot": False,
            "bids": _levels([c for c in changes if c[0] == "buy"], 1, 2),
            "asks": _levels([c for c in changes if c[0] == "sell"], 1, 2),
        }
    else:
        return []
    return [(obj["product_id"], fields)]


def okx_checksum(bids: Sequence[Sequence[str]], asks: Sequence[Sequence[str]]) -> int:
    """OKX: top 25 interleaved ``bidPx:bidSz:askPx:askSz``, one side alone once the other runs out; signed."""
    parts: list[str] = []
    for i in range(25):
        if i < len(bids):
            parts.extend(bids[i][:2])
        if i < len(asks):
            parts.extend(asks[i][:2])
    crc = zlib.crc32(":".join(parts).encode())
    return crc - (1 << 32) if crc >= 1 << 31 else crc


def kraken_checksum(bids: Sequence[Sequence[str]], asks: Sequence[Sequence[str]]) -> int:
    """Kraken: top 10 asks then top 10 bids, price then quantity, '.' removed, leading zeros stripped."""
    text = "".join(t.replace(".", "").lstrip("0") for level in [*asks[:10], *bids[:10]] for t in level[:2])
    return zlib.crc32(text.encode())


@dataclass(frozen=True)
class _VenueRule:
    parse: Any  # Callable[[Any], _Parsed]
    marker: str  # a cheap substring test before decoding a line
    continuity: str | None = None  # "consecutive" (first == last + 1), "prev" (prev == last), None
    checksum: Any = None  # Callable[[bids, asks], int] | None


VENUES: dict[str, _VenueRule] = {
    "okx": _VenueRule(_parse_okx, '"books', "prev", okx_checksum),
    "kraken": _VenueRule(_parse_kraken, '"book-', None, kraken_checksum),
    "deribit": _VenueRule(_parse_deribit, '"book.', "prev"),
    "bybit": _VenueRule(_parse_bybit, '"orderbook.', "consecutive"),
    "kraken-futures": _VenueRule(_parse_kraken_futures, '"book', "consecutive"),
    "coinbase": _VenueRule(_parse_coinbase, '"type":"', None),
}


@lru_cache(maxsize=32)
def _venue_events(path: str, file_no: int, venue: str) -> dict[str, tuple[VenueMsg, ...]]:
    """Every instrument's book messages in one file, in file order."""
    rule = VENUES[venue]
    out: dict[str, list[VenueMsg]] = {}
    for line_no, line in enumerate(_open_text(path), 1):
        recv_us: int | None
        if (m := _RECEIVED.match(line)) is not None:
            recv_us = _seconds_to_us(m.group(1))
            body = m.group(2)
        elif line.startswith(("{", "[")):
            recv_us = None  # plain JSON lines: no receive time
            body = line
        else:
            continue  # header, sent requests, blank lines
        if rule.marker not in body:
            continue
        obj = json.loads(body, parse_float=Decimal)
        for symbol, fields in rule.parse(obj):
            out.setdefault(symbol, []).append(VenueMsg(recv_us, file_no, line_no, **fields))
    return {s: tuple(msgs) for s, msgs in out.items()}


def _venue_stream(paths: Sequence[str], venue: str, symbol: str) -> list[VenueMsg]:
    msgs: list[VenueMsg] = []
    for file_no, path in enumerate(paths):
        msgs.extend(_venue_events(path, file_no, venue).get(symbol, ()))
    msgs.sort(key=lambda m: (m.recv_us if m.recv_us is not None else -1, m.file_no, m.line_no))
    return msgs


def venue_symbols(paths: Sequence[str], venue: str) -> list[str]:
    """Instruments with at least one book message."""
    found: set[str] = set()
    for file_no, path in enumerate(paths):
        found.update(_venue_events(path, file_no, venue))
    return sorted(found)


def venue_receive_times(paths: Sequence[str], venue: str, symbol: str) -> tuple[list[int], list[int]]:
    """Receive times (us) of the instrument's snapshots and of its updates."""
    snaps: list[int] = []
    updates: list[int] = []
    for m in _venue_stream(paths, venue, symbol):
        if m.recv_us is not None:
            (snaps if m.snapshot else updates).append(m.recv_us)
    return snaps, updates


class _VenueBook:
    def __init__(self, rule: _VenueRule) -> None:
        self.rule = rule
        self.bids: dict[Decimal, tuple[str, str]] = {}
        self.asks: dict[Decimal, tuple[str, str]] = {}
        self.have_snapshot = False
        self.safe = False
        self.last: int | None = None
        # (line, checksum sent, checksum of the book) for every message carrying one
        self.checksums: list[tuple[int, int, int]] = []

    @staticmethod
    def _set(side: dict[Decimal, tuple[str, str]], levels: Sequence[Level]) -> None:
        for price, qty in levels:
            key = Decimal(price)
            if qty is None:
                side.pop(key, None)
            elif key in side:
                side[key] = (side[key][0], qty)  # same price written another way keeps its text
            else:
                side[key] = (price, qty)

    def sorted_bids(self) -> list[tuple[str, str]]:
        return [self.bids[k] for k in sorted(self.bids, reverse=True)]

    def sorted_asks(self) -> list[tuple[str, str]]:
        return [self.asks[k] for k in sorted(self.asks)]

    def apply(self, m: VenueMsg) -> None:
        if m.snapshot:
            self.bids = {}
            self.asks = {}
            self.have_snapshot = True
            self.safe = True
            self.last = m.last
        elif not self.have_snapshot:
            return  # an update before any snapshot has nothing to apply to
        elif self.rule.continuity is not None and m.last is not None:
            if self.last is not None and m.last <= self.last:
                return  # already applied
            if self.last is not None:
                if self.rule.continuity == "consecutive":
                    follows = m.first == self.last + 1
                else:
                    follows = m.prev == self.last
                if not follows:
                    self.safe = False  # a gap: the book is unknown until the next snapshot
            self.last = m.last
        self._set(self.bids, m.bids)
        self._set(self.asks, m.asks)
        if m.depth is not None:
            for side, best_first in ((self.bids, True), (self.asks, False)):
                if len(side) > m.depth:
                    for k in sorted(side, reverse=best_first)[m.depth :]:
                        del side[k]
        if m.checksum is not None and self.rule.checksum is not None:
            computed = self.rule.checksum(self.sorted_bids(), self.sorted_asks())
            self.checksums.append((m.line_no, int(m.checksum), computed))
            if computed != int(m.checksum):
                self.safe = False

    def view(self) -> dict[str, Any]:
        return {
            "bids": [list(level) for level in self.sorted_bids()],
            "asks": [list(level) for level in self.sorted_asks()],
            "safe": self.have_snapshot and self.safe,
        }


def venue_books(
    paths: Sequence[str], venue: str, symbol: str, points: Sequence[int]
) -> dict[int, dict[str, Any]]:
    """The instrument's book at each of ``points`` (epoch us): after every message received at or before it.

    Each value is ``{"bids": [[price, qty], ...], "asks": [...], "safe": bool}``, best first, full depth.
    """
    msgs = _venue_stream(paths, venue, symbol)
    if any(m.recv_us is None for m in msgs):
        raise ValueError("the capture has no receive times: use venue_final_book")
    book = _VenueBook(VENUES[venue])
    out: dict[int, dict[str, Any]] = {}
    i = 0
    for at in sorted(set(points)):
        while i < len(msgs) and msgs[i].recv_us <= at:  # type: ignore[operator]
            book.apply(msgs[i])
            i += 1
        out[at] = book.view()
    return out


def venue_final_book(paths: Sequence[str], venue: str, symbol: str) -> dict[str, Any]:
    """The instrument's book after every message of the capture (in receive order, else file order)."""
    book = _VenueBook(VENUES[venue])
    for m in _venue_stream(paths, venue, symbol):
        book.apply(m)
    return book.view()


def venue_checksums(paths: Sequence[str], venue: str) -> dict[str, list[tuple[int, int, int]]]:
    """Per instrument, ``(line, checksum sent, checksum of the reference book)`` for each message with one."""
    out: dict[str, list[tuple[int, int, int]]] = {}
    for symbol in venue_symbols(paths, venue):
        book = _VenueBook(VENUES[venue])
        for m in _venue_stream(paths, venue, symbol):
            book.apply(m)
        out[symbol] = book.checksums
    return out

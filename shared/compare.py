"""Comparing two recordings of the same streams (``retape compare A B``).

Each side is read by the audit's own :class:`~shared.engine.Engine` (formats by content, capture
groups merged by receive time, venue sessions, lines that cannot be read and cut-off ends counted
as malformed), which tells the comparison of every market-data message it feeds and every book
message it applies; each message is kept per stream (exchange x symbol x channel) with its identity:

- by id where the venue numbers its messages: book messages by their sequence ids (Binance
  ``U``/``u``, OKX ``seqId``, Deribit ``change_id``, Bybit ``u``, Kraken Futures ``seq``,
  Bitfinex's sequence...), trades by trade id (per id series);
- by content otherwise: the exchange time and the parsed message (levels or trade values,
  numbers compared by exact value), the n-th copy on one side matched with the n-th on the
  other.  A stream is matched by id only when every message of both sides carries one.

Per stream the comparison gives the messages only in A, only in B and in both (a second copy of
an id on one side is one of its ``duplicates``); for venues with a continuity rule, each side's
breaks of it (a message's ids as the audit applied it: Bitfinex links messages once the
connection's sequence proves them) and whether the other side holds the missing messages; the
receive-time difference (B minus A) of matched messages; and, for books, the top ``depth`` levels
of each side's book (rebuilt by the audit's :class:`~shared.auditors.BookAuditor`) after every
matched message.

Receive times are each recorder's own clock: the differences include whatever offset lies
between the two clocks.
"""

from __future__ import annotations

import hashlib
import os
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, NamedTuple

import orjson

from shared.auditors import AuditConfig, BookAuditor
from shared.book import Book
from shared.engine import Engine, stream_order
from shared.exchanges import rules_for
from shared.formats.timestamps import us_to_iso
from shared.model import BookMsg, Channel, FundingMsg, StreamKey, TradeMsg
from shared.numbers import as_text, exact_decimal
from shared.sequencing import Increasing, Rule

CLOCK_NOTE = (
    "receive times are each recorder's own clock: B minus A includes any offset between the two clocks"
)
GAP_LIST_LIMIT = 20  # gaps listed per side and stream (the counts cover them all)


@dataclass(frozen=True, slots=True)
class CompareConfig:
    depth: int = 10  # book levels compared per side
    examples: int = 5  # book disagreements described per stream
    reorder_window: int = 64  # as the audit's: the book rebuild repairs reordering inside it


# -- exact values --------------------------------------------------------------------------

_CANON: dict[str, str] = {}


def canon(value: Any) -> str:
    """A number's exact value as plain text (``"0.100"`` and ``"0.1"`` are one value); text
    that is not a finite decimal stays as it is."""
    text = as_text(value)
    got = _CANON.get(text)
    if got is None:
        d = exact_decimal(text)
        if d is None:
            got = text
        else:
            d = d.normalize()
            got = "0" if d.is_zero() else format(d, "f")
        if len(_CANON) > 400_000:
            _CANON.clear()
        _CANON[text] = got
    return got


def _levels(levels: Iterable[Any]) -> list[list[str]]:
    out: list[list[str]] = []
    for lv in levels:
        if isinstance(lv, (list, tuple)) and len(lv) >= 2:
            out.append([canon(lv[0]), canon(lv[1])])
        else:
            out.append([repr(lv)])
    return out


def _digest(value: Any) -> bytes:
    return hashlib.blake2b(orjson.dumps(value), digest_size=16).digest()


# -- what is kept of each message ----------------------------------------------------------


class Link(NamedTuple):
    """A message's sequence ids, as the venue's continuity rule reads them."""

    first_id: int
    last_id: int
    prev_id: int | None
    snapshot: bool


class _Rec:
    """One message of one side: identities, where it was read, and (books) the book after it."""

    __slots__ = ("book", "content", "exch_us", "ident", "line", "link", "local_us", "path", "safe", "series")

    def __init__(
        self,
        ident: tuple[Any, ...] | None,
        content: bytes,
        local_us: int | None,
        exch_us: int | None,
        path: str,
        line: int,
        link: Link | None = None,
        series: str = "",
    ) -> None:
        self.ident = ident
        self.content = content
        self.local_us = local_us
        self.exch_us = exch_us
        self.path = path
        self.line = line
        self.link = link
        self.series = series
        self.book: bytes | None = None  # digest of the top levels after it was applied
        self.safe = False


def _book_kind(m: BookMsg) -> str:
    if m.bridge:
        return "rest"  # a REST snapshot the stream is bridged onto (Binance)
    return "snapshot" if m.snapshot or m.reset else "delta"


def book_record(m: BookMsg, rule: Rule) -> _Rec:
    kind = _book_kind(m)
    content = _digest(["b", kind, m.exch_us, m.checksum, _levels(m.bids), _levels(m.asks)])
    last = m.last_id
    if not rule.has_ids or not isinstance(last, int):
        return _Rec(None, content, m.local_us, m.exch_us, m.path, m.line)
    first = m.first_id if isinstance(m.first_id, int) else last
    prev = m.prev_id if isinstance(m.prev_id, int) else None
    # A REST snapshot is no link of the chain: the diffs around it are.
    link = None if kind == "rest" else Link(first, last, prev, kind == "snapshot")
    return _Rec(("b", kind, m.first_id, last), content, m.local_us, m.exch_us, m.path, m.line, link)


def trade_record(t: TradeMsg) -> _Rec:
    content = _digest(["t", t.series, t.exch_us, canon(t.price), canon(t.qty), t.side])
    tid = t.trade_id
    ident = None if tid is None else ("t", t.series, tid)
    link = Link(tid, tid, None, False) if isinstance(tid, int) else None
    return _Rec(ident, content, t.local_us, t.exch_us, t.path, t.line, link, t.series)


def funding_record(f: FundingMsg) -> _Rec:
    rate = None if f.rate is None else canon(f.rate)
    content = _digest(["f", f.exch_us, f.funding_time_us, rate])
    return _Rec(None, content, f.local_us, f.exch_us, f.path, f.line)


class Top(NamedTuple):
    """The best levels of a book, best first, as the exchange wrote them, and its safety."""

    bids: list[tuple[str, str]]
    asks: list[tuple[str, str]]
    safe: bool


def top_levels(book: Book, depth: int, safe: bool = False) -> Top:
    book.bids.best_key()  # drops deleted levels at the top of the heaps: top() walks less
    book.asks.best_key()
    bids = [(as_text(p), as_text(q)) for p, q in book.bids.top(depth)]
    asks = [(as_text(p), as_text(q)) for p, q in book.asks.top(depth)]
    return Top(bids, asks, safe)


def book_digest(book: Book, depth: int) -> bytes:
    top = top_levels(book, depth)
    return _digest([[[canon(p), canon(q)] for p, q in side] for side in (top.bids, top.asks)])


# -- reading one side ----------------------------------------------------------------------

# Book messages whose index is kept until the rebuild applies them: past this many, the map is
# emptied when the rebuild holds none back.
HELD_LIMIT = 4096


class _Stream:
    """One stream of one side: its messages in arrival order and, for books, the audit's
    rebuilt book after each of them."""

    def __init__(self, key: StreamKey, cfg: CompareConfig, capture: set[int] | None = None) -> None:
        self.key = key
        self.depth = cfg.depth
        self.rule = rules_for(key.exchange).book_rule
        self.recs: list[_Rec] = []
        self.count = 0
        # Book messages fed to the rebuild and maybe not applied yet: object id -> index.
        self.held: dict[int, int] = {}
        # Second reading: the full top levels after the messages at these indexes.
        self.capture = capture
        self.captured: dict[int, Top] = {}

    def add(self, ev: BookMsg | TradeMsg | FundingMsg, auditor: BookAuditor | None) -> None:
        """``ev`` arrived; ``auditor`` is the stream's rebuild it is about to be fed to."""
        index = self.count
        self.count += 1
        if self.capture is None:
            if isinstance(ev, BookMsg):
                self.recs.append(book_record(ev, self.rule))
            elif isinstance(ev, TradeMsg):
                self.recs.append(trade_record(ev))
            else:
                self.recs.append(funding_record(ev))
        if isinstance(ev, BookMsg):
            if len(self.held) > HELD_LIMIT and (auditor is None or not auditor.holding):
                self.held.clear()  # none of them can be applied any more
            self.held[id(ev)] = index

    def applied(self, m: BookMsg, book: Book, safe: bool) -> None:
        """The rebuild applied ``m`` (in sequence order): ``book`` is the book after it."""
        index = self.held.get(id(m))
        if index is None:
            return
        if self.capture is None:
            rec = self.recs[index]
            rec.book = book_digest(book, self.depth)
            rec.safe = safe
            link = rec.link
            if link is not None and link.prev_id is None and isinstance(m.prev_id, int):
                # Linked after it arrived (Bitfinex proves a link when a late seq closes the
                # hole before it): its link is the one it was applied with.
                rec.link = link._replace(prev_id=m.prev_id)
        elif index in self.capture:
            self.captured[index] = top_levels(book, self.depth, safe)


@dataclass(slots=True)
class SideInputs:
    """What one side's paths held: files read, lines that could not be read, files not read."""

    paths: list[str]
    files: int = 0
    malformed: int = 0
    not_read: list[dict[str, str]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "paths": self.paths,
            "files": self.files,
            "malformed": self.malformed,
            "not_read": self.not_read,
        }


class _Side:
    """Reads one side's captures with the audit's engine, keeping every message per stream."""

    def __init__(
        self,
        paths: Sequence[str],
        cfg: CompareConfig,
        capture: dict[StreamKey, set[int]] | None = None,
    ) -> None:
        self.cfg = cfg
        self.capture = capture
        self.streams: dict[StreamKey, _Stream] = {}
        self.engine = Engine(
            AuditConfig(reorder_window=cfg.reorder_window),
            # The second reading looks at some streams only.
            select=None if capture is None else capture.__contains__,
            on_event=self._event,
            on_applied=self._applied,
        )
        inputs = self.engine.run(paths).inputs
        self.inputs = SideInputs(
            [_shown(p) for p in paths],
            files=sum(1 for i in inputs if i.format not in (None, "empty")),
            malformed=sum(i.malformed for i in inputs),
            not_read=[{"path": i.path, "error": i.error or "not read"} for i in inputs if not i.audited],
        )

    def _event(self, ev: BookMsg | TradeMsg | FundingMsg, path: str) -> None:
        key = ev.key
        stream = self.streams.get(key)
        if stream is None:
            capture = None if self.capture is None else self.capture[key]
            stream = self.streams[key] = _Stream(key, self.cfg, capture)
        stream.add(ev, self.engine.books.get(key))

    def _applied(self, m: BookMsg, book: Book, safe: bool) -> None:
        self.streams[m.key].applied(m, book, safe)


def _shown(path: str) -> str:
    return os.fsencode(path).decode("utf-8", "backslashreplace")


# -- comparing one stream ------------------------------------------------------------------


def _identities(recs: list[_Rec], by_id: bool) -> tuple[dict[Any, int], int]:
    """Identity -> index of its first message, and the number of repeated ids (duplicates)."""
    first: dict[Any, int] = {}
    duplicates = 0
    if by_id:
        for i, r in enumerate(recs):
            if r.ident in first:
                duplicates += 1
            else:
                first[r.ident] = i
        return first, duplicates
    seen: dict[bytes, int] = {}
    for i, r in enumerate(recs):
        n = seen.get(r.content, 0)
        seen[r.content] = n + 1
        first[(r.content, n)] = i
    return first, 0


def _percentile(ordered: list[int], pct: int) -> int:
    rank = max(1, -(-len(ordered) * pct // 100))  # nearest rank: ceil(n * pct / 100)
    return ordered[rank - 1]


def _ms(us: int) -> float:
    return round(us / 1000, 3)


def receive_difference(diffs_us: list[int]) -> dict[str, Any] | None:
    """B minus A over matched messages, in ms; which side received first at the median."""
    if not diffs_us:
        return None
    ordered = sorted(diffs_us)
    p50 = _percentile(ordered, 50)
    out: dict[str, Any] = {
        "matched": len(ordered),
        "min": _ms(ordered[0]),
        "p50": _ms(p50),
        "p99": _ms(_percentile(ordered, 99)),
        "max": _ms(ordered[-1]),
    }
    if p50 > 0:
        out["earlier"] = "a"
        out["summary"] = f"A earlier by a p50 of {_ms(p50):g} ms"
    elif p50 < 0:
        out["earlier"] = "b"
        out["summary"] = f"B earlier by a p50 of {_ms(-p50):g} ms"
    else:
        out["earlier"] = None
        out["summary"] = "neither side earlier at the p50"
    return out


def _gap_rule(key: StreamKey) -> Rule | None:
    """The continuity rule whose breaks are gaps, or None where the venue has none."""
    rules = rules_for(key.exchange)
    if key.channel == Channel.BOOK.value:
        rule = rules.book_rule
    elif key.channel == Channel.TRADES.value:
        rule = rules.trade_rule
    else:
        return None
    if not rule.has_ids or isinstance(rule, Increasing):
        return None
    return rule


def _chains(recs: list[_Rec], rule: Rule) -> dict[str, tuple[list[Link], list[int]]]:
    """Per id series, the distinct links in sequence order and their order keys."""
    series: dict[str, set[Link]] = {}
    for r in recs:
        if r.link is not None:
            series.setdefault(r.series, set()).add(r.link)
    out: dict[str, tuple[list[Link], list[int]]] = {}
    for name, links in series.items():
        ordered = sorted(links, key=lambda lk: (rule.order(lk), not lk.snapshot, lk.last_id))
        out[name] = (ordered, [rule.order(lk) for lk in ordered])
    return out


def _gaps(
    rule: Rule,
    mine: dict[str, tuple[list[Link], list[int]]],
    other: dict[str, tuple[list[Link], list[int]]],
) -> dict[str, Any]:
    """Breaks of the continuity rule on one side, and whether the other side has what is missing:
    ``filled`` when the other side's messages chain from the last id before the break to the
    first message after it, ``partly_filled`` when it has some of the missing messages only."""
    listed: list[dict[str, Any]] = []
    count = filled = partly = 0
    for name in sorted(mine):
        links, _ = mine[name]
        theirs, their_keys = other.get(name, ([], []))
        for p, m in pairwise(links):
            if m.snapshot or rule.follows(p.last_id, m) or rule.applied(p.last_id, m):
                continue
            count += 1
            lo = bisect_right(their_keys, rule.order(p))
            hi = bisect_left(their_keys, rule.order(m))
            inside = [lk for lk in theirs[lo:hi] if not lk.snapshot]
            cur = p.last_id
            for lk in inside:
                if rule.follows(cur, lk):
                    cur = lk.last_id
            complete = bool(inside) and rule.follows(cur, m)
            if complete:
                filled += 1
            elif inside:
                partly += 1
            if len(listed) < GAP_LIST_LIMIT:
                listed.append(
                    {
                        "after": p.last_id,
                        "before": rule.first(m),
                        "missing": rule.missing(p.last_id, m),
                        "other_has": len(inside),
                        "filled": complete,
                    }
                )
    return {"count": count, "filled": filled, "partly_filled": partly, "list": listed}


@dataclass(slots=True)
class _Disagreement:
    a: int  # index of the message in A
    b: int


def _where(r: _Rec, safe: bool) -> dict[str, Any]:
    return {
        "path": r.path,
        "line": r.line,
        "local_us": r.local_us,
        "local_time": None if r.local_us is None else us_to_iso(r.local_us),
        "safe": safe,
    }


class StreamComparison:
    """The comparison of one stream present on both sides."""

    def __init__(self, key: StreamKey, a: _Stream, b: _Stream, cfg: CompareConfig) -> None:
        self.key = key
        self.a = a
        self.b = b
        self.cfg = cfg
        self.by_id = all(r.ident is not None for r in a.recs) and all(r.ident is not None for r in b.recs)
        self.first_a, self.dup_a = _identities(a.recs, self.by_id)
        self.first_b, self.dup_b = _identities(b.recs, self.by_id)
        self.disagreements: list[_Disagreement] = []
        self.book: dict[str, Any] | None = None

    def result(self) -> dict[str, Any]:
        key, a, b = self.key, self.a, self.b
        first_a, first_b = self.first_a, self.first_b
        both = sum(1 for ident in first_a if ident in first_b)
        diffs: list[int] = []
        compared = disagree = both_safe = not_compared = 0
        for ident, i in first_a.items():
            j = first_b.get(ident)
            if j is None:
                continue
            ra, rb = a.recs[i], b.recs[j]
            if ra.local_us is not None and rb.local_us is not None:
                diffs.append(rb.local_us - ra.local_us)
            if key.channel != Channel.BOOK.value:
                continue
            if ra.book is None or rb.book is None:
                not_compared += 1
                continue
            compared += 1
            if ra.book != rb.book:
                disagree += 1
                if ra.safe and rb.safe:
                    both_safe += 1
                if len(self.disagreements) < self.cfg.examples:
                    self.disagreements.append(_Disagreement(i, j))
        rule = _gap_rule(key) if self.by_id else None
        gaps: dict[str, Any] | None = None
        if rule is not None:
            chains_a, chains_b = _chains(a.recs, rule), _chains(b.recs, rule)
            gaps = {"a": _gaps(rule, chains_a, chains_b), "b": _gaps(rule, chains_b, chains_a)}
        out: dict[str, Any] = {
            "exchange": key.exchange,
            "symbol": key.symbol,
            "channel": key.channel,
            "matched_by": "id" if self.by_id else "content",
            "messages": {
                "a": len(a.recs),
                "b": len(b.recs),
                "both": both,
                "only_a": len(first_a) - both,
                "only_b": len(first_b) - both,
                "duplicates_a": self.dup_a,
                "duplicates_b": self.dup_b,
            },
            "gaps": gaps,
            "receive_ms": receive_difference(diffs),
            "book": None,
        }
        if key.channel == Channel.BOOK.value:
            self.book = {
                "depth": self.cfg.depth,
                "compared": compared,
                "not_compared": not_compared,
                "disagree": disagree,
                "disagree_both_safe": both_safe,
                "first": [],
            }
            out["book"] = self.book
        return out

    def describe(self, captured_a: dict[int, Top], captured_b: dict[int, Top]) -> None:
        """Fill ``book.first`` with the disagreements' levels (from the second reading)."""
        if self.book is None:
            return
        for d in self.disagreements:
            ra, rb = self.a.recs[d.a], self.b.recs[d.b]
            got_a, got_b = captured_a.get(d.a), captured_b.get(d.b)
            levels: list[dict[str, Any]] = []
            if got_a is not None and got_b is not None:
                for side, la, lb in (("bid", got_a.bids, got_b.bids), ("ask", got_a.asks, got_b.asks)):
                    for rank in range(max(len(la), len(lb))):
                        va = list(la[rank]) if rank < len(la) else None
                        vb = list(lb[rank]) if rank < len(lb) else None
                        if va is None or vb is None or [canon(x) for x in va] != [canon(x) for x in vb]:
                            levels.append({"side": side, "level": rank + 1, "a": va, "b": vb})
            ident = ra.ident if self.by_id else None  # ("b", kind, first id, last id)
            self.book["first"].append(
                {
                    "id": None if ident is None else ident[3],
                    "first_id": None if ident is None else ident[2],
                    "exchange_us": ra.exch_us,
                    "a": _where(ra, ra.safe),
                    "b": _where(rb, rb.safe),
                    "levels": levels,
                }
            )


# -- both sides ----------------------------------------------------------------------------


def _listed(streams: dict[StreamKey, _Stream], keys: Iterable[StreamKey]) -> list[dict[str, Any]]:
    return [
        {"exchange": k.exchange, "symbol": k.symbol, "channel": k.channel, "messages": len(streams[k].recs)}
        for k in sorted(keys, key=stream_order)
    ]


def compare(
    a_paths: Sequence[str], b_paths: Sequence[str], cfg: CompareConfig | None = None
) -> dict[str, Any]:
    """The comparison of recordings ``a_paths`` and ``b_paths`` (see the module text).

    ``streams`` holds one entry per stream both sides have; ``only_in_a`` / ``only_in_b`` the
    streams one side has alone.  When they share none, ``streams`` is empty.
    """
    cfg = cfg or CompareConfig()
    side_a, side_b = _Side(a_paths, cfg), _Side(b_paths, cfg)
    common = sorted(set(side_a.streams) & set(side_b.streams), key=stream_order)
    comparisons = [StreamComparison(k, side_a.streams[k], side_b.streams[k], cfg) for k in common]
    results = [c.result() for c in comparisons]
    wanted = [c for c in comparisons if c.disagreements]
    if wanted:
        # A second reading, of the disagreeing book streams only, for the levels at the first few.
        again_a = _Side(a_paths, cfg, {c.key: {d.a for d in c.disagreements} for c in wanted})
        again_b = _Side(b_paths, cfg, {c.key: {d.b for d in c.disagreements} for c in wanted})
        for c in wanted:
            c.describe(again_a.streams[c.key].captured, again_b.streams[c.key].captured)
    return {
        "a": side_a.inputs.as_json(),
        "b": side_b.inputs.as_json(),
        "clocks": CLOCK_NOTE,
        "depth": cfg.depth,
        "streams": results,
        "only_in_a": _listed(side_a.streams, set(side_a.streams) - set(side_b.streams)),
        "only_in_b": _listed(side_b.streams, set(side_b.streams) - set(side_a.streams)),
    }


def dumps(report: dict[str, Any]) -> bytes:
    """The comparison as JSON: keys sorted, indented, one trailing newline."""
    return orjson.dumps(report, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2) + b"\n"

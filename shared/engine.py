"""The audit engine: inputs in, per-stream results out, in one process.

A job's plan (:mod:`shared.planning`) cuts the inputs into segments; the engine reads a
segment's capture groups in order, each group's files merged by receive time.  Every line
read is accounted for: applied, recorded as malformed, or counted as ignored.  The plan
itself learns which streams a group feeds through :func:`probe_group`: the same reading, cut
short after the head of each file, auditing nothing.
"""

from __future__ import annotations

import heapq
import os
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import orjson

from shared import fastlane
from shared.auditors import (
    AuditConfig,
    BookAuditor,
    BookSink,
    FundingAuditor,
    OnApplied,
    Repairs,
    StreamResult,
    TradeAuditor,
)
from shared.book import Book
from shared.checks.shapes import ShapeWatch
from shared.errors import RetapeError
from shared.exchanges import rules_for, venue_for_file, venue_for_message, venue_for_url
from shared.exchanges.base import Session, UnknownEvent, Venue
from shared.formats.readers import READERS
from shared.model import BookMsg, Channel, Disconnect, FundingMsg, RawRecord, StreamKey, TradeMsg
from shared.planning import GroupHead, InputSummary, Plan, plan
from shared.replay.stats import merge as merge_replay_stats
from shared.snapshots import BookRows
from shared.spool import Spool

_PARSE_ERRORS = (KeyError, TypeError, ValueError, IndexError, AttributeError, ArithmeticError)

# Told of every book, trade or funding message the engine feeds to its auditors (those ``select``
# lets through), in arrival order, before it is fed: the message and the path of its file.
OnEvent = Callable[[BookMsg | TradeMsg | FundingMsg, str], None]

# Why lines are ignored (``InputSummary.ignored_why``), besides "<kind> messages (not audited)".
AFTER_AT = "after --at"
NO_VENUE = "messages of no venue retape knows"
BLANK = "blank lines"
RECORDER_LINES = "recorder lines (connections, requests sent, configuration)"
EARLY_DISCONNECT = "disconnects before any stream"
_KIND_FIELDS = ("channel", "feed", "table", "topic", "e", "type", "event", "method", "action")


def _keys(events: Sequence[Any]) -> list[StreamKey]:
    """The streams of ``events``, each once, in order."""
    return list(dict.fromkeys(ev.key for ev in events if not isinstance(ev, Disconnect)))


def _ignore(summary: InputSummary, why: str) -> None:
    summary.ignored += 1
    summary.ignored_why[why] = summary.ignored_why.get(why, 0) + 1


def message_kind(obj: Any) -> str:
    """A short name for what kind of message ``obj`` is (``bookTicker``, ``ticker``,
    ``subscribe``...), for the summary's account of what was ignored."""
    if isinstance(obj, dict):
        stream = obj.get("stream")
        if isinstance(stream, str) and "@" in stream:
            return stream.split("@")[1][:40]  # Binance: btcusdt@bookTicker
        for holder in (obj.get("arg"), obj.get("params"), obj, obj.get("data")):
            if isinstance(holder, dict):
                for name in _KIND_FIELDS:
                    value = holder.get(name)
                    if isinstance(value, str) and value:
                        return value.split(".")[0][:40]  # Bybit/Deribit: ticker.BTC-PERPETUAL...
        if "result" in obj or "id" in obj:
            return "request answer"
    if isinstance(obj, list):
        return next((v.split(".")[0][:40] for v in obj if isinstance(v, str) and v), "list")
    return "other"


@dataclass(slots=True)
class Malformed:
    path: str
    line: int
    reason: str

    def as_row(self) -> list[Any]:
        return [self.path, self.line, self.reason]

    @classmethod
    def from_row(cls, row: list[Any]) -> Malformed:
        return cls(row[0], row[1], row[2])


def malformed_spool(items: Iterable[Malformed] = ()) -> Spool[Malformed]:
    """Lines that could not be read, in the order read, on disk past a few thousand."""
    return Spool(Malformed.as_row, Malformed.from_row, items)


@dataclass(slots=True)
class AuditOutcome:
    inputs: list[InputSummary]
    streams: list[StreamResult]
    malformed: Spool[Malformed] = field(default_factory=malformed_spool)
    dead_letters: int = 0  # tasks of a distributed job that ended in the dead-letter list
    books: BookRows | None = None  # rebuilt-book rows, when asked for
    settings: dict[str, Any] | None = None  # the AuditConfig, for the MANIFEST (set by whoever knows it)
    # Requests made to replay sources, by source (shared.replay.stats): for metrics.prom only.
    replay: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class SegmentResult:
    """What auditing one segment found: a worker's answer, merged by :func:`combine`."""

    index: int
    inputs: list[InputSummary]  # the segment's files, with their counts
    parts: list[StreamResult]
    malformed: Spool[Malformed]
    books: BookRows | None = None
    dead_letter: str | None = None  # why the segment was never audited (its task was dead-lettered)
    replay: dict[str, Any] = field(default_factory=dict)  # requests made to fill its gaps

    @classmethod
    def not_audited(cls, job: Plan, index: int, reason: str) -> SegmentResult:
        inputs = job.segment_inputs(index)
        for i in inputs:
            i.error = f"not audited: {reason}"
            i.audited = False
        return cls(index, inputs, [], malformed_spool(), dead_letter=reason)

    @property
    def messages(self) -> int:
        return sum(p.messages for p in self.parts)

    def encode(self) -> bytes:
        """The result as bytes (what travels through the broker): a JSON header, a newline, then
        the findings, gaps and unsafe intervals (part by part) and the malformed lines as JSON
        lines, zlib-compressed, streamed from their spools so that memory holds only the
        compressed bytes."""
        header = {
            "index": self.index,
            "inputs": [i.as_json() for i in self.inputs],
            "parts": [p.as_json() for p in self.parts],
            "malformed": len(self.malformed),
            "books": None if self.books is None else [self.books.depth, self.books.as_json()],
            "dead_letter": self.dead_letter,
            "replay": self.replay,
        }
        z = zlib.compressobj(1)
        out = [orjson.dumps(header), b"\n"]
        spools: list[Spool[Any]] = [*(s for p in self.parts for s in p.spools()), self.malformed]
        for spool in spools:
            for line in spool.lines():
                chunk = z.compress(line)
                if chunk:
                    out.append(chunk)
        out.append(z.flush())
        return b"".join(out)

    @classmethod
    def decode(cls, raw: bytes) -> SegmentResult:
        head, _, body = raw.partition(b"\n")
        data = orjson.loads(head)
        lines = _lines_of(body)
        parts = [StreamResult.from_json(p, lines) for p in data["parts"]]
        malformed = malformed_spool()
        for line in islice(lines, data["malformed"]):
            malformed.add_line(line)
        books = data.get("books")
        return cls(
            data["index"],
            [InputSummary.from_json(i) for i in data["inputs"]],
            parts,
            malformed,
            None if books is None else BookRows.from_json(books[0], books[1]),
            data.get("dead_letter"),
            dict(data.get("replay") or {}),
        )


def _lines_of(compressed: bytes, chunk: int = 1 << 20) -> Iterator[bytes]:
    """The JSON lines of a zlib-compressed body, inflated at most ``chunk`` bytes at a time
    (findings compress many times over: a megabyte of it can hold a hundred megabytes)."""
    d = zlib.decompressobj()
    rest = b""
    pending = compressed
    while True:
        data = d.decompress(pending, chunk)
        pending = d.unconsumed_tail
        if not data and not pending:
            break
        *whole, rest = (rest + data).split(b"\n")
        for line in whole:
            yield line + b"\n"
    tail = rest + d.flush()
    for line in tail.split(b"\n"):
        if line:
            yield line + b"\n"


def audit_segment(job: Plan, index: int, cfg: AuditConfig, repairs: Repairs | None = None) -> SegmentResult:
    """Audit one segment on its own (what a worker does with one unit of work), its gaps
    repaired from ``repairs`` where a replay source filled them."""
    own = job.segment_inputs(index)
    engine = Engine(cfg, repairs=repairs)
    engine.inputs = own
    engine.run_segment(Plan(own, job.formats, job.segments), index)
    return SegmentResult(index, own, engine.parts, engine.malformed, engine.book_rows)


def combine(job: Plan, results: Iterable[SegmentResult]) -> AuditOutcome:
    """The outcome of a job from its segments' results, whatever order they arrived in."""
    ordered = sorted(results, key=lambda r: r.index)
    counted = {i.path: i for r in ordered for i in r.inputs}
    inputs = [counted.get(i.path, i) for i in job.inputs]
    parts = [p for r in ordered for p in r.parts]
    malformed = malformed_spool()
    for r in ordered:
        malformed.extend(r.malformed)
    books: BookRows | None = None
    for r in ordered:
        if r.books is not None:
            if books is None:
                books = BookRows(r.books.depth)
            books.extend(r.books)
    dead_letters = sum(1 for r in ordered if r.dead_letter is not None)
    replay: dict[str, Any] = {}
    for r in ordered:
        merge_replay_stats(replay, r.replay)
    return AuditOutcome(inputs, merge_parts(parts), malformed, dead_letters, books, replay=replay)


@dataclass(frozen=True, slots=True)
class HeadLimit:
    """How much of each file a probe reads: its first ``records`` records or about
    ``text_bytes`` of decompressed text, whichever comes first."""

    records: int = 2000
    text_bytes: int = 4 << 20


def probe_group(
    group: list[str], formats: dict[str, str | None], limit: HeadLimit | None = None
) -> GroupHead:
    """The streams the head of capture group ``group`` feeds and the earliest receive time in it.

    Read by the audit's own machinery (readers, venue detection by URL, file name and
    message, sessions), so the plan names streams exactly as the audit will; nothing is
    audited (``select`` only collects the keys) and each file stops after ``limit``.
    """
    keys: set[StreamKey] = set()

    def collect(key: StreamKey) -> bool:
        keys.add(key)
        return False

    engine = Engine(AuditConfig(), select=collect, head=limit or HeadLimit())
    engine._run_group(group, formats, {f: InputSummary(f) for f in group})
    return GroupHead(frozenset(keys), engine.first_us)


class _FileContext:
    """Per-file state: the venue session, the streams it fed (for disconnects and seams) and
    the shapes of its messages (for format changes)."""

    __slots__ = ("last_events", "session", "shapes", "stream_keys", "summary", "unknown_kinds", "venue")

    def __init__(self, summary: InputSummary) -> None:
        self.summary = summary
        self.venue: Venue | None = None
        self.session: Session | None = None
        self.stream_keys: set[StreamKey] = set()
        self.shapes: ShapeWatch | None = None  # the segment's watch for this file's venue
        self.last_events: Sequence[Any] = ()  # what the last message parsed gave
        self.unknown_kinds: set[str] = set()  # event types the parser did not know, seen so far


class Engine:
    """Runs every input through its venue and the per-stream auditors."""

    def __init__(
        self,
        cfg: AuditConfig,
        book_sink: BookSink | None = None,
        select: Callable[[StreamKey], bool] | None = None,
        until_us: int | None = None,
        head: HeadLimit | None = None,
        on_event: OnEvent | None = None,
        on_applied: OnApplied | None = None,
        repairs: Repairs | None = None,
    ) -> None:
        self.cfg = cfg
        # What replay sources gave for the gaps (None: gaps are only reported).
        self.repairs = repairs
        # Rebuilt books every ``book_interval_us``: to the given sink, else kept as rows.
        self.book_rows: BookRows | None = None
        if book_sink is None and cfg.book_interval_us > 0:
            book_sink = self.book_rows = BookRows(cfg.book_depth)
        self.book_sink = book_sink if cfg.book_interval_us > 0 else None
        self.select = select
        # Observers (``retape compare``): every message fed, and every book message applied.
        self.on_event = on_event
        self.on_applied = on_applied
        self.until_us = until_us
        # Probing (see probe_group): read only the head of each file, note the earliest time.
        self.head = head
        self.first_us: int | None = None
        # Reading up to ``until``: the latest receive time read from each file.
        self.read_to: dict[str, int] = {}
        # The shapes of the messages of each venue in the segment being read (format changes).
        self.shapes: dict[str, ShapeWatch] = {}
        self.books: dict[StreamKey, BookAuditor] = {}
        self.trades: dict[StreamKey, TradeAuditor] = {}
        self.funding: dict[StreamKey, FundingAuditor] = {}
        self.inputs: list[InputSummary] = []
        self.malformed = malformed_spool()
        # Results of the segments already read, in order, and the last book of each stream.
        self.parts: list[StreamResult] = []
        self.closed_books: dict[StreamKey, list[BookAuditor]] = {}

    # -- driving ---------------------------------------------------------------------

    def run(self, paths: Sequence[str]) -> AuditOutcome:
        job = plan(paths)
        self.inputs = job.inputs
        for index in range(len(job.segments)):
            self.run_segment(job, index)
        return self.finish()

    def run_segment(self, job: Plan, index: int) -> None:
        """Read one segment (its capture groups in order); its auditors are then finished."""
        summaries = {s.path: s for s in job.inputs}
        for group in job.segments[index]:
            self._run_group(group, job.formats, summaries)
        self.close_segment()

    def _run_group(
        self, group: list[str], formats: dict[str, str | None], summaries: dict[str, InputSummary]
    ) -> None:
        contexts = self.open_group(group, summaries)
        streams: list[Iterator[RawRecord]] = []
        for f in group:
            fmt = formats[f]
            assert fmt is not None
            reader = READERS.get(fmt)
            if reader is None:
                summaries[f].error = f"no reader for format {fmt}"
                summaries[f].audited = False
                continue
            if len(group) == 1 and fastlane.usable(self, fmt):
                streams.append(fastlane.LaneReader(self, contexts[f], f, fmt).records())
                continue
            streams.append(reader(f) if self.head is None else self._head_of(reader(f), self.head))
        records: Iterable[RawRecord]
        if len(streams) == 1:
            records = streams[0]
        else:
            records = heapq.merge(*streams, key=_merge_key)
        self.read(records, contexts)
        self.close_group(contexts)

    def open_group(self, group: list[str], summaries: dict[str, InputSummary]) -> dict[str, _FileContext]:
        """The per-file state of a capture group about to be read."""
        return {f: _FileContext(summaries[f]) for f in group}

    def read(self, records: Iterable[RawRecord], contexts: dict[str, _FileContext]) -> None:
        """Audit ``records`` (of the group of ``contexts``); a read that fails marks its files."""
        try:
            self._consume(records, contexts)
        except OSError as exc:
            for ctx in contexts.values():
                if ctx.summary.error is None:
                    ctx.summary.error = f"read failed: {exc.strerror or exc}"
                    ctx.summary.audited = False

    def read_range(
        self, contexts: dict[str, _FileContext], path: str, fmt: str, start: int, end: int, line: int
    ) -> int:
        """Audit the lines of plain capture ``path`` that start in bytes [start, end) (``start``
        a line start), numbered from ``line + 1``; the number of the last line read."""
        reader = fastlane.LaneReader(self, contexts[path], path, fmt, span=(start, end), line=line)
        self.read(reader.records(), contexts)
        return reader.line

    def close_group(self, contexts: dict[str, _FileContext]) -> None:
        """The group is read: damage to its files and the end of its recording, on its streams."""
        # Damage to a file (lines that could not be read, a cut-off end) is damage to every
        # stream it fed: none of them can be called clean.
        for ctx in contexts.values():
            ctx.summary.streams = len(ctx.stream_keys)
            for key in ctx.stream_keys:
                auditor = self.books.get(key) or self.trades.get(key) or self.funding.get(key)
                if auditor is not None:
                    auditor.result.input_damage(ctx.summary.malformed, ctx.summary.cut_off)
        # The recording ends with this group: streams it fed may go on in another input.
        fed = {key for ctx in contexts.values() for key in ctx.stream_keys}
        for key in sorted(fed):
            auditor = self.books.get(key) or self.trades.get(key) or self.funding.get(key)
            if auditor is not None:
                auditor.seam()

    def _head_of(self, records: Iterator[RawRecord], limit: HeadLimit) -> Iterator[RawRecord]:
        """The first records of one file, within ``limit``; notes the earliest receive time."""
        count = size = 0
        try:
            for rec in records:
                local = rec.local_us
                if local is not None and (self.first_us is None or local < self.first_us):
                    self.first_us = local
                yield rec
                count += 1
                size += len(rec.raw) + 1
                if count >= limit.records or size >= limit.text_bytes:
                    return
        finally:
            close = getattr(records, "close", None)
            if close is not None:
                close()  # the reader's file is closed now, not when it is collected

    def _consume(self, records: Iterable[RawRecord], contexts: dict[str, _FileContext]) -> None:
        loads = orjson.loads
        until = self.until_us
        ctx: _FileContext | None = None
        ctx_path = ""
        past_until: set[str] = set()  # files read up to ``until`` (what follows is later)
        for rec in records:
            if rec.path != ctx_path:
                ctx = contexts[rec.path]
                ctx_path = rec.path
            assert ctx is not None
            summary = ctx.summary
            summary.lines += 1
            if until is not None:
                if rec.path in past_until or (rec.local_us is not None and rec.local_us > until):
                    past_until.add(rec.path)
                    _ignore(summary, AFTER_AT)
                    continue
                if rec.local_us is not None and rec.local_us > self.read_to.get(rec.path, -1):
                    self.read_to[rec.path] = rec.local_us
            kind = rec.kind
            if kind == "json":
                try:
                    obj = loads(rec.raw)
                except orjson.JSONDecodeError as exc:
                    self._malformed(summary, rec.line, f"invalid JSON: {exc}")
                    continue
                session = ctx.session
                if session is None:
                    session = self._open_session(ctx, rec, obj)
                    if session is None:
                        _ignore(summary, NO_VENUE)
                        continue
                watch = ctx.shapes
                if watch is None:
                    # One watch per venue for the whole segment: a file that starts in a new
                    # format (the next day's rotation) is compared with the one before.
                    name = ctx.venue.name if ctx.venue is not None else ""
                    watch = ctx.shapes = self.shapes.setdefault(name, ShapeWatch())
                change = watch.check(obj)
                try:
                    events = session.parse(rec, obj)
                except UnknownEvent as exc:
                    # The format changed: an event type the parser does not know, on a
                    # channel it audits.  Once per kind and file, on the streams it was feeding.
                    _ignore(summary, f"{exc.kind} messages (unknown to the parser)")
                    if exc.kind not in ctx.unknown_kinds:
                        ctx.unknown_kinds.add(exc.kind)
                        detail = {"unknown_event": exc.kind, "channel": exc.channel, **(change or {})}
                        self._format_change_on(
                            [exc.key] if exc.key is not None else _keys(ctx.last_events), rec, detail
                        )
                    continue
                except _PARSE_ERRORS as exc:
                    name = ctx.venue.name if ctx.venue else "?"
                    self._malformed(
                        summary, rec.line, f"unexpected {name} message shape: {type(exc).__name__}: {exc}"
                    )
                    if change is not None:
                        self._format_change(ctx.last_events, rec, change)
                    continue
                if not events:
                    _ignore(summary, f"{message_kind(obj)} messages (not audited)")
                    continue
                for ev in events:
                    self._dispatch(ev, ctx)
                ctx.last_events = events
                if change is not None:
                    self._format_change(events, rec, change)
            elif kind == "row":
                self._dispatch(rec.obj, ctx)
            elif kind == "malformed":
                self._malformed(summary, rec.line, rec.error or "malformed")
            elif kind == "cut_off":
                summary.cut_off = True
                self._malformed(summary, rec.line, f"the file is cut off here: {rec.error}")
            elif kind == "disconnect":
                self._disconnect(Disconnect(rec.path, rec.line, rec.local_us), ctx)
                if rec.url and ctx.venue is not None:
                    ctx.session = ctx.venue.session(rec.url)
            elif kind == "connect":
                found = venue_for_url(rec.url) if rec.url else None
                if found is not None:
                    ctx.venue = found
                    ctx.session = found.session(rec.url)
            elif kind != "grouped":  # header, blank, config, sent requests...
                _ignore(summary, BLANK if kind == "blank" else RECORDER_LINES)

    def _format_change(self, events: Sequence[Any], rec: RawRecord, change: dict[str, Any]) -> None:
        """A message whose shape changed: one finding on each stream its events belong to (for a
        message the parser could not read, the streams of the one before)."""
        self._format_change_on(_keys(events), rec, change)

    def _format_change_on(self, keys: Iterable[StreamKey], rec: RawRecord, change: dict[str, Any]) -> None:
        for key in keys:
            auditor = self.books.get(key) or self.trades.get(key) or self.funding.get(key)
            if auditor is not None:
                auditor.format_change(rec.path, rec.line, rec.local_us, change)

    def _open_session(self, ctx: _FileContext, rec: RawRecord, obj: Any) -> Session | None:
        venue = ctx.venue
        if venue is None and rec.url:
            venue = venue_for_url(rec.url)
        if venue is None:
            venue = venue_for_file(os.path.basename(rec.path))
        if venue is None:
            venue = venue_for_message(obj)
        if venue is None:
            return None
        ctx.venue = venue
        ctx.session = venue.session(rec.url)
        return ctx.session

    def _malformed(self, summary: InputSummary, line: int, reason: str) -> None:
        summary.malformed += 1
        self.malformed.append(Malformed(summary.path, line, reason))

    def _dispatch(self, ev: Any, ctx: _FileContext) -> None:
        if isinstance(ev, Disconnect):
            self._disconnect(ev, ctx)
            return
        key = ev.key
        select = self.select
        if select is not None and not select(key):
            return
        on_event = self.on_event
        if on_event is not None:
            on_event(ev, ctx.summary.path)
        ctx.stream_keys.add(key)
        if isinstance(ev, BookMsg):
            book = self.books.get(key)
            if book is None:
                book = self.books[key] = BookAuditor(
                    key, rules_for(key.exchange), self.cfg, self.book_sink, self.on_applied
                )
                book.repairs = self.repairs
            book.feed(ev)
        elif isinstance(ev, TradeMsg):
            trades = self.trades.get(key)
            if trades is None:
                trades = self.trades[key] = TradeAuditor(key, rules_for(key.exchange), self.cfg)
                trades.repairs = self.repairs
            trades.feed(ev)
        elif isinstance(ev, FundingMsg):
            funding = self.funding.get(key)
            if funding is None:
                funding = self.funding[key] = FundingAuditor(key, rules_for(key.exchange), self.cfg)
            funding.feed(ev)

    def _disconnect(self, ev: Disconnect, ctx: _FileContext) -> None:
        """Every stream the file fed so far may have lost messages; books are unknown again."""
        if not ctx.stream_keys:
            _ignore(ctx.summary, EARLY_DISCONNECT)  # nothing was being recorded yet
            return
        for key in sorted(ctx.stream_keys):
            auditor = self.books.get(key) or self.trades.get(key) or self.funding.get(key)
            if auditor is not None:
                auditor.disconnect(ev.path, ev.line, ev.local_us)

    def close_segment(self) -> None:
        """The segment is read: finish its auditors; the next segment starts afresh."""
        for table in (self.books, self.trades, self.funding):
            for auditor in table.values():
                self.parts.append(auditor.finish())
        for key, auditor in self.books.items():
            self.closed_books.setdefault(key, []).append(auditor)
        self.books, self.trades, self.funding = {}, {}, {}
        self.shapes = {}

    def finish(self) -> AuditOutcome:
        self.close_segment()
        return AuditOutcome(self.inputs, merge_parts(self.parts), self.malformed, books=self.book_rows)


_CHANNEL_ORDER = {Channel.BOOK.value: 0, Channel.TRADES.value: 1, Channel.FUNDING.value: 2}


def stream_order(key: StreamKey) -> tuple[str, str, int]:
    """Where a stream comes in the report: by exchange, symbol, then book, trades, funding."""
    return key.exchange, key.symbol, _CHANNEL_ORDER.get(key.channel, 9)


def merge_parts(parts: Iterable[StreamResult]) -> list[StreamResult]:
    """One result per stream, parts merged in the order given; sorted for the report."""
    merged: dict[StreamKey, StreamResult] = {}
    for part in parts:
        have = merged.get(part.key)
        if have is None:
            merged[part.key] = part
        else:
            have.merge(part)
    return sorted(merged.values(), key=lambda r: stream_order(r.key))


def _merge_key(rec: RawRecord) -> int:
    return rec.local_us if rec.local_us is not None else 0


def audit_paths(
    paths: Sequence[str], cfg: AuditConfig | None = None, book_sink: BookSink | None = None
) -> AuditOutcome:
    return Engine(cfg or AuditConfig(), book_sink).run(paths)


def rebuild_book(
    paths: Sequence[str],
    exchange: str,
    symbol: str,
    at_us: int,
    depth: int = 25,
    cfg: AuditConfig | None = None,
) -> dict[str, Any]:
    """The book of one stream as it stood after every message received at or before ``at_us``.

    ``safe`` is False where the book cannot be trusted, and ``note`` says why when the reason
    is the time asked for: before the stream's first message, or after its last (the data
    ends there: what happened after is unknown).  :class:`StreamNotFound` when the inputs
    hold no such stream at all.
    """
    key = StreamKey(exchange, symbol.upper(), Channel.BOOK.value)
    engine = Engine(cfg or AuditConfig(), select=lambda k: k == key, until_us=at_us)
    engine.run(paths)
    # Several recordings may feed the stream: the book is the one of the latest recording.
    candidates = engine.closed_books.get(key, [])
    auditor = max(candidates, key=lambda a: a.last_seen_us or 0, default=None)
    note = None
    if auditor is None:
        found = streams_in(paths)
        if key not in found:
            books = sorted(f"{k.exchange} {k.symbol}" for k in found if k.channel == Channel.BOOK.value)
            raise StreamNotFound(exchange, key.symbol, books)
        note = "before the stream's first message: no book yet"
    elif _ended_before(engine, at_us):
        # The recordings of the stream ended before ``at``: what happened after is unknown.
        last = auditor.last_seen_us
        note = f"after the stream's last message ({iso_or_raw(last)}): the book after it is not known"
    book = auditor.book if auditor is not None else Book()
    if auditor is not None and auditor.seq is not None:
        # Messages still held for reordering were received before ``at``: release them.
        auditor._steps(auditor.seq.flush())
    snap = book.snapshot(depth)
    from shared.formats.timestamps import us_to_iso

    return {
        "exchange": exchange,
        "symbol": key.symbol,
        "at": us_to_iso(at_us),
        "local_timestamp": None
        if auditor is None or auditor.last_local_us is None
        else us_to_iso(auditor.last_local_us),
        "safe": bool(auditor is not None and auditor.in_sync and note is None),
        "bids": snap["bids"],
        "asks": snap["asks"],
        **({"note": note} if note else {}),
    }


def _ended_before(engine: Engine, at_us: int) -> bool:
    """The files of the stream were read to their end before ``at_us`` (none had a message
    after it, and the last they had, with a receive time, was before it)."""
    files = [i for i in engine.inputs if i.streams]
    if any(i.ignored_why.get(AFTER_AT) for i in files):
        return False
    ends = [engine.read_to[i.path] for i in files if i.path in engine.read_to]
    return bool(ends) and at_us > max(ends)


class StreamNotFound(RetapeError):
    def __init__(self, exchange: str, symbol: str, books: list[str]) -> None:
        shown = ", ".join(books[:20]) + (f" and {len(books) - 20} more" if len(books) > 20 else "")
        super().__init__(
            f"no {exchange} {symbol} book in the inputs" + (f"; book streams found: {shown}" if books else "")
        )


def streams_in(paths: Sequence[str]) -> set[StreamKey]:
    """Every stream the inputs feed (a full read that audits nothing)."""
    keys: set[StreamKey] = set()

    def collect(key: StreamKey) -> bool:
        keys.add(key)
        return False

    Engine(AuditConfig(), select=collect).run(paths)
    return keys


def iso_or_raw(us: int | None) -> str:
    from shared.formats.timestamps import us_to_iso

    if us is None:
        return "unknown"
    try:
        return us_to_iso(us)
    except (OverflowError, ValueError, OSError):
        return str(us)

"""One big recording across many workers: a plain capture cut into chunks audited at once.

A chunk is audited *speculatively* (``_lane_c.Lane.speculate``): from the state the lines
just before it show (the clock window, the id the first diff chains on) and on a book it
does not know, as long as every line is a diff of one stream the fast lane can take.  What
it did to the book is an overlay (later values win, a zero deletes); its crossed-book
checks are kept as the best bid and ask of the overlay at every message, decided once the
book under the overlay is known.

The assembly (:func:`assemble`) then reads the recording in order with a real engine: the
head, and any line no chunk took, on the Python path; each chunk whose assumptions hold
exactly in the engine's state at that point (the same stream, live and ordinary, the id its
first diff chains on, the clock window, the shapes past warm-up) is laid on the state in
one step: its overlay on the book, its counts, its drift findings and its crossed-book
findings where they fall.  A chunk whose assumptions do not hold is read on the Python path
instead.  So the outputs are the same bytes as one process reading the whole file, however
it is cut: whatever depends on the lines before a chunk is either proven equal or redone.
"""

from __future__ import annotations

import itertools
import os
import struct
from array import array
from dataclasses import dataclass, field
from typing import Any

import orjson

from shared import fastlane
from shared.auditors import AuditConfig
from shared.book import Book
from shared.engine import Engine, SegmentResult, _FileContext
from shared.formats.lines import is_gzip, line_start, span_blocks
from shared.model import Fault
from shared.planning import Plan
from shared.snapshots import BookRows

CHUNK_ENV = "RETAPE_CHUNK_MB"
DEFAULT_CHUNK_MB = 64.0
HEAD_BYTES = 1 << 20  # read by the assembly itself: the snapshot, the bridge, the warm-up
FIRST_CHUNK_BYTES = 1 << 20  # the first chunk after the head; the next ones double up to a chunk
TAIL_BYTES = 256 << 10  # read back before a chunk for its clock window (and more if need be)
MAX_TAIL_BYTES = 64 << 20
WINDOW = 33  # shared.checks.timing.WINDOW


def chunk_bytes() -> int:
    """The size of a chunk (``RETAPE_CHUNK_MB``, on the worker that plans; 0: never cut)."""
    raw = os.environ.get(CHUNK_ENV, "").strip()
    try:
        mb = float(raw) if raw else DEFAULT_CHUNK_MB
    except ValueError:
        mb = DEFAULT_CHUNK_MB
    return max(0, int(mb * (1 << 20)))


def is_plain(path: str) -> bool:
    """``path`` can be read and is not gzip-compressed (only plain text can be cut)."""
    try:
        return not is_gzip(path)
    except OSError:
        return False


def smallest_cut(size_of_chunk: int) -> int:
    """The size from which a capture is cut: its head and one chunk."""
    return min(HEAD_BYTES, size_of_chunk) + size_of_chunk


def size_and_mtime(path: str) -> tuple[int, int] | None:
    """Size and modification time of ``path`` (what a chunk checks against the plan)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def chunks_for(
    job: Plan, segment: int, cfg: AuditConfig, planned: dict[str, tuple[int, int]] | None = None
) -> list[dict[str, Any]]:
    """The chunks of segment ``segment`` to audit apart, or none: only a segment of one plain
    capture, larger than a chunk, in a format the fast lane reads, whose head is one depth
    stream, with the lane built and no replay, on this disk as it was planned (``planned``:
    size and modification time by path)."""
    size_of_chunk = chunk_bytes()
    groups = job.segments[segment]
    if not size_of_chunk or not fastlane.available() or len(groups) != 1 or len(groups[0]) != 1:
        return []
    if cfg.replay_sources:
        return []
    path = groups[0][0]
    fmt = job.formats.get(path)
    if fmt not in fastlane.FORMATS or not is_plain(path):
        return []
    here = size_and_mtime(path)
    if here is None:
        return []
    size, mtime_ns = here
    if planned is not None and planned.get(path) != here:
        return []  # not here as it was planned: read whole, through the worker's checks
    head = min(HEAD_BYTES, size_of_chunk)
    if size < smallest_cut(size_of_chunk) or not _one_depth_stream(path, fmt):
        return []
    cuts = _cuts(head, size, size_of_chunk)
    return [
        {
            "chunk": {
                "path": path,
                "format": fmt,
                "start": cuts[i],
                "end": cuts[i + 1],
                "size": size,
                "mtime_ns": mtime_ns,
                "drift_ms": cfg.drift_ms,
                "book_interval_us": cfg.book_interval_us,
                "book_depth": cfg.book_depth,
            }
        }
        for i in range(len(cuts) - 1)
    ]


def _cuts(head: int, size: int, size_of_chunk: int) -> list[int]:
    """Where the chunks of a file of ``size`` bytes start (and the last ends), after its head.

    The first chunks are small, then double: a recording's stream may become live (bridged
    on its REST snapshot) only after the head, and a chunk that starts before is read again
    by the last stage, one line after the other.  The last ones halve, so that the workers
    run out of chunks at nearly the same time.  In between they are of one size, at most
    ``size_of_chunk``."""
    first = min(FIRST_CHUNK_BYTES, size_of_chunk)
    up = list(itertools.takewhile(lambda n: n < size_of_chunk, (first << k for k in range(64))))
    down = [n for n in (size_of_chunk // 2, size_of_chunk // 4, size_of_chunk // 8) if n >= first]
    middle = size - head - sum(up) - sum(down)
    if middle < size_of_chunk:  # too small for both ends: doubling from the head, to a quarter
        cuts, step, most = [head], first, max(first, (size - head) // 4)
        while cuts[-1] < size:
            cuts.append(min(size, cuts[-1] + step))
            step = min(2 * step, most)
        return cuts
    count = -(-middle // size_of_chunk)
    sizes = up + [middle // count + (k < middle % count) for k in range(count)] + down
    return list(itertools.accumulate(sizes, initial=head))


def _one_depth_stream(path: str, fmt: str) -> bool:
    """The head of the capture is (nearly) all diffs of one depth stream the lane takes: a
    chunk of a recording that mixes other messages in stops at the first of them, so cutting
    it would only add work."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(HEAD_BYTES)
    except OSError:
        return False
    lines = head.split(b"\n")[:-1]
    lane = fastlane.speculative_lane(fmt)
    for n, line in enumerate(lines):
        if fastlane.bind_speculative(lane, line) is not None:
            rest = lines[n:]
            taken = sum(1 for line in rest if lane.probe(line + b"\n") is not None)
            return len(rest) >= 10 and taken >= 0.95 * len(rest)
    return False


@dataclass(slots=True)
class Piece:
    """What a chunk's speculative run took: the lines from ``start`` to ``stop`` (offsets of
    line starts), and what the assembly needs to check and lay it."""

    start: int
    stop: int
    first_line: bytes = b""  # the first line's JSON, for its shape
    symbol: str = ""
    rule: int = 0
    found: dict[str, Any] = field(default_factory=dict)  # Lane.speculation()
    start_window: list[int] = field(default_factory=list)
    start_exch: int | None = None
    locals_: array = field(default_factory=lambda: array("q"))
    best: array = field(default_factory=lambda: array("q"))

    @property
    def messages(self) -> int:
        return int(self.found.get("messages", 0))

    def encode(self) -> bytes:
        found = {k: v for k, v in self.found.items() if k not in ("bids", "asks")}
        head = {
            "start": self.start,
            "stop": self.stop,
            "first_line": self.first_line.decode("utf-8", "replace"),
            "symbol": self.symbol,
            "rule": self.rule,
            "found": {**found, "hist": sorted(found.get("hist", {}).items())},
            "start_window": self.start_window,
            "start_exch": self.start_exch,
        }
        parts = [
            orjson.dumps(head),
            self.locals_.tobytes(),
            self.best.tobytes(),
            fastlane.pack_overlay(self.found["bids"]),
            fastlane.pack_overlay(self.found["asks"]),
        ]
        body = b"".join(struct.pack("<Q", len(p)) + p for p in parts)
        return body

    @classmethod
    def decode(cls, raw: bytes) -> Piece | None:
        if not raw:
            return None
        body = raw
        parts = []
        pos = 0
        while pos < len(body):
            (n,) = struct.unpack_from("<Q", body, pos)
            parts.append(body[pos + 8 : pos + 8 + n])
            pos += 8 + n
        head = orjson.loads(parts[0])
        found = head["found"]
        found["hist"] = {int(b): int(c) for b, c in found["hist"]}
        found["drifts"] = [tuple(d) for d in found["drifts"]]
        found["shapes"] = [tuple(d) for d in found["shapes"]]
        found["bids"], found["asks"] = fastlane.unpack_overlay(parts[3]), fastlane.unpack_overlay(parts[4])
        locals_, best = array("q"), array("q")
        locals_.frombytes(parts[1])
        best.frombytes(parts[2])
        return cls(
            head["start"],
            head["stop"],
            head["first_line"].encode("utf-8"),
            head["symbol"],
            head["rule"],
            found,
            list(head["start_window"]),
            head["start_exch"],
            locals_,
            best,
        )


def run_chunk(args: dict[str, Any]) -> bytes:
    """Audit one chunk speculatively (a worker's sub-task): its encoded :class:`Piece`, or
    nothing where it cannot (the file is not here as planned, the lane is not built, its
    first line is not a diff the lane takes)."""
    path, fmt = args["path"], args["format"]
    if not fastlane.available() or fmt not in fastlane.FORMATS:
        return b""
    try:
        if size_and_mtime(path) != (args["size"], args["mtime_ns"]):
            return b""
        start = line_start(path, args["start"])
        if start >= args["end"]:
            return b""
        text = b"".join(span_blocks(path, start, args["end"]))
        lane = fastlane.speculative_lane(fmt)
        first = text[: text.find(b"\n") + 1 or len(text)]
        bound = fastlane.bind_speculative(lane, first)
        if bound is None:
            return b""
        symbol, rule = bound
        # The lines before the chunk, as far back as the clock window reaches.
        reach = TAIL_BYTES
        with open(path, "rb") as fh:
            while True:
                back = max(0, start - reach)
                fh.seek(back)
                window, last_exch, last_local = _clock_before(lane, fh.read(start - back), back > 0)
                if len(window) == WINDOW or back == 0 or reach >= MAX_TAIL_BYTES:
                    break
                reach *= 4
    except (OSError, ValueError):
        return b""
    interval = int(args.get("book_interval_us", 0))
    # Where the rebuilt book is next due, when the messages before came one after the other.
    next_emit = (last_local // interval + 1) * interval if interval > 0 and last_local is not None else 0
    stop = lane.speculate(
        text,
        0,
        len(text),
        window,
        last_exch,
        int(args["drift_ms"] * 1000),
        interval,
        int(args.get("book_depth", 25)),
        next_emit,
    )
    found = lane.speculation()
    if not found["messages"]:
        return b""
    found["top_local"] = max(lane.locals_)  # the latest receive time (read here, in parallel)
    piece = Piece(
        start,
        start + stop,
        fastlane.json_part(first),
        symbol,
        rule,
        found,
        window,
        last_exch,
        lane.locals_,
        lane.best,
    )
    return piece.encode()


def _clock_before(lane: Any, tail: bytes, cut: bool) -> tuple[list[int], int | None, int | None]:
    """The clock window (the offsets of the last messages, oldest first), the last exchange
    time and the last receive time the lines of ``tail`` leave, as far as they show them."""
    lines = tail.split(b"\n")
    if cut:
        lines = lines[1:]  # the first may be a line's end
    offsets: list[int] = []
    last_exch = last_local = None
    for line in reversed(lines):
        got = lane.probe(line + b"\n") if line else None
        if got is None:
            continue
        local, exch = got
        if last_exch is None:
            last_exch, last_local = exch, local
        offsets.append(local - exch)
        if len(offsets) == WINDOW:
            break
    offsets.reverse()
    return offsets, last_exch, last_local


# -- the assembly --------------------------------------------------------------------------


def assemble(
    job: Plan, segment: int, cfg: AuditConfig, answers: list[bytes], planned: tuple[int, int] | None
) -> SegmentResult | None:
    """The segment's result from its chunks' runs (see the module text); None where the file
    is not here as it was planned (``planned``: its size and modification time), to be read
    as the chunks read it (then the segment is audited whole, through the worker's source)."""
    (path,) = job.segments[segment][0]
    fmt = job.formats[path]
    assert fmt is not None
    own = job.segment_inputs(segment)
    engine = Engine(cfg)
    engine.inputs = own
    summaries = {s.path: s for s in own}
    here = size_and_mtime(path)
    if here is None or here != planned:
        return None
    size = here[0]
    pieces = sorted((p for p in map(Piece.decode, answers) if p is not None), key=lambda p: p.start)
    contexts = engine.open_group([path], summaries)
    ctx = contexts[path]
    pos = line = 0
    laid = _Laid()
    for piece in pieces:
        if piece.start < pos:
            continue
        if pos < piece.start:
            laid.flush()  # the Python path reads the book
            line = engine.read_range(contexts, path, fmt, pos, piece.start, line)
            pos = piece.start
        if _lay(engine, ctx, piece, line, cfg, laid):
            line += piece.messages
            ctx.summary.lines += piece.messages
            pos = piece.stop
    laid.flush()
    if pos < size:
        engine.read_range(contexts, path, fmt, pos, size, line)
    engine.close_group(contexts)
    engine.close_segment()
    return SegmentResult(segment, own, engine.parts, engine.malformed, engine.book_rows)


class _Laid:
    """The chunks laid on one book since the Python path last read it: the book's sides as
    the next chunk finds them (``_lane_c.Base``), and the chunks' overlays composed into one,
    laid on the Python book only when something reads it (:meth:`flush`)."""

    def __init__(self) -> None:
        self.book: Book | None = None
        self.bases: tuple[Any, Any] | None = None
        self.overlays: tuple[Any, Any] | None = None  # _lane_c.Composed, bids and asks

    def bases_of(self, book: Book) -> tuple[Any, Any]:
        """The sides of ``book`` with every chunk laid so far."""
        if self.book is not book or self.bases is None:
            self.flush()
            self.book = book
            self.bases = fastlane.base(book.bids), fastlane.base(book.asks)
        return self.bases

    def add(self, bids: bytes, asks: bytes) -> None:
        """Lay one more chunk's overlays (on the sides :meth:`bases_of` gave)."""
        assert self.bases is not None
        if self.overlays is None:
            self.overlays = fastlane.composed(), fastlane.composed()
        self.overlays[0].add(bids)
        self.overlays[1].add(asks)
        if not (self.bases[0].lay(bids) and self.bases[1].lay(asks)):
            self.flush()  # (cannot be: the chunk's crossed checks read these sides)

    def flush(self) -> None:
        """Lay the composed overlays on the Python book."""
        if self.book is not None and self.overlays is not None:
            fastlane.lay_overlay(self.book.bids, self.overlays[0].overlay())
            fastlane.lay_overlay(self.book.asks, self.overlays[1].overlay())
        self.book = self.bases = self.overlays = None


def _lay(engine: Engine, ctx: _FileContext, piece: Piece, line: int, cfg: AuditConfig, laid: _Laid) -> bool:
    """Lay ``piece`` on the engine's state when its assumptions hold there exactly; False
    (nothing changed) when they do not."""
    session = fastlane.session_ready(ctx)
    watch = ctx.shapes
    if session is None or watch is None:
        return False
    key = fastlane.book_key(session, piece.symbol)
    if key is None:
        return False
    aud = fastlane.ready(engine, ctx, key)
    if aud is None or fastlane.RULES[id(aud.rule)] != piece.rule:
        return False
    if aud.bridged and not aud.safe:
        return False  # its diffs are kept for a REST snapshot: read on the lane, one by one
    found = piece.found
    tim = aud.timing
    if aud.seq is None or aud.seq.last != found["start_prev"]:
        return False
    if tim._last_exch != piece.start_exch or list(tim._recent) != piece.start_window:
        return False
    if tim.threshold_us != int(cfg.drift_ms * 1000):
        return False
    try:
        obj = orjson.loads(piece.first_line)
    except orjson.JSONDecodeError:
        return False
    sig = fastlane.signature(piece.first_line)
    if sig is None:
        return False
    shapes = fastlane.watch_after(watch, obj, sig, found["shapes"])
    if shapes is None:
        return False
    book = aud.book
    if book.bids.exact or book.asks.exact:
        return False
    rows = found["rows"]
    sink = aud.sink
    if sink is not None and (not isinstance(sink, BookRows) or aud.next_emit_us != found["start_next_emit"]):
        return False
    if sink is None and rows:
        return False
    bids, asks = laid.bases_of(book)
    overlays = fastlane.overlay_table(found["bids"]), fastlane.overlay_table(found["asks"])
    crossed = fastlane.resolve(bids, asks, *overlays, piece.best, piece.messages, aud.crossed, aud.safe)
    if crossed is None:
        return False
    events, crossed_after = crossed
    # -- the piece holds here: lay it. --
    watch.variants, watch.fingerprints = shapes.variants, shapes.fingerprints
    locals_ = piece.locals_
    findings: list[tuple[int, int, str, dict[str, Any]]] = [
        (t, 0, Fault.TIMESTAMP_DRIFT, dict(detail)) for t, _, detail in found["drifts"]
    ]
    findings += [(t, 1, Fault.CROSSED_BOOK, {"best_bid": b, "best_ask": a}) for t, b, a in events]
    findings.sort(key=lambda f: (f[0], f[1]))
    for t, _, fault, detail in findings:
        aud._find(fault, ctx.summary.path, line + 1 + t, locals_[t], **detail)
    if rows:
        assert isinstance(sink, BookRows)
        if aud.in_sync:
            due = fastlane.rows(bids, asks, *overlays, rows, sink.depth)
            for local, exch, best_bids, best_asks in due:
                sink.add(key, local, exch, best_bids, best_asks)
        else:
            for _ in rows:
                aud._note("book_rows_withheld_unsafe")
    if sink is not None:
        aud.next_emit_us = found["next_emit"]
    laid.add(found["bids"], found["asks"])
    m = piece.messages
    res = aud.result
    res.messages += m
    res.saw(found["first_us"])
    res.saw(found["last_us"])
    aud.deltas_since_snapshot += m
    top = found["top_local"]
    if aud.last_local_us is None or top > aud.last_local_us:
        aud.last_local_us = top
    aud.last_seen_us = aud.applied_us = locals_[-1]
    aud.recent_us.extend(locals_[-(aud.recent_us.maxlen or m) :])
    if aud.safe:
        aud.crossed = crossed_after
    if aud.open_unsafe is not None:
        aud.open_unsafe.messages += m
    aud.seq.last = found["last_id"]
    tim._last_exch = found["last_exch"]
    tim._recent.clear()
    tim._recent.extend(found["window"])
    tim._ordered[:] = sorted(found["window"])
    lat = tim.latency
    for b, n in found["hist"].items():
        lat.hist[b] = lat.hist.get(b, 0) + n
    lat.count += found["lat_count"]
    if found["max_us"] is not None and (lat.max_us is None or found["max_us"] > lat.max_us):
        lat.max_us = found["max_us"]
    tim.compared += found["compared"]
    tim.over_100ms += found["over"]
    ctx.last_events = (fastlane.StreamOf(key),)
    return True

"""The fast lane: the compiled loop (``shared._lane_c``) that takes runs of ordinary depth
lines of one capture file, and the Python that decides when it may.

The Python path of :class:`shared.engine.Engine` reads every line it is given and stays the
reference.  A file read through the lane gives the engine only the lines the lane leaves:
after each of them the lane looks at what the Python path made of it, and binds itself to a
book stream when everything about that stream is ordinary (live, bridged, nothing held back,
no observer, a venue and shape it knows, a shape past its warm-up).  It then takes the lines
that follow for as long as each is a diff of that stream that the Python path would have
applied with nothing to report but a crossed book, and hands the first other line back.
Results are the same bytes either way; ``RETAPE_PURE_PYTHON=1`` turns the lane off.

Venues: Binance spot, USD-M and COIN-M ``depthUpdate`` diffs and Bybit v5 ``orderbook``
deltas, in ``epoch`` (hftbacktest) and ``tardis-raw`` captures.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson

from shared import compiled
from shared.auditors import LIVE, BookAuditor
from shared.book import _MISSING, _PRICE_KEY, price_key
from shared.checks.shapes import WARM_UP, ShapeWatch, fingerprint
from shared.exchanges.base import MAX_EPOCH_MS
from shared.exchanges.binance import BinanceSession
from shared.exchanges.bybit import BybitSession
from shared.formats.lines import LINE_TOO_LONG, TruncatedInput, line_blocks, span_blocks
from shared.formats.readers import epoch_record, tardis_raw_record, too_long
from shared.formats.timestamps import iso_seconds
from shared.model import Channel, Fault, RawRecord, StreamKey
from shared.sequencing import CONSECUTIVE, PREV_LINK

if TYPE_CHECKING:
    from shared.engine import Engine, _FileContext

_C = compiled.load("shared._lane_c")

# Capture formats the lane reads: how a line is read on the Python path, and the lane's code
# for its receive time.
_TIME_EPOCH, _TIME_ISO = 1, 2
FORMATS: dict[str, tuple[Callable[[str, int, bytes], RawRecord], int]] = {
    "epoch": (epoch_record, _TIME_EPOCH),
    "tardis-raw": (tardis_raw_record, _TIME_ISO),
}
# The lane's code for a venue's rule of book sequence ids.
CONSECUTIVE_RULE, PREV_LINK_RULE = 1, 2
RULES = {id(CONSECUTIVE): CONSECUTIVE_RULE, id(PREV_LINK): PREV_LINK_RULE}
# Text near the start of a line that may be a depth diff the lane takes (worth binding to).
_DEPTH_MARKS = (b"depthUpdate", b'"orderbook.')
_SEEN_MAX = 128  # the receive times the lane keeps for BookAuditor.recent_us (_lane_c.SEEN_MAX)
_T_STR, _T_INT, _T_OBJ, _T_END, _T_LEVELS, _T_EMPTY = 1, 2, 3, 4, 5, 6


def available() -> bool:
    """The lane is built and wanted (``RETAPE_PURE_PYTHON`` not set)."""
    return _C is not None


def usable(engine: Engine, fmt: str | None) -> bool:
    """The engine reads whole files for a plain audit: no observer, no cut-off time."""
    return (
        _C is not None
        and fmt in FORMATS
        and engine.select is None
        and engine.on_event is None
        and engine.on_applied is None
        and engine.until_us is None
        and engine.head is None
    )


class StreamOf(NamedTuple):
    """What ``ctx.last_events`` needs of the lane's lines: their stream."""

    key: StreamKey


class _Binding(NamedTuple):
    key: StreamKey
    auditor: BookAuditor
    signature: Any
    symbol: bytes


Signature = list[tuple[int, bytes, int]]
Fields = dict[bytes, tuple[int, int]]


def _object_fields(sig: Signature, start: int, depth: int) -> Fields | None:
    """The fields of the object whose first field is ``sig[start]`` (at ``depth``): name ->
    (index, type); None when a name repeats."""
    out: Fields = {}
    for i in range(start, len(sig)):
        d, k, t = sig[i]
        if d < depth or (t == _T_END and d == depth):  # the end of this object
            break
        if d != depth:
            continue
        if k in out:
            return None
        out[k] = (i, t)
    return out


def _typed(fields: Fields, want: dict[bytes, int]) -> bool:
    return all(name in fields and fields[name][1] == t for name, t in want.items())


def _level_lists(sig: Signature, fields: Fields) -> tuple[int, int] | None:
    """Which lists of levels (by order in the line) are the bids (``b``) and the asks (``a``)."""
    lists = [i for i, (_, _, t) in enumerate(sig) if t in (_T_LEVELS, _T_EMPTY)]
    bids, asks = fields.get(b"b"), fields.get(b"a")
    if (
        bids is None
        or asks is None
        or bids[1] not in (_T_LEVELS, _T_EMPTY)
        or asks[1] not in (_T_LEVELS, _T_EMPTY)
    ):
        return None
    return lists.index(bids[0]), lists.index(asks[0])


def roles_of(obj: Any, sig: Signature) -> tuple[dict[str, Any], str] | None:
    """The lane's roles for a depth diff line (``obj`` decoded, ``sig`` its signature) of a
    venue it knows, and its symbol; None for any other line."""
    if not isinstance(obj, dict):
        return None
    return _binance_roles(obj, sig) or _bybit_roles(obj, sig)


def _bybit_roles(obj: dict[str, Any], sig: Signature) -> tuple[dict[str, Any], str] | None:
    """Bybit v5 ``orderbook.<depth>.<SYM>`` deltas: ``{"topic", "type": "delta", "ts",
    "data": {"s", "b", "a", "u", "seq"}, "cts"}``, first = last = ``u``, no trimming."""
    topic = obj.get("topic")
    data = obj.get("data")
    if not isinstance(topic, str) or not topic.startswith("orderbook.") or obj.get("type") != "delta":
        return None
    if not isinstance(data, dict) or not isinstance(data.get("s"), str) or not data["s"]:
        return None
    top = _object_fields(sig, 0, 0)
    if top is None or top.get(b"data", (0, 0))[1] != _T_OBJ:
        return None
    inner = _object_fields(sig, top[b"data"][0] + 1, 1)
    if inner is None or not _typed(top, {b"topic": _T_STR, b"type": _T_STR, b"ts": _T_INT}):
        return None
    lists = _level_lists(sig, inner)
    if lists is None or not _typed(inner, {b"s": _T_STR, b"u": _T_INT}):
        return None
    symbol = data["s"]
    roles = {
        "kind": top[b"type"][0],
        "kind_value": b"delta",
        "symbol": inner[b"s"][0],
        "symbol_value": symbol.encode("ascii"),
        "const": top[b"topic"][0],  # orderbook.<depth>.<SYM>: one subscription's messages
        "const_value": topic.encode("ascii"),
        "exch": top[b"ts"][0],
        "exch_max": MAX_EPOCH_MS,  # ms_to_us gives no time past it
        "first": inner[b"u"][0],
        "last": inner[b"u"][0],
        "prev": -1,
        "reset_one": True,  # u == 1 is a full snapshot after a restart (BookMsg.reset)
        "bids": lists[0],
        "asks": lists[1],
    }
    return roles, symbol


def _binance_roles(obj: dict[str, Any], sig: Signature) -> tuple[dict[str, Any], str] | None:
    """Binance ``depthUpdate`` diffs, in a combined-stream envelope or bare."""
    data = obj.get("data", obj) if "stream" in obj else obj
    if not isinstance(data, dict) or data.get("e") != "depthUpdate" or "lastUpdateId" in data:
        return None
    fields = _object_fields(sig, 0, 0)
    if fields is not None and b"stream" in fields and b"data" in fields:  # a combined-stream envelope
        if fields[b"data"][1] != _T_OBJ:
            return None
        fields = _object_fields(sig, fields[b"data"][0] + 1, 1)
    if fields is None or not _typed(
        fields, {b"e": _T_STR, b"E": _T_INT, b"s": _T_STR, b"U": _T_INT, b"u": _T_INT}
    ):
        return None
    lists = _level_lists(sig, fields)
    prev = fields.get(b"pu")
    if lists is None or (prev is not None and prev[1] != _T_INT):
        return None
    symbol = data["s"]
    roles = {
        "kind": fields[b"e"][0],
        "kind_value": b"depthUpdate",
        "symbol": fields[b"s"][0],
        "symbol_value": symbol.encode("ascii"),
        "exch": fields[b"E"][0],
        "first": fields[b"U"][0],
        "last": fields[b"u"][0],
        "prev": prev[0] if prev is not None else -1,
        "bids": lists[0],
        "asks": lists[1],
    }
    return roles, symbol


def _read_roles(lane: Any, text: bytes) -> tuple[Signature, Any, dict[str, Any], str] | None:
    """The signature, the decoded message, the lane's roles and the symbol of the JSON
    ``text``; None when it is not a diff the lane takes."""
    sig = lane.signature(text)
    if sig is None:
        return None
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    got = roles_of(obj, sig)
    if got is None:
        return None
    return sig, obj, got[0], got[1]


def session_ready(ctx: _FileContext) -> BinanceSession | BybitSession | None:
    """The file's venue session, when its next depth diff is plain for the lane."""
    session = ctx.session
    if type(session) is BinanceSession and session._held_snapshot is None:
        return session
    if type(session) is BybitSession:
        return session
    return None


def book_key(session: BinanceSession | BybitSession, symbol: str) -> StreamKey | None:
    """The book stream a diff of ``symbol`` feeds in ``session`` (as its parser names it)."""
    if isinstance(session, BinanceSession):
        return session._book_keys.get(symbol)
    return StreamKey(session.exchange, symbol.upper(), Channel.BOOK)


def watch_after(
    watch: ShapeWatch, obj: Any, sig: Signature, seen: list[tuple[int, int]]
) -> ShapeWatch | None:
    """A copy of ``watch`` after the messages ``seen`` ((message, mask): ``obj``'s shape with
    its level lists empty or not by ``mask``, in order), ``watch`` itself when there are none;
    None where one of them would be a format change (a finding the lane does not make)."""
    variants = dict(_list_variants(obj, sig))
    masks = {mask for _, mask in seen}
    if all(watch.fingerprints.get(fingerprint(variants[mask]), 0) > WARM_UP for mask in masks):
        return watch  # every shape past its warm-up: the watch records nothing
    after = copy.deepcopy(watch)
    for _, mask in seen:
        if after.check(variants[mask]) is not None:
            return None
    return after


def _list_variants(obj: Any, sig: Signature) -> Iterator[tuple[int, Any]]:
    """``obj`` with each of its (at most two) lists of levels empty or not, by mask (bit i:
    the i-th list is not empty): the shapes a line of the same fields can have."""
    paths = []
    parent = ""
    for depth, k, t in sig:
        if depth == 0:
            parent = k.decode("ascii")
        if t in (_T_LEVELS, _T_EMPTY):
            paths.append((parent, k.decode("ascii")) if depth == 1 else (k.decode("ascii"),))
    filled = [["1", "1"]]
    for mask in range(1 << len(paths)):
        variant = orjson.loads(orjson.dumps(obj))
        for i, path in enumerate(paths):
            holder = variant
            for name in path[:-1]:
                holder = holder[name]
            holder[path[-1]] = filled if mask >> i & 1 else []
        yield mask, variant


# Up to this many streams fed by a file, the lane asks each whether it is ready before reading
# a line to bind to (the diffs of a recording before its REST snapshot all go to Python).
_FEW_STREAMS = 4


def ready(engine: Engine, ctx: _FileContext, key: StreamKey) -> BookAuditor | None:
    """The stream's auditor, when its next diff is ordinary for the lane: live, bridged,
    nothing held back or kept for a REST snapshot, no observer, float keys, no checksum."""
    aud = engine.books.get(key)
    if aud is None or key not in ctx.stream_keys:
        return None
    seq = aud.seq
    if (
        aud.state != LIVE
        or aud.at_seam
        or aud.quiet
        or aud.on_applied is not None
        or aud.cause is not None
        or aud.rules.checksum is not None
        or seq is None
        or type(seq.last) is not int
        or seq.pending
        or seq.bridge
        or (aud.open_unsafe is None) != aud.in_sync
        or (aud.recent_us.maxlen or 0) > _SEEN_MAX
        or aud.book.bids.exact
        or aud.book.asks.exact
        or id(aud.rule) not in RULES
    ):
        return None
    return aud


class LaneReader:
    """Reads one file for the engine: the lane takes what it can, the rest are records."""

    def __init__(
        self,
        engine: Engine,
        ctx: _FileContext,
        path: str,
        fmt: str,
        span: tuple[int, int] | None = None,
        line: int = 0,
    ) -> None:
        self.engine = engine
        self.ctx = ctx
        self.path = path
        # The whole file, or the lines of a plain file that start in [start, end), numbered
        # from ``line + 1``; ``line`` is the number of the last line read.
        self.span = span
        self.line = line
        self.record_of, time_format = FORMATS[fmt]
        self.lane: Any = None
        if _C is None:  # the Python path reads every line
            return
        lane = self.lane = _C.Lane()
        lane.summary = ctx.summary
        lane.path = path
        lane.time_format = time_format
        lane.price_keys = _PRICE_KEY
        lane.price_key = price_key
        lane.missing = _MISSING
        lane.crossed_fault = Fault.CROSSED_BOOK
        lane.drift_fault = Fault.TIMESTAMP_DRIFT
        lane.iso_seconds_of = iso_seconds
        self.binding: _Binding | None = None

    def records(self) -> Iterator[RawRecord]:
        try:
            yield from self._records()
        finally:
            if self.lane is not None:
                self.lane.flush()  # the Python book is whole again, however reading ended

    def _blocks(self) -> Iterator[bytes]:
        if self.span is None:
            return line_blocks(self.path)
        return span_blocks(self.path, *self.span)

    def _records(self) -> Iterator[RawRecord]:
        path, lane, record_of = self.path, self.lane, self.record_of
        try:
            for block in self._blocks():
                if block is LINE_TOO_LONG:
                    self.line += 1
                    if lane is not None:
                        lane.flush()
                    yield too_long(path, self.line)
                    continue
                pos, size = 0, len(block)
                while pos < size:
                    if lane is not None and lane.bound:
                        was = self.line
                        pos, self.line = lane.run(block, pos, self.line)
                        if self.line != was:
                            assert self.binding is not None
                            self.ctx.last_events = (StreamOf(self.binding.key),)
                            if lane.kept:
                                self._keep(block, lane.kept)
                        if pos >= size:
                            break
                    end = block.find(b"\n", pos)
                    nxt = end + 1
                    if end < 0:
                        end = nxt = size
                    line = block[pos:end]
                    if line.endswith(b"\r"):
                        line = line[:-1]
                    self.line += 1
                    rec = record_of(path, self.line, line)
                    if lane is not None:
                        lane.flush()  # the Python path may read the book
                    yield rec
                    if lane is not None:
                        self._after(rec)
                    pos = nxt
        except TruncatedInput as exc:
            if lane is not None:
                lane.flush()
            yield RawRecord.cut_off(path, self.line + 1, str(exc))

    def _keep(self, block: bytes, kept: list[tuple[int, int, int]]) -> None:
        """The diffs the lane applied while the book was unsafe, as the messages the auditor
        keeps for a REST snapshot (read here as the Python path reads them)."""
        assert self.binding is not None and self.ctx.session is not None
        auditor = self.binding.auditor
        keep = auditor.unsafe_applied
        for start, end, line in kept[-(keep.maxlen or len(kept)) :]:
            rec = self.record_of(self.path, line, block[start:end])
            keep.extend(self.ctx.session.parse(rec, orjson.loads(rec.raw)))  # type: ignore[arg-type]

    def _after(self, rec: RawRecord) -> None:
        """The Python path read ``rec``: bind to its stream, or keep the binding only if it
        is still ordinary."""
        lane = self.lane
        if rec.kind == "json" and any(mark in rec.raw[:160] for mark in _DEPTH_MARKS):
            binding = self._bind(rec.raw)
            if binding is not None:
                self.binding = binding
                return
        binding = self.binding
        if binding is not None and ready(self.engine, self.ctx, binding.key) is binding.auditor:
            return
        lane.bound = False
        lane.auditor = None
        self.binding = None

    def _bind(self, raw: bytes) -> _Binding | None:
        ctx, lane = self.ctx, self.lane
        watch = ctx.shapes
        if len(ctx.stream_keys) <= _FEW_STREAMS and not any(
            ready(self.engine, ctx, k) is not None for k in ctx.stream_keys
        ):
            return None  # no stream of the file is ready (before a bridge): skip reading the line
        session = session_ready(ctx)
        read = _read_roles(lane, raw) if session is not None and watch is not None else None
        if read is None:
            return None
        sig, obj, roles, symbol = read
        assert session is not None and watch is not None
        key = book_key(session, symbol)
        if key is None:
            return None
        aud = ready(self.engine, ctx, key)
        if aud is None:
            return None
        rule = RULES[id(aud.rule)]
        if rule == PREV_LINK_RULE and roles["prev"] < 0:
            return None
        b = self.binding
        if b is not None and b.auditor is aud and b.signature == sig and lane.bound:
            return b
        if not lane.bind(raw, roles, 1000):
            return None
        lane.loaded = False  # its book is read from the Python one when it next runs
        # The emptiness of the level lists makes other shapes: each its own warm-up, which
        # the lane goes through with the watch.
        variants = dict(_list_variants(obj, sig))
        lane.watch = watch
        lane.warm_up = WARM_UP
        lane.variants = [variants.get(mask) for mask in range(4)]
        lane.variant_fps = [None if v is None else fingerprint(v) for v in lane.variants]
        for mask, fp in enumerate(lane.variant_fps):
            lane.allow(mask, fp is not None and watch.fingerprints.get(fp, 0) > WARM_UP)
        lane.rule = rule
        lane.auditor = aud
        return _Binding(key, aud, sig, roles["symbol_value"])


# -- for the chunks of one recording (shared.chunking) ----------------------------------------


def json_part(line: bytes) -> bytes:
    """The JSON of a capture line (after its time), without the line end."""
    return line.partition(b" ")[2].rstrip(b"\r\n")


def signature(text: bytes) -> Signature | None:
    assert _C is not None
    sig: Signature | None = _C.Lane().signature(text)
    return sig


def speculative_lane(fmt: str) -> Any:
    """A lane for a speculative run over lines of format ``fmt``."""
    assert _C is not None
    lane = _C.Lane()
    lane.time_format = FORMATS[fmt][1]
    lane.iso_seconds_of = iso_seconds
    return lane


def bind_speculative(lane: Any, line: bytes) -> tuple[str, int] | None:
    """Bind ``lane`` to the shape of ``line`` (a chunk's first line) for a speculative run:
    its symbol and the rule its ids would follow; None when it is not a diff the lane takes."""
    text = json_part(line)
    read = _read_roles(lane, text)
    if read is None:
        return None
    _, _, roles, symbol = read
    if not lane.bind(text, roles, 1000):
        return None
    for mask in range(4):
        lane.allow(mask, True)  # the assembly checks each shape used was past its warm-up
    lane.rule = PREV_LINK_RULE if roles["prev"] >= 0 else CONSECUTIVE_RULE
    return symbol, lane.rule


def base(side: Any) -> Any:
    """A Python side as a chunk's overlay lies on it (``_lane_c.Base``)."""
    assert _C is not None
    return _C.Base(side)


def pack_overlay(fixed: bytes) -> bytes:
    """A speculative run's overlay as it travels (``_lane_c.pack_overlay``)."""
    assert _C is not None
    out: bytes = _C.pack_overlay(fixed)
    return out


def unpack_overlay(packed: bytes) -> bytes:
    assert _C is not None
    out: bytes = _C.unpack_overlay(packed)
    return out


def overlay_table(packed: bytes) -> Any:
    """A speculative run's overlay as a table (``_lane_c.overlay_table``)."""
    assert _C is not None
    return _C.overlay_table(packed)


def resolve(*args: Any) -> Any:
    assert _C is not None
    return _C.resolve(*args)


def rows(*args: Any) -> Any:
    assert _C is not None
    return _C.rows(*args)


def composed() -> Any:
    """Overlays laid one after the other, as one (``_lane_c.Composed``)."""
    assert _C is not None
    return _C.Composed()


def lay_overlay(side: Any, entries: bytes) -> None:
    """Lay a speculative run's overlay on a Python side, as its levels one by one would."""
    assert _C is not None
    _C.lay_overlay(side, entries, _PRICE_KEY, price_key, _MISSING)

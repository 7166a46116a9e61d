"""Per-stream auditors: feed normalized events in arrival order, read findings and counts.

One auditor holds one stream's whole state (book, sequencer, clocks), so a worker can
audit a segment of a stream on its own and hand back a :class:`StreamResult`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shared.book import Book, differences
from shared.checks.funding import FundingCheck
from shared.checks.timing import Latency, Timing
from shared.exchanges.base import VenueRules
from shared.model import FAULT_KINDS, BookMsg, Fault, Finding, FundingMsg, Gap, StreamKey, TradeMsg
from shared.numbers import INVALID, classify_qty, is_valid_price
from shared.sequencing import Increasing, Sequencer, Step

# Diffs kept while waiting for a snapshot to bridge onto.
EARLY_LIMIT = 4096
# Diffs kept while the book is unsafe, for a REST snapshot fetched to resync (a recorder
# fetches one within seconds of losing the stream).
RESYNC_LIMIT = 1024

# Book states.
UNKNOWN = 0  # no snapshot yet, or after a disconnect
LIVE = 2


@dataclass(frozen=True, slots=True)
class AuditConfig:
    drift_ms: float = 100.0
    reorder_window: int = 64
    book_interval_us: int = 0  # 0: no periodic book output
    book_depth: int = 25


BookSink = Callable[[StreamKey, int, int | None, Book], None]


@dataclass(slots=True)
class StreamResult:
    """What the audit of one stream (or one part of it) found.  Parts merge exactly."""

    key: StreamKey
    messages: int = 0
    faults: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FAULT_KINDS, 0))
    gaps: list[Gap] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    latency: Latency = field(default_factory=Latency)
    # Messages read but not applied for a reason that is not a fault.
    notes: dict[str, int] = field(default_factory=dict)

    @property
    def latency_ms(self) -> dict[str, float] | None:
        return self.latency.percentiles_ms()

    def merge(self, later: StreamResult) -> None:
        """Add the result of a later, independent part of the same stream."""
        self.messages += later.messages
        for kind, n in later.faults.items():
            self.faults[kind] = self.faults.get(kind, 0) + n
        self.gaps.extend(later.gaps)
        self.findings.extend(later.findings)
        self.latency.merge(later.latency)
        for what, n in later.notes.items():
            self.notes[what] = self.notes.get(what, 0) + n

    def as_json(self) -> dict[str, Any]:
        return {
            "key": list(self.key),
            "messages": self.messages,
            "faults": self.faults,
            "gaps": [g.as_json() for g in self.gaps],
            "findings": [f.as_json() for f in self.findings],
            "latency": self.latency.as_json(),
            "notes": self.notes,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StreamResult:
        key = StreamKey(*data["key"])
        return cls(
            key,
            data["messages"],
            dict(data["faults"]),
            [Gap(**g) for g in data["gaps"]],
            [Finding.from_json(key, f) for f in data["findings"]],
            Latency.from_json(data["latency"]),
            dict(data["notes"]),
        )


class _Auditor:
    def __init__(self, key: StreamKey, rules: VenueRules, cfg: AuditConfig) -> None:
        self.key = key
        self.rules = rules
        self.cfg = cfg
        self.result = StreamResult(key)
        self.timing = Timing(cfg.drift_ms)

    def _find(self, fault: str, path: str, line: int, local_us: int | None, **detail: Any) -> None:
        r = self.result
        r.faults[fault] += 1
        r.findings.append(Finding(self.key, fault, path, line, local_us, detail))

    def _note(self, what: str) -> None:
        notes = self.result.notes
        notes[what] = notes.get(what, 0) + 1

    def _clock(self, local_us: int | None, exch_us: int | None, path: str, line: int) -> None:
        drift = self.timing.check(local_us, exch_us)
        if drift is not None:
            self._find(Fault.TIMESTAMP_DRIFT, path, line, local_us, **drift)

    def seam(self) -> None:
        """The recording that fed this stream ended (end of an input group); another may follow."""
        self.timing.new_recording()

    def disconnect(self, path: str, line: int, local_us: int | None) -> None:
        """A recorder disconnect: messages may be missing; the clock starts afresh."""
        self._find(Fault.DISCONNECT, path, line, local_us)
        self.timing.new_recording()

    def _gap(self, gap: Gap, path: str, line: int, local_us: int | None) -> None:
        self.result.gaps.append(gap)
        self._find(Fault.GAP, path, line, local_us, after=gap.after, before=gap.before, missing=gap.missing)

    def finish(self) -> StreamResult:
        self.result.latency = self.timing.latency
        return self.result


class BookAuditor(_Auditor):
    """Rebuilds one book and checks continuity, values, checksums, crossing and snapshots."""

    def __init__(
        self, key: StreamKey, rules: VenueRules, cfg: AuditConfig, sink: BookSink | None = None
    ) -> None:
        super().__init__(key, rules, cfg)
        self.book = Book()
        self.rule = rules.book_rule
        self.seq: Sequencer | None = (
            Sequencer(rules.book_rule, cfg.reorder_window) if rules.book_rule.has_ids else None
        )
        self.state = UNKNOWN
        self.safe = False
        self.crossed = False
        self.deltas_since_snapshot = 0
        self.recent_raw: deque[bytes] = deque()
        self.recent_raw_set: set[bytes] = set()
        self.last_local_us: int | None = None
        self.last_seen_us: int | None = None  # receive time of the latest message, applied or not
        self.sink = sink
        self.next_emit_us = 0
        # Diffs received while the book is unknown (Binance subscribes to the stream first
        # and fetches the REST snapshot after), offered again when a snapshot arrives.
        self.early: deque[BookMsg] = deque()
        # Diffs applied while the book was unsafe: a later REST snapshot (older than them)
        # resets the book, and they are applied again on top of it, without new findings.
        # Only streams that open on REST snapshots (Binance) keep them.
        self.unsafe_applied: deque[BookMsg] = deque(maxlen=RESYNC_LIMIT)
        self.bridged = False
        self.quiet = False
        # Set between recordings: the next diff continues the book only if its ids chain on.
        self.at_seam = False
        self.seam_ended_us: int | None = None  # receive time the previous input ended at

    @property
    def in_sync(self) -> bool:
        """The book can be trusted: live, no fault since its snapshot, and bridged."""
        seq = self.seq
        return self.state == LIVE and self.safe and not (seq is not None and seq.bridge)

    def _find(self, fault: str, path: str, line: int, local_us: int | None, **detail: Any) -> None:
        if not self.quiet:
            super()._find(fault, path, line, local_us, **detail)

    def _note(self, what: str) -> None:
        if not self.quiet:
            super()._note(what)

    # -- input -----------------------------------------------------------------------

    def feed(self, m: BookMsg) -> None:
        self.result.messages += 1
        if m.local_us is not None:
            self.last_seen_us = m.local_us
        if self.at_seam:
            self._cross_seam(m)
        if m.snapshot or m.reset:
            self._snapshot(m)
            return
        if self.state == LIVE:
            self._offer(m)
            return
        early = self.early
        early.append(m)
        if len(early) > EARLY_LIMIT:
            early.popleft()
            self._note("before_snapshot")

    def _offer(self, m: BookMsg) -> None:
        seq = self.seq
        if seq is None or m.last_id is None:
            # A venue without ids, or a message of a format that carries none (Bybit v2
            # beside v5, OKX before seqId): no continuity to check.
            if m.raw is not None and self._repeat(m.raw):
                self._find(Fault.DUPLICATE, m.path, m.line, m.local_us)
                return
            self._apply(m)
            return
        last = seq.last
        if last is not None and not seq.pending and not seq.bridge and self.rule.follows(last, m):
            seq.last = m.last_id
            self._apply(m)
            return
        steps, reason = seq.offer(m, self.result.messages)
        if reason == "duplicate":
            self._find(Fault.DUPLICATE, m.path, m.line, m.local_us, last_id=m.last_id)
        elif reason == "stale":
            self._note("before_snapshot")
        elif reason == "late":
            self._find(
                Fault.OUT_OF_ORDER,
                m.path,
                m.line,
                m.local_us,
                last_id=m.last_id,
                applied=False,
                reason="arrived after the reorder window closed the gap",
            )
        self._steps(steps)

    def seam(self) -> None:
        super().seam()
        if self.seq is not None:
            self._steps(self.seq.flush())
        self.at_seam = True
        self.seam_ended_us = self.last_seen_us

    def _cross_seam(self, m: BookMsg) -> None:
        """The first message of another input: a snapshot opens it; a diff continues the book
        only when the venue's ids prove it (a rotated file); else the book is unknown again,
        exactly as the new recording starts (without a fault: no disconnect was recorded)."""
        self.at_seam = False
        if _before(m.local_us, self.seam_ended_us):
            # Another recording, started before the previous input ended: its rebuilt-book
            # rows follow its own clock.
            self.next_emit_us = 0
        if m.snapshot or m.reset or self.state != LIVE:
            # Its snapshot is not compared with the book of the other recording.
            self.last_local_us = None
            self.deltas_since_snapshot = 0
            return
        seq = self.seq
        if (
            seq is not None
            and seq.last is not None
            and not seq.bridge
            and m.last_id is not None
            and self.rule.follows(seq.last, m)
        ):
            return
        self._note("new_recording")
        self.state = UNKNOWN
        self.safe = False
        self.last_local_us = None
        self.unsafe_applied.clear()

    def disconnect(self, path: str, line: int, local_us: int | None) -> None:
        if self.seq is not None:
            self._steps(self.seq.flush())
        super().disconnect(path, line, local_us)
        self.state = UNKNOWN
        self.safe = False
        self.unsafe_applied.clear()

    def finish(self) -> StreamResult:
        if self.seq is not None:
            self._steps(self.seq.flush())
        self._drop_early()
        return super().finish()

    def _drop_early(self) -> None:
        for _ in self.early:
            self._note("before_snapshot")
        self.early.clear()

    # -- sequencing ------------------------------------------------------------------

    def _steps(self, steps: list[Step]) -> None:
        for s in steps:
            m = s.msg
            if s.skip is not None:
                self._find(Fault.DUPLICATE, m.path, m.line, m.local_us, last_id=m.last_id)
                continue
            if s.gap is not None:
                if not self.quiet:
                    self._gap(s.gap, m.path, m.line, m.local_us)
                self.safe = False
            if s.late:
                self._find(Fault.OUT_OF_ORDER, m.path, m.line, m.local_us, last_id=m.last_id, applied=True)
            self._apply(m)

    def _repeat(self, raw: bytes) -> bool:
        seen = self.recent_raw_set
        if raw in seen:
            return True
        recent = self.recent_raw
        recent.append(raw)
        seen.add(raw)
        if len(recent) > self.cfg.reorder_window:
            seen.discard(recent.popleft())
        return False

    # -- applying --------------------------------------------------------------------

    def _snapshot(self, m: BookMsg) -> None:
        seq = self.seq
        older = self._older_than_book(m)
        if m.bridge:
            if self.state == LIVE and self.safe and seq is not None and seq.last is not None and not older:
                if m.last_id is None or m.last_id <= seq.last or not seq.pending:
                    # The diffs already continue the book: the REST answer is only a cross-check
                    # (its bad values are still reported).
                    for level in Book().reset(m.bids, m.asks):
                        self._find(Fault.INVALID_VALUE, m.path, m.line, m.local_us, level=_jsonable(level))
                    if seq.last == m.last_id and not seq.pending:
                        self._compare(m)
                    self._note("snapshot_while_live")
                    return
                # A hole is open and the snapshot is past it: the hole is a gap, the snapshot
                # brings the book back.
                self._steps(seq.flush())
            self._bridge_snapshot(m)
            return
        if seq is not None and seq.pending:
            self._steps(seq.flush())
        self._drop_early()
        if older:
            self._note("snapshot_older_than_book")  # another recording of the stream: not comparable
        elif self.state == LIVE and self.safe and self.deltas_since_snapshot:
            self._compare(m)
        bad = self.book.reset(m.bids, m.asks)
        self._opened()
        if seq is not None:
            seq.reset(m.last_id)
        self._after(m, bad)

    def _opened(self) -> None:
        self.state = LIVE
        self.safe = True
        self.crossed = False
        self.deltas_since_snapshot = 0

    def _bridge_snapshot(self, m: BookMsg) -> None:
        """A REST snapshot: the diffs received before and around it are bridged onto it."""
        self.bridged = True
        seq = self.seq
        redo = list(self.unsafe_applied) if self.state == LIVE else []
        held = seq.take_pending() if seq is not None else []
        early = list(self.early)
        self.early.clear()
        self.unsafe_applied.clear()
        bad = self.book.reset(m.bids, m.asks)
        self._opened()
        if seq is not None:
            seq.reset(m.last_id, bridge=True)
        # The REST answer's time is when it was served, not a point in the stream: no clock check.
        self._after(m, bad, clock=False)
        if redo:
            # Already applied to the unsafe book, with their findings: apply them again, quietly.
            self.quiet = True
            try:
                for d in redo:
                    self._offer(d)
            finally:
                self.quiet = False
        for d in (*early, *held):
            self._offer(d)

    def _older_than_book(self, m: BookMsg) -> bool:
        """A snapshot received before the last message already applied describes an older state
        (inputs from different recordings of one stream); it resets the book, it is not checked."""
        last = self.last_local_us
        return last is not None and m.local_us is not None and m.local_us < last

    def _compare(self, m: BookMsg) -> None:
        diffs = differences(self.book, m.bids, m.asks)
        if diffs:
            self._find(
                Fault.SNAPSHOT_MISMATCH, m.path, m.line, m.local_us, levels=len(diffs), first=diffs[:5]
            )

    def _apply(self, m: BookMsg) -> None:
        book = self.book
        bad = book.bids.apply(m.bids)
        bad_asks = book.asks.apply(m.asks)
        if bad_asks:
            bad = (bad or []) + bad_asks
        self.deltas_since_snapshot += 1
        self._after(m, bad)
        if self.bridged and not self.safe and not self.quiet:
            self.unsafe_applied.append(m)

    def _after(self, m: BookMsg, bad: list[Any] | None, clock: bool = True) -> None:
        book = self.book
        if m.depth is not None:
            book.bids.trim(m.depth)
            book.asks.trim(m.depth)
        if clock and m.exch_us is not None and not self.quiet:
            self._clock(m.local_us, m.exch_us, m.path, m.line)
        if bad:
            for level in bad:
                self._find(Fault.INVALID_VALUE, m.path, m.line, m.local_us, level=_jsonable(level))
            self.safe = False
        if self.safe:
            checksum = self.rules.checksum
            if m.checksum is not None and checksum is not None:
                got = checksum(book)
                if got != m.checksum:
                    self._find(
                        Fault.CHECKSUM_MISMATCH, m.path, m.line, m.local_us, expected=m.checksum, computed=got
                    )
                    self.safe = False
            if self.safe:
                if book.crossed():
                    if not self.crossed:
                        self.crossed = True
                        bb, ba = book.bids.best(), book.asks.best()
                        self._find(
                            Fault.CROSSED_BOOK,
                            m.path,
                            m.line,
                            m.local_us,
                            best_bid=_jsonable(bb[0] if bb else None),
                            best_ask=_jsonable(ba[0] if ba else None),
                        )
                else:
                    self.crossed = False
        local = m.local_us
        if local is not None:
            if self.last_local_us is None or local > self.last_local_us:
                self.last_local_us = local
            sink = self.sink
            if sink is not None and local >= self.next_emit_us and not self.quiet:
                interval = self.cfg.book_interval_us
                self.next_emit_us = (local // interval + 1) * interval
                if self.in_sync:
                    sink(self.key, local, m.exch_us, book)
                else:
                    self._note("book_rows_withheld_unsafe")


class TradeAuditor(_Auditor):
    """Checks trade ids (gaps, duplicates, reordering) and values."""

    def __init__(self, key: StreamKey, rules: VenueRules, cfg: AuditConfig) -> None:
        super().__init__(key, rules, cfg)
        self.rule = rules.trade_rule
        self.seqs: dict[str, Sequencer] = {}
        self.recent: deque[Any] = deque()
        self.recent_set: set[Any] = set()
        self.last_seen_us: int | None = None
        # After a seam: the id series whose next trade tells whether the new input continues
        # the recording, and the receive time the previous input ended at.
        self.at_seam = False
        self.seam_noted = False
        self.seam_series: set[str] = set()
        self.seam_ended_us: int | None = None

    def seam(self) -> None:
        super().seam()
        self.at_seam = True
        self.seam_noted = False
        self.seam_series = set(self.seqs)
        self.seam_ended_us = self.last_seen_us

    def _cross_seam(self, t: TradeMsg) -> None:
        """The first trades of another input.  A series whose id chains on continues (a
        rotated file); one whose id does not belongs to another recording and starts afresh,
        without a gap, as a book waits for its own snapshot.  Where ids cannot tell (no ids),
        an input that starts before the previous one ended is another recording, whose
        repeats of that one's trades are not duplicates."""
        ended, self.seam_ended_us = self.seam_ended_us, None
        sequenced = self.rule.has_ids and isinstance(t.trade_id, int)
        if not sequenced and _before(t.local_us, ended):
            self._another_recording()
        if t.series in self.seam_series:
            self.seam_series.discard(t.series)
            seq = self.seqs.get(t.series)
            if sequenced and seq is not None and seq.last is not None and not self.rule.follows(seq.last, t):
                self._steps(seq.flush())
                del self.seqs[t.series]  # made afresh for this trade
                self._another_recording()
        self.at_seam = bool(self.seam_series)

    def _another_recording(self) -> None:
        self.recent.clear()
        self.recent_set.clear()
        if not self.seam_noted:
            self.seam_noted = True
            self._note("new_recording")

    def feed(self, t: TradeMsg) -> None:
        self.result.messages += 1
        if self.at_seam:
            self._cross_seam(t)
        if t.local_us is not None:
            self.last_seen_us = t.local_us
        rule = self.rule
        if not rule.has_ids or not isinstance(t.trade_id, int):
            if t.trade_id is not None and self._repeat((t.series, t.trade_id)):
                self._find(Fault.DUPLICATE, t.path, t.line, t.local_us, trade_id=t.trade_id)
                return
            self._apply(t)
            return
        if isinstance(rule, Increasing):
            self._increasing(t)
            return
        seq = self.seqs.get(t.series)
        if seq is None:
            seq = self.seqs[t.series] = Sequencer(rule, self.cfg.reorder_window)
        last = seq.last
        if last is not None and not seq.pending and rule.follows(last, t):
            seq.last = t.trade_id
            self._apply(t)
            return
        steps, reason = seq.offer(t, self.result.messages)
        if reason == "duplicate":
            self._find(Fault.DUPLICATE, t.path, t.line, t.local_us, trade_id=t.trade_id)
        elif reason == "late":
            self._find(Fault.OUT_OF_ORDER, t.path, t.line, t.local_us, trade_id=t.trade_id, applied=False)
        self._steps(steps)

    def finish(self) -> StreamResult:
        for seq in self.seqs.values():
            self._steps(seq.flush())
        return super().finish()

    def _increasing(self, t: TradeMsg) -> None:
        if self._repeat((t.series, t.trade_id)):
            self._find(Fault.DUPLICATE, t.path, t.line, t.local_us, trade_id=t.trade_id)
            return
        seq = self.seqs.get(t.series)
        if seq is None:
            seq = self.seqs[t.series] = Sequencer(self.rule, 0)
        if seq.last is not None and t.trade_id < seq.last:  # type: ignore[operator]
            self._find(Fault.OUT_OF_ORDER, t.path, t.line, t.local_us, trade_id=t.trade_id, applied=True)
        else:
            seq.last = t.trade_id  # type: ignore[assignment]
        self._apply(t)

    def _steps(self, steps: list[Step]) -> None:
        for s in steps:
            t = s.msg
            if s.skip is not None:
                self._find(Fault.DUPLICATE, t.path, t.line, t.local_us, trade_id=t.trade_id)
                continue
            if s.gap is not None:
                self._gap(s.gap, t.path, t.line, t.local_us)
            if s.late:
                self._find(Fault.OUT_OF_ORDER, t.path, t.line, t.local_us, trade_id=t.trade_id, applied=True)
            self._apply(t)

    def _repeat(self, ident: Any) -> bool:
        if ident in self.recent_set:
            return True
        self.recent.append(ident)
        self.recent_set.add(ident)
        if len(self.recent) > max(self.cfg.reorder_window, 1) * 16:
            self.recent_set.discard(self.recent.popleft())
        return False

    def _apply(self, t: TradeMsg) -> None:
        self._clock(t.local_us, t.exch_us, t.path, t.line)
        if not is_valid_price(t.price) or classify_qty(t.qty) == INVALID:
            self._find(
                Fault.INVALID_VALUE,
                t.path,
                t.line,
                t.local_us,
                price=_jsonable(t.price),
                qty=_jsonable(t.qty),
            )


class FundingAuditor(_Auditor):
    def __init__(self, key: StreamKey, rules: VenueRules, cfg: AuditConfig) -> None:
        super().__init__(key, rules, cfg)
        self.check = FundingCheck(rules.funding_interval_us, rules.funding_cap)
        self.at_seam = False

    def seam(self) -> None:
        super().seam()
        self.at_seam = True

    def feed(self, f: FundingMsg) -> None:
        self.result.messages += 1
        if self.at_seam and f.funding_time_us is not None:
            # Another input: it carries on the schedule, or is another recording that starts
            # its own (a funding time from another day is not a skipped settlement).
            self.at_seam = False
            if not self.check.continues(f.funding_time_us):
                self.check = FundingCheck(self.rules.funding_interval_us, self.rules.funding_cap)
                self._note("new_recording")
        self._clock(f.local_us, f.exch_us, f.path, f.line)
        for fault, detail in self.check.check(f.funding_time_us, f.rate):
            self._find(fault, f.path, f.line, f.local_us, **detail)


def _before(local_us: int | None, ended_us: int | None) -> bool:
    """A message received before the previous input ended: it belongs to another recording."""
    return local_us is not None and ended_us is not None and local_us < ended_us


def _jsonable(value: Any) -> Any:
    """Values for finding details: text stays text; anything odd becomes its repr."""
    if value is None or isinstance(value, (str, int)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float):
        return repr(value)
    return repr(value)

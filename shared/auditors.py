"""Per-stream auditors: feed normalized events in arrival order, read findings and counts.

One auditor holds one stream's whole state (book, sequencer, clocks), so a worker can
audit a segment of a stream on its own and hand back a :class:`StreamResult`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Protocol

from shared.book import Book, differences
from shared.checks.funding import FundingCheck
from shared.checks.timing import Latency, Timing
from shared.exchanges.base import VenueRules
from shared.model import (
    FAULT_KINDS,
    BookMsg,
    Fault,
    Finding,
    FundingMsg,
    Gap,
    StreamKey,
    TradeMsg,
    Unsafe,
)
from shared.numbers import INVALID, classify_qty, is_valid_price
from shared.sequencing import Consecutive, Increasing, Sequencer, Step
from shared.spool import Spool

# Diffs kept while waiting for a snapshot to bridge onto.
EARLY_LIMIT = 4096
# Diffs kept while the book is unsafe, for a REST snapshot fetched to resync (a recorder
# fetches one within seconds of losing the stream).
RESYNC_LIMIT = 1024

# Book states.
UNKNOWN = 0  # no snapshot yet, or after a disconnect
LIVE = 2

# Faults after which the rebuilt book cannot be trusted until the next snapshot: the cause of
# an unsafe interval (a book that has not had its snapshot yet is unsafe for "no_snapshot").
UNSAFE_CAUSES = frozenset(
    {Fault.GAP.value, Fault.CHECKSUM_MISMATCH.value, Fault.INVALID_VALUE.value, Fault.DISCONNECT.value}
)
NO_SNAPSHOT = "no_snapshot"


@dataclass(frozen=True, slots=True)
class AuditConfig:
    drift_ms: float = 100.0
    reorder_window: int = 64
    book_interval_us: int = 0  # 0: no periodic book output
    book_depth: int = 25
    # Where gaps are filled from (``--replay-source``), tried in order; none: gaps are reported.
    replay_sources: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Read back from JSON as a list.
        object.__setattr__(self, "replay_sources", tuple(self.replay_sources))


@dataclass(slots=True)
class Repair:
    """What replay made of one gap: the messages it lost, in sequence order, and where they came
    from (``provenance``, for the audit records), or why no source could give them."""

    messages: list[BookMsg | TradeMsg] = field(default_factory=list)
    source: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)


class Repairs(Protocol):
    def lookup(self, key: StreamKey, gap: Gap) -> Repair | None:
        """The repair of ``gap`` (its ``after``, ``before``, ``link`` and ``series`` set), or
        None to leave it as it is."""
        ...


BookSink = Callable[[StreamKey, int, int | None, Book], None]
# Told after each book message is applied (in sequence order; again when a REST snapshot replays
# those applied while unsafe): the message, the book after it, and ``BookAuditor.in_sync`` then.
OnApplied = Callable[[BookMsg, Book, bool], None]


@dataclass(slots=True)
class StreamResult:
    """What the audit of one stream (or one part of it) found.  Parts merge exactly."""

    key: StreamKey
    messages: int = 0
    faults: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FAULT_KINDS, 0))
    # Gaps, findings and unsafe intervals are kept on disk past a few thousand (see
    # shared.spool): memory stays flat however many an input holds.
    gaps: Spool[Gap] = field(default_factory=lambda: gap_spool())
    findings: Spool[Finding] = field(default_factory=lambda: finding_spool(None))
    latency: Latency = field(default_factory=Latency)
    # Messages read but not applied for a reason that is not a fault.
    notes: dict[str, int] = field(default_factory=dict)
    # Receive times of the first and the last message (None where the format has none).
    first_us: int | None = None
    last_us: int | None = None
    # Book streams: when, in receive time, the rebuilt book could not be trusted.
    unsafe: Spool[Unsafe] = field(default_factory=lambda: unsafe_spool())
    # For the rates: messages whose clock offset was compared with a running median, and
    # those that departed from it by more than 100 ms; funding settlements (seen or skipped)
    # and those with a discontinuity.
    drift_compared: int = 0
    drift_over_100ms: int = 0
    settlements: int = 0
    settlements_faulty: int = 0
    # Trade ids that count one by one (missing trades can be counted from their gaps).
    ids_consecutive: bool = False
    # Damage to the inputs that fed the stream: lines that could not be read, a cut-off end.
    damaged_lines: int = 0
    cut_off: bool = False
    # Messages a replay source supplied for gaps (not read from the inputs: not in ``messages``).
    replayed: int = 0

    def __post_init__(self) -> None:
        # Lists given (by a test, or by hand) become spools; the findings' spool needs the key.
        if not self.findings:
            self.findings = finding_spool(self.key, self.findings)
        if not isinstance(self.gaps, Spool):
            self.gaps = gap_spool(self.gaps)
        if not isinstance(self.unsafe, Spool):
            self.unsafe = unsafe_spool(self.unsafe)

    def spools(self) -> tuple[Spool[Finding], Spool[Gap], Spool[Unsafe]]:
        """What the result keeps on disk, in the order :meth:`as_json` counts it."""
        return self.findings, self.gaps, self.unsafe

    @property
    def latency_ms(self) -> dict[str, float] | None:
        return self.latency.percentiles_ms()

    def saw(self, local_us: int | None) -> None:
        """A message received at ``local_us``: the stream's receive-time span."""
        if local_us is None:
            return
        if self.first_us is None or local_us < self.first_us:
            self.first_us = local_us
        if self.last_us is None or local_us > self.last_us:
            self.last_us = local_us

    def input_damage(self, malformed: int, cut_off: bool) -> None:
        self.damaged_lines += malformed
        self.cut_off = self.cut_off or cut_off

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
        self.saw(later.first_us)
        self.saw(later.last_us)
        self.unsafe.extend(later.unsafe)
        self.drift_compared += later.drift_compared
        self.drift_over_100ms += later.drift_over_100ms
        self.settlements += later.settlements
        self.settlements_faulty += later.settlements_faulty
        self.ids_consecutive = self.ids_consecutive and later.ids_consecutive
        self.input_damage(later.damaged_lines, later.cut_off)
        self.replayed += later.replayed

    def as_json(self) -> dict[str, Any]:
        return {
            "key": list(self.key),
            "messages": self.messages,
            "faults": self.faults,
            # The findings, gaps and unsafe intervals travel apart, as the lines of spools().
            "findings": len(self.findings),
            "gaps": len(self.gaps),
            "latency": self.latency.as_json(),
            "notes": self.notes,
            "first_us": self.first_us,
            "last_us": self.last_us,
            "unsafe": len(self.unsafe),
            "drift_compared": self.drift_compared,
            "drift_over_100ms": self.drift_over_100ms,
            "settlements": self.settlements,
            "settlements_faulty": self.settlements_faulty,
            "ids_consecutive": self.ids_consecutive,
            "damaged_lines": self.damaged_lines,
            "cut_off": self.cut_off,
            "replayed": self.replayed,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], lines: Iterator[bytes]) -> StreamResult:
        """Read back :meth:`as_json`, its spools from ``lines`` (the JSON lines they gave, in
        the order of :meth:`spools`); fields an older version did not write take their default."""
        key = StreamKey(*data["key"])
        findings, gaps, unsafe = finding_spool(key), gap_spool(), unsafe_spool()
        for spool, what in ((findings, "findings"), (gaps, "gaps"), (unsafe, "unsafe")):
            for line in islice(lines, int(data.get(what, 0))):
                spool.add_line(line)
        return cls(
            key,
            data["messages"],
            {**dict.fromkeys(FAULT_KINDS, 0), **data["faults"]},
            gaps,
            findings,
            Latency.from_json(data["latency"]),
            dict(data["notes"]),
            data.get("first_us"),
            data.get("last_us"),
            unsafe,
            int(data.get("drift_compared", 0)),
            int(data.get("drift_over_100ms", 0)),
            int(data.get("settlements", 0)),
            int(data.get("settlements_faulty", 0)),
            bool(data.get("ids_consecutive", False)),
            int(data.get("damaged_lines", 0)),
            bool(data.get("cut_off", False)),
            int(data.get("replayed", 0)),
        )


def gap_spool(items: Iterable[Gap] = ()) -> Spool[Gap]:
    return Spool(Gap.as_row, Gap.from_row, items)


def unsafe_spool(items: Iterable[Unsafe] = ()) -> Spool[Unsafe]:
    """Unsafe intervals, each added when it closes (or its part ends): a spool keeps what it
    was given, and an open interval still changes."""
    return Spool(Unsafe.as_json, Unsafe.from_json, items)


def finding_spool(key: StreamKey | None, items: Iterable[Finding] = ()) -> Spool[Finding]:
    """A spool of one stream's findings (its rows leave the stream out)."""

    def decode(row: Any) -> Finding:
        assert key is not None
        return Finding.from_row(key, row)

    return Spool(Finding.as_row, decode, items)


class _Auditor:
    def __init__(self, key: StreamKey, rules: VenueRules, cfg: AuditConfig) -> None:
        self.key = key
        self.rules = rules
        self.cfg = cfg
        self.result = StreamResult(key)
        self.timing = Timing(cfg.drift_ms)
        # What replay sources answered for this stream's gaps (None: no replay asked for).
        self.repairs: Repairs | None = None
        # Receive time (exchange time where the format has none) of the last message applied.
        self.applied_us: int | None = None

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

    def format_change(self, path: str, line: int, local_us: int | None, change: dict[str, Any]) -> None:
        """The shape of this stream's messages changed (see :mod:`shared.checks.shapes`)."""
        _Auditor._find(self, Fault.FORMAT_CHANGE, path, line, local_us, **change)

    def seam(self) -> None:
        """The recording that fed this stream ended (end of an input group); another may follow."""
        self.timing.new_recording()

    def disconnect(self, path: str, line: int, local_us: int | None) -> None:
        """A recorder disconnect: messages may be missing; the clock starts afresh."""
        self._find(Fault.DISCONNECT, path, line, local_us)
        self.timing.new_recording()

    def _repair_of(self, gap: Gap, m: BookMsg | TradeMsg) -> Repair | None:
        """Complete ``gap`` (found before message ``m``) and look up its repair."""
        gap.local_us = m.local_us
        gap.from_us = self.applied_us
        gap.link = m.prev_id if isinstance(m, BookMsg) else None
        gap.series = m.series if isinstance(m, TradeMsg) else ""
        return self.repairs.lookup(self.key, gap) if self.repairs is not None else None

    def _gap(self, gap: Gap, m: BookMsg | TradeMsg) -> Repair | None:
        """Record a gap before message ``m``; the repair a replay source gave for it (its
        messages to be applied before ``m``), if one did."""
        detail: dict[str, Any] = {"after": gap.after, "before": gap.before, "missing": gap.missing}
        repair = self._repair_of(gap, m)
        if repair is not None:
            if repair.messages:
                gap.repaired = True
                gap.source = repair.source
                detail.update(repair.provenance)
                if repair.reasons:  # sources tried before the one that filled it
                    detail["failed_sources"] = dict(repair.reasons)
                self.result.replayed += len(repair.messages)
            else:
                gap.reasons = dict(repair.reasons)
                detail["unrepaired"] = gap.reasons
        self.result.gaps.append(gap)
        self._find(Fault.GAP, m.path, m.line, m.local_us, **detail)
        return repair if gap.repaired else None

    def finish(self) -> StreamResult:
        r = self.result
        r.latency = self.timing.latency
        r.drift_compared = self.timing.compared
        r.drift_over_100ms = self.timing.over_100ms
        return r


class BookAuditor(_Auditor):
    """Rebuilds one book and checks continuity, values, checksums, crossing and snapshots."""

    def __init__(
        self,
        key: StreamKey,
        rules: VenueRules,
        cfg: AuditConfig,
        sink: BookSink | None = None,
        on_applied: OnApplied | None = None,
    ) -> None:
        super().__init__(key, rules, cfg)
        self.on_applied = on_applied
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
        # The unsafe interval open now (the book cannot be trusted), and the fault of the
        # message being fed that would open one.
        self.open_unsafe: Unsafe | None = None
        self.cause: str | None = None
        self.cause_us: int | None = None  # receive time of the message the cause was found on
        # Receive times of the last messages: an interval opened by a gap the reorder window
        # held back starts at the message after the hole, and counts the messages since.
        self.recent_us: deque[int] = deque(maxlen=cfg.reorder_window + 2)

    @property
    def in_sync(self) -> bool:
        """The book can be trusted: live, no fault since its snapshot, and bridged."""
        seq = self.seq
        return self.state == LIVE and self.safe and not (seq is not None and seq.bridge)

    @property
    def holding(self) -> bool:
        """Some message fed may still be applied later, or again: held back by the reorder
        window, waiting for a snapshot to bridge onto (``early``), or applied while the book was
        unsafe and kept for a REST snapshot (``unsafe_applied``).  When False, an observer of
        ``on_applied`` can forget every message fed so far."""
        seq = self.seq
        return bool((seq is not None and seq.pending) or self.early or self.unsafe_applied)

    def _find(self, fault: str, path: str, line: int, local_us: int | None, **detail: Any) -> None:
        if not self.quiet:
            super()._find(fault, path, line, local_us, **detail)
            if fault in UNSAFE_CAUSES and self.cause is None:
                self.cause = fault
                self.cause_us = local_us

    def _track_safety(self, local_us: int | None, message: bool = True) -> None:
        """After a message (or a disconnect): open an unsafe interval when the book stopped
        being trustworthy, close the open one when a snapshot made it trustworthy again."""
        open_ = self.open_unsafe
        if open_ is None:
            if not self.in_sync:
                since = self.cause_us if self.cause_us is not None else local_us
                count = int(message)
                if since is not None and local_us is not None and since < local_us:
                    count = sum(1 for t in self.recent_us if t >= since)
                self.open_unsafe = Unsafe(since, None, str(self.cause or NO_SNAPSHOT), count)
        elif self.in_sync:
            open_.to_us = local_us
            self.result.unsafe.append(open_)
            self.open_unsafe = None
        elif message:
            open_.messages += 1
        self.cause = None
        self.cause_us = None

    def _note(self, what: str) -> None:
        if not self.quiet:
            super()._note(what)

    # -- input -----------------------------------------------------------------------

    def feed(self, m: BookMsg) -> None:
        self._feed(m)
        self._track_safety(m.local_us)

    def _feed(self, m: BookMsg) -> None:
        self.result.messages += 1
        self.result.saw(m.local_us)
        if m.local_us is not None:
            self.last_seen_us = m.local_us
            self.recent_us.append(m.local_us)
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
            # beside v5, OKX before seqId): no continuity to check.  A repeat is told by its
            # bytes, which venue modules give (``raw``) only where they hold the exchange time.
            if m.raw is not None and self._repeat(m.raw):
                self._find(Fault.DUPLICATE, m.path, m.line, m.local_us)
                return
            self._apply(m)
            return
        if m.prev_id == m.last_id and m.raw is not None and self._repeat(m.raw):
            # A keep-alive carrying the last id again (OKX: ``prevSeqId == seqId`` while the
            # book does not change): its ids cannot tell a repeat from the next keep-alive,
            # its bytes (exchange time included) can.
            self._find(Fault.DUPLICATE, m.path, m.line, m.local_us, last_id=m.last_id)
            return
        last = seq.last
        if last is not None and not seq.pending and not seq.bridge and self.rule.follows(last, m):
            seq.last = m.last_id
            self._apply(m)
            return
        steps, reason = seq.offer(m, self.result.messages)
        # Messages held back that follow now come first: they are earlier in sequence.
        self._steps(steps)
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

    def seam(self) -> None:
        super().seam()
        if self.seq is not None:
            self._steps(self.seq.flush())  # a gap found here makes the book unsafe from it
            self._track_safety(self.last_seen_us, message=False)
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
        # A disconnect marker without a time of its own: from the last message received.
        self._track_safety(local_us if local_us is not None else self.last_seen_us, message=False)

    def finish(self) -> StreamResult:
        if self.seq is not None:
            self._steps(self.seq.flush())
        self._drop_early()
        self._track_safety(self.last_seen_us, message=False)
        if self.open_unsafe is not None:
            # Unsafe to the end of this part: measured to its last message, even when the
            # stream goes on in another part (another recording) after it.
            self.open_unsafe.ends_us = self.last_seen_us
            self.result.unsafe.append(self.open_unsafe)
            self.open_unsafe = None
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
                # Found again while quietly re-applying after a REST snapshot: recorded already.
                repair = self._repair_of(s.gap, m) if self.quiet else self._gap(s.gap, m)
                if repair is not None and repair.messages:
                    for filled in repair.messages:  # another recorder's clock: no drift check
                        self._apply(filled, clock=False)  # type: ignore[arg-type]
                else:
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

    def _apply(self, m: BookMsg, clock: bool = True) -> None:
        book = self.book
        bad = book.bids.apply(m.bids)
        bad_asks = book.asks.apply(m.asks)
        if bad_asks:
            bad = (bad or []) + bad_asks
        self.deltas_since_snapshot += 1
        self._after(m, bad, clock)
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
        # Where the format has no receive times, the exchange's time tells a replay source where
        # to look for a gap's messages.
        self.applied_us = local if local is not None else m.exch_us
        if local is not None:
            if self.last_local_us is None or local > self.last_local_us:
                self.last_local_us = local
            if self.sink is not None and local >= self.next_emit_us and not self.quiet:
                self.emit_row(local, m.exch_us)
        on_applied = self.on_applied
        if on_applied is not None:
            on_applied(m, book, self.in_sync)

    def emit_row(self, local: int, exch_us: int | None) -> None:
        """The rebuilt book is due (``book_interval_us`` of receive time passed): a row to the
        sink, or a note that it was withheld while the book could not be trusted."""
        assert self.sink is not None
        interval = self.cfg.book_interval_us
        self.next_emit_us = (local // interval + 1) * interval
        if self.in_sync:
            self.sink(self.key, local, exch_us, self.book)
        else:
            self._note("book_rows_withheld_unsafe")


class TradeAuditor(_Auditor):
    """Checks trade ids (gaps, duplicates, reordering) and values."""

    def __init__(self, key: StreamKey, rules: VenueRules, cfg: AuditConfig) -> None:
        super().__init__(key, rules, cfg)
        self.rule = rules.trade_rule
        self.result.ids_consecutive = isinstance(self.rule, Consecutive)
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
        self.result.saw(t.local_us)
        if self.at_seam:
            self._cross_seam(t)
        if t.local_us is not None:
            self.last_seen_us = t.local_us
        rule = self.rule
        if not rule.has_ids or not isinstance(t.trade_id, int):
            # Without an id, a trade is known by its message's bytes and its place in it (raw).
            ident = t.trade_id if t.trade_id is not None else t.raw
            if ident is not None and self._repeat((t.series, ident)):
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
        self._steps(steps)
        if reason == "duplicate":
            self._find(Fault.DUPLICATE, t.path, t.line, t.local_us, trade_id=t.trade_id)
        elif reason == "late":
            self._find(Fault.OUT_OF_ORDER, t.path, t.line, t.local_us, trade_id=t.trade_id, applied=False)

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
            # Its place in sequence is behind trades already checked: the clock, which takes
            # messages in sequence order, would count the reordering again as time going back.
            self._apply(t, clock=False)
            return
        seq.last = t.trade_id  # type: ignore[assignment]
        self._apply(t)

    def _steps(self, steps: list[Step]) -> None:
        for s in steps:
            t = s.msg
            if s.skip is not None:
                self._find(Fault.DUPLICATE, t.path, t.line, t.local_us, trade_id=t.trade_id)
                continue
            if s.gap is not None:
                repair = self._gap(s.gap, t)
                if repair is not None:
                    for filled in repair.messages:
                        self._apply(filled, clock=False)  # type: ignore[arg-type]
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

    def _apply(self, t: TradeMsg, clock: bool = True) -> None:
        self.applied_us = t.local_us if t.local_us is not None else t.exch_us
        if clock:
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
        self.faulty_time: int | None = -1  # the last settlement counted as faulty

    def seam(self) -> None:
        super().seam()
        self.at_seam = True

    def feed(self, f: FundingMsg) -> None:
        self.result.messages += 1
        self.result.saw(f.local_us)
        last = self.check.last_time
        if f.funding_time_us is not None and (last is None or f.funding_time_us > last):
            self.result.settlements += 1  # a settlement time after those seen
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
            if fault != Fault.FUNDING_DISCONTINUITY.value:
                continue
            skipped = detail.get("skipped")
            if isinstance(skipped, int):
                self.result.settlements += skipped  # they were due: they count
            if f.funding_time_us != self.faulty_time:
                self.faulty_time = f.funding_time_us  # one settlement with a discontinuity
                self.result.settlements_faulty += 1


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

"""Continuity rules for sequence ids, and the reorder window that applies them.

A rule says, for one venue, whether a message follows the last one applied, whether its
ids were already applied, how many ids are missing before it, and how a REST snapshot is
bridged onto the stream.  :class:`Sequencer` holds back messages that arrive early for up
to ``window`` messages, so a hole that reordering closes is repaired, not reported.
"""

from __future__ import annotations

from bisect import insort
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

from shared.model import Gap


class Sequenced(Protocol):
    @property
    def first_id(self) -> Any: ...

    @property
    def last_id(self) -> Any: ...

    @property
    def prev_id(self) -> Any: ...


class Rule:
    """Base: a venue without sequence ids (continuity cannot be checked)."""

    name = "none"
    has_ids = False

    def follows(self, last: int, m: Sequenced) -> bool:
        return True

    def applied(self, last: int, m: Sequenced) -> bool:
        return False

    def missing(self, last: int, m: Sequenced) -> int | None:
        return None

    def order(self, m: Sequenced) -> int:
        return int(m.last_id)

    def first(self, m: Sequenced) -> int:
        return int(m.first_id if m.first_id is not None else m.last_id)

    def stale(self, snapshot_id: int, m: Sequenced) -> bool:
        """Before the snapshot: to be dropped while bridging."""
        return False

    def bridges(self, snapshot_id: int, m: Sequenced) -> bool:
        return True


class Consecutive(Rule):
    """``first == previous last + 1`` (Binance spot U/u, Bybit u, Kraken Futures seq, trade ids)."""

    name = "consecutive"
    has_ids = True

    def follows(self, last: int, m: Sequenced) -> bool:
        return bool(m.first_id == last + 1)

    def applied(self, last: int, m: Sequenced) -> bool:
        return bool(m.last_id <= last)

    def missing(self, last: int, m: Sequenced) -> int | None:
        return int(m.first_id - last - 1)

    def order(self, m: Sequenced) -> int:
        return int(m.first_id)

    def stale(self, snapshot_id: int, m: Sequenced) -> bool:
        return bool(m.last_id <= snapshot_id)

    def bridges(self, snapshot_id: int, m: Sequenced) -> bool:
        return bool(m.first_id <= snapshot_id + 1 <= m.last_id)


class PrevLink(Rule):
    """``prev == previous last`` (Binance futures pu, OKX prevSeqId, Deribit prev_change_id).

    Ids are not consecutive, so the number of missing ids is unknown.
    """

    name = "prev-link"
    has_ids = True

    def follows(self, last: int, m: Sequenced) -> bool:
        return bool(m.prev_id == last)

    def applied(self, last: int, m: Sequenced) -> bool:
        return bool(m.last_id <= last)

    def stale(self, snapshot_id: int, m: Sequenced) -> bool:
        return bool(m.last_id < snapshot_id)

    def bridges(self, snapshot_id: int, m: Sequenced) -> bool:
        # The documented rule is U <= L <= u; real captures (Binance USD-M/COIN-M 2021)
        # also open with pu == L and U > L, which is continuous all the same.
        first = m.first_id if m.first_id is not None else m.last_id
        return bool(first <= snapshot_id <= m.last_id or m.prev_id == snapshot_id)


class Increasing(Rule):
    """Ids that only grow, not contiguously (FTX trade ids): no gap can be known."""

    name = "increasing"
    has_ids = True

    def follows(self, last: int, m: Sequenced) -> bool:
        return bool(m.last_id > last)

    def applied(self, last: int, m: Sequenced) -> bool:
        return False


NONE = Rule()
CONSECUTIVE = Consecutive()
PREV_LINK = PrevLink()
INCREASING = Increasing()


@dataclass(slots=True)
class Step:
    """A message the sequencer releases, in sequence order."""

    msg: Any
    gap: Gap | None = None
    # It arrived after a message that follows it (one ``out_of_order`` each).
    late: bool = False
    # Set when the message is released only to be recorded, not applied ("duplicate").
    skip: str | None = None


class Sequencer:
    """Releases messages in sequence order, repairing reordering inside ``window``.

    After :meth:`reset` with ``bridge=True`` the last id is a REST snapshot's id: the first
    message must *bridge* it (the venue's bridging rule) instead of following it, and
    messages older than the snapshot are ``stale``.
    """

    __slots__ = ("_recent_gaps", "bridge", "last", "pending", "rule", "window")

    def __init__(self, rule: Rule, window: int) -> None:
        self.rule = rule
        self.window = max(0, window)
        self.last: int | None = None
        self.bridge = False
        # (order, arrival, msg, late), sorted by (order, arrival).
        self.pending: list[tuple[int, int, Any, bool]] = []
        self._recent_gaps: deque[Gap] = deque(maxlen=32)

    def reset(self, last: int | None, bridge: bool = False) -> None:
        self.last = last
        self.bridge = bridge and last is not None
        self.pending.clear()

    def take_pending(self) -> list[Any]:
        """Remove and return the messages held back, in arrival order (to offer them again)."""
        held = [m for _, _, m, _ in sorted(self.pending, key=lambda t: t[1])]
        self.pending.clear()
        return held

    def _follows(self, last: int, m: Any) -> bool:
        return self.rule.bridges(last, m) if self.bridge else self.rule.follows(last, m)

    def _behind(self, last: int, m: Any) -> bool:
        if self.bridge:
            return self.rule.stale(last, m)
        return self.rule.applied(last, m) and not self.rule.follows(last, m)

    def offer(self, m: Any, arrival: int) -> tuple[list[Step], str | None]:
        """Steps to apply now, and ``duplicate``/``late``/``stale`` when ``m`` itself is not applied."""
        last = self.last
        if last is None:
            self.last = m.last_id
            return [Step(m)], None
        steps: list[Step] = []
        pending = self.pending
        if pending:
            # A message held back can follow now although nothing was applied since: its
            # link was proven meanwhile by messages of other streams (Bitfinex's connection
            # sequence, see :mod:`shared.exchanges.bitfinex`).  A no-op for the other rules.
            self._drain(steps)
            last = self.last
            assert last is not None
        rule = self.rule
        order = rule.order(m)
        late = bool(pending) and pending[-1][0] > order
        if self._follows(last, m):
            self.bridge = False
            self.last = m.last_id
            steps.append(Step(m, late=late))
            self._drain(steps)
            return steps, None
        if self._behind(last, m):
            if self.bridge:
                return steps, "stale"
            return steps, self._not_applied_reason(m)
        for o, _, other, _ in pending:
            if o == order and other.last_id == m.last_id:
                return steps, "duplicate"
        insort(pending, (order, arrival, m, late), key=lambda t: (t[0], t[1]))
        while len(pending) > self.window:
            self._release_gap(steps)
        return steps, None

    def flush(self) -> list[Step]:
        """Release everything held back (end of input, snapshot, disconnect)."""
        steps: list[Step] = []
        while self.pending:
            self._release_gap(steps)
        return steps

    def _release_gap(self, steps: list[Step]) -> None:
        _, _, m, late = self.pending.pop(0)
        last = self.last
        if last is not None and self._behind(last, m):
            steps.append(Step(m, skip="duplicate"))  # overtaken while held back
            return
        gap = None
        if last is not None and not self._follows(last, m):
            rule = self.rule
            gap = Gap(after=last, before=rule.first(m), missing=rule.missing(last, m))
            self._recent_gaps.append(gap)
        self.bridge = False
        self.last = m.last_id
        steps.append(Step(m, gap=gap, late=late))
        self._drain(steps)

    def _drain(self, steps: list[Step]) -> None:
        pending = self.pending
        while pending:
            _, _, m, late = pending[0]
            last = self.last
            assert last is not None
            if self._behind(last, m):
                pending.pop(0)
                steps.append(Step(m, skip="duplicate"))
                continue
            if not self._follows(last, m):
                return
            pending.pop(0)
            self.bridge = False
            self.last = m.last_id
            steps.append(Step(m, late=late))

    def _not_applied_reason(self, m: Any) -> str:
        lid = m.last_id
        for gap in self._recent_gaps:
            if gap.after is not None and gap.before is not None and gap.after < lid < gap.before:
                return "late"
        return "duplicate"

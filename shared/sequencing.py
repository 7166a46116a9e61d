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
    late: bool = False
    # Set when the message is released only to be recorded, not applied ("duplicate").
    skip: str | None = None


class Sequencer:
    """Releases messages in sequence order, repairing reordering inside ``window``."""

    __slots__ = ("_recent_gaps", "last", "pending", "rule", "window")

    def __init__(self, rule: Rule, window: int) -> None:
        self.rule = rule
        self.window = max(0, window)
        self.last: int | None = None
        self.pending: list[tuple[int, int, Any]] = []  # (order, arrival, msg)
        self._recent_gaps: deque[Gap] = deque(maxlen=32)

    def reset(self, last: int | None) -> None:
        self.last = last
        self.pending.clear()

    def offer(self, m: Any, arrival: int) -> tuple[list[Step], str | None]:
        """Steps to apply now, and ``duplicate``/``late`` when ``m`` itself is not applied."""
        rule = self.rule
        last = self.last
        if last is None:
            self.last = m.last_id
            return [Step(m)], None
        if rule.follows(last, m):
            late = bool(self.pending)
            self.last = m.last_id
            steps = [Step(m, late=late)]
            self._drain(steps)
            return steps, None
        if rule.applied(last, m):
            return [], self._not_applied_reason(m)
        order = rule.order(m)
        for o, _, other in self.pending:
            if o == order and other.last_id == m.last_id:
                return [], "duplicate"
        insort(self.pending, (order, arrival, m), key=lambda t: (t[0], t[1]))
        steps = []
        while len(self.pending) > self.window:
            self._release_gap(steps)
        return steps, None

    def flush(self) -> list[Step]:
        """Release everything held back (end of input, snapshot, disconnect)."""
        steps: list[Step] = []
        while self.pending:
            self._release_gap(steps)
        return steps

    def _release_gap(self, steps: list[Step]) -> None:
        _, _, m = self.pending.pop(0)
        last = self.last
        rule = self.rule
        if last is not None and rule.applied(last, m) and not rule.follows(last, m):
            steps.append(Step(m, skip="duplicate"))  # overtaken while held back
            return
        gap = None
        if last is not None and not rule.follows(last, m):
            gap = Gap(after=last, before=rule.first(m), missing=rule.missing(last, m))
            self._recent_gaps.append(gap)
        self.last = m.last_id
        steps.append(Step(m, gap=gap))
        self._drain(steps)

    def _drain(self, steps: list[Step]) -> None:
        rule = self.rule
        pending = self.pending
        while pending:
            m = pending[0][2]
            assert self.last is not None
            if rule.applied(self.last, m) and not rule.follows(self.last, m):
                pending.pop(0)
                steps.append(Step(m, skip="duplicate"))
                continue
            if not rule.follows(self.last, m):
                return
            pending.pop(0)
            self.last = m.last_id
            steps.append(Step(m))

    def _not_applied_reason(self, m: Any) -> str:
        lid = m.last_id
        for gap in self._recent_gaps:
            if gap.after is not None and gap.before is not None and gap.after < lid < gap.before:
                return "late"
        return "duplicate"

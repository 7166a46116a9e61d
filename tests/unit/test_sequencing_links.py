"""The reorder window with links proven after the fact (Bitfinex's connection sequence): a message
held back because its link was unknown goes out in its place, without a gap, once it is known."""

from __future__ import annotations

from dataclasses import dataclass

from shared.sequencing import CONSECUTIVE, PREV_LINK, Sequencer, Step


@dataclass
class M:
    first_id: int | None
    last_id: int
    prev_id: int | None = None


def ids(steps: list[Step]) -> list[tuple[int, bool, bool, str | None]]:
    return [(s.msg.last_id, s.gap is not None, s.late, s.skip) for s in steps]


def test_a_link_proven_later_releases_the_message_at_the_next_offer() -> None:
    seq = Sequencer(PREV_LINK, 4)
    seq.reset(10)
    held = M(None, 20)  # its predecessor is not known yet
    assert seq.offer(held, 1) == ([], None)
    held.prev_id = 10  # proven meanwhile (by messages of other streams)
    steps, reason = seq.offer(M(None, 30, 20), 2)
    assert reason is None and ids(steps) == [(20, False, False, None), (30, False, False, None)]
    assert seq.pending == [] and seq.last == 30


def test_a_link_proven_later_is_no_gap_at_flush() -> None:
    seq = Sequencer(PREV_LINK, 4)
    seq.reset(10)
    held = M(None, 20)
    seq.offer(held, 1)
    held.prev_id = 10
    assert ids(seq.flush()) == [(20, False, False, None)]


def test_a_link_never_proven_is_a_gap() -> None:
    seq = Sequencer(PREV_LINK, 1)
    seq.reset(10)
    seq.offer(M(None, 20), 1)
    steps, _ = seq.offer(M(None, 30, 20), 2)
    assert ids(steps) == [(20, True, False, None), (30, False, False, None)]
    gap = steps[0].gap
    assert gap is not None and (gap.after, gap.before, gap.missing) == (10, 20, None)


def test_held_back_messages_come_before_a_repeat_reported_after_them() -> None:
    seq = Sequencer(PREV_LINK, 4)
    seq.reset(10)
    held = M(None, 20)
    seq.offer(held, 1)
    held.prev_id = 10
    # A repeat of a message already applied: the released one is returned with the reason.
    steps, reason = seq.offer(M(None, 10, 5), 2)
    assert reason == "duplicate" and ids(steps) == [(20, False, False, None)]


def test_rules_with_fixed_links_are_unchanged() -> None:
    seq = Sequencer(CONSECUTIVE, 4)
    seq.reset(10)
    assert seq.offer(M(13, 13), 1) == ([], None)
    assert seq.offer(M(14, 14), 2) == ([], None)
    steps, _ = seq.offer(M(11, 12), 3)
    assert ids(steps) == [(12, False, True, None), (13, False, False, None), (14, False, False, None)]

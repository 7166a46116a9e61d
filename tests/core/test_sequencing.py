"""The reorder window and the continuity rules."""

from __future__ import annotations

from dataclasses import dataclass

from shared.sequencing import CONSECUTIVE, PREV_LINK, Sequencer


@dataclass
class M:
    first_id: int
    last_id: int
    prev_id: int | None = None


def ids(steps):  # type: ignore[no-untyped-def]
    return [(s.msg.last_id, s.gap is not None, s.late, s.skip) for s in steps]


def test_in_order_messages_pass_straight_through() -> None:
    seq = Sequencer(CONSECUTIVE, 4)
    seq.reset(10)
    steps, reason = seq.offer(M(11, 12), 1)
    assert reason is None and ids(steps) == [(12, False, False, None)]


def test_a_swap_inside_the_window_is_repaired_and_counted_once() -> None:
    seq = Sequencer(CONSECUTIVE, 4)
    seq.reset(10)
    steps, _ = seq.offer(M(13, 14), 1)
    assert steps == []
    steps, _ = seq.offer(M(11, 12), 2)
    assert ids(steps) == [(12, False, True, None), (14, False, False, None)]


def test_a_hole_that_stays_open_is_a_gap_once_the_window_fills() -> None:
    seq = Sequencer(CONSECUTIVE, 2)
    seq.reset(10)
    assert seq.offer(M(13, 13), 1)[0] == []
    assert seq.offer(M(14, 14), 2)[0] == []
    steps, _ = seq.offer(M(15, 15), 3)
    assert ids(steps) == [(13, True, False, None), (14, False, False, None), (15, False, False, None)]
    gap = steps[0].gap
    assert gap is not None and (gap.after, gap.before, gap.missing) == (10, 13, 2)
    # The lost message arriving after the window closed is late, not a duplicate.
    assert seq.offer(M(11, 12), 4) == ([], "late")


def test_duplicates_applied_or_held_back() -> None:
    seq = Sequencer(PREV_LINK, 4)
    seq.reset(100)
    seq.offer(M(101, 105, 100), 1)
    assert seq.offer(M(101, 105, 100), 2) == ([], "duplicate")
    seq.offer(M(111, 120, 110), 3)  # held back
    assert seq.offer(M(111, 120, 110), 4) == ([], "duplicate")


def test_flush_releases_everything_held_back_as_gaps() -> None:
    seq = Sequencer(PREV_LINK, 10)
    seq.reset(100)
    seq.offer(M(111, 120, 110), 1)
    steps = seq.flush()
    assert ids(steps) == [(120, True, False, None)]
    gap = steps[0].gap
    assert gap is not None and (gap.after, gap.before, gap.missing) == (100, 111, None)


def test_binance_futures_bridge_accepts_pu_equal_to_snapshot_id() -> None:
    # Real 2021 captures: the first kept diff has pu == lastUpdateId but U > lastUpdateId.
    assert PREV_LINK.bridges(600859605926, M(600859605930, 600859606100, 600859605926))
    assert PREV_LINK.bridges(50, M(40, 60, 30))
    assert not PREV_LINK.bridges(50, M(55, 60, 52))
    assert PREV_LINK.stale(50, M(40, 49, 30)) and not PREV_LINK.stale(50, M(40, 50, 30))
    assert CONSECUTIVE.bridges(50, M(45, 55)) and CONSECUTIVE.stale(50, M(45, 50))

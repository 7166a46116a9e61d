"""The job flow over the store, without processes (fakeredis with Lua): tasks run in any
order, some delivered twice, some dead-lettered; the outputs are always the same bytes."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from fanin_kind import plan_fanin
from pipeline_helpers import DATA

from shared import jobflow
from shared.jobs import (
    Field,
    JobState,
    SegmentContext,
    TaskName,
    Writer,
    segment_task_id,
    subtask_id,
)
from shared.jobstore import DeliveryGuard, JobStore, NotRunning

SEGMENTS = [
    [str(DATA / "cryptofeed" / "BINANCE.ws.1.0"), str(DATA / "cryptofeed" / "OKX.ws.1.0")],
    [str(DATA / "cryptofeed_ftx" / "FTX.ws.1.0")],
    [str(p) for p in sorted((DATA / "cryptofeed_deribit").iterdir())],
]


class Queue:
    """A sender that keeps the tasks; :meth:`drain` runs them in a random order."""

    def __init__(self, store: JobStore, rng: random.Random, duplicate: float = 0.0) -> None:
        self.store = store
        self.rng = rng
        self.duplicate = duplicate
        self.sent: list[tuple[TaskName, list[Any], str, str]] = []
        self.pending: list[tuple[TaskName, list[Any]]] = []

    def send(self, name: TaskName, args: list[Any], task_id: str, queue: str) -> None:
        self.sent.append((name, args, task_id, queue))
        self.pending.append((name, args))

    def run(self, name: TaskName, args: list[Any]) -> None:
        """What a worker does with the task (its arguments: job, epoch, ...)."""
        context = lambda plan, n: SegmentContext(lambda path: iter(()))  # noqa: E731
        store = self.store.at(args[1])
        try:
            if name is TaskName.SEGMENT:
                jobflow.run_stage(store, self, args[2], args[3], context)
            elif name is TaskName.SUBTASK:
                jobflow.run_subtask(store, self, args[2], args[3], args[4])
        except NotRunning:
            pass  # a task of another start of the job: the base task does nothing with it

    def drain(self) -> None:
        while self.pending:
            task = self.pending.pop(self.rng.randrange(len(self.pending)))
            self.run(*task)
            if self.rng.random() < self.duplicate:  # redelivered: the worker died after acting
                self.run(*task)


def _job(tmp_path: Path, name: str) -> tuple[JobStore, Any]:
    client = fakeredis.FakeRedis()
    job, plan = plan_fanin(SEGMENTS, str(tmp_path / name))
    return JobStore(client, job), plan


def _run(tmp_path: Path, name: str, seed: int, duplicate: float) -> bytes:
    store, plan = _job(tmp_path, name)
    queue = Queue(store, random.Random(seed), duplicate)
    outcome = jobflow.submit(store, queue, plan, Writer.SUBMITTER, "me", rerun_done=True)
    assert outcome.outcome is jobflow.Outcome.NEW
    store = outcome.store
    queue.drain()
    assert store.count(Field.DONE) == len(SEGMENTS)
    jobflow.collect(store, plan, plan.out)
    assert store.state() is JobState.DONE
    assert [k for k in store.client.keys("*") if k.count(b":") > 2] == []  # transient keys gone
    return (tmp_path / name / "fanin.json").read_bytes()


def test_any_order_and_redelivery_give_the_same_bytes(tmp_path: Path) -> None:
    reference = _run(tmp_path, "reference", seed=0, duplicate=0.0)
    for seed in range(1, 6):
        assert _run(tmp_path, f"run{seed}", seed=seed, duplicate=0.5) == reference


def test_task_ids_are_deterministic_and_name_their_queue(tmp_path: Path) -> None:
    store, plan = _job(tmp_path, "ids")
    queue = Queue(store, random.Random(1))
    epoch = jobflow.submit(store, queue, plan, Writer.SUBMITTER, "me", rerun_done=True).store.epoch
    job = store.job_id
    assert [t[2] for t in queue.sent] == [segment_task_id("book", job, n, 0) for n in range(3)]
    assert [t[1] for t in queue.sent] == [[job, epoch, n, 0] for n in range(3)]
    assert {t[3] for t in queue.sent} == {"book"}
    queue.sent.clear()
    queue.run(TaskName.SEGMENT, [job, epoch, 1, 0])
    assert [(t[2], t[3]) for t in queue.sent] == [(subtask_id("replay", job, 1, 0, 0), "replay")]


def test_a_submitter_that_died_is_taken_over_and_only_the_rest_is_sent(tmp_path: Path) -> None:
    store, plan = _job(tmp_path, "takeover")
    first = Queue(store, random.Random(2))
    jobflow.submit(store, first, plan, Writer.SUBMITTER, "first", rerun_done=True)
    first.run(*first.pending.pop(0))  # segment 0's stage 0 ran; its sub-tasks were lost
    assert jobflow.submit(store, first, plan, Writer.SUBMITTER, "second", rerun_done=True).outcome is (
        jobflow.Outcome.SERVED_ELSEWHERE
    )
    store.client.delete(f"retape:job:{store.job_id}:lease")  # the first submitter's lease expired
    second = Queue(store, random.Random(3))
    got = jobflow.submit(store, second, plan, Writer.SUBMITTER, "second", rerun_done=True)
    assert got.outcome is jobflow.Outcome.RESUMED and got.store.epoch == 1  # the same start
    # segment 0 goes on at its stage 0 (which re-sends its sub-tasks), the others start; new ids
    assert sorted(t[1] for t in second.sent) == [[store.job_id, 1, n, 0] for n in range(3)]
    assert all(t[2].endswith(":t2") for t in second.sent)
    second.drain()
    jobflow.collect(got.store, plan, plan.out)
    assert (tmp_path / "takeover" / "fanin.json").read_bytes() == _run(tmp_path, "ref", 0, 0.0)


def test_a_dead_lettered_sub_task_is_answered_with_its_reason_and_the_job_completes(tmp_path: Path) -> None:
    store, plan = _job(tmp_path, "dead")
    queue = Queue(store, random.Random(4))
    store = jobflow.submit(store, queue, plan, Writer.SUBMITTER, "me", rerun_done=True).store
    queue.run(*queue.pending.pop(0))  # segment 0 stage 0: two sub-tasks
    name, args = queue.pending.pop()
    assert name is TaskName.SUBTASK
    reason = "the worker died while running it"
    jobflow.bury_subtask(store, queue, args[2], args[3], args[4], reason)
    jobflow.bury_subtask(store, queue, args[2], args[3], args[4], reason)  # a burial delivered again
    queue.drain()
    report = jobflow.collect(store, plan, plan.out)
    failed = [d for s in report["segments"] for d in s.get("digests", []) if "failed" in d]
    assert failed and failed[0]["failed"] == "the worker died while running it"
    assert store.count(Field.DEAD) == 1


def test_a_dead_lettered_segment_is_final_with_its_reason(tmp_path: Path) -> None:
    store, plan = _job(tmp_path, "deadseg")
    queue = Queue(store, random.Random(5))
    store = jobflow.submit(store, queue, plan, Writer.SUBMITTER, "me", rerun_done=True).store
    queue.pending = [t for t in queue.pending if t[1][2] != 2]
    jobflow.bury_segment(store, queue, 2, 0, "poison")
    jobflow.bury_segment(store, queue, 2, 0, "poison")  # delivered again: changes nothing
    queue.drain()
    report = jobflow.collect(store, plan, plan.out)
    assert report["segments"][2] == {"segment": 2, "failed": "poison"}
    assert store.count(Field.DEAD) == 1


def test_a_cancelled_job_runs_nothing(tmp_path: Path) -> None:
    store, plan = _job(tmp_path, "cancel")
    queue = Queue(store, random.Random(6))
    jobflow.submit(store, queue, plan, Writer.SUBMITTER, "me", rerun_done=True)
    assert not jobflow.cancel(store, "somebody else")  # only the lease holder gives a job up
    assert jobflow.cancel(store, "me")
    sent = len(queue.sent)
    queue.drain()
    assert len(queue.sent) == sent and store.state() is JobState.CANCELLED
    assert store.client.keys(f"retape:job:{store.job_id}:*") == []  # nothing written after


def test_tasks_of_an_earlier_start_write_nothing_into_a_new_start(tmp_path: Path) -> None:
    store, plan = _job(tmp_path, "restart")
    first = Queue(store, random.Random(7))
    jobflow.submit(store, first, plan, Writer.SUBMITTER, "me", rerun_done=True)
    stale = list(first.pending)  # still queued when the job is started again (Ctrl-C, re-run)
    second = Queue(store, random.Random(8))
    again = jobflow.submit(store, second, plan, Writer.SUBMITTER, "me", rerun_done=True)
    assert again.outcome is jobflow.Outcome.RESUMED  # the lease is ours: a running job goes on
    jobflow.cancel(again.store, "me")
    third = Queue(store, random.Random(9))
    fresh = jobflow.submit(store, third, plan, Writer.SUBMITTER, "me", rerun_done=True)
    assert fresh.outcome is jobflow.Outcome.NEW and fresh.store.epoch == 2
    for task in stale:  # tasks of epoch 1: they do nothing
        third.run(*task)
        jobflow.bury_segment(store.at(1), third, task[1][2], 0, "stale")
    assert third.store.client.keys(f"retape:job:{store.job_id}:seg:*") == []
    third.drain()
    jobflow.collect(fresh.store, plan, plan.out)
    assert (tmp_path / "restart" / "fanin.json").read_bytes() == _run(tmp_path, "ref", 0, 0.0)


@pytest.mark.parametrize("tries", [1, 3])
def test_the_guard_counts_starts_and_gives_back_transient_ones(tries: int) -> None:
    guard = DeliveryGuard(fakeredis.FakeRedis(), max_tries=tries, dead_letters="dead")
    for _ in range(10):  # transient failures do not use up the tries
        assert guard.admit("t1", "task", [], "book")
        guard.give_back("t1")
    for _ in range(tries):
        assert guard.admit("t1", "task", [], "book")
    assert not guard.admit("t1", "task", [], "book")
    assert [letter["task_id"] for letter in guard.letters()] == ["t1"]
    assert guard.bury("t2", "task", ["job"], "book", "bad input") is True
    assert guard.bury("t2", "task", ["job"], "book", "bad input") is False  # once
    assert guard.letters()[-1]["reason"] == "bad input"


def test_a_large_answer_is_written_once_and_only_while_the_job_runs(tmp_path: Path) -> None:
    """Large values are written apart and moved in place (not passed through a script):
    still once, still only at the running epoch, and no upload key is left behind."""
    from shared.jobstore import MOVE_FROM_BYTES

    store, plan = _job(tmp_path, "large")
    live = jobflow.submit(store, Queue(store, random.Random(3)), plan, Writer.SUBMITTER, "me", True).store
    big, other = b"a" * MOVE_FROM_BYTES, b"b" * (MOVE_FROM_BYTES * 3)
    assert live.put_answer(0, 0, 0, big)
    assert not live.put_answer(0, 0, 0, other)  # a redelivered task: the first answer stays
    assert live.answers(0, 0, 1) == [big]
    assert live.answered(0, 0, [0, 1]) == [True, False]
    stale = store.at(str(int(live.epoch or 0) + 1))
    with pytest.raises(NotRunning):
        stale.put_answer(0, 0, 1, other)
    assert live.answered(0, 0, [1]) == [False]
    assert [k for k in store.client.keys("*") if b"upload" in k] == []

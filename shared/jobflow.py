"""The flow of a job over the store: submit, run stages, fan in, finish.

No Celery here: tasks are sent through a :class:`Sender` (the Celery app on both sides),
and :mod:`workers.tasks` only calls these functions.  Producers use the submitting half,
workers the running half; the submitter of an ``audit`` also combines the results itself
(:func:`collect`), which is why both halves live in ``shared``.

Same bytes whatever happens: results are write-once per stage, a redelivered task finds
its stage's result and only re-sends what has no answer yet, barriers trip once, and the
outputs are a function of the final results in segment order.  Tasks carry the job's epoch
(which start of the job they belong to); a task of another start, or one that outlived the
job, finds the job not running at its epoch and does nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import orjson

from shared.jobs import (
    Field,
    JobPlan,
    JobState,
    SegmentContext,
    Step,
    SubTask,
    SubtaskContext,
    TaskName,
    Writer,
    aggregate_task_id,
    kind_named,
    segment_task_id,
    subtask_id,
)
from shared.jobstore import JobStore
from shared.queues import Queue

log = logging.getLogger("retape.jobs")

SEGMENTS_BARRIER = "segments"


class Sender(Protocol):
    def send(self, name: TaskName, args: list[Any], task_id: str, queue: str) -> None: ...


# -- a stage's record: its sub-tasks and its result --------------------------------------


def encode_step(step: Step) -> bytes:
    """``<header JSON>\\n<result>``: the header names the sub-tasks (queue, args)."""
    header = {"subtasks": [[s.queue.value, s.args] for s in step.subtasks], "messages": step.messages}
    return orjson.dumps(header) + b"\n" + step.result


def decode_step(raw: bytes) -> Step:
    head, _, result = raw.partition(b"\n")
    header = orjson.loads(head)
    subtasks = tuple(SubTask(Queue(q), args) for q, args in header["subtasks"])
    return Step(result, subtasks, int(header["messages"]))


# -- submitting --------------------------------------------------------------------------


class Outcome(StrEnum):
    NEW = "submitted"
    RESUMED = "resumed"  # a running job whose submitter had gone: taken over
    SERVED_ELSEWHERE = "served-elsewhere"  # another submitter holds the lease
    DONE = "done"  # finished already (and not asked to run again)


@dataclass(frozen=True, slots=True)
class Submission:
    job: str
    outcome: Outcome
    plan: JobPlan
    store: JobStore  # at the job's epoch when this submitter serves it

    @property
    def serving(self) -> bool:
        """True when this submitter holds the lease: it serves the data and waits."""
        return self.outcome in (Outcome.NEW, Outcome.RESUMED)


def submit(
    store: JobStore, sender: Sender, plan: JobPlan, writer: Writer, owner: str, rerun_done: bool
) -> Submission:
    """Take the job's lease, then start it, take it over, or leave it."""
    job = store.job_id
    if not store.take_lease(owner):
        return Submission(job, Outcome.SERVED_ELSEWHERE, plan, store)
    state = store.state()
    if state is JobState.RUNNING and store.plan() is not None:
        live, attempt = store.take_over(writer)
        resume(live, sender, plan, attempt)
        return Submission(job, Outcome.RESUMED, plan, live)
    if state is JobState.DONE and not rerun_done:
        store.release_lease(owner)
        return Submission(job, Outcome.DONE, plan, store)
    live = store.start(plan, writer)
    attempt = live.count(Field.ATTEMPT)
    queue = kind_named(plan.kind).queue.value
    for n in range(plan.segments):
        task_id = segment_task_id(queue, job, n, 0, attempt)
        sender.send(TaskName.SEGMENT, [job, live.epoch, n, 0], task_id, queue)
    if plan.segments == 0:
        segments_complete(live, sender)
    return Submission(job, Outcome.NEW, plan, live)


def resume(store: JobStore, sender: Sender, plan: JobPlan, attempt: int) -> None:
    """Send again what an abandoned job still needs: each unfinished segment's latest stage
    (which re-sends only the sub-tasks without an answer), or the completion itself."""
    job = store.job_id
    queue = kind_named(plan.kind).queue.value
    unfinished = store.unfinished(plan.segments)
    for n in unfinished:
        stage = store.latest_stage(n)
        task_id = segment_task_id(queue, job, n, stage, attempt)
        sender.send(TaskName.SEGMENT, [job, store.epoch, n, stage], task_id, queue)
    if not unfinished:
        segments_complete(store, sender)


def cancel(store: JobStore, owner: str) -> bool:
    """The submitter holding the lease gives up: queued tasks of the job will do nothing."""
    return store.cancel(owner)


# -- running (workers) ---------------------------------------------------------------------


ContextFactory = Callable[[JobPlan, int], SegmentContext]


def _running_plan(store: JobStore, starting: bool = False) -> JobPlan | None:
    """The job's plan while it runs at the store's epoch (None once it finished, was
    cancelled, started again or lost); a task ``starting`` on it is counted, so the
    submitter knows a worker took something."""
    plan = store.plan()
    if plan is None or not store.running():
        log.info("job %s is not running at epoch %s: nothing to do", store.job_id, store.epoch)
        return None
    if starting:
        store.add(Field.STARTED)
    return plan


def run_stage(store: JobStore, sender: Sender, segment: int, stage: int, context: ContextFactory) -> None:
    """Run (or, on a redelivery, pick up) stage ``stage`` of a segment and pass it on."""
    plan = _running_plan(store, starting=True)
    if plan is None:
        return
    raw = store.result(segment, stage)
    if raw is None:
        step = _compute(store, plan, segment, stage, context)
        if store.put_result(segment, stage, encode_step(step)) and step.final:
            store.add(Field.MESSAGES, step.messages)
        raw = store.result(segment, stage)
        assert raw is not None
    _pass_on(store, sender, plan, segment, stage, decode_step(raw))


def _compute(store: JobStore, plan: JobPlan, segment: int, stage: int, context: ContextFactory) -> Step:
    kind = kind_named(plan.kind)
    if stage == 0:
        return kind.run_segment(plan, segment, context(plan, segment))
    previous = store.result(segment, stage - 1)
    if previous is None:
        raise RuntimeError(f"segment {segment} stage {stage} has no stage {stage - 1} to continue")
    before = decode_step(previous)
    answers = store.answers(segment, stage - 1, len(before.subtasks))
    if any(a is None for a in answers):
        raise RuntimeError(f"segment {segment} stage {stage}: stage {stage - 1} has unanswered sub-tasks")
    given = [a for a in answers if a is not None]
    return kind.continue_segment(plan, segment, stage, before.result, given, context(plan, segment))


def _pass_on(store: JobStore, sender: Sender, plan: JobPlan, segment: int, stage: int, step: Step) -> None:
    if step.final:
        finish_segment(store, sender, plan, segment, stage)
        return
    subs = range(len(step.subtasks))
    answered = store.answered(segment, stage, subs)
    missing = [n for n in subs if not answered[n]]
    if not missing:  # every answer is in: the barrier's tripper may have died before acting
        _next_stage(store, sender, plan, segment, stage + 1)
        return
    job = store.job_id
    attempt = store.count(Field.ATTEMPT)
    for n in missing:
        queue = step.subtasks[n].queue.value
        task_id = subtask_id(queue, job, segment, stage, n, attempt)
        sender.send(TaskName.SUBTASK, [job, store.epoch, segment, stage, n], task_id, queue)


def _next_stage(store: JobStore, sender: Sender, plan: JobPlan, segment: int, stage: int) -> None:
    job = store.job_id
    queue = kind_named(plan.kind).queue.value
    task_id = segment_task_id(queue, job, segment, stage, store.count(Field.ATTEMPT))
    sender.send(TaskName.SEGMENT, [job, store.epoch, segment, stage], task_id, queue)


def run_subtask(
    store: JobStore, sender: Sender, segment: int, stage: int, sub: int, ctx: SubtaskContext | None = None
) -> None:
    """Answer one sub-task (once); the last answer of a stage starts the next stage."""
    plan = _running_plan(store, starting=True)
    if plan is None:
        return
    raw = store.result(segment, stage)
    if raw is None:
        raise RuntimeError(f"segment {segment} stage {stage} has no record for its sub-task {sub}")
    step = decode_step(raw)
    if not store.answered(segment, stage, [sub])[0]:
        kind = kind_named(plan.kind)
        answer = kind.run_subtask(
            plan, segment, stage, step.subtasks[sub].args, ctx or SubtaskContext(store.client)
        )
        store.put_answer(segment, stage, sub, answer)
    _answered(store, sender, plan, segment, stage, sub, len(step.subtasks))


def _answered(
    store: JobStore, sender: Sender, plan: JobPlan, segment: int, stage: int, sub: int, total: int
) -> None:
    if store.arrive(f"{segment}:{stage}", sub, total):
        _next_stage(store, sender, plan, segment, stage + 1)


def finish_segment(store: JobStore, sender: Sender, plan: JobPlan, segment: int, stage: int) -> None:
    store.mark_final(segment, stage)
    if store.arrive(SEGMENTS_BARRIER, segment, plan.segments, mirror=Field.DONE):
        segments_complete(store, sender)


def segments_complete(store: JobStore, sender: Sender) -> None:
    """Every segment is finished: wake the submitter; start the aggregator if it writes."""
    store.poke()
    if store.get(Field.WRITER) == Writer.AGGREGATOR.value:
        job = store.job_id
        task_id = aggregate_task_id(job, store.count(Field.ATTEMPT))
        sender.send(TaskName.AGGREGATE, [job, store.epoch], task_id, Queue.AGGREGATE.value)


# -- what could not be done ------------------------------------------------------------------


def bury_segment(store: JobStore, sender: Sender, segment: int, stage: int, reason: str) -> None:
    """A segment's task was dead-lettered: its final result says why, and the job goes on.
    Idempotent: a burial delivered again changes nothing."""
    plan = _running_plan(store)
    if plan is None:
        return
    failed = encode_step(Step(kind_named(plan.kind).failed_segment(plan, segment, reason)))
    while not store.put_result(segment, stage, failed):
        existing = store.result(segment, stage)
        if existing is not None and decode_step(existing).final:
            break  # it finished after all, or was buried already
        stage += 1
    else:
        store.add(Field.DEAD)
    finish_segment(store, sender, plan, segment, stage)


def bury_subtask(store: JobStore, sender: Sender, segment: int, stage: int, sub: int, reason: str) -> None:
    """A sub-task was dead-lettered: its answer says why, and the stage goes on."""
    plan = _running_plan(store)
    if plan is None:
        return
    raw = store.result(segment, stage)
    if raw is None:
        return
    step = decode_step(raw)
    args = step.subtasks[sub].args
    answer = kind_named(plan.kind).failed_subtask(plan, segment, stage, args, reason)
    if store.put_answer(segment, stage, sub, answer):
        store.add(Field.DEAD)
    _answered(store, sender, plan, segment, stage, sub, len(step.subtasks))


def bury_aggregate(store: JobStore, reason: str) -> None:
    """The outputs cannot be written: the job failed (a later submission runs it again)."""
    if store.running():
        store.add(Field.DEAD)
        store.finish(JobState.FAILED, reason)


# -- writing the outputs ---------------------------------------------------------------------


def results_of(store: JobStore, plan: JobPlan) -> list[bytes] | None:
    """Every segment's final result, or None while one is missing."""
    found = store.final_results(plan.segments)
    if any(r is None for r in found):
        return None
    return [decode_step(r).result for r in found if r is not None]


def collect(store: JobStore, plan: JobPlan, out_dir: str) -> dict[str, Any]:
    """Combine the final results and write the outputs (the caller owns ``out_dir``), then
    finish the job.  Returns the report."""
    results = results_of(store, plan)
    if results is None:
        raise RuntimeError(f"job {store.job_id}: not every segment has a result")
    report = kind_named(plan.kind).write_outputs(plan, results, out_dir)
    store.finish(JobState.DONE)
    return report


def write_with_failures(
    plan: JobPlan, found: list[bytes | None], out_dir: str, reason: str
) -> dict[str, Any]:
    """Write the outputs from the final stage records ``found`` where there are some; the
    segments without one are reported as not audited, with ``reason``."""
    kind = kind_named(plan.kind)
    results = [
        decode_step(r).result if r is not None else kind.failed_segment(plan, n, reason)
        for n, r in enumerate(found)
    ]
    return kind.write_outputs(plan, results, out_dir)

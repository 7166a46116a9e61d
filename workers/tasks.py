"""Tasks only wire: read a reference, call the flow (:mod:`shared.jobflow`), which stores
write-once results.  Every task's first arguments are its job id and the job's epoch;
bookkeeping and retry decisions are the base task's (:mod:`workers.base`).

- ``retape.segment(job, epoch, segment, stage)``: run or continue one stage of a segment;
- ``retape.subtask(job, epoch, segment, stage, n)``: answer one sub-task of a stage;
- ``retape.aggregate(job, epoch)``: combine the results and write the job's outputs (jobs
  whose outputs the aggregator writes, i.e. those ``retape produce`` submitted).
"""

from __future__ import annotations

import importlib
from typing import Any

from shared import jobflow
from shared.errors import OutputBusy, TransientError
from shared.jobs import KIND_MODULES, JobPlan, SegmentContext, SubtaskContext, TaskName
from shared.outdir import OutputDir
from workers.app import app
from workers.base import GuardedTask
from workers.data import SegmentBlocks, reads_directly

OUTPUT_LOCK_WAIT_S = 30.0

# The kinds' modules are imported here, in the worker's main process, before it forks its
# pool: every pool process starts with them loaded.
for _module in KIND_MODULES.values():
    importlib.import_module(_module)


class SegmentTask(GuardedTask):
    def bury(self, args: tuple[Any, ...], reason: str) -> None:
        job, epoch, segment, stage = args
        jobflow.bury_segment(self.store(job, epoch), self.sender(), segment, stage, reason)


class SubTaskTask(GuardedTask):
    def bury(self, args: tuple[Any, ...], reason: str) -> None:
        job, epoch, segment, stage, sub = args
        jobflow.bury_subtask(self.store(job, epoch), self.sender(), segment, stage, sub, reason)


class AggregateTask(GuardedTask):
    def bury(self, args: tuple[Any, ...], reason: str) -> None:
        job, epoch = args
        jobflow.bury_aggregate(self.store(job, epoch), reason)


@app.task(bind=True, base=SegmentTask, name=TaskName.SEGMENT.value)
def segment_task(self: SegmentTask, job: str, epoch: int, segment: int, stage: int) -> None:
    store = self.store(job, epoch)

    def context(plan: JobPlan, index: int) -> SegmentContext:
        blocks = SegmentBlocks(store, index, plan.files)
        return SegmentContext(blocks, blocks.digests, reads_files=reads_directly())

    jobflow.run_stage(store, self.sender(), segment, stage, context)


@app.task(bind=True, base=SubTaskTask, name=TaskName.SUBTASK.value)
def subtask_task(self: SubTaskTask, job: str, epoch: int, segment: int, stage: int, sub: int) -> None:
    store = self.store(job, epoch)
    ctx = SubtaskContext(store.client, reads_files=reads_directly())
    jobflow.run_subtask(store, self.sender(), segment, stage, sub, ctx)


@app.task(bind=True, base=AggregateTask, name=TaskName.AGGREGATE.value)
def aggregate_task(self: AggregateTask, job: str, epoch: int) -> None:
    store = self.store(job, epoch)
    plan = store.plan()
    if plan is None or not store.running() or jobflow.results_of(store, plan) is None:
        return  # finished already, or not complete (a later completion sends it again)
    try:
        with OutputDir(plan.out).lock(wait_s=OUTPUT_LOCK_WAIT_S):
            jobflow.collect(store, plan, plan.out)
    except OutputBusy as exc:
        raise TransientError(str(exc), retry_after=OUTPUT_LOCK_WAIT_S) from exc

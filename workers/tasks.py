"""Tasks only wire: read a reference, call the flow (:mod:`shared.jobflow`), which stores
write-once results.  Every task's first argument is its job id; bookkeeping and retry
decisions are the base task's (:mod:`workers.base`).

- ``retape.segment(job, segment, stage)``: run or continue one stage of a segment;
- ``retape.subtask(job, segment, stage, n)``: answer one sub-task of a stage;
- ``retape.aggregate(job)``: combine the results and write the job's outputs (jobs whose
  outputs the aggregator writes, i.e. those ``retape produce`` submitted).
"""

from __future__ import annotations

import importlib
from typing import Any

from shared import jobflow
from shared.jobs import KIND_MODULES, JobPlan, SegmentContext, TaskName
from shared.outdir import OutputDir
from workers.app import app
from workers.base import GuardedTask
from workers.data import SegmentBlocks

OUTPUT_LOCK_WAIT_S = 30.0

# The kinds' modules are imported here, in the worker's main process, before it forks its
# pool: every pool process starts with them loaded.
for _module in KIND_MODULES.values():
    importlib.import_module(_module)


class SegmentTask(GuardedTask):
    def bury(self, args: tuple[Any, ...], reason: str) -> None:
        job, segment, stage = args
        jobflow.bury_segment(self.store(job), self.sender(), segment, stage, reason)


class SubTaskTask(GuardedTask):
    def bury(self, args: tuple[Any, ...], reason: str) -> None:
        job, segment, stage, sub = args
        jobflow.bury_subtask(self.store(job), self.sender(), segment, stage, sub, reason)


class AggregateTask(GuardedTask):
    def bury(self, args: tuple[Any, ...], reason: str) -> None:
        jobflow.bury_aggregate(self.store(args[0]), reason)


@app.task(bind=True, base=SegmentTask, name=TaskName.SEGMENT.value)
def segment_task(self: SegmentTask, job: str, segment: int, stage: int) -> None:
    store = self.store(job)

    def context(plan: JobPlan, index: int) -> SegmentContext:
        return SegmentContext(SegmentBlocks(store.client, job, index, plan.files))

    jobflow.run_stage(store, self.sender(), segment, stage, context)


@app.task(bind=True, base=SubTaskTask, name=TaskName.SUBTASK.value)
def subtask_task(self: SubTaskTask, job: str, segment: int, stage: int, sub: int) -> None:
    jobflow.run_subtask(self.store(job), self.sender(), segment, stage, sub)


@app.task(bind=True, base=AggregateTask, name=TaskName.AGGREGATE.value)
def aggregate_task(self: AggregateTask, job: str) -> None:
    store = self.store(job)
    plan = store.plan()
    if plan is None or jobflow.results_of(store, plan) is None:
        return  # finished already, or not complete (a later completion sends it again)
    with OutputDir(plan.out).lock(wait_s=OUTPUT_LOCK_WAIT_S):
        jobflow.collect(store, plan, plan.out)

"""The ``audit`` job kind: plan the captures into segments, audit one segment, write the
report (see :mod:`shared.jobs` for the protocol).

Pure over the engine: a segment reads its inputs through the block source the worker gives
it (the file on a shared disk, or the bytes the producer streams through the broker).
"""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import Any

from shared.auditors import AuditConfig
from shared.engine import SegmentResult, audit_segment, combine
from shared.formats.lines import GZIP_MAGIC, reading_from
from shared.jobs import FileRef, JobPlan, SegmentContext, Step, Writer, job_id, register
from shared.planning import InputSummary, Plan, plan
from shared.queues import Queue
from shared.report import write_outputs

NAME = "audit"


def _file_ref(summary: InputSummary) -> FileRef | None:
    """What a worker needs to read the input; None for inputs no segment reads."""
    if summary.error is not None or not summary.sha256:
        return None
    try:
        st = os.stat(summary.path)
        with open(summary.path, "rb") as fh:
            gz = fh.read(2) == GZIP_MAGIC
    except OSError:
        return None
    return FileRef(summary.path, summary.sha256, st.st_size, st.st_mtime_ns, gz)


def plan_audit(paths: list[str], cfg: AuditConfig, out_dir: str, writer: Writer) -> tuple[str, JobPlan]:
    """Plan an audit job: its id and its plan.  The id depends on the inputs by content,
    the options, the output directory and who writes the outputs."""
    job = plan(paths)
    body = {
        "inputs": [i.as_json() for i in job.inputs],
        "formats": job.formats,
        "segments": job.segments,
        "config": asdict(cfg),
    }
    read = {f for segment in job.segments for group in segment for f in group}
    files = [ref for i in job.inputs if i.path in read and (ref := _file_ref(i)) is not None]
    basis = {
        "inputs": sorted([i.path, i.sha256] for i in job.inputs),
        "config": asdict(cfg),
        "out": out_dir,
        "writer": writer.value,
    }
    return job_id(NAME, basis), JobPlan(NAME, len(job.segments), files, body, out_dir)


def decode(plan: JobPlan) -> tuple[Plan, AuditConfig]:
    body = plan.body
    job = Plan([InputSummary.from_json(i) for i in body["inputs"]], body["formats"], body["segments"])
    return job, AuditConfig(**body["config"])


def inputs_of(plan: JobPlan) -> list[InputSummary]:
    return decode(plan)[0].inputs


class AuditKind:
    name = NAME
    queue = Queue.BOOK

    def run_segment(self, plan: JobPlan, segment: int, ctx: SegmentContext) -> Step:
        job, cfg = decode(plan)
        with reading_from(ctx.blocks):
            result = audit_segment(job, segment, cfg)
        return Step(result.encode(), messages=result.messages)

    def continue_segment(
        self, plan: JobPlan, segment: int, stage: int, previous: bytes, answers: list[bytes]
    ) -> Step:
        raise NotImplementedError("an audit segment has one stage")

    def run_subtask(self, plan: JobPlan, segment: int, stage: int, args: Any) -> bytes:
        raise NotImplementedError("an audit segment has no sub-tasks")

    def failed_segment(self, plan: JobPlan, segment: int, reason: str) -> bytes:
        job, _ = decode(plan)
        return SegmentResult.not_audited(job, segment, reason).encode()

    def failed_subtask(self, plan: JobPlan, segment: int, stage: int, args: Any, reason: str) -> bytes:
        raise NotImplementedError("an audit segment has no sub-tasks")

    def write_outputs(self, plan: JobPlan, results: list[bytes], out_dir: str) -> dict[str, Any]:
        job, cfg = decode(plan)
        segments = [SegmentResult.decode(r) for r in results]
        outcome = combine(job, segments)
        outcome.settings = asdict(cfg)
        return write_outputs(outcome, out_dir, input_sizes={f.path: f.size for f in plan.files})


KIND = register(AuditKind())

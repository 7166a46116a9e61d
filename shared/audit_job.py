"""The ``audit`` job kind: plan the captures into segments, audit one segment, write the
report (see :mod:`shared.jobs` for the protocol).

Pure over the engine: a segment reads its inputs through the block source the worker gives
it (the file on a shared disk, or the bytes the producer streams through the broker).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from shared.auditors import AuditConfig
from shared.chunking import assemble, chunks_for, run_chunk
from shared.engine import SegmentResult, audit_segment, combine
from shared.formats.lines import reading_from
from shared.input_digests import fill_in, hash_args, hashed_by_workers, identity, run_hash
from shared.jobs import (
    JobPlan,
    SegmentContext,
    Step,
    SubTask,
    SubtaskContext,
    Writer,
    file_ref,
    job_id,
    register,
    run_inline,
)
from shared.planning import InputSummary, Plan, plan
from shared.queues import Queue
from shared.replay.fetch import fill_gap
from shared.replay.fill import Answer
from shared.replay.repairs import AnswerBook, requests_for
from shared.replay.request import FillRequest
from shared.replay.sources import open_sources
from shared.replay.stats import add as add_stats
from shared.report import write_outputs

NAME = "audit"
# Stage 0's result where the segment was cut into chunks (stage 1 assembles them).
CHUNKED = b"chunks"


def plan_audit(
    paths: list[str], cfg: AuditConfig, out_dir: str, writer: Writer, workers_hash: bool = True
) -> tuple[str, JobPlan]:
    """Plan an audit job: its id and its plan.  The id depends on the inputs by content,
    the options, the output directory and who writes the outputs.  ``workers_hash``: a big
    plain capture's SHA-256 is left to the workers (:mod:`shared.input_digests`)."""
    job = plan(paths, hashed_by_workers if workers_hash else None)
    body = {
        "inputs": [i.as_json() for i in job.inputs],
        "formats": job.formats,
        "segments": job.segments,
        "config": asdict(cfg),
    }
    read = {f for segment in job.segments for group in segment for f in group}
    files = [
        ref
        for i in job.inputs
        if i.path in read and i.error is None and (ref := file_ref(i.path, i.sha256)) is not None
    ]
    basis = {
        "inputs": sorted(
            [i.path, i.sha256 or (identity(i.path) if i.path in read else "")] for i in job.inputs
        ),
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
    """Stage 0 audits a segment.  When replay sources are given and it found gaps they can
    fill, it asks for one fill per gap (sub-tasks on the ``replay`` queue); stage 1 audits
    the segment again with what came back, the fills merged in place of the gaps."""

    name = NAME
    queue = Queue.BOOK

    def run_segment(self, plan: JobPlan, segment: int, ctx: SegmentContext) -> Step:
        job, cfg = decode(plan)
        planned = _planned(plan)
        chunks = chunks_for(job, segment, cfg, planned) if ctx.reads_files else []
        if chunks:
            (path,) = job.segments[segment][0]
            hashing = [hash_args(path, *planned[path])] if _unhashed(job, path) else []
            return Step(CHUNKED, tuple(SubTask(Queue.BOOK, c) for c in hashing + chunks))
        with reading_from(ctx.blocks):
            result = audit_segment(job, segment, cfg, AnswerBook(()) if cfg.replay_sources else None)
        fill_in(result.inputs, ctx.digests, planned)
        requests = requests_for(result.parts) if cfg.replay_sources else []
        if requests:
            asks = tuple(SubTask(Queue.REPLAY, r.as_json()) for r in requests)
            return Step(result.encode(), asks)
        return Step(result.encode(), messages=result.messages)

    def continue_segment(
        self,
        plan: JobPlan,
        segment: int,
        stage: int,
        previous: bytes,
        answers: list[bytes],
        ctx: SegmentContext,
    ) -> Step:
        job, cfg = decode(plan)
        planned = _planned(plan)
        if previous == CHUNKED:
            (path,) = job.segments[segment][0]
            known = dict(ctx.digests)
            if _unhashed(job, path):  # the first sub-task hashed the file
                hashed, answers = answers[0].decode("ascii", "replace"), answers[1:]
                known.setdefault(path, hashed)
            assembled = assemble(job, segment, cfg, answers, planned.get(path)) if ctx.reads_files else None
            if assembled is None:  # the file is not here as the chunks read it: read it whole
                with reading_from(ctx.blocks):
                    assembled = audit_segment(job, segment, cfg)
                known = {**known, **ctx.digests}
            fill_in(assembled.inputs, known, planned)
            return Step(assembled.encode(), messages=assembled.messages)
        decoded = [Answer.decode(a) for a in answers]
        with reading_from(ctx.blocks):
            result = audit_segment(job, segment, cfg, AnswerBook(decoded))
        fill_in(result.inputs, ctx.digests, planned)
        for answer in decoded:
            add_stats(result.replay, answer.stats)
        return Step(result.encode(), messages=result.messages)

    def run_subtask(self, plan: JobPlan, segment: int, stage: int, args: Any, ctx: SubtaskContext) -> bytes:
        if "chunk" in args or "hash" in args:
            if not ctx.reads_files:
                return b""  # the last stage reads the chunk (and hashes the file) itself
            return run_chunk(args["chunk"]) if "chunk" in args else run_hash(args["hash"])
        _, cfg = decode(plan)
        request = FillRequest.from_json(args)
        sources = open_sources(cfg.replay_sources, ctx.redis)
        try:
            return fill_gap(request, sources).encode()
        finally:
            for source in sources:
                source.close()

    def failed_segment(self, plan: JobPlan, segment: int, reason: str) -> bytes:
        job, _ = decode(plan)
        result = SegmentResult.not_audited(job, segment, reason)
        fill_in(result.inputs, {}, _planned(plan))
        return result.encode()

    def failed_subtask(self, plan: JobPlan, segment: int, stage: int, args: Any, reason: str) -> bytes:
        if "chunk" in args or "hash" in args:
            return b""  # the last stage reads that chunk itself (or hashes the file)
        request = FillRequest.from_json(args)
        return Answer(request, reasons={"*": f"the fill task failed: {reason}"}).encode()

    def write_outputs(self, plan: JobPlan, results: list[bytes], out_dir: str) -> dict[str, Any]:
        job, cfg = decode(plan)
        segments = [SegmentResult.decode(r) for r in results]
        outcome = combine(job, segments)
        outcome.settings = asdict(cfg)
        return write_outputs(outcome, out_dir, input_sizes={f.path: f.size for f in plan.files})


def _planned(plan: JobPlan) -> dict[str, tuple[int, int]]:
    """Size and modification time of every file the job reads, as planned."""
    return {f.path: (f.size, f.mtime_ns) for f in plan.files}


def _unhashed(job: Plan, path: str) -> bool:
    """The plan left the SHA-256 of ``path`` to the workers."""
    return any(i.path == path and not i.sha256 for i in job.inputs)


def run_in_process(paths: list[str], cfg: AuditConfig, out_dir: str) -> dict[str, Any]:
    """The audit job run stage by stage in this process (``retape audit --in-process`` with
    replay sources): the same kind, the same results, no broker."""
    _, job_plan = plan_audit(paths, cfg, out_dir, Writer.SUBMITTER, workers_hash=False)
    return run_inline(AuditKind(), job_plan, out_dir)


KIND = register(AuditKind())

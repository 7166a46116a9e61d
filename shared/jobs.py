"""Jobs of any kind: their states, names, ids and the protocol a kind implements.

Pure: no Redis, no Celery.  The Redis side is :mod:`shared.jobstore`, the flow over it
:mod:`shared.jobflow`; Celery tasks (:mod:`workers.tasks`) only wire them.

Every kind of work has the same four steps: **plan** the segments (the units of work),
**run** one segment, **combine** the segments' results, **write** the outputs.  A segment
may go through *stages*: stage 0 runs it; a stage may ask for sub-tasks (fills to fetch,
LLM calls to make), and when all of them have answered (a barrier in Redis, tripped by the
last one) the next stage continues with their results.  Each stage's result is written
once, so a redelivered task changes nothing, and the highest stage's result supersedes
the earlier ones.  A segment is finished when a stage returns no sub-tasks.
"""

from __future__ import annotations

import hashlib
import importlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

import orjson

from shared.formats.lines import GZIP_MAGIC, BlockSource, file_blocks
from shared.queues import Queue


class JobState(StrEnum):
    RUNNING = "running"
    DONE = "done"  # the outputs are written
    FAILED = "failed"  # the outputs could not be written (the aggregation was dead-lettered)
    CANCELLED = "cancelled"  # the submitter gave up (Ctrl-C, --timeout); queued tasks do nothing


FINISHED_STATES = frozenset({JobState.DONE, JobState.FAILED, JobState.CANCELLED})


class Writer(StrEnum):
    """Who combines the results and writes the outputs once every segment is finished."""

    SUBMITTER = "submitter"  # `retape audit`: the command that waits, into its own --out
    AGGREGATOR = "aggregator"  # `retape produce`: an aggregate task, into the job's --out


class Field(StrEnum):
    """Fields of the job's hash in Redis."""

    KIND = "kind"
    STATE = "state"
    WRITER = "writer"
    OUT = "out"
    TOTAL = "total"  # segments
    DONE = "done"  # segments finished
    STARTED = "started"  # task starts of any kind (has a worker taken anything?)
    MESSAGES = "messages"  # messages read by finished segments (progress)
    DEAD = "dead"  # tasks of the job dead-lettered
    EPOCH = "epoch"  # how many times the job was started: tasks carry it, stale ones do nothing
    ATTEMPT = "attempt"  # how many times it was submitted or taken over (fresh task ids)
    ERROR = "error"


class TaskName(StrEnum):
    SEGMENT = "retape.segment"  # (job, epoch, segment, stage): run or continue one segment
    SUBTASK = "retape.subtask"  # (job, epoch, segment, stage, n): one sub-task of a stage
    AGGREGATE = "retape.aggregate"  # (job, epoch): combine and write, for Writer.AGGREGATOR


# -- ids -------------------------------------------------------------------------------


def job_id(kind: str, basis: Any) -> str:
    """The id of a job: its kind and everything that decides its outputs (inputs by content,
    options, output directory).  The same submission twice is the same job."""
    data = orjson.dumps({"kind": kind, "basis": basis}, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(data).hexdigest()[:32]


def _attempt(attempt: int) -> str:
    return "" if attempt <= 1 else f":t{attempt}"


def segment_task_id(queue: str, job: str, segment: int, stage: int, attempt: int = 1) -> str:
    """``book:<job>:<segment>`` for stage 0 of a first submission; later stages add ``:s<n>``
    and takeovers ``:t<n>`` (a fresh redelivery count)."""
    stage_part = f":s{stage}" if stage else ""
    return f"{queue}:{job}:{segment}{stage_part}{_attempt(attempt)}"


def subtask_id(queue: str, job: str, segment: int, stage: int, sub: int, attempt: int = 1) -> str:
    return f"{queue}:{job}:{segment}:s{stage}:{sub}{_attempt(attempt)}"


def aggregate_task_id(job: str, attempt: int = 1) -> str:
    return f"aggregate:{job}{_attempt(attempt)}"


# -- plans -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileRef:
    """An input file a job reads, as the producer saw it: workers on the producer's disk
    read it directly when it still has this size and time; others ask the producer."""

    path: str
    sha256: str
    size: int
    mtime_ns: int
    gzip: bool

    def as_json(self) -> list[Any]:
        return [self.path, self.sha256, self.size, self.mtime_ns, self.gzip]

    @classmethod
    def from_json(cls, data: Sequence[Any]) -> FileRef:
        path, sha, size, mtime_ns, gz = data
        return cls(str(path), str(sha), int(size), int(mtime_ns), bool(gz))


def file_ref(path: str, sha256: str) -> FileRef | None:
    """The reference of an input a job reads, as it is on disk now; None when it cannot be
    read any more (its error is the plan's to report)."""
    try:
        st = os.stat(path)
        with open(path, "rb") as fh:
            gz = fh.read(2) == GZIP_MAGIC
    except OSError:
        return None
    return FileRef(path, sha256, st.st_size, st.st_mtime_ns, gz)


@dataclass(slots=True)
class JobPlan:
    """What a job does, as stored in Redis: its kind, the files it reads (for the data
    path), how many segments it has, and the kind's own plan (``body``, JSON)."""

    kind: str
    segments: int
    files: list[FileRef]
    body: Any
    out: str

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "kind": self.kind,
                "segments": self.segments,
                "files": [f.as_json() for f in self.files],
                "body": self.body,
                "out": self.out,
            }
        )

    @classmethod
    def from_json(cls, raw: bytes | str) -> JobPlan:
        data = orjson.loads(raw)
        files = [FileRef.from_json(f) for f in data["files"]]
        return cls(data["kind"], int(data["segments"]), files, data["body"], data["out"])


# -- stages ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SubTask:
    """One piece of work a stage waits for; ``args`` are references (JSON), never bulk data."""

    queue: Queue
    args: Any


@dataclass(frozen=True, slots=True)
class Step:
    """What running a stage of a segment gave: its result (JSON bytes, written once) and the
    sub-tasks the next stage waits for (none: the result is the segment's final one)."""

    result: bytes
    subtasks: tuple[SubTask, ...] = ()
    messages: int = 0  # for progress

    @property
    def final(self) -> bool:
        return not self.subtasks


@dataclass(frozen=True, slots=True)
class SegmentContext:
    """What a worker gives a kind to run a segment: where the input bytes come from, the
    SHA-256 of each file read through them to its end (filled in as they are read), and
    whether the worker may open input files on its own disk (``RETAPE_READ_INPUTS=broker``:
    not even for the chunks of a recording)."""

    blocks: BlockSource
    digests: Mapping[str, str] = field(default_factory=dict)
    reads_files: bool = True


@dataclass(frozen=True, slots=True)
class SubtaskContext:
    """What a worker gives a kind to answer a sub-task: the broker's Redis client, where
    state shared by every worker lives (the replay sources' rate limits and breakers); None
    for a job run in one process; and whether it may open input files on its own disk."""

    redis: Any = None
    reads_files: bool = True


class JobKind(Protocol):
    """A kind of job.  Every method is pure with respect to the broker: the flow
    (:mod:`shared.jobflow`) stores what they return."""

    name: str
    queue: Queue  # where its segments run

    def run_segment(self, plan: JobPlan, segment: int, ctx: SegmentContext) -> Step: ...

    def continue_segment(
        self,
        plan: JobPlan,
        segment: int,
        stage: int,
        previous: bytes,
        answers: list[bytes],
        ctx: SegmentContext,
    ) -> Step:
        """Stage ``stage`` (>= 1): ``previous`` is stage ``stage - 1``'s result, ``answers``
        its sub-tasks' results in order; ``ctx`` reads the segment's inputs again if needed."""
        ...

    def run_subtask(
        self, plan: JobPlan, segment: int, stage: int, args: Any, ctx: SubtaskContext
    ) -> bytes: ...

    def failed_segment(self, plan: JobPlan, segment: int, reason: str) -> bytes:
        """The final result of a segment that could not be run (dead-lettered)."""
        ...

    def failed_subtask(self, plan: JobPlan, segment: int, stage: int, args: Any, reason: str) -> bytes: ...

    def write_outputs(self, plan: JobPlan, results: list[bytes], out_dir: str) -> dict[str, Any]:
        """Combine the segments' final results (in segment order) and write the outputs;
        return the report."""
        ...


def run_inline(kind: JobKind, plan: JobPlan, out_dir: str) -> dict[str, Any]:
    """A job run stage by stage in this process (``--in-process``): the same kind, the same
    results, no broker; sub-tasks one after the other.  Returns the report."""
    results = []
    for segment in range(plan.segments):
        ctx = SegmentContext(file_blocks)
        step = kind.run_segment(plan, segment, ctx)
        stage = 0
        while not step.final:
            answers = [
                kind.run_subtask(plan, segment, stage, t.args, SubtaskContext()) for t in step.subtasks
            ]
            stage += 1
            step = kind.continue_segment(plan, segment, stage, step.result, answers, ctx)
        results.append(step.result)
    return kind.write_outputs(plan, results, out_dir)


# -- the kinds a worker knows ------------------------------------------------------------

# Modules that register a kind when imported, by kind name.
KIND_MODULES: dict[str, str] = {"audit": "shared.audit_job", "ledger": "shared.ledger_job"}


_KINDS: dict[str, JobKind] = {}


def register(kind: JobKind) -> JobKind:
    _KINDS[kind.name] = kind
    return kind


def kind_named(name: str) -> JobKind:
    """The kind called ``name``, importing its module on first use."""
    kind = _KINDS.get(name)
    if kind is None and name in KIND_MODULES:
        importlib.import_module(KIND_MODULES[name])
        kind = _KINDS.get(name)
    if kind is None:
        raise KeyError(f"unknown job kind {name!r}")
    return kind

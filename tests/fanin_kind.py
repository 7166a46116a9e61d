"""A job kind for tests of the job layer's fan-in, and a Celery app whose workers know it.

Each segment holds a few input files (real captures).  Stage 0 asks one sub-task per file
(queue ``replay``): the SHA-256 and line count of the file.  Stage 1 combines those answers
and asks one sub-task per file again (queue ``llm``): the first line's length.  Stage 2
combines everything into the segment's final result.  The outputs are one JSON file.

A sub-task sleeps ``FANIN_SUBTASK_S`` seconds (environment, default 0) so a test can kill
workers while sub-tasks run.  Run the workers as ``celery -A fanin_kind worker`` with
``tests`` on PYTHONPATH.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import time
from typing import Any

import orjson

from shared.jobs import FileRef, JobPlan, SegmentContext, Step, SubTask, SubtaskContext, job_id, register
from shared.outdir import atomic_write
from shared.queues import Queue
from workers.app import app

__all__ = ["app", "plan_fanin"]

NAME = "fanin-test"


def plan_fanin(segments: list[list[str]], out_dir: str) -> tuple[str, JobPlan]:
    files = sorted({f for segment in segments for f in segment})
    refs = []
    for path in files:
        st = os.stat(path)
        with open(path, "rb") as fh:
            sha = hashlib.file_digest(fh, "sha256").hexdigest()
        refs.append(FileRef(path, sha, st.st_size, st.st_mtime_ns, False))
    body = {"segments": segments}
    return job_id(NAME, {"segments": segments, "out": out_dir}), JobPlan(
        NAME, len(segments), refs, body, out_dir
    )


def _open(path: str) -> Any:
    with open(path, "rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gz else open(path, "rb")


class FanInKind:
    name = NAME
    queue = Queue.BOOK

    def run_segment(self, plan: JobPlan, segment: int, ctx: SegmentContext) -> Step:
        files = plan.body["segments"][segment]
        asks = tuple(SubTask(Queue.REPLAY, {"file": f, "what": "digest"}) for f in files)
        return Step(orjson.dumps({"segment": segment, "files": files}), asks)

    def continue_segment(
        self,
        plan: JobPlan,
        segment: int,
        stage: int,
        previous: bytes,
        answers: list[bytes],
        ctx: SegmentContext,
    ) -> Step:
        before = orjson.loads(previous)
        got = [orjson.loads(a) for a in answers]
        if stage == 1:
            asks = tuple(SubTask(Queue.LLM, {"file": f, "what": "first"}) for f in before["files"])
            return Step(orjson.dumps({**before, "digests": got}), asks)
        return Step(orjson.dumps({**before, "first_lines": got}), messages=len(got))

    def run_subtask(self, plan: JobPlan, segment: int, stage: int, args: Any, ctx: SubtaskContext) -> bytes:
        time.sleep(float(os.environ.get("FANIN_SUBTASK_S", "0")))
        path = args["file"]
        if args["what"] == "digest":
            digest = hashlib.sha256()
            lines = 0
            with _open(path) as fh:
                for line in fh:
                    digest.update(line)
                    lines += 1
            return orjson.dumps(
                {"file": os.path.basename(path), "sha256": digest.hexdigest(), "lines": lines}
            )
        with _open(path) as fh:
            first = fh.readline()
        return orjson.dumps({"file": os.path.basename(path), "first_line_bytes": len(first)})

    def failed_segment(self, plan: JobPlan, segment: int, reason: str) -> bytes:
        return orjson.dumps({"segment": segment, "failed": reason})

    def failed_subtask(self, plan: JobPlan, segment: int, stage: int, args: Any, reason: str) -> bytes:
        return orjson.dumps({"file": os.path.basename(args["file"]), "failed": reason})

    def write_outputs(self, plan: JobPlan, results: list[bytes], out_dir: str) -> dict[str, Any]:
        report = {"segments": [orjson.loads(r) for r in results]}
        os.makedirs(out_dir, exist_ok=True)
        atomic_write(os.path.join(out_dir, "fanin.json"), orjson.dumps(report, option=orjson.OPT_INDENT_2))
        return report


register(FanInKind())

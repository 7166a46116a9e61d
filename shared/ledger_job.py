"""The ``ledger`` job kind (see :mod:`shared.jobs` for the protocol).

One segment on the ``ledger`` queue: stage 0 reads every fragment file through the worker's
block source and builds the deterministic ledger.  With LLM settings and notes to read, it asks
one question per note, each an ``llm`` sub-task (the calls run in parallel on every worker that
serves that queue, under one rate limit in Redis); the last answer trips the barrier and stage 1
checks and applies every claim, in note order, so the ledger is the same whatever order the
answers came in.  The plan carries the LLM's public settings (base URL, model, limits, prices);
the key and the answer cache are each worker's own (``RETAPE_LLM_API_KEY``,
``RETAPE_LLM_CACHE``), never in Redis.
"""

from __future__ import annotations

from typing import Any

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
)
from shared.ledger import codec
from shared.ledger.llm import Settings, Usage
from shared.ledger.llm_client import ChatClient
from shared.ledger.llm_stage import Cache, Question, Reply, answer, apply_replies, questions
from shared.ledger.outputs import write
from shared.ledger.reconstruct import Input, LedgerResult, reconstruct_inputs, root_of, survey
from shared.ledger.values import iso_utc
from shared.queues import Queue
from shared.replay.limits import Gate, Limit, LocalGate, RedisGate
from shared.replay.retry import Attempts

NAME = "ledger"


def plan_ledger(
    paths: list[str], cutoff_us: int, out_dir: str, writer: Writer, llm: Settings | None
) -> tuple[str, JobPlan]:
    """Plan a ledger job: its id (inputs by content, cutoff, LLM settings without the key,
    output directory, writer) and its plan."""
    inputs = survey(paths)
    public = llm.public() if llm is not None else None
    body = {
        "inputs": [[i.path, i.sha256, i.size, i.error] for i in inputs],
        "root": root_of(paths),
        "cutoff_us": cutoff_us,
        "llm": public,
    }
    files = [ref for i in inputs if i.error is None and (ref := file_ref(i.path, i.sha256)) is not None]
    basis = {
        "inputs": sorted([i.path, i.sha256, i.error or ""] for i in inputs),
        "cutoff_us": cutoff_us,
        "llm": public,
        "out": out_dir,
        "writer": writer.value,
    }
    return job_id(NAME, basis), JobPlan(NAME, 1, files, body, out_dir)


def _inputs(plan: JobPlan) -> list[Input]:
    return [Input(path, sha, int(size), error=error) for path, sha, size, error in plan.body["inputs"]]


def _settings(plan: JobPlan) -> Settings | None:
    public = plan.body["llm"]
    return Settings.from_public(public) if public is not None else None


_LOCAL_GATES: dict[str, LocalGate] = {}


def _gate(settings: Settings, redis_client: Any) -> Gate:
    """The endpoint's gate: requests and tokens per minute, for every worker of the broker."""
    name = f"llm:{settings.base_url}"
    limit = Limit(settings.rpm / 60.0, settings.tpm)
    if redis_client is not None:
        return RedisGate(redis_client, name, limit)
    found = _LOCAL_GATES.get(name)
    if found is None or found.limit != limit:
        found = _LOCAL_GATES[name] = LocalGate(name, limit)
    return found


def _records(result: LedgerResult) -> int:
    """Fragments read (the job's progress)."""
    return sum(i.records for i in result.inputs)


class LedgerKind:
    name = NAME
    queue = Queue.LEDGER

    def run_segment(self, plan: JobPlan, segment: int, ctx: SegmentContext) -> Step:
        def read(path: str) -> bytes:
            return b"".join(ctx.blocks(path))

        body = plan.body
        result = reconstruct_inputs(_inputs(plan), body["root"], int(body["cutoff_us"]), read)
        asked = questions(result) if body["llm"] is not None else []
        if asked:
            return Step(codec.encode(result), tuple(SubTask(Queue.LLM, q.as_json()) for q in asked))
        return Step(codec.encode(result, {"llm": None}), messages=_records(result))

    def continue_segment(
        self,
        plan: JobPlan,
        segment: int,
        stage: int,
        previous: bytes,
        answers: list[bytes],
        ctx: SegmentContext,
    ) -> Step:
        settings = _settings(plan)
        assert settings is not None
        result, _ = codec.decode(previous)
        usage = Usage()
        apply_replies(result, questions(result), [Reply.decode(a) for a in answers], settings, usage)
        return Step(codec.encode(result, {"llm": usage.as_json(True)}), messages=_records(result))

    def run_subtask(self, plan: JobPlan, segment: int, stage: int, args: Any, ctx: SubtaskContext) -> bytes:
        settings = _settings(plan)
        assert settings is not None
        client = ChatClient(settings, _gate(settings, ctx.redis))
        try:
            reply = answer(
                Question.from_json(args),
                settings,
                lambda messages: client.ask(messages, Attempts("llm")),
                Cache(settings.cache_dir),
            )
        finally:
            client.close()
        return reply.encode()

    def failed_segment(self, plan: JobPlan, segment: int, reason: str) -> bytes:
        inputs = _inputs(plan)
        for item in inputs:
            item.error = item.error or f"not reconstructed: {reason}"
        cutoff = int(plan.body["cutoff_us"])
        empty = LedgerResult(inputs, [], {}, [], [], [], [], cutoff)
        return codec.encode(empty, {"llm": None})

    def failed_subtask(self, plan: JobPlan, segment: int, stage: int, args: Any, reason: str) -> bytes:
        return Reply(error=f"the LLM task failed: {reason}").encode()

    def write_outputs(self, plan: JobPlan, results: list[bytes], out_dir: str) -> dict[str, Any]:
        (raw,) = results
        result, extra = codec.decode(raw)
        settings = {"cutoff": iso_utc(result.cutoff_us)}
        return write(result, out_dir, settings, extra.get("llm"))


KIND = register(LedgerKind())

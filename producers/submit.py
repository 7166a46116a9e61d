"""Submitting a job: plan the inputs, claim the job, enqueue one task per segment.

Tasks carry references only (job id, segment index); the plan lives in Redis and the input
bytes are streamed by :class:`producers.feeder.Feeder` as workers ask for them.

The producer first takes the job's feeder lease, then the claim (``SET NX``):

- claim new: the plan is stored and every segment enqueued with the id ``book:<job>:<n>``;
- lease held by another producer: that producer serves the job, nothing is submitted;
- claimed and finished: nothing to do (``retape audit`` runs it again: ``rerun_done``);
- claimed, unfinished, nobody serving (the first producer stopped): this producer takes
  the job over and enqueues the segments that have no result yet, under new task ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import redis
from celery import Celery

from shared import keys
from shared.auditors import AuditConfig
from shared.engine import Plan, plan
from shared.jobs import job_id, plan_to_json

NEW = "submitted"
SERVED_ELSEWHERE = "served-elsewhere"
DONE = "done"
RESUMED = "resumed"


@dataclass(frozen=True, slots=True)
class Submitted:
    job: str
    segments: int
    outcome: str  # NEW, SERVED_ELSEWHERE, DONE or RESUMED
    plan: Plan

    @property
    def serving(self) -> bool:
        """True when this producer holds the lease and must serve the job's data."""
        return self.outcome in (NEW, RESUMED)


@cache
def celery_app(url: str) -> Celery:
    from workers.app import create_app

    return create_app(url)


def submit(
    broker_url: str, paths: list[str], cfg: AuditConfig, out_dir: str, rerun_done: bool = False
) -> Submitted:
    """Plan, claim and enqueue.  When the result says ``serving``, the caller holds the
    feeder lease and must run a :class:`~producers.feeder.Feeder` for the job."""
    client = redis.Redis.from_url(broker_url)
    job = plan(paths)
    jid = job_id(job, cfg, out_dir)
    total = len(job.segments)
    if not client.set(keys.job_feeder(jid), "1", nx=True, ex=30):
        return Submitted(jid, total, SERVED_ELSEWHERE, job)
    if not client.set(keys.claim(jid), out_dir, nx=True):
        if client.hget(keys.job(jid), "state") != DONE.encode():
            _resume(broker_url, client, jid, total)
            return Submitted(jid, total, RESUMED, job)
        if not rerun_done:
            client.delete(keys.job_feeder(jid))
            return Submitted(jid, total, DONE, job)
        client.delete(keys.job(jid))
    # A job run again starts its tasks' redelivery counters afresh.
    for index in range(total):
        base = keys.deliveries(f"book:{jid}:{index}")
        client.delete(base, base + ":error", base + ":dead")
    client.set(keys.job_plan(jid), plan_to_json(job, cfg, out_dir))
    client.hset(
        keys.job(jid),
        mapping={"state": "running", "total": total, "done": 0, "messages": 0, "out": out_dir},
    )
    app = celery_app(broker_url)
    if not job.segments:
        app.send_task("retape.aggregate", (jid,), task_id=f"aggregate:{jid}")
    for index in range(total):
        app.send_task("retape.audit_segment", (jid, index), task_id=f"book:{jid}:{index}")
    return Submitted(jid, total, NEW, job)


def _resume(broker_url: str, client: redis.Redis, jid: str, total: int) -> None:
    """Enqueue again the segments of an abandoned job that have no result."""
    attempt = client.incr(keys.job_takeovers(jid))
    app = celery_app(broker_url)
    missing = [i for i in range(total) if not client.exists(keys.job_result(jid, i))]
    for index in missing:
        app.send_task("retape.audit_segment", (jid, index), task_id=f"book:{jid}:{index}:t{attempt}")
    if not missing:
        app.send_task("retape.aggregate", (jid,), task_id=f"aggregate:{jid}:t{attempt}")


def finished(client: redis.Redis, jid: str) -> bool:
    """Every segment has a result (the producer has nothing left to serve)."""
    meta = client.hmget(keys.job(jid), ["state", "done", "total"])
    if meta[0] in (b"done", b"failed") or meta[0] is None:
        return True
    return int(meta[1] or 0) >= int(meta[2] or 0)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def status(client: redis.Redis, jid: str) -> dict[str, Any]:
    meta = {_text(k): _text(v) for k, v in client.hgetall(keys.job(jid)).items()}
    letters = 0
    for raw in client.lrange(keys.DEAD_LETTERS, 0, -1):
        if jid.encode() in raw:
            letters += 1
    return {
        "job": jid,
        "state": meta.get("state", "unknown"),
        "segments_total": int(meta.get("total", 0)),
        "segments_done": int(meta.get("done", 0)),
        "dead_letters": letters,
        "messages": int(meta.get("messages", 0)),
    }

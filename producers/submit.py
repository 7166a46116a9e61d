"""Submitting a job: plan the inputs, claim the job, enqueue one task per family.

Tasks carry references only (job id, family index); the plan lives in Redis.  The claim
(``SET NX``) makes a second submission of the same inputs, e.g. by an overlapping cron
run, a no-op.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import redis
from celery import Celery

from shared import keys
from shared.auditors import AuditConfig
from shared.engine import plan
from shared.jobs import job_id, plan_to_json


@dataclass(frozen=True, slots=True)
class Submitted:
    job: str
    families: int
    new: bool


@cache
def _app(url: str) -> Celery:
    from workers.app import create_app

    return create_app(url)


def submit(broker_url: str, paths: list[str], cfg: AuditConfig, out_dir: str) -> Submitted:
    """Plan, claim and enqueue; returns at once.  Submitting the same job again is a no-op."""
    app = _app(broker_url)
    client = redis.Redis.from_url(broker_url)
    job = plan(paths)
    jid = job_id(job, cfg)
    if not client.set(keys.claim(jid), out_dir, nx=True):
        return Submitted(jid, len(job.families), new=False)
    client.set(keys.job_plan(jid), plan_to_json(job, cfg, out_dir))
    client.hset(
        keys.job(jid), mapping={"state": "running", "total": len(job.families), "done": 0, "out": out_dir}
    )
    if not job.families:
        app.send_task("retape.aggregate", (jid,), task_id=f"aggregate:{jid}")
    for index in range(len(job.families)):
        app.send_task("retape.audit_family", (jid, index), task_id=f"book:{jid}:{index}")
    return Submitted(jid, len(job.families), new=True)


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
    }

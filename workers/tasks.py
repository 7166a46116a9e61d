"""Tasks only wire: read a reference, call the core, write a write-once result.

- ``retape.audit_family(job, index)``: audit one family of the job's plan (the inputs are
  read by path, so workers need the same view of the files as the producer), write its
  result once, count it, and start the aggregator when the count is complete.
- ``retape.aggregate(job)``: merge every family's result into the job's outputs, then
  delete the job's transient keys.  Results are write-once and the outputs are written
  atomically, so a redelivered or duplicated task changes nothing.
"""

from __future__ import annotations

import logging

import orjson
import redis
from celery import Task

from shared import keys
from shared.engine import FamilyResult, audit_family, combine
from shared.jobs import plan_from_json
from shared.queues import Queue
from shared.report import write_outputs
from workers.app import app
from workers.poison import DeliveryGuard

log = logging.getLogger("retape.workers")
MAX_TRIES = 3
RETRY_BASE_S = 2


def _client() -> redis.Redis:
    return redis.Redis.from_url(str(app.conf.broker_url))


def _guarded(task: Task, client: redis.Redis, args: list[object], queue: str) -> DeliveryGuard | None:
    guard = DeliveryGuard(client, max_tries=MAX_TRIES)
    if not guard.admit(str(task.request.id), str(task.name), args, queue):
        log.error("task %s dead-lettered after %d tries", task.request.id, MAX_TRIES)
        return None
    return guard


@app.task(name="retape.audit_family", bind=True)
def audit_family_task(self: Task, job_id: str, index: int) -> None:
    client = _client()
    guard = _guarded(self, client, [job_id, index], Queue.BOOK.value)
    if guard is None:
        return
    try:
        raw = client.get(keys.job_plan(job_id))
        if raw is None:
            log.warning("job %s has no plan (deleted or unknown): nothing to do", job_id)
            guard.done(str(self.request.id))
            return
        job, cfg, _ = plan_from_json(raw)
        result_key = keys.job_result(job_id, index)
        if not client.exists(result_key):
            result = audit_family(job, index, cfg)
            client.set(result_key, orjson.dumps(result.as_json()), nx=True)
        client.sadd(keys.job_done(job_id), index)
        done = client.scard(keys.job_done(job_id))
        client.hset(keys.job(job_id), "done", done)
        if done >= len(job.families):
            aggregate_task.apply_async((job_id,), task_id=f"aggregate:{job_id}")
    except Exception as exc:
        guard.record_error(str(self.request.id), f"{type(exc).__name__}: {exc}")
        raise self.retry(
            exc=exc, countdown=RETRY_BASE_S * 2**self.request.retries, max_retries=MAX_TRIES
        ) from exc
    guard.done(str(self.request.id))


@app.task(name="retape.aggregate", bind=True)
def aggregate_task(self: Task, job_id: str) -> None:
    client = _client()
    guard = _guarded(self, client, [job_id], Queue.AGGREGATE.value)
    if guard is None:
        return
    meta = keys.job(job_id)
    if client.hget(meta, "state") == b"done":
        guard.done(str(self.request.id))
        return
    raw = client.get(keys.job_plan(job_id))
    if raw is None:
        guard.done(str(self.request.id))
        return
    job, _, out_dir = plan_from_json(raw)
    results = []
    for index in range(len(job.families)):
        data = client.get(keys.job_result(job_id, index))
        if data is None:
            log.warning("job %s: family %d has no result yet; the aggregator waits for it", job_id, index)
            guard.done(str(self.request.id))
            return
        results.append(FamilyResult.from_json(orjson.loads(data)))
    write_outputs(combine(job, results), out_dir)
    client.hset(meta, mapping={"state": "done"})
    transient = [keys.job_plan(job_id), keys.job_done(job_id)]
    transient += [keys.job_result(job_id, i) for i in range(len(job.families))]
    client.delete(*transient)
    guard.done(str(self.request.id))

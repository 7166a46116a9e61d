"""Tasks only wire: read a reference, call the core, write a write-once result.

- ``retape.audit_segment(job, index)``: audit one segment of the job's plan, reading its
  inputs from the streams the producer fills (:mod:`workers.data`), write its result once,
  count it, and start the aggregator when the count is complete.
- ``retape.aggregate(job)``: merge every segment's result into the job's outputs, then
  delete the job's transient keys.

Results are write-once and outputs are written atomically, so a redelivered or duplicated
task changes nothing.  A segment whose task keeps failing (or killing its worker) ends in
the dead-letter list after ``MAX_TRIES`` starts; its inputs are then reported as not
audited, with the reason, and the rest of the job completes.
"""

from __future__ import annotations

import logging

import orjson
import redis
from celery import Task

from shared import keys
from shared.engine import Plan, SegmentResult, audit_segment, combine
from shared.errors import Superseded
from shared.formats.lines import reading_from
from shared.jobs import plan_from_json
from shared.queues import Queue
from shared.report import write_outputs
from workers.app import app
from workers.data import RedisBlocks
from workers.poison import DeliveryGuard

log = logging.getLogger("retape.workers")
MAX_TRIES = 3
RETRY_BASE_S = 1
FINISHED_TTL_S = 7 * 24 * 3600  # how long a finished job's state and claim are kept


def _client() -> redis.Redis:
    return redis.Redis.from_url(str(app.conf.broker_url))


def _record(client: redis.Redis, job_id: str, job: Plan, index: int, result: SegmentResult | None) -> None:
    """Write the segment's result once, count it, start the aggregator on the last one."""
    if result is not None and client.set(
        keys.job_result(job_id, index), orjson.dumps(result.as_json()), nx=True
    ):
        client.hincrby(keys.job(job_id), "messages", result.messages)
    client.sadd(keys.job_done(job_id), index)
    done = client.scard(keys.job_done(job_id))
    client.hset(keys.job(job_id), "done", done)
    if done >= len(job.segments):
        aggregate_task.apply_async((job_id,), task_id=f"aggregate:{job_id}")


@app.task(name="retape.audit_segment", bind=True)
def audit_segment_task(self: Task, job_id: str, index: int) -> None:
    try:
        _audit_segment(self, job_id, index)
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        # The broker went away before the try was even counted: deliver it again later.
        raise self.retry(exc=exc, countdown=RETRY_BASE_S * 2**self.request.retries, max_retries=10) from exc


def _audit_segment(self: Task, job_id: str, index: int) -> None:
    client = _client()
    task_id = str(self.request.id)
    raw = client.get(keys.job_plan(job_id))
    if raw is None:
        log.warning("job %s has no plan (finished, or the broker lost it): nothing to do", job_id)
        return
    job, cfg, _ = plan_from_json(raw)
    guard = DeliveryGuard(client, max_tries=MAX_TRIES)
    if not guard.admit(task_id, str(self.name), [job_id, index], Queue.BOOK.value):
        reason = guard.reason(task_id)
        log.error("job %s segment %d dead-lettered after %d tries: %s", job_id, index, MAX_TRIES, reason)
        failed = SegmentResult.not_audited(job, index, f"{reason} ({MAX_TRIES} tries)")
        _record(client, job_id, job, index, failed)
        return
    try:
        result = None
        if not client.exists(keys.job_result(job_id, index)):
            gen = int(client.incr(keys.job_gen(job_id, index)))
            files = {i.path: (n, i.sha256) for n, i in enumerate(job.inputs)}
            with reading_from(RedisBlocks(client, job_id, index, gen, files)):
                result = audit_segment(job, index, cfg)
        _record(client, job_id, job, index, result)
    except Superseded:
        log.info("job %s segment %d: a newer start took over", job_id, index)
    except (redis.ConnectionError, redis.TimeoutError):
        raise
    except Exception as exc:
        guard.record_error(task_id, f"{type(exc).__name__}: {exc}")
        raise self.retry(
            exc=exc, countdown=RETRY_BASE_S * 2**self.request.retries, max_retries=MAX_TRIES + 1
        ) from exc
    guard.done(task_id)


@app.task(name="retape.aggregate", bind=True)
def aggregate_task(self: Task, job_id: str) -> None:
    client = _client()
    task_id = str(self.request.id)
    guard = DeliveryGuard(client, max_tries=MAX_TRIES)
    if not guard.admit(task_id, str(self.name), [job_id], Queue.AGGREGATE.value):
        client.hset(keys.job(job_id), "state", "failed")
        return
    meta = keys.job(job_id)
    raw = client.get(keys.job_plan(job_id))
    if client.hget(meta, "state") == b"done" or raw is None:
        guard.done(task_id)
        return
    job, _, out_dir = plan_from_json(raw)
    results = []
    for index in range(len(job.segments)):
        data = client.get(keys.job_result(job_id, index))
        if data is None:
            log.warning("job %s: segment %d has no result yet; the aggregator waits for it", job_id, index)
            guard.done(task_id)
            return
        results.append(SegmentResult.from_json(orjson.loads(data)))
    write_outputs(combine(job, results), out_dir)
    client.hset(meta, "state", "done")
    client.expire(meta, FINISHED_TTL_S)
    client.expire(keys.claim(job_id), FINISHED_TTL_S)
    transient = [keys.job_plan(job_id), keys.job_done(job_id), keys.job_wants(job_id)]
    transient += [keys.job_result(job_id, i) for i in range(len(job.segments))]
    transient += [keys.job_gen(job_id, i) for i in range(len(job.segments))]
    transient += list(client.scan_iter(match=keys.job_data_pattern(job_id)))
    client.delete(*transient)
    guard.done(task_id)

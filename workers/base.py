"""The one guarded base task: delivery bookkeeping and retry decisions for every task.

Every start of a task is counted (:class:`shared.jobstore.DeliveryGuard`).  What the task
raises decides what happens next, by type (:mod:`shared.errors`):

- nothing: the count is cleared;
- :class:`~shared.errors.PermanentError`: dead-lettered at once, with its reason;
- :class:`~shared.errors.TransientError`: tried again after its ``retry_after`` (exactly)
  or after an exponential backoff with full jitter; the start is given back, so only the
  larger transient budget limits it;
- a lost broker: tried again with backoff;
- anything else: tried again with backoff until the task has had ``max_tries`` starts;
- a task that kills its worker is delivered again by the broker and counted the same way.

A dead-lettered task calls :meth:`GuardedTask.bury`, so its job goes on without it (a
segment is reported as not audited, a sub-task's answer says it failed).
"""

from __future__ import annotations

import logging
import os
import random
from typing import Any

import redis
from celery import Task

from shared.errors import PermanentError, Superseded, TransientError
from shared.jobstore import DeliveryGuard, JobStore
from shared.messaging import MAX_COUNTDOWN_S, CelerySender

log = logging.getLogger("retape.workers")

MAX_TRIES = 3
BACKOFF_BASE_S = 1.0

_CLIENTS: dict[tuple[int, str], redis.Redis] = {}


def backoff_s(tries: int, base: float = BACKOFF_BASE_S, cap: float = MAX_COUNTDOWN_S) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**tries)]."""
    return random.uniform(0, min(cap, base * 2 ** min(tries, 30)))


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class GuardedTask(Task):
    """Base of every retape task; the first argument of every task is its job id."""

    max_tries = MAX_TRIES

    def client(self) -> redis.Redis:
        """One connection pool per worker process (prefork children do not share sockets)."""
        url = str(self.app.conf.broker_url)
        key = (os.getpid(), url)
        found = _CLIENTS.get(key)
        if found is None:
            found = _CLIENTS[key] = redis.Redis.from_url(url, health_check_interval=30)
        return found

    def store(self, job: str) -> JobStore:
        return JobStore(self.client(), job)

    def sender(self) -> CelerySender:
        return CelerySender(self.app)

    def queue_name(self) -> str:
        info = self.request.delivery_info or {}
        return str(info.get("routing_key") or self.queue or "")

    def bury(self, args: tuple[Any, ...], reason: str) -> None:
        """The task was dead-lettered: let its job go on without it."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        task_id = str(self.request.id)
        try:
            guard = DeliveryGuard(self.client(), max_tries=self.max_tries)
            admitted = guard.admit(task_id, self.name, list(args), self.queue_name())
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            # The broker went away before the try was even counted: deliver it again later.
            raise self.retry(exc=exc, countdown=backoff_s(self.request.retries), max_retries=None) from exc
        if not admitted:
            reason = guard.reason(task_id)
            log.error("%s %s dead-lettered after %d tries: %s", self.name, args, self.max_tries, reason)
            self.bury(args, f"{reason} ({self.max_tries} tries)")
            return None
        try:
            out = self.run(*args, **kwargs)
        except Superseded as exc:
            log.info("%s %s: %s", self.name, args, exc)
            guard.done(task_id)
            return None
        except PermanentError as exc:
            reason = _reason(exc)
            log.error("%s %s failed for good: %s", self.name, args, reason)
            if guard.bury(task_id, self.name, list(args), self.queue_name(), reason):
                self.bury(args, reason)
            return None
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise self.retry(exc=exc, countdown=backoff_s(self.request.retries), max_retries=None) from exc
        except TransientError as exc:
            failures = guard.give_back(task_id)
            guard.record_error(task_id, _reason(exc))
            if failures > guard.max_transient:
                reason = f"{_reason(exc)} ({failures} transient failures)"
                if guard.bury(task_id, self.name, list(args), self.queue_name(), reason):
                    self.bury(args, reason)
                return None
            wait = exc.retry_after if exc.retry_after is not None else backoff_s(failures)
            log.warning("%s %s: %s; trying again in %.1f s", self.name, args, _reason(exc), wait)
            raise self.retry(exc=exc, countdown=min(wait, MAX_COUNTDOWN_S), max_retries=None) from exc
        except Exception as exc:
            guard.record_error(task_id, _reason(exc))
            log.exception("%s %s failed", self.name, args)
            raise self.retry(exc=exc, countdown=backoff_s(self.request.retries), max_retries=None) from exc
        guard.done(task_id)
        return out

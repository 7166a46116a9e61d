"""The Celery settings both sides share, and the sender producers use.

- JSON only: a pickle broker is remote code execution for anyone who can write to Redis.
- ``acks_late`` + ``reject_on_worker_lost``: a task whose worker dies is delivered again;
  tasks are idempotent (write-once results), and the delivery guard sends a task that
  keeps killing its worker to the dead-letter list instead of looping.
- prefetch 1: tasks are long; a worker must not sit on work another could do.
- the broker's visibility timeout is above the hard time limit plus the longest retry
  countdown, so a task still running is never handed to a second worker.
- no queue is created implicitly: every queue is declared, every task sent to a named one.

A producer sends tasks by name (:class:`CelerySender`) and never imports the workers'
modules.
"""

from __future__ import annotations

import os
from functools import cache
from typing import Any

from celery import Celery
from kombu import Exchange
from kombu import Queue as KombuQueue

from shared.jobs import TaskName
from shared.queues import ALL_QUEUES, Queue

SOFT_TIME_LIMIT_S = 1800
HARD_TIME_LIMIT_S = 1900
MAX_COUNTDOWN_S = 300
VISIBILITY_TIMEOUT_S = HARD_TIME_LIMIT_S + MAX_COUNTDOWN_S + 300
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

# Where each task goes unless the sender names a queue (segments go to their kind's queue).
TASK_ROUTES = {
    TaskName.SEGMENT.value: {"queue": Queue.BOOK.value, "routing_key": Queue.BOOK.value},
    TaskName.SUBTASK.value: {"queue": Queue.REPLAY.value, "routing_key": Queue.REPLAY.value},
    TaskName.AGGREGATE.value: {"queue": Queue.AGGREGATE.value, "routing_key": Queue.AGGREGATE.value},
}


def broker_url() -> str:
    return os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL


def settings(url: str) -> dict[str, Any]:
    exchange = Exchange("retape", type="direct")
    return {
        "broker_url": url,
        "result_backend": None,  # results are written by the tasks themselves, write-once
        "task_ignore_result": True,
        "task_serializer": "json",
        "result_serializer": "json",
        "event_serializer": "json",
        "accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_soft_time_limit": SOFT_TIME_LIMIT_S,
        "task_time_limit": HARD_TIME_LIMIT_S,
        "broker_transport_options": {"visibility_timeout": VISIBILITY_TIMEOUT_S},
        "broker_connection_retry_on_startup": True,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "worker_hijack_root_logger": False,
        "task_create_missing_queues": False,
        "task_queues": [KombuQueue(q, exchange, routing_key=q) for q in ALL_QUEUES],
        "task_default_queue": Queue.BOOK.value,
        "task_default_exchange": "retape",
        "task_default_routing_key": Queue.BOOK.value,
        "task_routes": TASK_ROUTES,
        "worker_send_task_events": True,  # Flower
        "task_send_sent_event": True,
    }


def celery_app(url: str, include: list[str] | None = None) -> Celery:
    app = Celery("retape", include=include or [])
    app.conf.update(settings(url))
    return app


class CelerySender:
    """Sends tasks by name to a named queue (see :class:`shared.jobflow.Sender`)."""

    def __init__(self, app: Celery) -> None:
        self.app = app

    def send(self, name: TaskName, args: list[Any], task_id: str, queue: str) -> None:
        self.app.send_task(name.value, args, task_id=task_id, queue=queue, routing_key=queue)


@cache
def sender_for(url: str) -> CelerySender:
    """A sender with no tasks of its own (what producers use)."""
    return CelerySender(celery_app(url))

"""The worker side's foundations: Celery settings and the dead-letter guard (real Redis)."""

from __future__ import annotations

import pytest

from shared.jobstore import DeliveryGuard
from shared.messaging import HARD_TIME_LIMIT_S, MAX_COUNTDOWN_S
from shared.queues import ALL_QUEUES, parse_queues
from workers.app import create_app


def test_celery_settings_for_long_idempotent_tasks() -> None:
    conf = create_app("redis://127.0.0.1:6379/15").conf
    assert conf.task_serializer == "json" and list(conf.accept_content) == ["json"]
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_soft_time_limit < conf.task_time_limit == HARD_TIME_LIMIT_S
    assert conf.broker_transport_options["visibility_timeout"] > HARD_TIME_LIMIT_S + MAX_COUNTDOWN_S
    assert conf.worker_cancel_long_running_tasks_on_connection_loss
    assert conf.task_create_missing_queues is False
    assert sorted(q.name for q in conf.task_queues) == sorted(ALL_QUEUES)


def test_queue_names_parse() -> None:
    assert parse_queues(None) == list(ALL_QUEUES)
    assert parse_queues("book, replay") == ["book", "replay"]
    with pytest.raises(ValueError, match="unknown queue"):
        parse_queues("book,nope")


def test_a_task_past_its_tries_is_dead_lettered_once_with_its_reason(redis_client, namespace: str) -> None:  # type: ignore[no-untyped-def]
    guard = DeliveryGuard(redis_client, max_tries=3, dead_letters=f"{namespace}:dead")
    task_id = f"{namespace}:book:job1:7"
    assert [guard.admit(task_id, "audit_segment", ["job1", 7], "book") for _ in range(3)] == [True] * 3
    guard.record_error(task_id, "SIGKILL: worker lost")
    assert guard.admit(task_id, "audit_segment", ["job1", 7], "book") is False
    assert guard.admit(task_id, "audit_segment", ["job1", 7], "book") is False  # redelivered again
    (letter,) = guard.letters()
    assert letter == {
        "task_id": task_id,
        "task": "audit_segment",
        "args": ["job1", 7],
        "queue": "book",
        "reason": "SIGKILL: worker lost",
        "deliveries": 3,
    }
    guard.done(task_id)
    redis_client.delete(f"{namespace}:dead", f"retape:deliveries:{task_id}:dead")


def test_a_task_that_succeeds_clears_its_counter(redis_client, namespace: str) -> None:  # type: ignore[no-untyped-def]
    guard = DeliveryGuard(redis_client, max_tries=2, dead_letters=f"{namespace}:dead")
    task_id = f"{namespace}:ok"
    assert guard.admit(task_id, "t", [], "book")
    guard.done(task_id)
    assert guard.admit(task_id, "t", [], "book") and guard.admit(task_id, "t", [], "book")
    assert guard.letters() == []
    guard.done(task_id)

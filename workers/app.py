"""The workers' Celery application: the shared settings (:mod:`shared.messaging`) plus the
tasks (:mod:`workers.tasks`).  ``celery -A workers.app worker`` and ``retape worker`` use it."""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import worker_init

from shared import lifecycle
from shared.messaging import broker_url, celery_app


def create_app(url: str | None = None) -> Celery:
    return celery_app(url or broker_url(), include=["workers.tasks"])


@worker_init.connect
def _before_the_pool(**_: Any) -> None:
    from shared.html_report import compile_page

    compile_page()


lifecycle.install()
app = create_app()

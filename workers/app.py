"""The workers' Celery application: the shared settings (:mod:`shared.messaging`) plus the
tasks (:mod:`workers.tasks`).  ``celery -A workers.app worker`` and ``retape worker`` use it."""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.signals import worker_init

from shared import lifecycle
from shared.messaging import broker_url, celery_app

log = logging.getLogger(__name__)


def create_app(url: str | None = None) -> Celery:
    return celery_app(url or broker_url(), include=["workers.tasks"])


@worker_init.connect
def _before_the_pool(**_: Any) -> None:
    from shared.html_report import compile_page

    try:
        compile_page()
    except Exception as exc:  # the aggregator compiles it when it writes (and says why it cannot)
        log.warning("the report page was not compiled ahead: %s", exc)


lifecycle.install()
app = create_app()

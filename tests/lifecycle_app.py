"""A Celery app for tests of the local processes (``celery -A lifecycle_app worker`` with
``tests`` on PYTHONPATH): the workers' app and settings, with die-with-parent installed,
and no task modules (the process lifecycle does not need them, and its tests need not
wait for them)."""

from __future__ import annotations

from shared import lifecycle
from workers.app import create_app

app = create_app()
app.conf.include = []
lifecycle.install()  # workers/app.py calls it too; connecting twice is one connection

__all__ = ["app"]

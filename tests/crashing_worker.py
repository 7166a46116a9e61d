"""A Celery app for tests: the real tasks, except that auditing a segment holding a file
whose name contains ``poison`` kills the worker process (a poison segment).

Run as ``celery -A crashing_worker worker`` with ``tests`` on PYTHONPATH.
"""

from __future__ import annotations

import os
from typing import Any

import shared.audit_job as audit_job
from workers.app import app

__all__ = ["app"]

_real_audit_segment = audit_job.audit_segment


def _crashing_audit_segment(job: Any, index: int, cfg: Any, repairs: Any = None) -> Any:
    files = [f for group in job.segments[index] for f in group]
    if any("poison" in os.path.basename(f) for f in files):
        os._exit(13)  # as a segfault would: no exception, no clean-up
    return _real_audit_segment(job, index, cfg, repairs)


audit_job.audit_segment = _crashing_audit_segment  # type: ignore[assignment]

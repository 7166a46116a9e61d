"""An output directory owned by one run at a time, written only by rename.

- :meth:`OutputDir.lock`: an exclusive ``flock`` on ``DIR/.retape.lock``, held while a run
  writes.  A second run is told which process holds it (exit 2 for the command line; an
  aggregator waits a while, then tries again later).  The kernel drops the lock when its
  holder dies, however it dies; the file stays, empty.
- :func:`atomic_file` / :func:`atomic_write`: every output is written to a temporary file
  of its own in the same directory and renamed into place, so a reader never sees half a
  file and two writers never interleave.  Temporary files left by a killed run are
  removed by the next run that takes the lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import time
from collections.abc import Iterator
from typing import IO, Any

from shared.errors import OutputBusy, UsageError

LOCK_NAME = ".retape.lock"
TMP_SUFFIX = ".retape-tmp"
_POLL_S = 0.1


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


class OutputDir:
    def __init__(self, path: str) -> None:
        self.path = path
        self.lock_path = os.path.join(path, LOCK_NAME)

    def _open_lock(self) -> int:
        try:
            os.makedirs(self.path, exist_ok=True)
            return os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise UsageError(f"--out {self.path}: cannot write there ({_why(exc)})") from None

    def check_writable(self) -> None:
        """Raise a one-line :class:`UsageError` when the directory cannot be written."""
        os.close(self._open_lock())
        if not os.access(self.path, os.W_OK | os.X_OK):
            raise UsageError(f"--out {self.path}: cannot write there (permission denied)")

    @contextlib.contextmanager
    def lock(self, wait_s: float = 0.0) -> Iterator[OutputDir]:
        """Own the directory; :class:`OutputBusy` when another run still owns it after
        ``wait_s`` seconds."""
        fd = self._open_lock()
        try:
            deadline = time.monotonic() + wait_s
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                        raise UsageError(f"--out {self.path}: cannot lock it ({_why(exc)})") from None
                    if time.monotonic() >= deadline:
                        raise OutputBusy(
                            f"--out {self.path} is being written by another retape run "
                            f"({self._holder(fd)}); wait for it or choose another --out"
                        ) from None
                    time.sleep(_POLL_S)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            if not os.access(self.path, os.W_OK | os.X_OK):
                raise UsageError(f"--out {self.path}: cannot write there (permission denied)")
            remove_stale_temporaries(self.path)
            try:
                yield self
            finally:
                os.ftruncate(fd, 0)  # an idle lock file is empty: outputs stay the same bytes
        finally:
            os.close(fd)  # releases the lock

    @staticmethod
    def _holder(fd: int) -> str:
        text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
        return f"process {text}" if text.isdigit() else "a process that is still starting"


def remove_stale_temporaries(top: str) -> None:
    """Temporary files a killed run left (only ours: they end in ``.retape-tmp``)."""
    for root, _, files in os.walk(top):
        for name in files:
            if name.endswith(TMP_SUFFIX):
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(root, name))


@contextlib.contextmanager
def atomic_file(path: str, mode: str = "wb", **kwargs: Any) -> Iterator[IO[Any]]:
    """Write ``path`` through a temporary file of its own, renamed into place on success."""
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name}.{os.getpid()}.{secrets.token_hex(4)}{TMP_SUFFIX}")
    try:
        with open(tmp, mode, **kwargs) as fh:
            yield fh
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def atomic_write(path: str, data: bytes) -> None:
    with atomic_file(path) as fh:
        fh.write(data)

"""Run by tests/test_local_processes.py: start a run directory, an embedded broker and local
workers as ``retape audit`` does, print the pids as one JSON line, then sleep until killed.

Usage: python tests/local_driver.py ROOT COUNT
"""

from __future__ import annotations

import json
import os
import sys
import time

from producers.local import EmbeddedBroker, LocalWorkers, RunDir


def children(pid: int) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as fh:
                    ppid = int(fh.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                found.append(int(name))
    return sorted(found)


def main() -> None:
    root, count = sys.argv[1], int(sys.argv[2])
    with (
        RunDir(root) as run,
        EmbeddedBroker(run.broker_dir) as broker,
        LocalWorkers(broker.url, count, run.workers_log, embedded=True, app="lifecycle_app") as workers,
    ):
        workers.wait_ready(60)
        assert workers.proc is not None and broker.proc is not None
        pool = children(workers.proc.pid)
        deadline = time.monotonic() + 30
        while len(pool) < count and time.monotonic() < deadline:
            time.sleep(0.05)
            pool = children(workers.proc.pid)
        info = {"server": broker.proc.pid, "master": workers.proc.pid, "pool": pool, "run": run.path}
        print(json.dumps(info), flush=True)
        while True:
            time.sleep(1)


if __name__ == "__main__":
    main()

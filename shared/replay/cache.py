"""The minutes a worker fetched lately, kept in memory: gaps close together ask for the same
minutes (a minute of a busy stream holds many gaps of a bad capture), and each is fetched once
per worker process instead of once per gap."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable

from shared.replay.fill import Record

# Bytes of records kept per process.
CACHE_BYTES = 256 << 20


class MinuteCache:
    def __init__(self, budget: int = CACHE_BYTES) -> None:
        self.budget = budget
        self.size = 0
        self._items: OrderedDict[Hashable, tuple[list[Record], int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, fetch: Callable[[], list[Record]]) -> list[Record]:
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
                return hit[0]
        records = fetch()  # outside the lock: a slow source must not block the other threads
        size = sum(len(raw) + 32 for _, raw in records if raw is not None) + 64
        with self._lock:
            if key not in self._items and size <= self.budget:
                self._items[key] = (records, size)
                self.size += size
                while self.size > self.budget:
                    _, (_, dropped) = self._items.popitem(last=False)
                    self.size -= dropped
        return records


MINUTES = MinuteCache()

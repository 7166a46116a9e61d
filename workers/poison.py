"""Redelivery counting and the dead-letter list.

With ``acks_late`` and ``reject_on_worker_lost`` a task whose worker dies is delivered
again.  A task that *always* kills its worker (a poison segment) would loop forever, so
every start of a task is counted in Redis; past ``max_tries`` starts the task is not run
again but written once to the dead-letter list with its reason, and acknowledged.
"""

from __future__ import annotations

from typing import Any

import orjson
import redis

from shared import keys

COUNTER_TTL_S = 7 * 24 * 3600
WORKER_DIED = "the worker died while running it"

# Increment the counter; on the first start past the limit, append the dead letter (once).
_ADMIT = """
local n = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
if n > tonumber(ARGV[1]) then
  if redis.call('SET', KEYS[3], '1', 'NX', 'EX', tonumber(ARGV[2])) then
    local reason = redis.call('GET', KEYS[4])
    if not reason then reason = ARGV[4] end
    local letter = cjson.decode(ARGV[3])
    letter['reason'] = reason
    letter['deliveries'] = n - 1
    redis.call('RPUSH', KEYS[2], cjson.encode(letter))
  end
  return 0
end
return n
"""


class DeliveryGuard:
    def __init__(
        self, client: redis.Redis, max_tries: int = 3, dead_letters: str = keys.DEAD_LETTERS
    ) -> None:
        self.client = client
        self.max_tries = max_tries
        self.dead_letters = dead_letters

    def admit(self, task_id: str, name: str, args: list[Any], queue: str) -> bool:
        """Count this start; False when the task has had its tries and was dead-lettered."""
        letter = orjson.dumps({"task_id": task_id, "task": name, "args": args, "queue": queue}).decode()
        base = keys.deliveries(task_id)
        # EVAL, not EVALSHA: one round trip whatever the script cache holds (the embedded
        # broker drops a connection that gets a NOSCRIPT error).
        n: Any = self.client.eval(
            _ADMIT,
            4,
            base,
            self.dead_letters,
            base + ":dead",
            base + ":error",
            self.max_tries,
            COUNTER_TTL_S,
            letter,
            WORKER_DIED,
        )
        return int(n) > 0

    def record_error(self, task_id: str, error: str) -> None:
        """Remember why the last try failed (it becomes the dead letter's reason)."""
        self.client.set(keys.deliveries(task_id) + ":error", error[:2000], ex=COUNTER_TTL_S)

    def reason(self, task_id: str) -> str:
        """Why the task's last try failed, as the dead letter says."""
        raw: Any = self.client.get(keys.deliveries(task_id) + ":error")
        return raw.decode("utf-8", "replace") if raw else WORKER_DIED

    def done(self, task_id: str) -> None:
        base = keys.deliveries(task_id)
        self.client.delete(base, base + ":error")

    def letters(self) -> list[dict[str, Any]]:
        return [orjson.loads(raw) for raw in self.client.lrange(self.dead_letters, 0, -1)]

"""The job store: every Redis protocol of a job in one place.

- the job's hash (state, counts, its *epoch* and *attempt*) and its plan;
- the submitter's *lease* (one producer serves a job at a time; a producer finding the
  lease free takes over a job left unfinished);
- write-once results per segment and stage, the final-stage marker, sub-task answers;
- *barriers*: a set of members the last arriving one trips, exactly once (and again for
  the same member when its task is redelivered, so a tripper that died before acting
  acts on redelivery);
- pokes for the submitter (``wake``), and the workers' requests for data;
- delivery counters and the dead-letter list (:class:`DeliveryGuard`).

Every start of a job (``retape audit`` run again, a job whose earlier run failed) takes a new
*epoch*; tasks carry it, and every write a task makes is a Lua script that first checks that
the job is running at that epoch.  So a task of an earlier start, or one still running after
the job finished or was cancelled, writes nothing: no stale result reaches a new start, and
no key is left behind without an expiry.  Every transient key expires after
:data:`JOB_TTL_S` even if nobody ever comes back for the job.

Both sides use it: producers submit, resume and wait; workers record.  Keys are named in
:mod:`shared.keys`, states and fields in :mod:`shared.jobs`.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

import orjson
import redis

from shared import keys
from shared.jobs import Field, JobPlan, JobState, Writer

LEASE_S = 15
FINISHED_TTL_S = 24 * 3600  # how long a finished job's hash is kept for `retape status`
JOB_TTL_S = 7 * 24 * 3600  # how long a job's keys live without anyone coming back for it
COUNTER_TTL_S = 7 * 24 * 3600
WORKER_DIED = "the worker died while running it"

# KEYS[1] is the job's hash, ARGV[1] the epoch of the caller: is the job running at it?
_LIVE = """
local function live()
  local v = redis.call('HMGET', KEYS[1], 'state', 'epoch')
  return v[1] == 'running' and v[2] == ARGV[1]
end
"""

# SET NX with an expiry, if live: 1 written, 0 already there, -1 not live.
_PUT_ONCE = (
    _LIVE
    + """
if not live() then return -1 end
if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'EX', tonumber(ARGV[3])) then return 1 end
return 0
"""
)

# The same for a value already written to KEYS[3] (a large one: not passed through the
# script): moved to KEYS[2] when live and not there yet, else dropped.
_MOVE_ONCE = (
    _LIVE
    + """
if not live() then redis.call('DEL', KEYS[3]) return -1 end
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('DEL', KEYS[3]) return 0 end
redis.call('RENAME', KEYS[3], KEYS[2])
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[2]))
return 1
"""
)
# From this size a value is written first, then moved in place: a script that gets it as an
# argument copies it twice, on the one thread Redis has.
MOVE_FROM_BYTES = 64 << 10
UPLOAD_TTL_S = 600  # a value written by a worker that died before moving it goes soon

# INCR with an expiry, if live (-1 when not).
_INCR = (
    _LIVE
    + """
if not live() then return -1 end
local n = redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[2]))
return n
"""
)

# HINCRBY a field of the job's hash, if live.
_COUNT = (
    _LIVE
    + """
if not live() then return -1 end
return redis.call('HINCRBY', KEYS[1], ARGV[2], tonumber(ARGV[3]))
"""
)

# RPUSH values to lists (KEYS[2..]) with an expiry, if live: ARGV[2] ttl, ARGV[3..] one value per list.
_PUSH = (
    _LIVE
    + """
if not live() then return -1 end
for i = 2, #KEYS do
  redis.call('RPUSH', KEYS[i], ARGV[i + 1])
  redis.call('EXPIRE', KEYS[i], tonumber(ARGV[2]))
end
return 1
"""
)

# Arrive at a barrier, if live: add the member; when every member is in, the first to see it
# trips the barrier (and the same member again on a redelivery).  Optionally mirror the count
# into a field of the job's hash.  1 tripped, 0 not, -1 not live.
_ARRIVE = (
    _LIVE
    + """
if not live() then return -1 end
local ttl = tonumber(ARGV[5])
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('EXPIRE', KEYS[2], ttl)
local n = redis.call('SCARD', KEYS[2])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], ARGV[4], n) end
if n < tonumber(ARGV[3]) then return 0 end
local who = redis.call('GET', KEYS[3])
if not who then
  redis.call('SET', KEYS[3], ARGV[2], 'EX', ttl)
  return 1
end
if who == ARGV[2] then return 1 end
return 0
"""
)

# End the job (cancelled), only for the submitter holding the lease while it runs.
_CANCEL = """
if redis.call('HGET', KEYS[1], 'state') ~= 'running' then return 0 end
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', 'cancelled')
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
"""

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class NotRunning(Exception):
    """The job is not running at the caller's epoch (finished, cancelled, started again)."""


class JobStore:
    """One job's keys, seen at one epoch (the start of the job a task belongs to; None for
    the submitter before it has started the job).  Every method is one or a few round
    trips; none blocks for long."""

    def __init__(self, client: redis.Redis, job_id: str, epoch: int | None = None) -> None:
        self.client = client
        self.job_id = job_id
        self.key = keys.job(job_id)
        self.epoch = epoch

    def at(self, epoch: int) -> JobStore:
        return JobStore(self.client, self.job_id, epoch)

    def _live_call(self, script: str, more_keys: list[str], *args: Any) -> int:
        if self.epoch is None:
            raise NotRunning(f"job {self.job_id}: no epoch to write at")
        got: Any = self.client.eval(script, 1 + len(more_keys), self.key, *more_keys, self.epoch, *args)
        return int(got)

    # -- the job's hash -------------------------------------------------------------

    def meta(self) -> dict[str, str]:
        raw: Any = self.client.hgetall(self.key)
        return {_text(k): _text(v) for k, v in raw.items()}

    def get(self, name: Field) -> str | None:
        raw: Any = self.client.hget(self.key, name.value)
        return None if raw is None else _text(raw)

    def state(self) -> JobState | None:
        raw = self.get(Field.STATE)
        return None if raw is None else JobState(raw)

    def count(self, name: Field) -> int:
        return int(self.get(name) or 0)

    def running(self) -> bool:
        """The job is running at this store's epoch."""
        raw: Any = self.client.hmget(self.key, [Field.STATE.value, Field.EPOCH.value])
        return raw[0] == JobState.RUNNING.value.encode() and raw[1] == str(self.epoch).encode()

    def add(self, name: Field, amount: int = 1) -> None:
        """Count, while the job runs at this epoch."""
        self._live_call(_COUNT, [], name.value, amount)

    def plan(self) -> JobPlan | None:
        raw: Any = self.client.get(keys.job_plan(self.job_id))
        return None if raw is None else JobPlan.from_json(raw)

    # -- the submitter's lease -------------------------------------------------------

    def take_lease(self, owner: str, ttl_s: int = LEASE_S) -> bool:
        """Take the lease, or keep it if it is already ours."""
        lease = keys.job_lease(self.job_id)
        if self.client.set(lease, owner, nx=True, ex=ttl_s):
            return True
        return self.renew_lease(owner, ttl_s)

    def renew_lease(self, owner: str, ttl_s: int = LEASE_S) -> bool:
        return bool(self.client.eval(_RENEW, 1, keys.job_lease(self.job_id), owner, ttl_s))

    def release_lease(self, owner: str) -> bool:
        """Drop the lease if ``owner`` holds it (ours, or a holder known to be dead)."""
        return bool(self.client.eval(_RELEASE, 1, keys.job_lease(self.job_id), owner))

    def lease_holder(self) -> str | None:
        raw: Any = self.client.get(keys.job_lease(self.job_id))
        return None if raw is None else _text(raw)

    # -- life cycle -------------------------------------------------------------------

    def start(self, plan: JobPlan, writer: Writer) -> JobStore:
        """Start the job afresh (whatever an earlier run left): a new epoch and attempt, the
        job's delivery counters cleared.  Returns the store at the new epoch."""
        self._delete_transient(keep=(keys.job_lease(self.job_id),))
        self._delete(keys.deliveries(f"*:{self.job_id}*"))
        pipe = self.client.pipeline(transaction=True)
        pipe.hincrby(self.key, Field.EPOCH.value, 1)
        pipe.hincrby(self.key, Field.ATTEMPT.value, 1)
        pipe.hdel(self.key, Field.ERROR.value)
        pipe.hset(
            self.key,
            mapping={
                Field.KIND.value: plan.kind,
                Field.STATE.value: JobState.RUNNING.value,
                Field.WRITER.value: writer.value,
                Field.OUT.value: plan.out,
                Field.TOTAL.value: plan.segments,
                Field.DONE.value: 0,
                Field.STARTED.value: 0,
                Field.MESSAGES.value: 0,
                Field.DEAD.value: 0,
            },
        )
        pipe.expire(self.key, JOB_TTL_S)
        pipe.set(keys.job_plan(self.job_id), plan.to_json(), ex=JOB_TTL_S)
        epoch = pipe.execute()[0]
        return self.at(int(epoch))

    def take_over(self, writer: Writer) -> tuple[JobStore, int]:
        """A new submitter takes over the running job: the same epoch (its results stand), a
        new attempt (fresh task ids).  Returns the store at the job's epoch and the attempt."""
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(self.key, Field.WRITER.value, writer.value)
        pipe.hincrby(self.key, Field.ATTEMPT.value, 1)
        pipe.hget(self.key, Field.EPOCH.value)
        pipe.expire(self.key, JOB_TTL_S)
        pipe.expire(keys.job_plan(self.job_id), JOB_TTL_S)
        _, attempt, epoch, _, _ = pipe.execute()
        return self.at(int(epoch or 0)), int(attempt)

    def finish(self, state: JobState, error: str | None = None) -> bool:
        """The job ends (if it still runs at this epoch): keep its hash for a while (``retape
        status``), drop the rest.  False when it had already ended."""
        if not self.running():
            return False
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(self.key, Field.STATE.value, state.value)
        if error is not None:
            pipe.hset(self.key, Field.ERROR.value, error[:2000])
        pipe.expire(self.key, FINISHED_TTL_S)
        pipe.execute()
        self._delete_transient()
        return True

    def cancel(self, owner: str) -> bool:
        """The submitter holding the lease gives the job up: queued tasks will do nothing."""
        done = bool(
            self.client.eval(_CANCEL, 2, self.key, keys.job_lease(self.job_id), owner, FINISHED_TTL_S)
        )
        if done:
            self._delete_transient()
        return done

    def _delete_transient(self, keep: tuple[str, ...] = ()) -> None:
        self._delete(keys.job_transient_pattern(self.job_id), keep)

    def _delete(self, pattern: str, keep: tuple[str, ...] = ()) -> None:
        kept = {k.encode() for k in keep}
        doomed = [k for k in self.client.scan_iter(match=pattern, count=1000) if k not in kept]
        for i in range(0, len(doomed), 500):
            self.client.delete(*doomed[i : i + 500])

    # -- results -----------------------------------------------------------------------

    def put_result(self, segment: int, stage: int, data: bytes) -> bool:
        """Write a stage's result once; False when it was already written.  Raises
        :class:`NotRunning` when the job does not run at this epoch any more."""
        return self._once(keys.stage_result(self.job_id, segment, stage), data)

    def _once(self, key: str, data: bytes | int) -> bool:
        if isinstance(data, bytes) and len(data) >= MOVE_FROM_BYTES:
            upload = f"{key}:upload:{secrets.token_hex(6)}"
            self.client.set(upload, data, ex=UPLOAD_TTL_S)
            got = self._live_call(_MOVE_ONCE, [key, upload], JOB_TTL_S)
        else:
            got = self._live_call(_PUT_ONCE, [key], data, JOB_TTL_S)
        if got < 0:
            raise NotRunning(f"job {self.job_id} is not running at epoch {self.epoch}")
        return got == 1

    def result(self, segment: int, stage: int) -> bytes | None:
        raw: Any = self.client.get(keys.stage_result(self.job_id, segment, stage))
        return raw

    def mark_final(self, segment: int, stage: int) -> None:
        self._once(keys.segment_final(self.job_id, segment), stage)

    def final_stage(self, segment: int) -> int | None:
        raw: Any = self.client.get(keys.segment_final(self.job_id, segment))
        return None if raw is None else int(raw)

    def final_results(self, segments: int) -> list[bytes | None]:
        """Every segment's final result, in order (None where a segment is not finished)."""
        pipe = self.client.pipeline(transaction=False)
        for n in range(segments):
            pipe.get(keys.segment_final(self.job_id, n))
        stages = pipe.execute()
        pipe = self.client.pipeline(transaction=False)
        for n, stage in enumerate(stages):
            if stage is not None:
                pipe.get(keys.stage_result(self.job_id, n, int(stage)))
        got = iter(pipe.execute())
        return [None if stage is None else next(got) for stage in stages]

    def unfinished(self, segments: int) -> list[int]:
        pipe = self.client.pipeline(transaction=False)
        for n in range(segments):
            pipe.exists(keys.segment_final(self.job_id, n))
        return [n for n, found in enumerate(pipe.execute()) if not found]

    def latest_stage(self, segment: int, limit: int = 64) -> int:
        """The highest stage of ``segment`` with a result (0 when none has one)."""
        stage = 0
        while stage + 1 < limit and self.result(segment, stage + 1) is not None:
            stage += 1
        return stage

    def put_answer(self, segment: int, stage: int, sub: int, data: bytes) -> bool:
        return self._once(keys.sub_result(self.job_id, segment, stage, sub), data)

    def answers(self, segment: int, stage: int, count: int) -> list[bytes | None]:
        pipe = self.client.pipeline(transaction=False)
        for sub in range(count):
            pipe.get(keys.sub_result(self.job_id, segment, stage, sub))
        return list(pipe.execute())

    def answered(self, segment: int, stage: int, subs: Sequence[int]) -> list[bool]:
        """Whether each sub-task of ``subs`` has its answer (without reading the answers,
        which may be large)."""
        pipe = self.client.pipeline(transaction=False)
        for sub in subs:
            pipe.exists(keys.sub_result(self.job_id, segment, stage, sub))
        return [bool(n) for n in pipe.execute()]

    # -- barriers ----------------------------------------------------------------------

    def arrive(self, name: str, member: str | int, total: int, mirror: Field | None = None) -> bool:
        """``member`` is in; True when this arrival trips the barrier (every member in).
        Tripping happens once, except that the member that tripped it trips it again if
        it arrives again (its task was redelivered before it could act)."""
        key = keys.barrier(self.job_id, name)
        got = self._live_call(
            _ARRIVE, [key, key + ":tripped"], str(member), total, mirror.value if mirror else "", JOB_TTL_S
        )
        if got < 0:
            raise NotRunning(f"job {self.job_id} is not running at epoch {self.epoch}")
        return got == 1

    # -- pokes and data requests ---------------------------------------------------------

    def poke(self, *more: tuple[str, str]) -> None:
        """Wake the submitter (and push ``(list key, value)`` pairs first), while live."""
        pairs = [*more, (keys.job_wake(self.job_id), "p")]
        self._live_call(_PUSH, [k for k, _ in pairs], JOB_TTL_S, *[v for _, v in pairs])

    def next_generation(self, segment: int) -> int:
        """A new start of reading ``segment``'s data (each start reads fresh streams)."""
        got = self._live_call(_INCR, [keys.job_gen(self.job_id, segment)], JOB_TTL_S)
        if got < 0:
            raise NotRunning(f"job {self.job_id} is not running at epoch {self.epoch}")
        return got

    def wait(self, timeout_s: float) -> bool:
        """Block until the job is poked (a segment finished, a worker asked for data), at
        most ``timeout_s``; True when poked."""
        got: Any = self.client.blpop([keys.job_wake(self.job_id)], timeout=timeout_s)
        if got is None:
            return False
        self.client.delete(keys.job_wake(self.job_id))  # one pass serves every poke so far
        return True

    # -- status ------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        meta = self.meta()
        return {
            "job": self.job_id,
            "kind": meta.get(Field.KIND.value, "unknown"),
            "state": meta.get(Field.STATE.value, "unknown"),
            "segments_total": int(meta.get(Field.TOTAL.value, 0)),
            "segments_done": int(meta.get(Field.DONE.value, 0)),
            "dead_letters": int(meta.get(Field.DEAD.value, 0)),
            "messages": int(meta.get(Field.MESSAGES.value, 0)),
        }


# Count a start; on the first start past the limit, append the dead letter (once).
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

# Dead-letter a task now (a permanent error): once, whatever the count.
_BURY = """
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', tonumber(ARGV[2])) then
  local letter = cjson.decode(ARGV[1])
  letter['deliveries'] = tonumber(redis.call('GET', KEYS[3]) or '0')
  redis.call('RPUSH', KEYS[1], cjson.encode(letter))
  return 1
end
return 0
"""


class DeliveryGuard:
    """Redelivery counting and the dead-letter list.

    With ``acks_late`` and ``reject_on_worker_lost`` a task whose worker dies is delivered
    again.  A task that *always* kills its worker (a poison segment) would loop forever, so
    every start is counted; past ``max_tries`` starts the task is not run again but written
    once to the dead-letter list with its reason.  A start that ended in a transient error
    (a 429, a timeout) is given back: those have their own, larger budget.
    """

    def __init__(
        self,
        client: redis.Redis,
        max_tries: int = 3,
        max_transient: int = 30,
        dead_letters: str = keys.DEAD_LETTERS,
    ) -> None:
        self.client = client
        self.max_tries = max_tries
        self.max_transient = max_transient
        self.dead_letters = dead_letters

    @staticmethod
    def _letter(task_id: str, name: str, args: list[Any], queue: str, **more: str) -> str:
        return orjson.dumps({"task_id": task_id, "task": name, "args": args, "queue": queue, **more}).decode()

    def admit(self, task_id: str, name: str, args: list[Any], queue: str) -> bool:
        """Count this start; False when the task has had its tries and was dead-lettered."""
        base = keys.deliveries(task_id)
        n: Any = self.client.eval(
            _ADMIT,
            4,
            base,
            self.dead_letters,
            base + ":dead",
            base + ":error",
            self.max_tries,
            COUNTER_TTL_S,
            self._letter(task_id, name, args, queue),
            WORKER_DIED,
        )
        return int(n) > 0

    def bury(self, task_id: str, name: str, args: list[Any], queue: str, reason: str) -> bool:
        """Dead-letter the task at once (a permanent error); True the first time."""
        base = keys.deliveries(task_id)
        letter = self._letter(task_id, name, args, queue, reason=reason[:2000])
        buried: Any = self.client.eval(
            _BURY, 3, self.dead_letters, base + ":dead", base, letter, COUNTER_TTL_S
        )
        return bool(buried)

    def record_error(self, task_id: str, error: str) -> None:
        """Remember why the last try failed (it becomes the dead letter's reason)."""
        self.client.set(keys.deliveries(task_id) + ":error", error[:2000], ex=COUNTER_TTL_S)

    def give_back(self, task_id: str) -> int:
        """A start that ended in a transient error does not count as a try; returns how
        many transient failures the task has had."""
        base = keys.deliveries(task_id)
        pipe = self.client.pipeline(transaction=True)
        pipe.decr(base)
        pipe.incr(base + ":transient")
        pipe.expire(base + ":transient", COUNTER_TTL_S)
        _, transient, _ = pipe.execute()
        return int(transient)

    def reason(self, task_id: str) -> str:
        """Why the task's last try failed, as the dead letter says."""
        raw: Any = self.client.get(keys.deliveries(task_id) + ":error")
        return raw.decode("utf-8", "replace") if raw else WORKER_DIED

    def done(self, task_id: str) -> None:
        base = keys.deliveries(task_id)
        self.client.delete(base, base + ":error", base + ":transient")

    def letters(self) -> list[dict[str, Any]]:
        return [orjson.loads(raw) for raw in self.client.lrange(self.dead_letters, 0, -1)]

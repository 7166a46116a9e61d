"""``--replay-source`` values and the sources they name.

- ``http://…`` / ``https://…``: a Tardis-compatible API (api.tardis.dev, or another
  machine's ``retape serve-archive``); its key comes from ``RETAPE_TARDIS_API_KEY``;
- a directory (or ``file:///dir``): captures on this machine, read as ``serve-archive`` would;
- ``https://api.binance.com``, ``https://fapi.binance.com``, ``https://dapi.binance.com`` (or
  any host as ``binance+http(s)://host``): Binance's REST trade history (trade gaps only);
  its key, where an endpoint needs one, from ``RETAPE_BINANCE_API_KEY``.

Options for a source ride in the URL's fragment, so one flag says everything about it:
``#rps=5`` (requests per second, shared by all workers), ``weight=1200`` (request weight per
minute), ``tries=30``, ``backoff=1`` (seconds, the first backoff bound), ``breaker=5``
(failures in a row that open the breaker), ``cooldown=60`` (seconds it stays open),
``timeout=30`` (seconds a read may wait).  The name
a report gives a source has no credentials, query or fragment.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlsplit

from shared.errors import UsageError
from shared.replay.archive import Wanted, archive_at
from shared.replay.binance_rest import BinanceRestSource, default_weight_budget, is_binance_rest
from shared.replay.cache import MINUTES
from shared.replay.fill import Record
from shared.replay.limits import BreakerPolicy, Gate, Limit, LocalGate, RedisGate
from shared.replay.request import MINUTE_US, FillRequest
from shared.replay.retry import Attempts, NoData, RetryPolicy
from shared.replay.tardis import READ_TIMEOUT_S, TardisSource, public_name

DEFAULT_RPS = {"tardis": 10.0, "archive": 0.0, "binance": 10.0}
_DEFAULT_RETRY = RetryPolicy()
_DEFAULT_BREAKER = BreakerPolicy()


@dataclass(frozen=True, slots=True)
class SourceSpec:
    kind: str  # "tardis" | "archive"
    location: str  # the base URL, or the directory
    name: str  # as reports show it
    limit: Limit
    policy: RetryPolicy
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy)
    read_timeout_s: float = READ_TIMEOUT_S


def parse_source(text: str) -> SourceSpec:
    """One ``--replay-source`` value; :class:`UsageError` when it names nothing usable."""
    base, _, fragment = text.partition("#")
    try:
        opts = {k: float(v) for k, v in parse_qsl(fragment, strict_parsing=bool(fragment))}
    except ValueError:
        raise UsageError(f"--replay-source {text!r}: options are name=number pairs after '#'") from None
    unknown = set(opts) - {"rps", "weight", "tries", "backoff", "breaker", "cooldown", "timeout"}
    if unknown:
        raise UsageError(f"--replay-source {text!r}: unknown option(s) {', '.join(sorted(unknown))}")
    parts = urlsplit(base)
    if is_binance_rest(base):
        if not parts.hostname:
            raise UsageError(f"--replay-source {text!r}: no host")
        kind, location, name = "binance", base, "binance-rest:" + public_name(base.replace("binance+", "", 1))
    elif parts.scheme in ("http", "https"):
        if not parts.hostname:
            raise UsageError(f"--replay-source {text!r}: no host")
        kind, location, name = "tardis", base, public_name(base)
    elif parts.scheme in ("", "file"):
        path = parts.path if parts.scheme == "file" else base
        if not os.path.isdir(path):
            raise UsageError(f"--replay-source {text!r}: not a URL or a directory")
        if not os.access(path, os.R_OK | os.X_OK):
            raise UsageError(f"--replay-source {text!r}: the directory is not readable (permission denied)")
        location = os.path.abspath(path)
        kind, name = "archive", f"archive:{location}"
    else:
        raise UsageError(f"--replay-source {text!r}: use an http(s) URL or a directory")
    weight = int(opts.get("weight", default_weight_budget(base) if kind == "binance" else 0))
    limit = Limit(opts.get("rps", DEFAULT_RPS[kind]), weight)
    policy = RetryPolicy(
        tries=max(1, int(opts.get("tries", 30))), base_s=opts.get("backoff", _DEFAULT_RETRY.base_s)
    )
    breaker = BreakerPolicy(
        threshold=max(1, int(opts.get("breaker", _DEFAULT_BREAKER.threshold))),
        cooldown_s=opts.get("cooldown", _DEFAULT_BREAKER.cooldown_s),
    )
    timeout = opts.get("timeout", READ_TIMEOUT_S)
    if not timeout > 0:
        raise UsageError(f"--replay-source {text!r}: timeout must be positive")
    return SourceSpec(kind, location, name, limit, policy, breaker, timeout)


class Source(Protocol):
    name: str

    def records(self, req: FillRequest, attempts: Attempts) -> Iterator[Record]: ...

    def close(self) -> None: ...


class ArchiveSource:
    """Fills from captures on this machine's disk."""

    def __init__(self, spec: SourceSpec) -> None:
        self.name = spec.name
        self.archive = archive_at(spec.location)

    def records(self, req: FillRequest, attempts: Attempts) -> Iterator[Record]:
        minutes = req.minutes()
        if not minutes:
            raise NoData("the gap spans more than an hour: not asked for")
        key = req.key
        wanted = [Wanted(key.channel, frozenset({key.symbol}))]
        for minute in minutes:

            def read(m: int = minute) -> list[Record]:
                return list(self.archive.records(key.exchange, m, m + MINUTE_US, wanted))

            yield from MINUTES.get((self.name, key, minute), read)

    def close(self) -> None:
        pass


GateFactory = Callable[[SourceSpec], Gate]


def open_source(spec: SourceSpec, gates: GateFactory) -> Source:
    if spec.kind == "archive":
        return ArchiveSource(spec)
    if spec.kind == "binance":
        return BinanceRestSource(
            spec.name,
            spec.location,
            gates(spec),
            spec.policy,
            spec.limit.weight_per_minute,
            read_timeout_s=spec.read_timeout_s,
        )
    return TardisSource(spec.location, gates(spec), spec.policy, read_timeout_s=spec.read_timeout_s)


# Gates of the sources a process uses without a broker: one per source for the whole run.
_LOCAL_GATES: dict[str, LocalGate] = {}


def open_sources(values: Sequence[str], redis_client: Any = None) -> list[Source]:
    """The sources ``--replay-source`` values name, in order, each behind its gate: in Redis
    (shared by every worker of the broker) when a client is given, else in this process."""

    def gate(spec: SourceSpec) -> Gate:
        if redis_client is not None:
            return RedisGate(redis_client, spec.name, spec.limit, spec.breaker)
        found = _LOCAL_GATES.get(spec.name)
        if found is None:
            found = _LOCAL_GATES[spec.name] = LocalGate(spec.name, spec.limit, spec.breaker)
        return found

    return [open_source(parse_source(v), gate) for v in values]


def canonical_source(text: str) -> str:
    """A ``--replay-source`` value as a job carries it: checked (:class:`UsageError` when it
    names nothing usable), a directory made absolute (workers run elsewhere)."""
    spec = parse_source(text)
    if spec.kind == "archive":
        _, _, fragment = text.partition("#")
        return spec.location + (f"#{fragment}" if fragment else "")
    return text

"""One transaction per group of observations, every field with where it came from.

Pure.  For each field the candidates are the values the group's observations give:

- all agree: ``observed``, confidence 1 (0.6 when every source marked it uncertain, and the
  value keeps the mark: ``0.15?``; 0.8 for a time none of whose sources named a zone);
- certain sources agree and uncertain ones differ: the certain value, 0.9, the others listed in
  ``conflicts``;
- certain sources disagree: the value of the most direct source (an API log over an export over
  a tax-tool row over the chain), confidence 0.5, every value in ``conflicts``: kept side by
  side, never resolved silently;
- computed by a stated rule (a trade's quote leg as size * price, a tax row's price): ``derived``.

A chain record proves a deposit or withdrawal (its hash, that it happened) but its amount may be
net of fees and its time is the block's: it gives ``tx_hash`` only, unless the transfer stands
alone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from shared.ledger.correlate import Grouping, correlate
from shared.ledger.observe import Observation
from shared.ledger.values import Amount, format_decimal, iso_utc

FIELDS = ("time", "asset", "amount", "fee", "fee_asset", "market", "side", "price", "size", "tx_hash")
DECIMAL_FIELDS = frozenset({"amount", "fee", "price", "size"})


@dataclass(slots=True)
class Provenance:
    source: str  # observed | derived | inferred | llm
    confidence: float
    fragments: list[str]
    model: str | None = None  # llm: the model that answered
    prompt: str | None = None  # llm: the SHA-256 of model, prompt and schema (the cache key)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "source": self.source,
            "confidence": round(self.confidence, 4),
            "fragments": self.fragments,
        }
        if self.model is not None:
            out["model"] = self.model
        if self.prompt is not None:
            out["prompt_sha256"] = self.prompt
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Provenance:
        return cls(
            data["source"],
            float(data["confidence"]),
            list(data["fragments"]),
            data.get("model"),
            data.get("prompt_sha256"),
        )


@dataclass(slots=True)
class Transaction:
    id: str
    account: str
    type: str
    values: dict[str, Any] = field(default_factory=dict)  # field -> str | None (exact text)
    provenance: dict[str, Provenance] = field(default_factory=dict)
    conflicts: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    quote_asset: str | None = None
    quote_amount: Decimal | None = None  # for balances (trades)
    quote_source: str = "observed"
    time_us: int | None = None
    fragments: list[str] = field(default_factory=list)
    status: str | None = None  # as the exchange wrote it (lower case), for balances

    def as_json(self) -> dict[str, Any]:
        row: dict[str, Any] = {"id": self.id, "account": self.account, "type": self.type}
        for name in FIELDS:
            row[name] = self.values.get(name)
        row["provenance"] = {k: self.provenance[k].as_json() for k in FIELDS if k in self.provenance}
        row["conflicts"] = {k: self.conflicts[k] for k in FIELDS if k in self.conflicts}
        return row


def _rank(o: Observation) -> int:
    """How directly a record saw the transaction: API log > export > tax tool > chain."""
    if o.type == "transfer":
        return 0
    if "trade_id" in o.ids or "order_id" in o.ids:
        return 3
    if o.ids:
        return 2
    return 1


def _candidates(o: Observation, name: str) -> tuple[str | None, bool, bool]:
    """(value as text, uncertain, zone assumed) of field ``name`` in ``o``."""
    if name == "time":
        if o.time is None:
            return None, False, False
        return iso_utc(o.time.us), False, o.time.zone_assumed
    if name == "tx_hash":
        return o.ids.get("tx_hash"), False, False
    value = getattr(o, name)
    if isinstance(value, Amount):
        return format_decimal(value.value), value.uncertain, False
    return (None if value is None else str(value)), False, False


def merge(obs: Sequence[Observation], grouping: Grouping) -> list[Transaction]:
    link_conf: dict[int, float] = {}
    for link in grouping.links:
        for i in (link.a, link.b):
            link_conf[i] = min(link_conf.get(i, 1.0), link.confidence)
    strong: dict[int, set[int]] = {}
    for link in grouping.links:
        if link.confidence >= 1.0:
            strong.setdefault(link.a, set()).add(link.b)
            strong.setdefault(link.b, set()).add(link.a)
    out = []
    for members in grouping.groups:
        group = [obs[i] for i in members]
        weakest = min((link_conf.get(i, 1.0) for i in members), default=1.0) if len(members) > 1 else 1.0
        exchange = [o for o in group if o.type != "transfer"]
        main = exchange or group
        # The core: the most direct record and whatever its ids or hashes prove is the same
        # transaction.  A value the core gives is observed; one only records joined by amount,
        # time or a partial id give is inferred (its confidence carries the link's).
        anchor = max(members, key=lambda i: (obs[i].type != "transfer", _rank(obs[i]), -i))
        core = {obs[i].fragment for i in _component(anchor, strong)}
        tx = Transaction("", group[0].account, main[0].type)
        tx.fragments = sorted({o.fragment for o in group})
        for name in FIELDS:
            sources = group if name == "tx_hash" or not exchange else exchange
            _settle(tx, name, sources, core, weakest)
        _quote(tx, main)
        tx.time_us = min((o.time.us for o in main if o.time is not None), default=None)
        tx.status = next((o.status for o in sorted(main, key=lambda o: -_rank(o)) if o.status), None)
        tx.id = _ident(tx, main, group)
        out.append(tx)
    out.sort(key=lambda t: (t.account, t.time_us if t.time_us is not None else -1, t.id))
    return out


def _component(start: int, strong: dict[int, set[int]]) -> set[int]:
    seen = {start}
    todo = [start]
    while todo:
        for j in strong.get(todo.pop(), ()):
            if j not in seen:
                seen.add(j)
                todo.append(j)
    return seen


def _settle(
    tx: Transaction, name: str, sources: Sequence[Observation], core: set[str], weakest: float
) -> None:
    seen: list[tuple[str, bool, bool, Observation]] = []
    for o in sources:
        value, uncertain, assumed = _candidates(o, name)
        if value is not None:
            seen.append((value, uncertain, assumed, o))
    if not seen:
        return
    from_core = [s for s in seen if s[3].fragment in core]
    how = "observed" if from_core else "inferred"
    base = from_core or seen
    certain = [s for s in base if not s[1]]
    values = {s[0] for s in seen}
    pool = certain or base
    pool_values = {s[0] for s in pool}
    best = max(pool, key=lambda s: (_rank(s[3]), -sources.index(s[3])))
    chosen = best[0]
    supporters = sorted({s[3].fragment for s in seen if s[0] == chosen})
    if len(pool_values) > 1:
        # Sources that saw it directly disagree: the value is chosen by a rule (the most
        # direct record), not observed beyond doubt.
        how = "inferred"
        confidence = 0.5
    elif len(values) > 1:
        confidence = 0.9
    elif not certain:
        confidence = 0.6
    else:
        confidence = 1.0
    if how == "inferred":
        confidence *= weakest
    if name == "time" and all(s[2] for s in seen if s[0] == chosen):
        confidence = min(confidence, 0.8)
    if all(s[1] for s in seen if s[0] == chosen):
        chosen += "?"  # every source of it marked it uncertain: the ledger says so too
    if len(values) > 1:
        tx.conflicts[name] = [
            {"value": v, "fragments": sorted({s[3].fragment for s in seen if s[0] == v})}
            for v in sorted(values)
        ]
    source = how
    if name == "price" and all(s[3].price_derived for s in seen if s[0] == chosen):
        source = "derived" if how == "observed" else how  # by the rule in shared.ledger.observe
        confidence = min(confidence, 0.99)
    tx.values[name] = chosen
    tx.provenance[name] = Provenance(source, confidence, supporters)


def _quote(tx: Transaction, main: Sequence[Observation]) -> None:
    legs = [o for o in main if o.quote_amount is not None]
    if not legs:
        return
    best = max(legs, key=lambda o: (not o.quote_derived, _rank(o)))
    assert best.quote_amount is not None
    tx.quote_asset = best.quote_asset
    tx.quote_amount = best.quote_amount.value
    tx.quote_source = "derived" if best.quote_derived else "observed"


def _ident(tx: Transaction, main: Sequence[Observation], group: Sequence[Observation]) -> str:
    for o in sorted(main, key=lambda o: -_rank(o)):
        for name in ("id", "trade_id"):
            value = o.ids.get(name)
            if value and not value.endswith(("?", "…", "*")):
                return f"{tx.type}:{value}"
    tx_hash = tx.values.get("tx_hash")
    if tx_hash:
        return f"{tx.type}:{tx_hash}"
    digest = hashlib.sha256("\n".join(sorted(o.fragment for o in group)).encode()).hexdigest()[:16]
    return f"{tx.type}:{digest}"


def canonical_order(obs: Sequence[Observation]) -> list[Observation]:
    """Observations in an order that does not depend on how they were read (files, workers):
    by account, then fragment id, then type."""
    return sorted(obs, key=lambda o: (o.account, o.fragment, o.type))


def build(obs: Sequence[Observation]) -> tuple[list[Transaction], Grouping, list[Observation]]:
    """The ledger of ``obs``, the same for the same observations in any order: the transactions,
    the grouping behind them and the observations in the order its indexes refer to."""
    ordered = canonical_order(obs)
    grouping = correlate(ordered)
    return merge(ordered, grouping), grouping, ordered

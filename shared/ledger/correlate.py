"""Which observations describe the same transaction.

Pure and deterministic (the same observations in any order give the same groups).  Links, in
order of strength, each with the confidence it lends the match:

1. the same exchange id (``id`` / ``trade_id``) for the same account and type: 1.0;
2. the same chain transaction hash: 1.0 (a deposit or withdrawal and the chain record that
   carries it);
3. a partial id (``FTX-TX-4892?``, ``4892…``) that is the prefix of exactly one other id of the
   same account and type: 0.8;
4. amount and time: a withdrawal or deposit and a chain transfer of the same asset and amount
   (a withdrawal's may be net of its fee) within :data:`CHAIN_WINDOW_US` after (withdrawal) or
   before (deposit) the exchange's time, when exactly one candidate fits: 0.7 (how rotki pairs
   exchange withdrawals with chain transfers);
5. amount and time between sources without ids (a tax-tool row and an export row): same account,
   type, asset and amount, times within :data:`SAME_TIME_US`, exactly one candidate: 0.9.

Anything that fits more than one candidate is not linked, and the ambiguity is reported, never
resolved silently: a record with ids stays its own transaction; a record without ids (rule 5),
which can only be a copy of one of them, is set aside (in no transaction, no balance).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from shared.ledger.observe import Observation

CHAIN_WINDOW_US = 6 * 3_600_000_000  # a withdrawal reaches the chain within 6 h
SAME_TIME_US = 2_000_000  # two records of one trade, written by different systems

PARTIAL_MARKS = ("?", "…", "...", "*")


@dataclass(frozen=True, slots=True)
class Link:
    a: int
    b: int
    how: str  # "id", "tx_hash", "id_prefix", "chain_proximity", "proximity"
    confidence: float


@dataclass(slots=True)
class Grouping:
    groups: list[list[int]]  # indexes of observations, each group sorted, groups in first-index order
    links: list[Link]
    ambiguous: list[tuple[int, list[int], str]]  # (observation, candidates, why none was chosen)
    # Records without ids that copy one of several transactions, none provably: they are kept out
    # of the ledger (else a transaction would count twice) and listed with their candidates.
    set_aside: list[int] = field(default_factory=list)


def partial_id(value: str) -> str | None:
    """The known prefix of an id written as partial (``FTX-TX-4892?``), else None."""
    text = value.strip()
    for mark in PARTIAL_MARKS:
        if text.endswith(mark):
            return text[: -len(mark)].strip() or None
    return None


class _Union:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def join(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def correlate(obs: Sequence[Observation]) -> Grouping:
    n = len(obs)
    u = _Union(n)
    links: list[Link] = []
    ambiguous: list[tuple[int, list[int], str]] = []
    set_aside: list[int] = []

    def link(a: int, b: int, how: str, confidence: float) -> None:
        if u.find(a) != u.find(b):
            links.append(Link(min(a, b), max(a, b), how, confidence))
            u.join(a, b)

    # 1-2: exact ids and hashes.
    by_key: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for i, o in enumerate(obs):
        for name in ("id", "trade_id"):
            value = o.ids.get(name)
            if value and partial_id(value) is None and o.type != "transfer":
                by_key[("id", o.account, o.type, value)].append(i)
        tx = o.ids.get("tx_hash")
        if tx and partial_id(tx) is None:
            by_key[("tx", o.account, tx.lower())].append(i)
    for key, members in sorted(by_key.items()):
        for other in members[1:]:
            link(members[0], other, "id" if key[0] == "id" else "tx_hash", 1.0)

    # 3: partial ids.
    full_ids: dict[tuple[str, str], list[tuple[str, int]]] = defaultdict(list)
    for i, o in enumerate(obs):
        for name in ("id", "trade_id", "tx_hash"):
            value = o.ids.get(name)
            if value and partial_id(value) is None:
                full_ids[(o.account, name)].append((value, i))
    for i, o in enumerate(obs):
        for name in ("id", "trade_id", "tx_hash"):
            value = o.ids.get(name)
            prefix = partial_id(value) if value else None
            if prefix is None:
                continue
            candidates = sorted(
                {j for v, j in full_ids[(o.account, name)] if v.startswith(prefix) and j != i}
            )
            groups = sorted({u.find(j) for j in candidates})
            if len(groups) == 1:
                link(i, candidates[0], "id_prefix", 0.8)
            elif len(groups) > 1:
                ambiguous.append((i, candidates, f"partial {name} {value!r} fits {len(groups)} transactions"))

    # 4: exchange deposit/withdrawal <-> chain transfer by amount and time.
    transfers = [j for j, o in enumerate(obs) if o.type == "transfer"]
    exchange_roots = {u.find(k) for k, o in enumerate(obs) if o.type in ("deposit", "withdrawal")}
    claimed = {j for j in transfers if u.find(j) in exchange_roots}  # proven by a hash already
    for i, o in enumerate(obs):
        if o.type not in ("deposit", "withdrawal") or o.amount is None or o.time is None:
            continue
        if any(u.find(i) == u.find(j) for j in claimed):
            continue  # already proven by its hash
        fits = [j for j in transfers if j not in claimed and _chain_fits(o, obs[j])]
        groups = sorted({u.find(j) for j in fits})
        if len(groups) == 1:
            link(i, fits[0], "chain_proximity", 0.7)
            claimed.add(fits[0])
        elif len(groups) > 1:
            ambiguous.append((i, fits, f"{len(groups)} chain transfers fit its amount and time"))

    # 5: the same trade/deposit/withdrawal written by two systems, one without ids.
    by_shape: dict[tuple[str, str, str | None, str], list[int]] = defaultdict(list)
    for i, o in enumerate(obs):
        if o.type in ("trade", "deposit", "withdrawal") and o.amount is not None and o.time is not None:
            by_shape[(o.account, o.type, o.asset, str(o.amount.value))].append(i)
    for members in by_shape.values():
        for i in members:
            if obs[i].ids.get("id") or obs[i].ids.get("trade_id"):
                continue  # it has an id: rule 1 decides for it
            close = [
                j
                for j in members
                if j != i and abs(obs[j].time.us - obs[i].time.us) <= SAME_TIME_US  # type: ignore[union-attr]
            ]
            groups = sorted({u.find(j) for j in close} - {u.find(i)})
            if len(groups) == 1:
                link(i, close[0], "proximity", 0.9)
            elif len(groups) > 1:
                ambiguous.append(
                    (i, close, f"{len(groups)} records fit its amount and time: left out of the ledger")
                )
                set_aside.append(i)

    buckets: dict[int, list[int]] = defaultdict(list)
    aside = set(set_aside)
    for i in range(n):
        if i not in aside:
            buckets[u.find(i)].append(i)
    grouped = [sorted(m) for _, m in sorted(buckets.items())]
    return Grouping(grouped, sorted(links, key=lambda k: (k.a, k.b)), ambiguous, sorted(aside))


def _chain_fits(o: Observation, t: Observation) -> bool:
    if t.asset != o.asset or t.amount is None or t.time is None or o.amount is None or o.time is None:
        return False
    want = abs(o.amount.value)
    got = abs(t.amount.value)
    fee = o.fee.value if o.fee is not None else None
    amount_ok = got == want or (o.type == "withdrawal" and fee is not None and got == want - fee)
    if not amount_ok:
        return False
    delta = t.time.us - o.time.us
    if o.type == "withdrawal":
        return 0 <= delta <= CHAIN_WINDOW_US
    return -CHAIN_WINDOW_US <= delta <= 0

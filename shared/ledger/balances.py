"""Balances at the cutoff, and how much of each rests on inferred values.

Pure.  A transaction counts when its time is before the cutoff (one without a time cannot be
placed and does not count; it is listed as unresolved by whoever builds the ledger).  What it
changes: its ``amount`` of ``asset``; a trade also its quote leg (observed ``total``, else
size * price: derived); a trade's or withdrawal's ``fee`` of ``fee_asset``.  A deposit's fee is
informational (the amount is what was credited); a failed or cancelled deposit or withdrawal
changes nothing; a chain transfer no exchange record claims changes nothing either (the chain
is not the exchange account: it is listed as unresolved).

The default cutoff is FTX's petition date, 2022-11-11, taken at 00:00 US Eastern time (EST,
UTC-5), i.e. 2022-11-11T05:00:00Z: the Chapter 11 petitions were filed in the District of
Delaware that day, and claims are valued as of the petition date, so everything up to the start
of that day in the court's zone is in.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from shared.ledger.merge import Transaction
from shared.ledger.values import format_decimal

FTX_PETITION_CUTOFF_US = 1_668_142_800_000_000  # 2022-11-11T05:00:00Z = 00:00 EST
NOT_SETTLED = frozenset({"failed", "cancelled", "canceled", "rejected", "pending", "unconfirmed"})


def ledger_decimal(value: Any) -> Decimal | None:
    """A ledger decimal (``0.15``, or ``0.15?`` where every source marked it uncertain)."""
    if value is None:
        return None
    try:
        return Decimal(str(value).rstrip("?"))
    except ArithmeticError:
        return None


def balances(transactions: Iterable[Transaction], cutoff_us: int) -> dict[str, Any]:
    """``{account: {asset: {"amount", "inferred_share"}}}`` at ``cutoff_us`` (accounts and
    assets sorted; amounts exact text; the share of the absolute movements that rest on
    ``inferred`` or ``llm`` values, 4 decimals)."""
    total: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    moved: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    inferred: dict[tuple[str, str], Decimal] = defaultdict(Decimal)

    def add(account: str, asset: str | None, delta: Decimal | None, guessed: bool) -> None:
        if asset is None or delta is None:
            return
        key = (account, asset)
        total[key] += delta
        moved[key] += abs(delta)
        if guessed:
            inferred[key] += abs(delta)

    for tx in transactions:
        if tx.time_us is None or tx.time_us >= cutoff_us:
            continue
        if tx.type in ("deposit", "withdrawal") and (tx.status or "") in NOT_SETTLED:
            continue

        def guessed(*names: str, prov: dict[str, Any] = tx.provenance) -> bool:
            return any(n in prov and prov[n].source in ("inferred", "llm") for n in names)

        v = tx.values
        if tx.type in ("trade", "deposit", "withdrawal", "funding", "fee"):
            add(tx.account, v.get("asset"), ledger_decimal(v.get("amount")), guessed("amount", "asset"))
        if tx.type == "trade":
            add(tx.account, tx.quote_asset, tx.quote_amount, guessed("amount", "price", "size"))
        if tx.type in ("trade", "withdrawal"):
            fee = ledger_decimal(v.get("fee"))
            add(tx.account, v.get("fee_asset") or (v.get("asset") if tx.type == "withdrawal" else None),
                None if fee is None else -fee, guessed("fee", "fee_asset"))  # fmt: skip
    out: dict[str, dict[str, dict[str, str | float]]] = {}
    for (account, asset), amount in sorted(total.items()):
        share = (
            float(inferred[(account, asset)] / moved[(account, asset)]) if moved[(account, asset)] else 0.0
        )
        out.setdefault(account, {})[asset] = {
            "amount": format_decimal(amount),
            "inferred_share": round(share, 4),
        }
    return out

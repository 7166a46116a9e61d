"""From fragments to observations: what one record says about one transaction, in one
vocabulary, every value exact, nothing decided between sources yet.

Pure.  Rules (stated here because the ledger's ``derived`` values rest on them):

- a trade's ``amount`` is the signed change of the account's base balance: ``+size`` for a
  buy, ``-size`` for a sell; its quote leg is ``-size * price`` for a buy (``total`` when the
  export gives it: observed beats derived);
- a deposit adds ``amount`` (the amount credited: a deposit's fee is kept, not taken again), a
  withdrawal takes ``amount`` away and its ``fee`` besides;
- FTX funding ``payment`` is what the account paid, in USD: the balance changes by ``-payment``;
- a tax-tool row with both legs is a trade whose quote is the fiat or stablecoin leg (receiving
  it is a sale of the other asset; else a purchase of the received one), with one leg a deposit
  or a withdrawal;
- a chain record is a transfer as the chain shows it (it proves a deposit or withdrawal, it is
  not one by itself).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shared.ledger.fragments import Fragment
from shared.ledger.schemas import Kind
from shared.ledger.values import Amount, Instant, normalize_asset, parse_amount, parse_market, parse_time

ID_FIELDS = ("id", "trade_id", "order_id", "tx_hash")
# Assets a tax-tool row's other leg is priced in (its quote).
QUOTE_ASSETS = frozenset(
    {"USD", "USDT", "USDC", "BUSD", "TUSD", "EUR", "GBP", "JPY", "AUD", "CAD", "BRZ", "TRYB"}
)


@dataclass(slots=True)
class Observation:
    fragment: str
    account: str
    type: str  # trade | deposit | withdrawal | funding | transfer
    time: Instant | None = None
    asset: str | None = None
    amount: Amount | None = None  # signed change of the account's balance of ``asset``
    fee: Amount | None = None
    fee_asset: str | None = None
    market: str | None = None
    side: str | None = None
    price: Amount | None = None
    size: Amount | None = None
    quote_asset: str | None = None
    quote_amount: Amount | None = None  # signed change of the quote balance (trades)
    quote_derived: bool = False  # computed as size * price, not read
    price_derived: bool = False  # computed as sent / received (a tax-tool row), not read
    ids: dict[str, str] = field(default_factory=dict)
    address: str | None = None
    status: str | None = None
    problems: list[str] = field(default_factory=list)  # values that could not be read


def _neg(a: Amount | None) -> Amount | None:
    return None if a is None else Amount(-a.value, a.uncertain, a.text)


def _abs(a: Amount | None) -> Amount | None:
    return None if a is None else Amount(abs(a.value), a.uncertain, a.text)


def _ids(fields: dict[str, Any]) -> dict[str, str]:
    out = {}
    for name in ID_FIELDS:
        value = fields.get(name)
        if value not in (None, ""):
            out[name] = str(value).strip()
    return out


def _read(fields: dict[str, Any], name: str, problems: list[str]) -> Amount | None:
    raw = fields.get(name)
    if raw in (None, ""):
        return None
    value = parse_amount(raw)
    if value is None:
        problems.append(f"{name} {str(raw)[:40]!r} is not a number")
    return value


def observe(fragment: Fragment) -> list[Observation]:
    """What a (structured) fragment says; notes say nothing here (they go to the LLM stage)."""
    f = fragment.fields
    kind = fragment.kind
    if kind is None:
        return []
    problems: list[str] = []
    raw_time = f.get("time")
    when = parse_time(raw_time)
    if raw_time not in (None, "") and when is None:
        problems.append(f"time {str(raw_time)[:40]!r} is not a time")
    base = Observation(fragment.id, fragment.account, "", when, ids=_ids(f), problems=problems)
    base.status = str(f["status"]).strip().lower() if f.get("status") not in (None, "") else None
    base.address = str(f["address"]).strip() if f.get("address") not in (None, "") else None
    base.fee = _read(f, "fee", problems)
    base.fee_asset = normalize_asset(f.get("fee_asset"))
    if kind == Kind.TRADE:
        return [_trade(base, f, problems)]
    if kind in (Kind.DEPOSIT, Kind.WITHDRAWAL):
        base.type = kind.value
        base.asset = normalize_asset(f.get("asset"))
        amount = _read(f, "amount", problems) or _read(f, "size", problems)
        base.amount = _abs(amount) if kind == Kind.DEPOSIT else _neg(_abs(amount))
        return [base]
    if kind == Kind.FUNDING:
        base.type = "funding"
        base.market = str(f.get("market") or "").strip().upper() or None
        base.asset = "USD"
        base.amount = _neg(_read(f, "payment", problems))
        return [base]
    if kind == Kind.TAX_ROW:
        return [_tax_row(base, f, problems)]
    if kind == Kind.CHAIN:
        base.type = "transfer"
        base.asset = normalize_asset(f.get("asset"))
        base.amount = _read(f, "amount", problems)
        base.address = str(f.get("to_address") or f.get("from_address") or "").strip() or None
        return [base]
    return []


def _trade(o: Observation, f: dict[str, Any], problems: list[str]) -> Observation:
    o.type = "trade"
    market = parse_market(f.get("market"))
    if market is None and f.get("base"):
        market = parse_market(f"{f['base']}/{f.get('quote') or ''}")
    if market is None and f.get("market") not in (None, ""):
        problems.append(f"market {str(f.get('market'))[:40]!r} is not a market")
    side = str(f.get("side") or "").strip().lower()
    o.side = side if side in ("buy", "sell") else None
    if side and o.side is None:
        problems.append(f"side {side[:20]!r} is neither buy nor sell")
    o.price = _read(f, "price", problems)
    o.size = _abs(_read(f, "size", problems) or _read(f, "amount", problems))
    if market is not None:
        o.market = market.name
        o.asset = market.base
        o.quote_asset = market.quote
    if o.size is not None and o.side is not None:
        o.amount = o.size if o.side == "buy" else _neg(o.size)
    total = _abs(_read(f, "total", problems))
    if total is None and o.size is not None and o.price is not None:
        total = Amount(o.size.value * o.price.value, o.size.uncertain or o.price.uncertain)
        o.quote_derived = True
    if total is not None and o.side is not None:
        o.quote_amount = _neg(total) if o.side == "buy" else total
    return o


def _tax_row(o: Observation, f: dict[str, Any], problems: list[str]) -> Observation:
    received = _abs(_read(f, "received_amount", problems))
    sent = _abs(_read(f, "sent_amount", problems))
    r_asset = normalize_asset(f.get("received_asset"))
    s_asset = normalize_asset(f.get("sent_asset"))
    if received is not None and sent is not None:
        o.type = "trade"
        # The quote is the fiat or stablecoin leg: receiving it is a sale of the other one.
        selling = r_asset in QUOTE_ASSETS and s_asset not in QUOTE_ASSETS
        (b_asset, b_amount), (q_asset, q_amount) = (
            ((s_asset, sent), (r_asset, received)) if selling else ((r_asset, received), (s_asset, sent))
        )
        o.side = "sell" if selling else "buy"
        o.asset, o.size = b_asset, b_amount
        o.amount = _neg(b_amount) if selling else b_amount
        o.quote_asset = q_asset
        o.quote_amount = q_amount if selling else _neg(q_amount)
        if b_asset and q_asset:
            o.market = f"{b_asset}/{q_asset}"
        if b_amount.value:
            o.price = Amount(q_amount.value / b_amount.value)
            o.price_derived = True
    elif received is not None:
        o.type, o.asset, o.amount = "deposit", r_asset, received
    elif sent is not None:
        o.type, o.asset, o.amount = "withdrawal", s_asset, _neg(sent)
    else:
        o.type = "transfer"
        problems.append("a row with neither a received nor a sent quantity")
    return o

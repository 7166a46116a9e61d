"""Which columns mean what: the headers of the exports and logs fragments come from, mapped to
one vocabulary, and the kind of record a set of columns describes.

Pure.  Headers are compared without case, spaces, underscores or dashes, so ``Fee Currency``,
``fee_currency`` and ``feeCurrency`` are one column.  Recognised:

- FTX fills ``ID, Time, Market, Side, Order Type, Size, Price, Total, Fee, Fee Currency`` and the
  API's ``/fills`` (``id, market, baseCurrency, quoteCurrency, side, price, size, time, orderId,
  tradeId, liquidity, fee, feeRate, feeCurrency``);
- FTX deposits ``Time, Coin, Amount, Status, Additional info, Transaction ID`` and withdrawals
  ``Time, Coin, Amount, Destination, Status, Transaction ID, fee``, and the API's
  ``/wallet/deposits`` / ``/wallet/withdrawals`` (``id, coin, size, status, time, txid, fee,
  address, notes``);
- FTX funding ``time, future, payment, rate``;
- tax-tool exports ``Date, Received Quantity, Received Currency, Sent Quantity, Sent Currency,
  Fee Amount, Fee Currency``;
- chain transactions (``hash``/``tx hash``, asset, amount, time, ``from``/``to``).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any


class Kind(StrEnum):
    TRADE = "trade"
    DEPOSIT = "deposit"
    WITHDRAWAL = "withdrawal"
    FUNDING = "funding"
    TAX_ROW = "tax_row"  # received and/or sent: a trade, a deposit or a withdrawal
    CHAIN = "chain"  # an on-chain transfer


# normalized header -> canonical field
COLUMNS: dict[str, str] = {
    "id": "id",
    "tradeid": "trade_id",
    "orderid": "order_id",
    "transactionid": "tx_hash",
    "txid": "tx_hash",
    "txhash": "tx_hash",
    "hash": "tx_hash",
    "transactionhash": "tx_hash",
    "time": "time",
    "date": "time",
    "timestamp": "time",
    "datetime": "time",
    "createdat": "time",
    "blocktime": "time",
    "market": "market",
    "future": "market",
    "pair": "market",
    "basecurrency": "base",
    "quotecurrency": "quote",
    "side": "side",
    "ordertype": "order_type",
    "type": "type",
    "size": "size",
    "price": "price",
    "total": "total",
    "fee": "fee",
    "feeamount": "fee",
    "feecurrency": "fee_asset",
    "feecoin": "fee_asset",
    "feeasset": "fee_asset",
    "feerate": "fee_rate",
    "liquidity": "liquidity",
    "coin": "asset",
    "currency": "asset",
    "asset": "asset",
    "token": "asset",
    "amount": "amount",
    "quantity": "amount",
    "value": "amount",
    "status": "status",
    "additionalinfo": "notes",
    "notes": "notes",
    "note": "notes",
    "destination": "address",
    "address": "address",
    "payment": "payment",
    "rate": "rate",
    "receivedquantity": "received_amount",
    "receivedcurrency": "received_asset",
    "sentquantity": "sent_amount",
    "sentcurrency": "sent_asset",
    "from": "from_address",
    "fromaddress": "from_address",
    "to": "to_address",
    "toaddress": "to_address",
    "account": "account",
    "subaccount": "account",
}


def normalize_header(name: str) -> str:
    return "".join(c for c in name.lower() if c.isalnum())


@functools.lru_cache(maxsize=4096)
def _field(name: str) -> str:
    """The canonical field of a column name (a file's columns repeat on every row)."""
    normal = normalize_header(name)
    return COLUMNS.get(normal, "x_" + normal)


def canonical(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row with its columns renamed to the canonical fields (unknown columns kept, prefixed
    ``x_``, so nothing read is dropped); a column named twice keeps its first non-empty value."""
    out: dict[str, Any] = {}
    for name, value in row.items():
        field = _field(str(name))
        if field not in out or out[field] in (None, ""):
            out[field] = value
    return out


def kind_of(fields: Iterable[str], hint: str = "") -> Kind | None:
    """The kind of record canonical ``fields`` describe; ``hint`` (a file or endpoint name:
    ``deposits``, ``/wallet/withdrawals``) decides between a deposit and a withdrawal where the
    columns do not."""
    f = set(fields)
    hint = hint.lower()
    if {"received_amount", "sent_amount"} & f:
        return Kind.TAX_ROW
    if "payment" in f and "market" in f:
        return Kind.FUNDING
    if "market" in f and "side" in f and ("size" in f or "amount" in f) and "price" in f:
        return Kind.TRADE
    if {"from_address", "to_address"} & f and "tx_hash" in f:
        return Kind.CHAIN
    if "asset" in f and ("amount" in f or "size" in f):
        if "withdraw" in hint:
            return Kind.WITHDRAWAL
        if "deposit" in hint:
            return Kind.DEPOSIT
        if "address" in f or "fee" in f:
            return Kind.WITHDRAWAL  # FTX's withdrawal export names a destination and a fee
        if "notes" in f:
            return Kind.DEPOSIT  # its deposit export has "Additional info"
    return None

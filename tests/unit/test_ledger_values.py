"""Reading fragment values exactly: amounts with their uncertainty, times in any zone, columns
by header (the first layer of `retape ledger`)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from shared.ledger.schemas import Kind, canonical, kind_of
from shared.ledger.values import format_decimal, iso_utc, parse_amount, parse_market, parse_time


@pytest.mark.parametrize(
    ("raw", "value", "uncertain"),
    [
        ("0.15", "0.15", False),
        ("0.15?", "0.15", True),
        ("~0.15", "0.15", True),
        ("about 0.15", "0.15", True),
        ("1,234.50", "1234.50", False),
        ("-3", "-3", False),
        ("1e-3", "0.001", False),
        (7, "7", False),
        (0.1, "0.1", False),  # a JSON float: its shortest text, not 0.1000000000000000055...
        (" 12.000 ", "12.000", False),
    ],
)
def test_amounts_are_exact_and_keep_their_uncertainty(raw: object, value: str, uncertain: bool) -> None:
    a = parse_amount(raw)
    assert a is not None
    assert a.value == Decimal(value) and a.uncertain is uncertain
    assert str(a) == format_decimal(Decimal(value)) + ("?" if uncertain else "")


@pytest.mark.parametrize("raw", [None, "", "n/a", "0.1.2", "12,34", "1,2345.6", "inf", "NaN", True, "BTC"])
def test_text_that_is_no_number_is_none_never_zero(raw: object) -> None:
    assert parse_amount(raw) is None


@pytest.mark.parametrize(
    ("raw", "iso", "assumed"),
    [
        ("2022-11-08T14:03:22.123456+00:00", "2022-11-08T14:03:22.123456Z", False),
        ("2022-11-08T14:03:22Z", "2022-11-08T14:03:22.000000Z", False),
        ("2022-11-08 22:03:22 +08:00", "2022-11-08T14:03:22.000000Z", False),
        ("2022-11-08 22:03:22 UTC+8", "2022-11-08T14:03:22.000000Z", False),
        ("2022-11-08T09:03:22-0500", "2022-11-08T14:03:22.000000Z", False),
        ("2022-11-08 14:03", "2022-11-08T14:03:00.000000Z", True),
        ("2022-11-08", "2022-11-08T00:00:00.000000Z", True),
        ("11/08/2022 2:03:22 PM", "2022-11-08T14:03:22.000000Z", True),
        (1667916202, "2022-11-08T14:03:22.000000Z", False),
        (1667916202123, "2022-11-08T14:03:22.123000Z", False),
        ("1667916202123456", "2022-11-08T14:03:22.123456Z", False),
        ("2022-11-08T14:03:22.1234567Z", "2022-11-08T14:03:22.123456Z", False),
    ],
)
def test_times_become_utc_microseconds_saying_when_a_zone_was_assumed(
    raw: object, iso: str, assumed: bool
) -> None:
    t = parse_time(raw)
    assert t is not None
    assert iso_utc(t.us) == iso and t.zone_assumed is assumed


@pytest.mark.parametrize("raw", [None, "", "yesterday", "2022-13-01", "2022-11-08T25:00:00Z", "32/01/2022"])
def test_text_that_is_no_time_is_none(raw: object) -> None:
    assert parse_time(raw) is None


def test_markets() -> None:
    spot = parse_market("btc/usd")
    assert spot is not None and (spot.base, spot.quote, spot.future) == ("BTC", "USD", False)
    perp = parse_market("BTC-PERP")
    assert perp is not None and (perp.base, perp.quote, perp.future) == ("BTC-PERP", "USD", True)
    assert parse_market("") is None and parse_market("/USD") is None


FTX_FILLS = ["ID", "Time", "Market", "Side", "Order Type", "Size", "Price", "Total", "Fee", "Fee Currency"]
FTX_DEPOSITS = ["Time", "Coin", "Amount", "Status", "Additional info", "Transaction ID"]
FTX_WITHDRAWALS = ["Time", "Coin", "Amount", "Destination", "Status", "Transaction ID", "fee"]
FTX_FUNDING = ["time", "future", "payment", "rate"]
TAX = [
    "Date",
    "Received Quantity",
    "Received Currency",
    "Sent Quantity",
    "Sent Currency",
    "Fee Amount",
    "Fee Currency",
]
API_FILLS = [
    "id",
    "market",
    "baseCurrency",
    "quoteCurrency",
    "side",
    "price",
    "size",
    "time",
    "orderId",
    "tradeId",
    "liquidity",
    "fee",
    "feeRate",
    "feeCurrency",
]
API_WALLET = ["id", "coin", "size", "status", "time", "txid", "fee", "address", "notes"]
CHAIN = ["hash", "asset", "amount", "time", "from", "to"]


@pytest.mark.parametrize(
    ("header", "hint", "kind"),
    [
        (FTX_FILLS, "", Kind.TRADE),
        (API_FILLS, "/fills", Kind.TRADE),
        (FTX_DEPOSITS, "", Kind.DEPOSIT),
        (FTX_WITHDRAWALS, "", Kind.WITHDRAWAL),
        (API_WALLET, "/wallet/deposits", Kind.DEPOSIT),
        (API_WALLET, "/wallet/withdrawals", Kind.WITHDRAWAL),
        (FTX_FUNDING, "", Kind.FUNDING),
        (TAX, "", Kind.TAX_ROW),
        (CHAIN, "", Kind.CHAIN),
        (["foo", "bar"], "", None),
    ],
)
def test_kinds_are_recognised_by_header(header: list[str], hint: str, kind: Kind | None) -> None:
    fields = canonical(dict.fromkeys(header, "x"))
    assert kind_of(fields, hint) == kind


def test_unknown_columns_are_kept_not_dropped() -> None:
    row = canonical({"Fee Currency": "USD", "Weird Column": "1", "fee_currency": "BTC"})
    assert row == {"fee_asset": "USD", "x_weirdcolumn": "1"}

"""Order-book checksums: the documented test vectors, real FTX data, and the text rules."""

from __future__ import annotations

import zlib
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from shared import checksums
from shared.checksums import bitfinex, book_checksum, ftx, js_number, kraken, okx
from shared.errors import UsageError

DATA = Path(__file__).resolve().parent.parent / "data"


def _pairs(text: str) -> list[tuple[str, str]]:
    return [(p, q) for p, q in (item.split("/") for item in text.split(", "))]


def test_okx_vectors() -> None:
    # bids 3366.1/7, 3366/6; asks 3366.8/9, 3368/8 -> "3366.1:7:3366.8:9:3366:6:3368:8"
    assert okx([("3366.1", "7"), ("3366", "6")], [("3366.8", "9"), ("3368", "8")]) == -1881014294
    # One side runs out: "3366.1:7:3366.8:9:3368:8:3372:8"
    assert okx([("3366.1", "7")], [("3366.8", "9"), ("3368", "8"), ("3372", "8")]) == 831078360


def test_okx_uses_only_top_25_and_is_signed() -> None:
    bids = [(str(1000 - i), "1") for i in range(40)]
    asks = [(str(2000 + i), "2") for i in range(40)]
    text = ":".join(f"{bids[i][0]}:1:{asks[i][0]}:2" for i in range(25))
    crc = zlib.crc32(text.encode())
    assert okx(bids, asks) == (crc - 2**32 if crc >= 2**31 else crc)
    assert okx(bids, asks) == okx(bids[:25], asks[:25])
    assert okx(bids, asks) != okx(bids[:24], asks)


def test_kraken_v1_vector() -> None:
    asks = [(f"{Decimal('0.05005') + Decimal('0.00005') * i:.5f}", "0.00000500") for i in range(10)]
    assert asks[0][0] == "0.05005" and asks[-1][0] == "0.05050"
    bids_px = "0.05000, 0.04995, 0.04990, 0.04980, 0.04975, 0.04970, 0.04965, 0.04960, 0.04955, 0.04950"
    bids = [(p, "0.00000500") for p in bids_px.split(", ")]
    assert kraken(bids, asks) == 974947235


KRAKEN_V2_BIDS = (
    "45283.5/0.10000000, 45283.4/1.54582015, 45282.1/0.10000000, 45281.0/0.10000000, 45280.3/1.54592586, "
    "45279.0/0.07990000, 45277.6/0.03310103, 45277.5/0.30000000, 45277.3/1.54602737, 45276.6/0.15445238"
)
KRAKEN_V2_ASKS = (
    "45285.2/0.00100000, 45286.4/1.54571953, 45286.6/1.54571109, 45289.6/1.54560911, 45290.2/0.15890660, "
    "45291.8/1.54553491, 45294.7/0.04454749, 45296.1/0.35380000, 45297.5/0.09945542, 45299.5/0.18772827"
)


def test_kraken_v2_vector() -> None:
    assert kraken(_pairs(KRAKEN_V2_BIDS), _pairs(KRAKEN_V2_ASKS)) == 3310070434


def test_kraken_keeps_trailing_zeros_and_reads_decimals_exactly() -> None:
    bids, asks = _pairs(KRAKEN_V2_BIDS), _pairs(KRAKEN_V2_ASKS)
    # Decimals (a v2 message decoded with parse_float=Decimal) give the same text.
    dec = [(Decimal(p), Decimal(q)) for p, q in bids]
    assert kraken(dec, [(Decimal(p), Decimal(q)) for p, q in asks]) == 3310070434
    # Trailing zeros are part of the rule: dropping them (what a float would do) changes the CRC.
    stripped = [(p, q.rstrip("0")) for p, q in bids]
    assert kraken(stripped, asks) != 3310070434
    # A tiny Decimal is written without exponent.
    assert kraken([(Decimal("1E-7"), "1")], []) == zlib.crc32(b"11")
    # Only the top 10 of each side count.
    assert kraken([*bids, ("1.0", "1.0")], asks) == 3310070434


def test_ftx_real_partial() -> None:
    # A real FTX partial (nautilus_trader test data): floats as FTX sent them.
    msg = orjson.loads((DATA / "nautilus_ftx" / "ws_orderbook_partial.json").read_bytes())
    data = msg["data"]
    assert ftx(data["bids"], data["asks"]) == data["checksum"] == 881439700
    assert book_checksum("ftx", data["bids"], data["asks"]) == 881439700


def test_ftx_float_repr_rule() -> None:
    text = "10.0:1e-05:11.5:2.0"
    assert ftx([(10.0, 0.00001)], [(11.5, 2.0)]) == zlib.crc32(text.encode())
    # Text or Decimal input is written as FTX writes the float.
    assert ftx([("10", "0.00001")], [(Decimal("11.5"), "2")]) == zlib.crc32(text.encode())
    # Unsigned, top 100 only.
    bids = [(float(1000 - i), 1.0) for i in range(150)]
    asks = [(float(2000 + i), 1.0) for i in range(150)]
    assert ftx(bids, asks) == ftx(bids[:100], asks[:100]) >= 0


def test_bitfinex_string_and_sign() -> None:
    # Ask amounts are negative in the CRC; the book keeps them positive.
    bids = [("6000", "1.5"), ("5999.5", "0.25")]
    asks = [("6001", "2"), ("6002", "0.00001")]
    text = "6000:1.5:6001:-2:5999.5:0.25:6002:-0.00001"
    crc = zlib.crc32(text.encode())
    signed = crc - 2**32 if crc >= 2**31 else crc
    assert bitfinex(bids, asks) == signed
    # A book copied from the wire (negative ask amounts) gives the same value.
    assert bitfinex(bids, [("6001", "-2"), ("6002", "-0.00001")]) == signed
    # Floats are written as JavaScript writes them, not as Python's repr.
    assert bitfinex([(6000.0, 1.5), (5999.5, 0.25)], [(6001.0, 2.0), (6002.0, 1e-05)]) == signed
    assert bitfinex([(str(i), "1") for i in range(100, 60, -1)], []) == bitfinex(
        [(str(i), "1") for i in range(100, 75, -1)], []
    )


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1e-7, "1e-7"),
        (1.5e-7, "1.5e-7"),
        (0.000001, "0.000001"),
        (0.00001, "0.00001"),
        (123.0, "123"),
        (0.1, "0.1"),
        (-2.5, "-2.5"),
        (1e21, "1e+21"),
        (123456789012345680000.0, "123456789012345680000"),
        (19203.444049780002, "19203.444049780002"),
    ],
)
def test_js_number(value: float, text: str) -> None:
    assert js_number(value) == text


def test_empty_book_is_zero_for_every_venue() -> None:
    for fn in (okx, kraken, ftx, bitfinex):
        assert fn([], []) == 0
    for exchange in checksums.CHECKSUM_EXCHANGES:
        assert book_checksum(exchange, [], []) == 0


def test_dispatch() -> None:
    bids, asks = [("3366.1", "7"), ("3366", "6")], [("3366.8", "9"), ("3368", "8")]
    for exchange in ("okex", "okex-swap", "okex-futures", "okex-options"):
        assert book_checksum(exchange, bids, asks) == -1881014294
    assert book_checksum("kraken", _pairs(KRAKEN_V2_BIDS), _pairs(KRAKEN_V2_ASKS)) == 3310070434
    assert book_checksum("ftx-us", bids, asks) == ftx(bids, asks)
    assert book_checksum("bitfinex", bids, asks) == bitfinex(bids, asks)
    with pytest.raises(UsageError, match="binance"):
        book_checksum("binance", bids, asks)
    bad_books: list[Any] = [[["1"]], [None], [[None, "1"]], [["1", True]]]
    for bad in bad_books:
        with pytest.raises(UsageError):
            book_checksum("okex", bad, [])
    with pytest.raises(UsageError):
        book_checksum("ftx", [["abc", "1"]], [])


def test_strings_are_never_reformatted() -> None:
    # "0.10" and "0.1" are the same price but not the same text: the CRC must tell them apart.
    assert okx([("0.10", "1")], []) != okx([("0.1", "1")], [])
    assert okx([("0.10", "1")], []) % 2**32 == zlib.crc32(b"0.10:1")
    with pytest.raises(TypeError):
        okx([(True, "1")], [])

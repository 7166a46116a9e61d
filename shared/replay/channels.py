"""Which Tardis channels carry each of retape's streams, per exchange id.

Used both ways: a client asks a Tardis-compatible API for the channels of the stream it
wants (``filters``), and ``retape serve-archive`` answers a filter with the streams its
channels carry.  Channel names as Tardis lists them for its raw data feeds.
"""

from __future__ import annotations

from shared.model import Channel

_BINANCE = {
    Channel.BOOK: ("depth",),
    Channel.TRADES: ("trade", "aggTrade"),
    Channel.FUNDING: ("markPrice",),
}
_BYBIT = {
    Channel.BOOK: (
        "orderbook.1",
        "orderbook.50",
        "orderbook.200",
        "orderbook.500",
        "orderBookL2_25",
        "orderBook_200",
    ),
    Channel.TRADES: ("publicTrade", "trade"),
    Channel.FUNDING: ("tickers", "instrument_info"),
}
_OKX = {
    Channel.BOOK: ("books", "books-l2-tbt", "books50-l2-tbt", "books5"),
    Channel.TRADES: ("trades", "trades-all"),
    Channel.FUNDING: ("funding-rate",),
}

TARDIS_CHANNELS: dict[str, dict[Channel, tuple[str, ...]]] = {
    "binance": _BINANCE,
    "binance-futures": _BINANCE,
    "binance-delivery": _BINANCE,
    "binance-us": _BINANCE,
    "bybit": _BYBIT,
    "bybit-spot": _BYBIT,
    "okex": _OKX,
    "okex-swap": _OKX,
    "okex-futures": _OKX,
    "deribit": {
        Channel.BOOK: ("book",),
        Channel.TRADES: ("trades",),
        Channel.FUNDING: ("ticker", "perpetual"),
    },
    "ftx": {Channel.BOOK: ("orderbook",), Channel.TRADES: ("trades",)},
    "ftx-us": {Channel.BOOK: ("orderbook",), Channel.TRADES: ("trades",)},
    "kraken": {Channel.BOOK: ("book",), Channel.TRADES: ("trade",)},
    "cryptofacilities": {
        Channel.BOOK: ("book", "book_snapshot"),
        Channel.TRADES: ("trade", "trade_snapshot"),
        Channel.FUNDING: ("ticker",),
    },
    "bitfinex": {Channel.BOOK: ("book",), Channel.TRADES: ("trades",)},
    "coinbase": {Channel.BOOK: ("l2update", "snapshot"), Channel.TRADES: ("match", "last_match")},
    "bitmex": {
        Channel.BOOK: ("orderBookL2", "orderBookL2_25"),
        Channel.TRADES: ("trade",),
        Channel.FUNDING: ("funding",),
    },
}

# Binance trade id series (``TradeMsg.series``) and the channel that carries each.
BINANCE_SERIES_CHANNEL = {"t": "trade", "a": "aggTrade"}


def tardis_channels(exchange: str, channel: str, series: str = "") -> tuple[str, ...]:
    """The Tardis channels that carry ``channel`` of ``exchange`` (a trade ``series`` narrows
    Binance's two trade channels to one); empty when retape knows none."""
    table = TARDIS_CHANNELS.get(exchange, {})
    names = table.get(Channel(channel), ()) if channel in Channel._value2member_map_ else ()
    if series and table is _BINANCE and channel == Channel.TRADES:
        one = BINANCE_SERIES_CHANNEL.get(series)
        return (one,) if one else names
    return names


def our_channel(exchange: str, tardis_channel: str) -> str | None:
    """The retape channel a Tardis channel name carries (``book``, ``trades``, ``funding``);
    retape's own names are understood too.  None for a channel retape does not audit."""
    if tardis_channel in Channel._value2member_map_:
        return tardis_channel
    for ours, names in TARDIS_CHANNELS.get(exchange, {}).items():
        if tardis_channel in names:
            return ours.value
    return None


def tardis_symbol(exchange: str, symbol: str) -> str:
    """The symbol as a Tardis filter names it: Binance's stream names are lower case, the
    other venues keep the exchange's own spelling (retape's symbols are upper case)."""
    return symbol.lower() if exchange.startswith("binance") else symbol

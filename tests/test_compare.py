"""``retape compare A B``: real captures against copies with messages removed, delayed and altered.

The copies are built in ``tmp_path`` from the real files, so the truth is known: which ids were
taken out of which side, by how much receive times were shifted, which level was changed.  The
books' disagreements are counted again independently: Binance's by a sorted-dict rebuild here,
Kraken's by ``tests/reference.py``.
"""

from __future__ import annotations

import gzip
import json
import shutil
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from sortedcontainers import SortedDict

from producers.cli import main
from shared.auditors import AuditConfig
from shared.book import Book
from shared.compare import CompareConfig, compare
from shared.engine import Engine
from shared.model import BookMsg, StreamKey
from tests.reference import venue_books

DATA = Path(__file__).parent / "data"
USDM = DATA / "hftbacktest" / "usdm" / "btcusdt_20240808.gz"
KRAKEN_BOOKS = DATA / "cryptofeed" / "KRAKEN.ws.50.0"
KRAKEN_TRADES = DATA / "cryptofeed" / "KRAKEN.ws.48.0"
DEPTH = 10

DELAY_NS = 3_000_000  # every line of B: 3 ms later
EXTRA_NS = 50_000_000  # ten trades of B: 50 ms more


def _stream(report: dict[str, Any], exchange: str, symbol: str, channel: str) -> dict[str, Any]:
    found = [
        s
        for s in report["streams"]
        if (s["exchange"], s["symbol"], s["channel"]) == (exchange, symbol, channel)
    ]
    assert len(found) == 1, [(s["exchange"], s["symbol"], s["channel"]) for s in report["streams"]]
    return found[0]


def _top(view: dict[str, Any]) -> list[list[tuple[Decimal, Decimal]]]:
    return [[(Decimal(p), Decimal(q)) for p, q in view[side][:DEPTH]] for side in ("bids", "asks")]


# -- Binance USD-M (ids): hftbacktest capture ----------------------------------------------


@dataclass
class UsdmCase:
    a: Path
    b: Path
    altered_u: int  # the diff of B with a changed bid quantity
    removed_b: list[dict[str, Any]]  # diffs taken out of B
    resumed_b: dict[str, Any]  # the diff B has after them
    removed_a: list[int]  # trade ids taken out of A
    a_times: dict[int, int]  # u -> receive time (us) of each diff in A
    b_times: dict[int, int]


def _split(line: bytes) -> tuple[int, bytes]:
    ts, raw = line.split(b" ", 1)
    return int(ts), raw


@pytest.fixture(scope="module")
def usdm(tmp_path_factory: pytest.TempPathFactory) -> UsdmCase:
    """A: the capture without two trades.  B: the capture without three depth diffs, every line
    received 3 ms later (ten trades 53 ms later), one bid quantity of one diff changed."""
    lines = gzip.decompress(USDM.read_bytes()).split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    depth = [i for i, line in enumerate(lines) if b'"e":"depthUpdate"' in line]
    trades = [i for i, line in enumerate(lines) if b'"e":"trade"' in line]
    # B: a bid near the touch of the 200th diff (after the REST snapshot) gets another quantity.
    altered_at = depth[200]
    ts, raw = _split(lines[altered_at])
    obj = json.loads(raw)
    k = max(
        (i for i, lv in enumerate(obj["data"]["b"]) if Decimal(lv[1]) > 0),
        key=lambda i: Decimal(obj["data"]["b"][i][0]),
    )
    assert obj["data"]["b"][k][1] != "7.777"
    obj["data"]["b"][k][1] = "7.777"
    altered = b"%d %s" % (ts, json.dumps(obj, separators=(",", ":")).encode())
    removed_b = set(depth[3000:3003])
    removed_a = set(trades[5000:5002])
    delayed_more = set(trades[10000:10010])

    a_lines = [line for i, line in enumerate(lines) if i not in removed_a]
    b_lines = []
    for i, line in enumerate(lines):
        if i in removed_b:
            continue
        ts, raw = _split(altered if i == altered_at else line)
        ts += DELAY_NS + (EXTRA_NS if i in delayed_more else 0)
        b_lines.append(b"%d %s" % (ts, raw))
    top = tmp_path_factory.mktemp("usdm")
    (top / "a").mkdir()
    (top / "b").mkdir()
    a = top / "a" / "btcusdt_20240808.gz"
    b = top / "b" / "btcusdt_20240808.gz"
    a.write_bytes(gzip.compress(b"\n".join(a_lines) + b"\n"))
    b.write_bytes(gzip.compress(b"\n".join(b_lines) + b"\n"))

    def times(source: list[bytes]) -> dict[int, int]:
        out = {}
        for line in source:
            if b'"e":"depthUpdate"' in line:
                ts, raw = _split(line)
                out[json.loads(raw)["data"]["u"]] = ts // 1000
        return out

    return UsdmCase(
        a,
        b,
        obj["data"]["u"],
        [json.loads(_split(lines[i])[1])["data"] for i in sorted(removed_b)],
        json.loads(_split(lines[depth[3003]])[1])["data"],
        [json.loads(_split(lines[i])[1])["data"]["t"] for i in sorted(removed_a)],
        times(a_lines),
        times(b_lines),
    )


@pytest.fixture(scope="module")
def usdm_report(usdm: UsdmCase) -> dict[str, Any]:
    return compare([str(usdm.a)], [str(usdm.b)], CompareConfig(depth=DEPTH))


def test_usdm_messages_only_in_a_only_in_b_and_in_both(usdm_report: dict[str, Any]) -> None:
    book = _stream(usdm_report, "binance-futures", "BTCUSDT", "book")
    trades = _stream(usdm_report, "binance-futures", "BTCUSDT", "trades")
    assert book["matched_by"] == trades["matched_by"] == "id"
    # 6551 diffs and the REST snapshot; B lost three diffs.  The altered diff keeps its ids.
    assert book["messages"] == {
        "a": 6552,
        "b": 6549,
        "both": 6549,
        "only_a": 3,
        "only_b": 0,
        "duplicates_a": 0,
        "duplicates_b": 0,
    }
    assert trades["messages"] == {
        "a": 21311,
        "b": 21313,
        "both": 21311,
        "only_a": 0,
        "only_b": 2,
        "duplicates_a": 0,
        "duplicates_b": 0,
    }
    assert usdm_report["only_in_a"] == usdm_report["only_in_b"] == []


def test_usdm_gaps_each_side_fills_for_the_other(usdm: UsdmCase, usdm_report: dict[str, Any]) -> None:
    book = _stream(usdm_report, "binance-futures", "BTCUSDT", "book")
    removed = usdm.removed_b
    assert book["gaps"]["a"] == {"count": 0, "filled": 0, "partly_filled": 0, "list": []}
    # USD-M chains pu == previous u: the break is after the last u B has, before the next U.
    assert book["gaps"]["b"] == {
        "count": 1,
        "filled": 1,
        "partly_filled": 0,
        "list": [
            {
                "after": removed[0]["pu"],
                "before": usdm.resumed_b["U"],
                "missing": None,  # USD-M ids are not consecutive: how many is unknown
                "other_has": 3,
                "filled": True,
            }
        ],
    }
    assert usdm.resumed_b["pu"] == removed[-1]["u"]
    trades = _stream(usdm_report, "binance-futures", "BTCUSDT", "trades")
    first, second = usdm.removed_a
    assert second == first + 1
    assert trades["gaps"]["a"] == {
        "count": 1,
        "filled": 1,
        "partly_filled": 0,
        "list": [{"after": first - 1, "before": second + 1, "missing": 2, "other_has": 2, "filled": True}],
    }
    assert trades["gaps"]["b"]["count"] == 0


def test_usdm_receive_time_difference(usdm_report: dict[str, Any]) -> None:
    book = _stream(usdm_report, "binance-futures", "BTCUSDT", "book")
    assert book["receive_ms"] == {
        "matched": 6549,
        "min": 3.0,
        "p50": 3.0,
        "p99": 3.0,
        "max": 3.0,
        "earlier": "a",
        "summary": "A earlier by a p50 of 3 ms",
    }
    trades = _stream(usdm_report, "binance-futures", "BTCUSDT", "trades")
    # 10 of 21311 trades 53 ms later: under 1 %, so only the maximum shows them.
    assert trades["receive_ms"] == {
        "matched": 21311,
        "min": 3.0,
        "p50": 3.0,
        "p99": 3.0,
        "max": 53.0,
        "earlier": "a",
        "summary": "A earlier by a p50 of 3 ms",
    }
    assert "own clock" in usdm_report["clocks"]


def _usdm_tops(path: Path) -> dict[int, tuple[list[list[tuple[Decimal, Decimal]]], bool]]:
    """An independent rebuild (sorted dicts of exact values, Binance's documented futures
    procedure): the top 10 of each side and whether the book is in sync, after each diff by ``u``."""
    bids: SortedDict = SortedDict()
    asks: SortedDict = SortedDict()
    held: list[dict[str, Any]] = []
    out: dict[int, tuple[list[list[tuple[Decimal, Decimal]]], bool]] = {}
    state: dict[str, Any] = {"snapshot": None, "last": None, "safe": False}

    def put(side: SortedDict, levels: list[list[str]]) -> None:
        for p, q in levels:
            if Decimal(q) == 0:
                side.pop(Decimal(p), None)
            else:
                side[Decimal(p)] = Decimal(q)

    def diff(d: dict[str, Any]) -> None:
        snapshot, last = state["snapshot"], state["last"]
        if last is None:
            if d["u"] < snapshot:
                return  # older than the snapshot
            ok = d["U"] <= snapshot <= d["u"] or d["pu"] == snapshot
        else:
            ok = d["pu"] == last
        state["safe"] = state["safe"] and ok
        put(bids, d["b"])
        put(asks, d["a"])
        state["last"] = d["u"]
        top = [list(reversed(bids.items()[-DEPTH:])), list(asks.items()[:DEPTH])]
        out[d["u"]] = (top, state["safe"])

    for line in gzip.decompress(path.read_bytes()).splitlines():
        obj = json.loads(_split(line)[1])
        if "lastUpdateId" in obj:
            bids.clear()
            asks.clear()
            put(bids, obj["bids"])
            put(asks, obj["asks"])
            state.update(snapshot=obj["lastUpdateId"], last=None, safe=True)
            for d in held:
                diff(d)
            held.clear()
        elif obj.get("data", {}).get("e") == "depthUpdate":
            if state["snapshot"] is None:
                held.append(obj["data"])
            else:
                diff(obj["data"])
    return out


def test_usdm_books_disagree_from_the_altered_diff(usdm: UsdmCase, usdm_report: dict[str, Any]) -> None:
    """Counted again by an independent rebuild: the top 10 of A's and B's books after every diff
    both have (a diff after a break is applied all the same, the book unsafe, as the audit does)."""
    book = _stream(usdm_report, "binance-futures", "BTCUSDT", "book")["book"]
    tops_a, tops_b = _usdm_tops(usdm.a), _usdm_tops(usdm.b)
    common = [u for u in tops_a if u in tops_b]
    disagree = [u for u in common if tops_a[u][0] != tops_b[u][0]]
    both_safe = [u for u in disagree if tops_a[u][1] and tops_b[u][1]]
    assert disagree[0] == usdm.altered_u
    assert book["disagree"] == len(disagree) > len(both_safe) > 0
    assert book["disagree_both_safe"] == len(both_safe)  # the changed quantity: no venue rule sees it
    assert book["compared"] == len(common) + 1  # and the REST snapshot both have
    assert book["compared"] + book["not_compared"] == 6549
    first = book["first"][0]
    assert first["id"] == usdm.altered_u
    assert first["a"]["safe"] and first["b"]["safe"]
    changed = [lv for lv in first["levels"] if lv["side"] == "bid"]
    assert len(changed) == 1 and changed[0]["b"][1] == "7.777" and changed[0]["a"][1] != "7.777"
    assert changed[0]["a"][0] == changed[0]["b"][0]
    assert [d["id"] for d in book["first"]] == disagree[:5]
    assert [d["b"]["safe"] for d in book["first"]] == [tops_b[u][1] for u in disagree[:5]]


# -- Kraken spot (no ids): cryptofeed capture, books and trades --------------------------


@dataclass
class KrakenCase:
    a: Path
    b: Path
    altered_qty: str  # the quantity B has in one XMR/USD book update instead of the original


def _cf_shift(line: bytes, us: int) -> bytes:
    """A cryptofeed received line ``<epoch s>: <json>`` received ``us`` later (exactly)."""
    ts, sep, raw = line.partition(b": ")
    whole, _, frac = ts.partition(b".")
    total = int(whole) * 1_000_000 + int((frac + b"000000")[:6]) + us
    rest = frac[6:]  # digits past the microsecond are kept as they were
    return b"%d.%06d%s%s%s" % (total // 1_000_000, total % 1_000_000, rest, sep, raw)


@pytest.fixture(scope="module")
def kraken(tmp_path_factory: pytest.TempPathFactory) -> KrakenCase:
    """A: the capture as recorded.  B: received 2 ms later, without one XMR/USD book update
    and one SC/EUR trade message, and with a quantity of another XMR/USD update changed."""
    books = KRAKEN_BOOKS.read_bytes().split(b"\n")
    trades = KRAKEN_TRADES.read_bytes().split(b"\n")
    xmr = [i for i, line in enumerate(books) if line.endswith(b'"book-1000","XMR/USD"]') and b'"a"' in line]
    removed_at, altered_at = xmr[100], xmr[40]
    ts, _, raw = books[altered_at].partition(b": ")
    obj = json.loads(raw)
    level = next(lv for part in obj[1:-2] for side in ("a", "b") for lv in part.get(side, []))
    level[1] = "12.34500000" if level[1] != "12.34500000" else "12.34600000"
    altered = ts + b": " + json.dumps(obj, separators=(",", ":")).encode()
    sc = [i for i, line in enumerate(trades) if line.endswith(b'"trade","SC/EUR"]')]

    def later(line: bytes) -> bytes:
        return _cf_shift(line, 2000) if line[:1].isdigit() else line

    b_books = [later(altered if i == altered_at else line) for i, line in enumerate(books) if i != removed_at]
    b_trades = [later(line) for i, line in enumerate(trades) if i != sc[2]]
    top = tmp_path_factory.mktemp("kraken")
    for side in ("a", "b"):
        (top / side).mkdir()
    shutil.copy(KRAKEN_BOOKS, top / "a" / KRAKEN_BOOKS.name)
    shutil.copy(KRAKEN_TRADES, top / "a" / KRAKEN_TRADES.name)
    (top / "b" / KRAKEN_BOOKS.name).write_bytes(b"\n".join(b_books))
    (top / "b" / KRAKEN_TRADES.name).write_bytes(b"\n".join(b_trades))
    return KrakenCase(top / "a", top / "b", level[1])


@pytest.fixture(scope="module")
def kraken_report(kraken: KrakenCase) -> dict[str, Any]:
    return compare([str(kraken.a)], [str(kraken.b)], CompareConfig(depth=DEPTH))


def test_kraken_matched_by_content(kraken_report: dict[str, Any]) -> None:
    xmr = _stream(kraken_report, "kraken", "XMR/USD", "book")
    assert xmr["matched_by"] == "content"
    assert xmr["gaps"] is None  # Kraken numbers no book messages
    n = xmr["messages"]["a"]
    # B lacks one update and holds the altered one instead of the original.
    assert xmr["messages"] == {
        "a": n,
        "b": n - 1,
        "both": n - 2,
        "only_a": 2,
        "only_b": 1,
        "duplicates_a": 0,
        "duplicates_b": 0,
    }
    assert xmr["receive_ms"] is not None
    assert (xmr["receive_ms"]["p50"], xmr["receive_ms"]["max"], xmr["receive_ms"]["min"]) == (2.0, 2.0, 2.0)
    assert xmr["receive_ms"]["summary"] == "A earlier by a p50 of 2 ms"
    # Every other book stream is the same on both sides, 2 ms later.
    for s in kraken_report["streams"]:
        if s["channel"] == "book" and s["symbol"] != "XMR/USD":
            assert s["messages"]["only_a"] == s["messages"]["only_b"] == 0
            assert s["book"]["disagree"] == 0
            assert s["receive_ms"]["p50"] == 2.0


def test_kraken_trades_without_ids(kraken_report: dict[str, Any]) -> None:
    sc = _stream(kraken_report, "kraken", "SC/EUR", "trades")
    assert sc["matched_by"] == "content" and sc["gaps"] is None
    # Six trades in five messages; B lacks the third message (one trade).
    assert sc["messages"] == {
        "a": 6,
        "b": 5,
        "both": 5,
        "only_a": 1,
        "only_b": 0,
        "duplicates_a": 0,
        "duplicates_b": 0,
    }
    assert sc["receive_ms"]["p50"] == sc["receive_ms"]["max"] == 2.0
    xmr = _stream(kraken_report, "kraken", "XMR/USD", "trades")
    assert xmr["messages"]["both"] == 4 and xmr["messages"]["only_a"] == xmr["messages"]["only_b"] == 0


def test_kraken_books_disagree_as_the_reference_says(
    kraken: KrakenCase, kraken_report: dict[str, Any]
) -> None:
    book = _stream(kraken_report, "kraken", "XMR/USD", "book")["book"]

    def xmr_lines(folder: Path) -> list[bytes]:
        lines = (folder / KRAKEN_BOOKS.name).read_bytes().split(b"\n")
        return [line for line in lines if line.endswith(b'"XMR/USD"]')]

    def time_of(line: bytes) -> int:
        ts = line.partition(b": ")[0]
        whole, _, frac = ts.partition(b".")
        return int(whole) * 1_000_000 + int((frac + b"000000")[:6])

    # Matched messages: the same message text on both sides (B's received 2 ms later).
    raw_b = {line.partition(b": ")[2]: time_of(line) for line in xmr_lines(kraken.b)}
    pairs = [
        (time_of(line), raw_b[raw])
        for line in xmr_lines(kraken.a)
        if (raw := line.partition(b": ")[2]) in raw_b
    ]
    books_a = venue_books([str(kraken.a / KRAKEN_BOOKS.name)], "kraken", "XMR/USD", [t for t, _ in pairs])
    books_b = venue_books([str(kraken.b / KRAKEN_BOOKS.name)], "kraken", "XMR/USD", [t for _, t in pairs])
    disagree = [ta for ta, tb in pairs if _top(books_a[ta]) != _top(books_b[tb])]
    assert book["disagree"] == len(disagree) > 0
    assert book["first"][0]["a"]["local_us"] == disagree[0]
    # The altered update breaks B's checksum: B's book is unsafe where they disagree.
    assert book["disagree_both_safe"] == 0
    assert not book["first"][0]["b"]["safe"]


# -- other venues with ids: one book message taken out of B ----------------------------


@dataclass(frozen=True)
class IdVenue:
    exchange: str
    files: tuple[Path, ...]  # copied to both sides; the first holds the book messages
    marker: bytes  # in a book update line
    symbol: Any  # the message -> its symbol
    after: Any  # the message -> the last id before it (what a break after its removal names)
    missing: Any  # the message -> the ids it carries (None where ids are not consecutive)


ID_VENUES = [
    IdVenue(
        "deribit",
        (DATA / "cryptofeed_deribit" / "DERIBIT-5dd9ce.0",),
        b'"type":"change"',
        lambda o: o["params"]["data"]["instrument_name"],
        lambda o: o["params"]["data"]["prev_change_id"],
        lambda o: None,
    ),
    IdVenue(
        "cryptofacilities",
        (DATA / "cryptofeed" / "KRAKEN_FUTURES.ws.1.0",),
        b'{"feed":"book","product_id"',
        lambda o: o["product_id"],
        lambda o: o["seq"] - 1,
        lambda o: 1,
    ),
    IdVenue(
        "binance",
        (DATA / "cryptofeed" / "BINANCE.ws.1.0", DATA / "cryptofeed" / "BINANCE.http.0.0"),
        b'"e":"depthUpdate"',
        lambda o: o["data"]["s"],
        lambda o: o["data"]["U"] - 1,
        lambda o: o["data"]["u"] - o["data"]["U"] + 1,
    ),
]


@pytest.mark.parametrize("venue", ID_VENUES, ids=lambda v: v.exchange)
def test_a_message_missing_in_b_is_a_gap_a_fills(venue: IdVenue, tmp_path: Path) -> None:
    lines = venue.files[0].read_bytes().split(b"\n")
    updates = [i for i, line in enumerate(lines) if venue.marker in line and line[:1].isdigit()]
    symbols = [venue.symbol(json.loads(lines[i].partition(b": ")[2])) for i in updates]
    symbol = max(sorted(set(symbols)), key=symbols.count)
    mine = [i for i, s in zip(updates, symbols, strict=True) if s == symbol]
    removed = mine[len(mine) // 2]
    message = json.loads(lines[removed].partition(b": ")[2])
    for side in ("a", "b"):
        (tmp_path / side).mkdir()
        for f in venue.files:
            shutil.copy(f, tmp_path / side / f.name)
    (tmp_path / "b" / venue.files[0].name).write_bytes(b"\n".join(lines[:removed] + lines[removed + 1 :]))

    report = compare([str(tmp_path / "a")], [str(tmp_path / "b")])
    book = _stream(report, venue.exchange, symbol.upper(), "book")
    assert book["matched_by"] == "id"
    assert (book["messages"]["only_a"], book["messages"]["only_b"]) == (1, 0)
    assert book["messages"]["both"] == book["messages"]["b"] == book["messages"]["a"] - 1
    assert book["gaps"]["a"]["count"] == 0
    assert book["gaps"]["b"]["count"] == book["gaps"]["b"]["filled"] == 1
    (gap,) = book["gaps"]["b"]["list"]
    assert (gap["after"], gap["missing"], gap["other_has"]) == (
        venue.after(message),
        venue.missing(message),
        1,
    )
    others = [s for s in report["streams"] if s is not book]
    assert all(s["messages"]["only_a"] == s["messages"]["only_b"] == 0 for s in others)


# -- identity, the command line ------------------------------------------------------------


def test_a_recording_against_itself_is_all_zero(usdm: UsdmCase, kraken: KrakenCase) -> None:
    for path in (str(USDM), str(kraken.a)):
        report = compare([path], [path], CompareConfig(depth=DEPTH))
        assert report["streams"] and report["only_in_a"] == report["only_in_b"] == []
        for s in report["streams"]:
            m = s["messages"]
            assert m["a"] == m["b"] == m["both"] > 0
            assert m["only_a"] == m["only_b"] == m["duplicates_a"] == m["duplicates_b"] == 0
            if s["gaps"] is not None:
                assert s["gaps"]["a"]["count"] == s["gaps"]["b"]["count"] == 0
            if s["receive_ms"] is not None:
                r = s["receive_ms"]
                assert (r["min"], r["p50"], r["p99"], r["max"], r["earlier"]) == (0.0, 0.0, 0.0, 0.0, None)
            if s["book"] is not None:
                assert s["book"]["disagree"] == 0 and s["book"]["first"] == []


def test_json_on_standard_output_sorted_and_exact(
    kraken: KrakenCase, kraken_report: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["compare", str(kraken.a), str(kraken.b)]) == 0
    out = capsys.readouterr().out
    report = orjson.loads(out)
    assert report["streams"] == kraken_report["streams"]
    assert out == json.dumps(report, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    first = _stream(report, "kraken", "XMR/USD", "book")["book"]["first"][0]
    assert first["levels"]
    for lv in first["levels"]:
        for value in (lv["a"] or []) + (lv["b"] or []):
            assert isinstance(value, str)  # prices and quantities as the exchange wrote them


def test_out_writes_json_and_html(
    kraken: KrakenCase, kraken_report: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cmp"
    assert main(["compare", str(kraken.a), str(kraken.b), "--out", str(out)]) == 0
    assert "compare.json" in capsys.readouterr().out
    report = orjson.loads((out / "compare.json").read_bytes())
    assert report["streams"] == kraken_report["streams"]
    page = (out / "compare.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "kraken XMR/USD book" in page
    assert "A earlier by a p50 of 2 ms" in page and kraken.altered_qty in page
    assert "<script" not in page and "http" not in page  # self-contained


def test_no_common_stream_exits_1_and_still_reports(
    kraken: KrakenCase, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["compare", str(DATA / "cryptofeed_deribit"), str(kraken.a)]) == 1
    captured = capsys.readouterr()
    report = orjson.loads(captured.out)
    assert report["streams"] == []
    assert {s["exchange"] for s in report["only_in_a"]} == {"deribit"}
    assert {s["exchange"] for s in report["only_in_b"]} == {"kraken"}
    assert captured.err.startswith("retape: A and B share no stream") and captured.err.count("\n") == 1


def _exit_code(args: list[str]) -> int:
    try:
        return main(args)
    except SystemExit as exc:  # argparse's own usage errors
        return int(exc.code or 0)


@pytest.mark.parametrize(
    "args",
    [
        ["compare"],
        ["compare", "only-one"],
        ["compare", str(USDM), "/no/such/path"],
        ["compare", str(USDM), str(USDM), "--depth", "0"],
        ["compare", str(USDM), str(USDM), "--depth", "x"],
        ["compare", str(USDM), str(USDM), "--out", "/proc/no-such-dir/out"],
    ],
)
def test_usage_errors_exit_2_with_one_line(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert _exit_code(args) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("retape: error: ") and captured.err.count("\n") == 1
    assert "Traceback" not in captured.err


# -- read as the audit reads: cut-off files, links proven late, the engine's hooks -------------

BITFINEX = DATA / "cryptofeed" / "BITFINEX.ws.11.0"


def test_a_cut_off_gzip_counts_its_malformed_line(tmp_path: Path) -> None:
    """B's gzip ends two thirds in: its cut-off end is a malformed line, as the audit counts it."""
    data = gzip.compress(BITFINEX.read_bytes())
    for side, cut in (("a", len(data)), ("b", len(data) * 2 // 3)):
        (tmp_path / side).mkdir()
        (tmp_path / side / f"{BITFINEX.name}.gz").write_bytes(data[:cut])
    report = compare([str(tmp_path / "a")], [str(tmp_path / "b")])
    assert report["a"]["malformed"] == 0
    assert report["b"]["malformed"] == 1
    assert report["b"]["files"] == 1 and report["b"]["not_read"] == []
    audit = Engine(AuditConfig()).run([str(tmp_path / "b")])
    assert [(i.malformed, i.cut_off) for i in audit.inputs] == [(1, True)]
    # B holds the head of A's messages: some only in A, none only in B.
    assert sum(s["messages"]["only_a"] for s in report["streams"]) > 0
    assert all(s["messages"]["only_b"] == 0 for s in report["streams"])


def test_bitfinex_messages_of_two_channels_swapped_are_no_gap(tmp_path: Path) -> None:
    """Lines 909 and 910 swapped in B: seq 864 (MNABTC book) arrives before 863 (TESTBTC book).
    864 goes out unproven, 863 proves its link late: every stream is still in order, no gap."""
    lines = BITFINEX.read_bytes().split(b"\n")
    first, second = lines[908], lines[909]
    assert first.endswith(b"[232957,[60422,1,-0.6880584],863]")  # TESTBTC:TESTUSD book
    assert second.endswith(b"[232956,[0.00002531,0,-1],864]")  # MNABTC book
    lines[908], lines[909] = second, first
    for side in ("a", "b"):
        (tmp_path / side).mkdir()
    shutil.copy(BITFINEX, tmp_path / "a" / BITFINEX.name)
    (tmp_path / "b" / BITFINEX.name).write_bytes(b"\n".join(lines))

    audit = Engine(AuditConfig()).run([str(tmp_path / "b")])
    assert all(not any(s.faults.values()) for s in audit.streams)
    report = compare([str(tmp_path / "a")], [str(tmp_path / "b")])
    assert report["streams"]
    for s in report["streams"]:
        m = s["messages"]
        assert m["a"] == m["b"] == m["both"] and m["only_a"] == m["only_b"] == 0
        if s["gaps"] is not None:
            assert s["gaps"]["a"]["count"] == s["gaps"]["b"]["count"] == 0, s["symbol"]
        if s["book"] is not None:
            assert s["book"]["disagree"] == 0
    mnabtc = _stream(report, "bitfinex", "MNABTC", "book")
    assert mnabtc["matched_by"] == "id" and mnabtc["gaps"] is not None


def test_the_engine_hooks_see_every_message_and_change_nothing() -> None:
    """``on_event`` sees each message the auditors are fed, ``on_applied`` each book message
    applied; the audit with them is the audit without them."""
    seen: dict[StreamKey, int] = {}
    applied: dict[StreamKey, int] = {}
    paths = [str(BITFINEX), str(KRAKEN_BOOKS)]

    def on_event(ev: Any, path: str) -> None:
        assert path == ev.path
        seen[ev.key] = seen.get(ev.key, 0) + 1

    def on_applied(m: BookMsg, book: Book, in_sync: bool) -> None:
        applied[m.key] = applied.get(m.key, 0) + 1

    hooked = Engine(AuditConfig(), on_event=on_event, on_applied=on_applied).run(paths)
    plain = Engine(AuditConfig()).run(paths)
    assert [s.as_json() for s in hooked.streams] == [s.as_json() for s in plain.streams]
    assert seen == {s.key: s.messages for s in plain.streams}
    books = {s.key for s in plain.streams if s.key.channel == "book"}
    assert set(applied) == books
    assert all(0 < applied[k] <= seen[k] for k in books)

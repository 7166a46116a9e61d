"""The command line and the report format that outside checks rely on."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from shared.report import verify_records

DATA = Path(__file__).parent / "data"
CF = DATA / "cryptofeed"
FAULTS = [
    "gap",
    "duplicate",
    "out_of_order",
    "crossed_book",
    "invalid_value",
    "checksum_mismatch",
    "timestamp_drift",
    "funding_discontinuity",
    "disconnect",
    "snapshot_mismatch",
    "format_change",
]


def retape(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "producers.cli", *args],
        input=stdin,
        capture_output=True,
        check=False,
        cwd=Path(__file__).parent.parent,
    )


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("out")
    proc = retape(
        "audit",
        str(CF / "BINANCE_FUTURES.ws.1.0"),
        str(CF / "BINANCE_FUTURES.http.0.0"),
        "--out",
        str(out),
        "--book-interval",
        "1000",
    )
    assert proc.returncode == 0, proc.stderr
    assert b"binance-futures SUSHIUSDT book" in proc.stdout
    return out


def test_report_has_exactly_the_contract_shape(audited: Path) -> None:
    report = orjson.loads((audited / "report.json").read_bytes())
    assert list(report) == ["inputs", "malformed", "streams"]
    for i in report["inputs"]:
        assert {"path", "sha256", "lines", "malformed"} <= set(i)
        assert i["sha256"] == hashlib.sha256(Path(i["path"]).read_bytes()).hexdigest()
    assert report["malformed"] == 0
    assert report["streams"]
    for s in report["streams"]:
        assert list(s) == [
            "exchange",
            "symbol",
            "channel",
            "messages",
            "faults",
            "gaps",
            "gaps_repaired",
            "replayed_messages",
            "latency_ms",
            "unsafe",
            "unsafe_seconds",
            "unsafe_by_cause",
            "rates",
            "integrity_score",
            "input_damage",
            "first_time",
            "last_time",
            "first_us",
            "last_us",
        ]
        assert list(s["faults"]) == FAULTS
        assert list(s["rates"]) == [
            "missing_trades",
            "duplicate_messages",
            "drift_over_100ms",
            "book_unsafe_time",
            "funding_discontinuities",
        ]
        assert all(r is None or 0.0 <= r <= 1.0 for r in s["rates"].values())
        for u in s["unsafe"]:
            assert list(u) == ["from", "to", "from_us", "to_us", "cause", "messages"]
            assert u["cause"] in ("gap", "checksum_mismatch", "invalid_value", "disconnect", "no_snapshot")
        for g in s["gaps"]:
            assert {"after", "before", "missing", "repaired", "source"} <= set(g)
        assert s["channel"] in ("book", "trades", "funding")
        assert s["symbol"] == s["symbol"].upper()
        assert set(s["latency_ms"]) == {"p50", "p99", "max"}
        assert 0.0 <= s["integrity_score"] <= 100.0
    books = [s for s in report["streams"] if s["channel"] == "book"]
    assert len(books) == 4 and all(s["faults"]["gap"] == 0 for s in books)


def test_audit_records_are_hash_chained_and_the_manifest_covers_inputs(audited: Path) -> None:
    ok, final = verify_records(str(audited))
    assert ok, final
    manifest = orjson.loads((audited / "audit" / "MANIFEST").read_bytes())
    assert manifest["final_hash"] == final
    assert set(manifest["inputs"]) == {
        str(CF / "BINANCE_FUTURES.ws.1.0"),
        str(CF / "BINANCE_FUTURES.http.0.0"),
    }
    records = [orjson.loads(line) for line in (audited / "audit" / "records.jsonl").read_bytes().splitlines()]
    assert {r["type"] for r in records} >= {"input", "summary"}
    # Tampering with one record breaks the chain.
    tampered = audited.parent / "tampered"
    shutil.copytree(audited, tampered)
    path = tampered / "audit" / "records.jsonl"
    lines = path.read_bytes().splitlines()
    lines[1] = lines[1].replace(b'"type"', b'"typ"', 1)
    path.write_bytes(b"\n".join(lines) + b"\n")
    assert verify_records(str(tampered))[0] is False


def test_rebuilt_books_are_tardis_book_snapshot_25_csv(audited: Path) -> None:
    files = sorted((audited / "books").glob("*.csv"))
    assert files and files[0].name.startswith("binance-futures_book_snapshot_25_")
    header, *rows = files[0].read_text().splitlines()
    cols = header.split(",")
    assert cols[:8] == [
        "exchange",
        "symbol",
        "timestamp",
        "local_timestamp",
        "asks[0].price",
        "asks[0].amount",
        "bids[0].price",
        "bids[0].amount",
    ]
    assert len(cols) == 4 + 25 * 4
    assert rows and all(len(r.split(",")) == len(cols) for r in rows)
    first = rows[0].split(",")
    assert float(first[6]) < float(first[4])  # best bid below best ask


def test_same_inputs_give_the_same_bytes(audited: Path, tmp_path: Path) -> None:
    proc = retape(
        "audit",
        str(CF / "BINANCE_FUTURES.ws.1.0"),
        str(CF / "BINANCE_FUTURES.http.0.0"),
        "--out",
        str(tmp_path),
        "--book-interval",
        "1000",
        "--quiet",
    )
    assert proc.returncode == 0 and proc.stdout == b""
    for rel in ("report.json", "audit/records.jsonl", "audit/MANIFEST"):
        assert (tmp_path / rel).read_bytes() == (audited / rel).read_bytes(), rel
    for f in (audited / "books").glob("*.csv"):
        assert (tmp_path / "books" / f.name).read_bytes() == f.read_bytes()


def test_fail_under_exits_1_and_usage_errors_exit_2(tmp_path: Path) -> None:
    ws = str(CF / "BINANCE_DELIVERY.ws.1.0")
    assert retape("audit", ws, "--out", str(tmp_path), "--fail-under", "100", "--quiet").returncode == 1
    assert retape("audit", ws, "--out", str(tmp_path), "--fail-under", "0", "--quiet").returncode == 0
    for bad in (
        ["audit"],
        ["audit", ws, "--reorder-window", "-3"],
        ["audit", ws, "--drift-ms", "x"],
        ["nope"],
        ["book", ws, "--exchange", "binance", "--symbol", "X", "--at", "yesterday"],
    ):
        proc = retape(*bad)
        assert proc.returncode == 2, bad
        assert proc.stderr.startswith(b"retape: error:") and b"Traceback" not in proc.stderr
    for cmd in ("audit", "book", "checksum"):
        assert retape(cmd, "--help").returncode == 0


def test_book_command_prints_the_contract_json() -> None:
    path = str(DATA / "hftbacktest" / "spot" / "btcusdt_20240808.gz")
    proc = retape(
        "book",
        path,
        "--exchange",
        "binance",
        "--symbol",
        "BTCUSDT",
        "--at",
        "2024-08-08T23:59:00Z",
        "--depth",
        "5",
    )
    assert proc.returncode == 0, proc.stderr
    got = orjson.loads(proc.stdout)
    assert list(got) == ["exchange", "symbol", "at", "local_timestamp", "safe", "bids", "asks"]
    assert got["safe"] is True and len(got["bids"]) == 5 and got["at"] == "2024-08-08T23:59:00.000000Z"
    assert got["bids"][0][0].endswith("000000")  # exact text as sent: "61837.63000000"


def test_book_says_when_the_time_is_outside_the_stream_or_the_stream_is_not_there() -> None:
    path = str(DATA / "hftbacktest" / "spot" / "btcusdt_20240808.gz")
    args = ["book", path, "--exchange", "binance", "--depth", "1"]
    after = retape(*args, "--symbol", "BTCUSDT", "--at", "2024-08-09T01:00:00Z")
    got = orjson.loads(after.stdout)
    assert after.returncode == 0 and got["safe"] is False and got["bids"]  # the last book, not trusted
    assert got["note"].startswith("after the stream's last message (2024-08-08T23:59:59")
    assert b"retape: note: --at 2024-08-09T01:00:00Z is after the stream's last message" in after.stderr
    before = retape(*args, "--symbol", "BTCUSDT", "--at", "2024-08-08T12:00:00Z")
    got = orjson.loads(before.stdout)
    assert before.returncode == 0 and got["safe"] is False and got["bids"] == [] and "before" in got["note"]
    missing = retape(*args, "--symbol", "ETHUSDT", "--at", "2024-08-08T23:59:00Z")
    assert missing.returncode == 2 and missing.stdout == b""
    assert missing.stderr.startswith(b"retape: error: no binance ETHUSDT book in the inputs")
    assert b"binance BTCUSDT" in missing.stderr


def test_version_help_defaults_and_unknown_status() -> None:
    version = retape("--version")
    assert version.returncode == 0 and version.stdout.startswith(b"retape ")
    helptext = retape("audit", "--help").stdout
    assert b"(default: 100.0)" in helptext and b"(default: 25)" in helptext
    assert b"(default: None)" not in helptext and b"(default: False)" not in helptext


# The documented vectors (specs/exchange-rules.md), through the command line.
CHECKSUM_VECTORS = [
    (
        "okex",
        {"bids": [["3366.1", "7"], ["3366", "6"]], "asks": [["3366.8", "9"], ["3368", "8"]]},
        "-1881014294",
    ),
    ("ftx-tr", {"bids": [], "asks": []}, "0"),  # FTX Turkey: FTX's rule, as the README says
    (
        "okex-swap",
        {"bids": [["3366.1", "7"]], "asks": [["3366.8", "9"], ["3368", "8"], ["3372", "8"]]},
        "831078360",
    ),
    (
        "kraken",
        {
            "asks": [[f"0.0{5005 + 5 * i}", "0.00000500"] for i in range(10)],
            "bids": [
                [p, "0.00000500"]
                for p in (
                    "0.05000",
                    "0.04995",
                    "0.04990",
                    "0.04980",
                    "0.04975",
                    "0.04970",
                    "0.04965",
                    "0.04960",
                    "0.04955",
                    "0.04950",
                )
            ],
        },
        "974947235",
    ),
    ("kraken", {"bids": [], "asks": []}, "0"),
    ("okex", {"bids": [], "asks": []}, "0"),
]


@pytest.mark.parametrize(("exchange", "book", "expected"), CHECKSUM_VECTORS)
def test_checksum_command_on_the_documented_vectors(
    exchange: str, book: dict, expected: str, tmp_path: Path
) -> None:
    proc = retape("checksum", "--exchange", exchange, stdin=orjson.dumps(book))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode().strip() == expected
    path = tmp_path / "book.json"
    path.write_bytes(orjson.dumps(book))
    assert retape("checksum", "--exchange", exchange, str(path)).stdout.decode().strip() == expected


def test_checksum_command_kraken_v2_numbers_keep_their_trailing_zeros() -> None:
    bids = (
        "45283.5/0.10000000, 45283.4/1.54582015, 45282.1/0.10000000, 45281.0/0.10000000, 45280.3/1.54592586, "
        "45279.0/0.07990000, 45277.6/0.03310103, 45277.5/0.30000000, 45277.3/1.54602737, 45276.6/0.15445238"
    )
    asks = (
        "45285.2/0.00100000, 45286.4/1.54571953, 45286.6/1.54571109, 45289.6/1.54560911, 45290.2/0.15890660, "
        "45291.8/1.54553491, 45294.7/0.04454749, 45296.1/0.35380000, 45297.5/0.09945542, 45299.5/0.18772827"
    )

    def levels(text: str) -> str:
        return "[" + ",".join("[{},{}]".format(*pair.split("/")) for pair in text.split(", ")) + "]"

    body = ('{"bids":' + levels(bids) + ',"asks":' + levels(asks) + "}").encode()  # JSON numbers, as v2 sends
    proc = retape("checksum", "--exchange", "kraken", stdin=body)
    assert proc.stdout.decode().strip() == "3310070434", proc.stderr


def test_checksum_command_usage_errors() -> None:
    assert retape("checksum", "--exchange", "nasdaq", stdin=b'{"bids":[],"asks":[]}').returncode == 2
    assert retape("checksum", "--exchange", "okex", stdin=b"not json").returncode == 2
    assert retape("checksum", "--exchange", "okex", stdin=b'{"bids": 5}').returncode == 2

"""Bad input never crashes and is never silent: a finding or an error naming the file."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import orjson

from shared.auditors import AuditConfig
from shared.engine import Engine

DATA = Path(__file__).parent / "data"
USDM = DATA / "hftbacktest" / "usdm" / "btcusdt_20240808.gz"


def _run(*paths: Path):  # type: ignore[no-untyped-def]
    return Engine(AuditConfig()).run([str(p) for p in paths])


def test_truncated_gzip_keeps_what_was_read_and_says_where_it_stopped(tmp_path: Path) -> None:
    blob = USDM.read_bytes()
    cut = tmp_path / "cut.gz"
    cut.write_bytes(blob[: len(blob) // 2])
    outcome = _run(cut)
    (summary,) = outcome.inputs
    assert summary.malformed == 1 and summary.lines > 10_000
    (m,) = outcome.malformed
    assert m.path == str(cut) and "cut off" in m.reason and m.line == summary.lines
    book = next(s for s in outcome.streams if s.key.channel == "book")
    assert book.messages > 1000 and book.faults["gap"] == 0


def test_binary_garbage_and_empty_files_are_named_not_fatal(tmp_path: Path) -> None:
    (tmp_path / "garbage.bin").write_bytes(os.urandom(4096))
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "fake.gz").write_bytes(b"\x1f\x8b" + os.urandom(100))
    outcome = _run(tmp_path)
    by_name = {Path(i.path).name: i for i in outcome.inputs}
    assert by_name["garbage.bin"].error == "not a recognised capture format"
    assert by_name["empty.txt"].format == "empty" and by_name["empty.txt"].lines == 0
    assert by_name["fake.gz"].error is not None and "gzip" in by_name["fake.gz"].error
    assert outcome.streams == []


def test_json_of_the_wrong_shape_is_malformed_with_its_line(tmp_path: Path) -> None:
    lines = [
        b'1723161255030314667 {"stream":"btcusdt@depth@0ms","data":{"e":"depthUpdate","E":1,"s":"BTCUSDT"}}',
        b'1723161255030314668 {"stream":"btcusdt@depth@0ms","data":{"e":"depthUpdate","E":1,"s":"BTCUSDT",'
        b'"U":"x","u":2,"pu":1,"b":[],"a":[]}}',
        b'1723161255030314669 {"stream":"btcusdt@trade","data":{"e":"trade","s":"BTCUSDT","t":1.5}}',
        b"1723161255030314670 [1,2,3]",
        b"1723161255030314671 not json at all",
        b"not even a timestamp",
        b'1723161255030314672 {"stream":"btcusdt@depth@0ms","data":{"e":"depthUpdate","E":1,"s":"BTCUSDT",'
        b'"U":1,"u":2,"pu":0,"b":[["1e999999999","1"],["NaN","1"],[1,2,3]],"a":"nope"}}',
    ]
    path = tmp_path / "odd.txt"
    path.write_bytes(b"\n".join(lines) + b"\n")
    outcome = _run(path)
    (summary,) = outcome.inputs
    assert summary.lines == len(lines)
    assert [m.line for m in outcome.malformed] == [1, 2, 3, 5, 6]
    assert summary.malformed + summary.ignored + 1 == len(lines)  # the last line is a book message


def test_huge_number_lines_and_nan_do_not_crash(tmp_path: Path) -> None:
    big = "9" * 5000
    snap = {"lastUpdateId": 1, "bids": [[big, "1"], ["1", big]], "asks": [["NaN", "1"], ["2", "Infinity"]]}
    diff = {
        "stream": "x@depth",
        "data": {
            "e": "depthUpdate",
            "E": 1,
            "s": "X",
            "U": 2,
            "u": 2,
            "pu": 1,
            "b": [["1." + "0" * 4000 + "1", "1"]],
            "a": [],
        },
    }
    path = tmp_path / "big.txt"
    t = 1723161255030314667
    path.write_bytes(
        b"%d " % t
        + orjson.dumps(diff)
        + b"\n%d " % (t + 1)
        + orjson.dumps(snap)
        + b"\n%d " % (t + 2)
        + orjson.dumps(diff)
        + b"\n"
    )
    outcome = _run(path)
    assert outcome.inputs[0].malformed == 0
    book = outcome.streams[0]
    # NaN price, infinite quantity, the 5000-digit price and quantity (beyond any exchange's
    # range), and the 4000-character price of the diff: each is one invalid value.
    assert book.faults["invalid_value"] == 5


def test_unreadable_entries_in_a_directory_are_listed_and_the_rest_goes_on(tmp_path: Path) -> None:
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    os.mkfifo(tmp_path / "pipe")
    good = tmp_path / "good.gz"
    good.write_bytes(USDM.read_bytes())
    outcome = _run(tmp_path)
    errors = {Path(i.path).name: i.error for i in outcome.inputs}
    assert errors["dangling"] and errors["pipe"] and errors["good.gz"] is None
    assert any(s.key.channel == "book" and s.messages > 1000 for s in outcome.streams)


def test_cli_names_a_missing_path_and_exits_2(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "producers.cli",
            "audit",
            str(tmp_path / "missing"),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "missing" in proc.stderr and "Traceback" not in proc.stderr


def test_gzip_with_trailing_garbage(tmp_path: Path) -> None:
    path = tmp_path / "x.gz"
    with gzip.open(path, "wb") as fh:
        fh.write(b'1723161255030314667 {"lastUpdateId":1,"bids":[["1","1"]],"asks":[["2","1"]]}\n')
    path.write_bytes(path.read_bytes() + b"garbage after the stream")
    outcome = _run(path)
    assert outcome.inputs[0].lines == 2 and outcome.inputs[0].malformed == 1
    assert "after the end of the gzip stream" in outcome.malformed[0].reason

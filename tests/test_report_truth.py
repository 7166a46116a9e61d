"""What the report tells a quant beyond fault counts, on real captures with known faults put in:
when the rebuilt book could not be trusted (``unsafe``), the fault rates, format changes,
and times a person can read."""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson
import pytest

from shared.auditors import AuditConfig
from shared.engine import Engine
from shared.jsonout import materialize
from shared.report import report_json

DATA = Path(__file__).parent / "data"
USDM = DATA / "hftbacktest" / "usdm" / "btcusdt_20240808.gz"
OKX = DATA / "cryptofeed" / "OKX.ws.1.0"


def _lines(path: Path) -> list[bytes]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        return fh.read().split(b"\n")[:-1]


def _report(tmp_path: Path, name: str, lines: list[bytes]) -> dict:  # type: ignore[type-arg]
    path = tmp_path / name
    path.write_bytes(b"\n".join(lines) + b"\n")
    return materialize(report_json(Engine(AuditConfig()).run([str(path)])))


def _stream(report: dict, exchange: str, symbol: str, channel: str) -> dict:  # type: ignore[type-arg]
    return next(
        s
        for s in report["streams"]
        if (s["exchange"], s["symbol"], s["channel"]) == (exchange, symbol, channel)
    )


def _depth(lines: list[bytes]) -> list[int]:
    return [i for i, line in enumerate(lines) if b"depthUpdate" in line]


@pytest.fixture(scope="module")
def usdm() -> list[bytes]:
    return _lines(USDM)


def test_a_clean_capture_is_unsafe_only_until_its_snapshot(usdm: list[bytes], tmp_path: Path) -> None:
    book = _stream(_report(tmp_path, "usdm.txt", usdm), "binance-futures", "BTCUSDT", "book")
    (before,) = book["unsafe"]  # the diffs recorded before the REST snapshot bridged them
    assert before["cause"] == "no_snapshot" and before["from_us"] == book["first_us"]
    assert before["to_us"] is not None and before["from"] == book["first_time"]
    assert before["from"].endswith("Z") and before["from"].startswith("2024-08-08T23:")
    assert book["unsafe_seconds"] == pytest.approx((before["to_us"] - before["from_us"]) / 1e6)
    span = book["last_us"] - book["first_us"]
    assert book["rates"]["book_unsafe_time"] == pytest.approx(book["unsafe_seconds"] * 1e6 / span, abs=1e-6)
    assert book["rates"]["duplicate_messages"] == 0.0 and book["rates"]["missing_trades"] is None


def test_a_dropped_diff_opens_an_interval_from_the_gap_to_the_end(usdm: list[bytes], tmp_path: Path) -> None:
    drop = _depth(usdm)[2000]
    dropped = usdm[:drop] + usdm[drop + 1 :]
    book = _stream(_report(tmp_path, "gap.txt", dropped), "binance-futures", "BTCUSDT", "book")
    assert book["faults"]["gap"] == 1
    gap_interval = book["unsafe"][-1]
    assert gap_interval["cause"] == "gap" and gap_interval["to"] is None and gap_interval["to_us"] is None
    (gap,) = book["gaps"]
    assert gap["local_us"] == gap_interval["from_us"] and gap["time"] == gap_interval["from"]
    # unsafe to the end of the stream: from the gap to the last message
    assert book["unsafe_seconds"] == pytest.approx(
        sum(((u["to_us"] or book["last_us"]) - u["from_us"]) / 1e6 for u in book["unsafe"])
    )
    assert gap_interval["messages"] == sum(1 for line in dropped[drop:] if b"depthUpdate" in line)


def test_trade_rates_count_missing_and_repeated_trades(usdm: list[bytes], tmp_path: Path) -> None:
    trades = [i for i, line in enumerate(usdm) if b'"e":"trade"' in line]
    drop, repeat = trades[100], trades[200]
    changed = [line for i, line in enumerate(usdm) if i != drop]
    changed.insert(repeat, changed[repeat - 1])  # the trade before it, again, right after it
    report = _report(tmp_path, "trades.txt", changed)
    stream = _stream(report, "binance-futures", "BTCUSDT", "trades")
    assert stream["faults"]["gap"] == 1 and stream["faults"]["duplicate"] == 1
    distinct = stream["messages"] - 1
    assert stream["rates"]["missing_trades"] == round(1 / (distinct + 1), 6)
    assert stream["rates"]["duplicate_messages"] == round(1 / stream["messages"], 6)
    assert stream["rates"]["book_unsafe_time"] is None and stream["unsafe"] == []


def test_a_message_rewritten_to_another_shape_is_one_format_change(usdm: list[bytes], tmp_path: Path) -> None:
    at = next(i for i in _depth(usdm)[3000:] if orjson.loads(usdm[i].split(b" ", 1)[1])["data"]["b"])
    ts, raw = usdm[at].split(b" ", 1)
    message = orjson.loads(raw)
    message["data"]["b"][0][0] = float(message["data"]["b"][0][0])  # a price sent as a number
    changed = [*usdm[:at], ts + b" " + orjson.dumps(message), *usdm[at + 1 :]]
    report = _report(tmp_path, "shape.txt", changed)
    changes = [s for s in report["streams"] if s["faults"]["format_change"]]
    assert [(s["channel"], s["faults"]["format_change"]) for s in changes] == [("book", 1)]
    outcome = Engine(AuditConfig()).run([str(tmp_path / "shape.txt")])
    (finding,) = [f for s in outcome.streams for f in s.findings if f.fault == "format_change"]
    assert finding.line == at + 1
    assert finding.detail["retyped"] == {"data.b[][0]": {"old": ["string"], "new": "number"}}
    assert finding.detail["old_shape"]["data.b[][0]"] == "string"
    assert finding.detail["new_shape"]["data.b[][0]"] == "number"


def test_a_field_that_goes_missing_is_one_format_change_however_long_it_stays_away(
    usdm: list[bytes], tmp_path: Path
) -> None:
    changed = list(usdm)
    depth = _depth(usdm)
    for i in depth[3000:3100]:
        ts, raw = usdm[i].split(b" ", 1)
        message = orjson.loads(raw)
        del message["data"]["T"]  # the transaction time disappears from here on
        changed[i] = ts + b" " + orjson.dumps(message)
    report = _report(tmp_path, "missing.txt", changed)
    book = _stream(report, "binance-futures", "BTCUSDT", "book")
    assert book["faults"]["format_change"] == 1


@pytest.mark.parametrize("folder", sorted(p.name for p in DATA.iterdir() if p.is_dir()))
def test_the_real_captures_show_no_format_change(folder: str) -> None:
    report = materialize(report_json(Engine(AuditConfig()).run([str(DATA / folder)])))
    assert [s for s in report["streams"] if s["faults"]["format_change"]] == []


def test_every_stream_has_unsafe_rates_and_readable_times() -> None:
    report = materialize(
        report_json(Engine(AuditConfig()).run([str(DATA / "cryptofeed"), str(DATA / "hftbacktest")]))
    )
    for s in report["streams"]:
        assert isinstance(s["unsafe"], list) and isinstance(s["unsafe_seconds"], float)
        assert set(s["rates"]) == {
            "missing_trades",
            "duplicate_messages",
            "drift_over_100ms",
            "book_unsafe_time",
            "funding_discontinuities",
        }
        if s["first_us"] is not None:
            assert s["first_time"].endswith("Z") and s["first_us"] <= s["last_us"]
        if s["channel"] != "book":
            assert s["unsafe"] == [] and s["rates"]["book_unsafe_time"] is None
        if s["channel"] != "funding":
            assert s["rates"]["funding_discontinuities"] is None
    okx = (
        _stream(report, "okex", "BTC-USDT", "book")
        if any(s["exchange"] == "okex" for s in report["streams"])
        else None
    )
    if okx is not None:
        assert all(u["cause"] in ("no_snapshot", "checksum_mismatch", "gap") for u in okx["unsafe"])


def test_a_cut_off_capture_is_never_clean(tmp_path: Path) -> None:
    import subprocess
    import sys

    data = (DATA / "hftbacktest" / "spot" / "btcusdt_20240808.gz").read_bytes()
    cut = tmp_path / "in" / "btcusdt_20240808.gz"
    cut.parent.mkdir()
    cut.write_bytes(data[: len(data) // 2])  # the recorder died mid-file
    (tmp_path / "in" / "notes.jsonl").write_bytes(b'{"hello": "world"}\n{"hello": "again"}\n')
    root = Path(__file__).parent.parent

    def audit(*more: str) -> subprocess.CompletedProcess[str]:
        args = [sys.executable, "-m", "producers.cli", "audit", str(tmp_path / "in"), "--in-process"]
        return subprocess.run(
            [*args, "--out", str(tmp_path / "out"), *more], cwd=root, capture_output=True, text=True
        )

    proc = audit()
    assert proc.returncode == 0, proc.stderr
    report = orjson.loads((tmp_path / "out" / "report.json").read_bytes())
    (damaged,) = [i for i in report["inputs"] if i["path"].endswith(".gz")]
    assert damaged["cut_off"] and damaged["malformed"] == 1
    for s in report["streams"]:
        assert s["input_damage"] == {"malformed_lines": 1, "cut_off": True}
        assert s["integrity_score"] < 100.0
    assert "clean" not in proc.stdout
    assert f"cut off: {cut} ends early" in proc.stdout
    assert "input damaged (1 unreadable lines, cut off)" in proc.stdout
    assert f"no market data recognised in {tmp_path / 'in' / 'notes.jsonl'}" in proc.stdout
    assert audit("--fail-under", "100").returncode == 1
    failed = audit("--fail-under", "0")  # whatever the threshold, damage fails it
    assert failed.returncode == 1 and "2 stream(s) come from damaged inputs" in failed.stdout


def test_an_unknown_event_type_on_an_audited_channel_is_one_format_change(
    usdm: list[bytes], tmp_path: Path
) -> None:
    depth = _depth(usdm)
    changed = list(usdm)
    for i in depth[2000:2010]:  # the exchange starts sending a new kind of depth event
        ts, raw = usdm[i].split(b" ", 1)
        changed[i] = ts + b" " + raw.replace(b'"e":"depthUpdate"', b'"e":"depthUpdateV2"')
    path = tmp_path / "unknown.txt"
    path.write_bytes(b"\n".join(changed) + b"\n")
    outcome = Engine(AuditConfig()).run([str(path)])
    (finding,) = [f for s in outcome.streams for f in s.findings if f.fault == "format_change"]
    assert finding.line == depth[2000] + 1 and finding.key.channel == "book"
    assert finding.detail["unknown_event"] == "depthUpdateV2" and finding.detail["channel"] == "depth"
    (summary,) = outcome.inputs
    assert summary.ignored_why["depthUpdateV2 messages (unknown to the parser)"] == 10
    assert summary.malformed == 0


def test_an_unknown_okx_book_action_is_a_format_change(tmp_path: Path) -> None:
    lines = _lines(OKX)
    at = next(i for i, line in enumerate(lines) if b'"action":"update"' in line and i > 200)
    changed = list(lines)
    changed[at] = lines[at].replace(b'"action":"update"', b'"action":"reset"')
    path = tmp_path / "OKX.ws.1.0"
    path.write_bytes(b"\n".join(changed) + b"\n")
    outcome = Engine(AuditConfig()).run([str(path)])
    found = [f for s in outcome.streams for f in s.findings if f.fault == "format_change"]
    assert [(f.line, f.detail["unknown_event"]) for f in found] == [(at + 1, "reset")]


def test_a_gap_found_at_the_end_of_the_file_still_opens_an_interval(
    usdm: list[bytes], tmp_path: Path
) -> None:
    drop = _depth(usdm)[-10]  # the reorder window is still open when the file ends
    book = _stream(
        _report(tmp_path, "late.txt", usdm[:drop] + usdm[drop + 1 :]), "binance-futures", "BTCUSDT", "book"
    )
    assert book["faults"]["gap"] == 1
    last = book["unsafe"][-1]
    assert last["cause"] == "gap" and last["to"] is None and last["from_us"] == book["gaps"][0]["local_us"]
    assert book["unsafe_by_cause"]["gap"] > 0


def test_an_interval_open_at_the_end_of_a_part_is_measured_to_the_end_of_that_part(
    usdm: list[bytes], tmp_path: Path
) -> None:
    from shared.engine import Engine as _Engine
    from shared.report import stream_json

    drop = _depth(usdm)[1000]
    first = tmp_path / "first.txt"
    first.write_bytes(b"\n".join(usdm[:drop] + usdm[drop + 1 : drop + 3000]) + b"\n")
    later = [
        b"%d " % (int(line.split(b" ", 1)[0]) + 3_600_000_000_000) + line.split(b" ", 1)[1] for line in usdm
    ]
    second = tmp_path / "second.txt"  # another part of the stream, audited apart, an hour later
    second.write_bytes(b"\n".join(later) + b"\n")
    parts = [
        next(s for s in _Engine(AuditConfig()).run([str(p)]).streams if s.key.channel == "book")
        for p in (first, second)
    ]
    first_end = parts[0].last_us
    parts[0].merge(parts[1])
    book = stream_json(parts[0])
    gap = next(u for u in book["unsafe"] if u["cause"] == "gap")
    assert gap["to"] is None  # the first part ended unsafe
    # measured to the end of its own part, not to the end of the later one
    assert book["unsafe_by_cause"]["gap"] == round((first_end - gap["from_us"]) / 1e6, 6)


def test_funding_discontinuities_are_a_share_of_settlements(tmp_path: Path) -> None:
    from shared.auditors import FundingAuditor
    from shared.exchanges import rules_for
    from shared.model import FundingMsg, StreamKey

    key = StreamKey("binance-futures", "BTCUSDT", "funding")
    auditor = FundingAuditor(key, rules_for("binance-futures"), AuditConfig())
    hour = 3_600_000_000
    for n in range(100):  # the same settlement time, every rate over the cap
        auditor.feed(FundingMsg(key, n, None, 8 * hour, "0.5", "f", n + 1))
    for n, settlement in enumerate((16, 24, 40)):  # then two on time and one after a skipped one
        auditor.feed(FundingMsg(key, 200 + n, None, settlement * hour, "0.0001", "f", 200 + n))
    stream = report_json_of(auditor.finish())
    assert stream["faults"]["funding_discontinuity"] == 101
    # 5 settlements (8, 16, 24, 32 skipped, 40); 2 of them with a discontinuity (8: rates, 40: skip)
    assert stream["rates"]["funding_discontinuities"] == round(2 / 5, 6)


def report_json_of(result: object) -> dict:  # type: ignore[type-arg]
    from shared.report import stream_json

    return stream_json(result)  # type: ignore[arg-type]


def test_shapes_of_list_messages_are_told_apart_by_channel_and_null_is_not_missing() -> None:
    from shared.checks.shapes import ShapeWatch

    watch = ShapeWatch()
    for _n in range(150):  # Kraken v1: book updates on one channel...
        assert watch.check([12, {"a": [["1.0", "2.0", "1.1"]]}, "book-10", "XBT/USD"]) is None
    # ... and trades on another: another kind of message, not a change
    assert watch.check([13, [["1.0", "2.0", "1.1", "s", "m", ""]], "trade", "XBT/USD"]) is None
    for _n in range(150):  # Bitfinex: book updates, then a trade execution on the same channel id
        assert watch.check([7, [1.0, 2, 3.0]]) is None
    assert watch.check([7, "te", [1, 2, 3.0, 4.0]]) is None
    plain = ShapeWatch()
    for _n in range(150):
        assert plain.check({"a": 1, "b": "x"}) is None
    assert plain.check({"a": None, "b": "x"}) is None  # sent without a value: still there
    assert plain.check({"b": "x"})["missing"] == ["a"]  # type: ignore[index]


def test_a_rotated_file_already_in_a_new_format_is_caught_at_its_first_message(
    usdm: list[bytes], tmp_path: Path
) -> None:
    half = len(usdm) // 2
    (tmp_path / "a.txt").write_bytes(b"\n".join(usdm[:half]) + b"\n")
    changed = []
    for line in usdm[half:]:
        ts, raw = line.split(b" ", 1)
        if b"depthUpdate" in raw:
            message = orjson.loads(raw)
            message["data"]["u"] = str(message["data"]["u"])  # the id now sent as a string
            raw = orjson.dumps(message)
        changed.append(ts + b" " + raw)
    (tmp_path / "b.txt").write_bytes(b"\n".join(changed) + b"\n")
    outcome = Engine(AuditConfig()).run([str(tmp_path)])
    found = [f for s in outcome.streams for f in s.findings if f.fault == "format_change"]
    assert len(found) == 1 and found[0].path == str(tmp_path / "b.txt")
    assert found[0].detail["retyped"] == {"data.u": {"old": ["number"], "new": "string"}}

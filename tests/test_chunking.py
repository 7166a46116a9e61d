"""One recording across many workers: a plain capture cut into chunks, each audited on its
own (speculatively) and laid on the state where its assumptions hold, gives the same bytes as
one process reading the whole file, however it is cut.

The captures are the real Binance USD-M depth diffs of tests/data (cut into small messages
with their own id chain, as ``make bench`` builds them), as USD-M (``pu`` chain) and as spot
(``U == u + 1`` chain), in hftbacktest (epoch) and Tardis raw (ISO time) lines, with faults
put where chunk edges fall: a crossed book, clock drift, a duplicate, a gap, an invalid
value, another kind of message, a blank line, a CRLF line end, a REST snapshot in the
middle, a price written another way.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from pipeline_helpers import env, outputs, retape

from bench.run import build_small_messages
from shared import audit_job, chunking, compiled
from shared.auditors import AuditConfig

pytestmark = pytest.mark.skipif(
    not compiled.built()["shared._lane_c"] and not os.environ.get("CI"),
    reason="the fast lane is not built here (make setup); under CI this fails instead",
)


def _iso(ns: int) -> bytes:
    seconds, rest = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)).encode() + b".%07dZ" % (rest // 100)


def _bybit(obj: dict[str, Any]) -> dict[str, Any]:
    """A Binance message as Bybit v5 sends its like (``orderbook.50``, ``u`` the chain)."""
    if "lastUpdateId" in obj:
        last, stamp = obj["lastUpdateId"], obj["E"]
        data = {"s": "BTCUSDT", "b": obj["bids"], "a": obj["asks"], "u": last, "seq": last}
        return {"topic": "orderbook.50.BTCUSDT", "type": "snapshot", "ts": stamp, "data": data, "cts": stamp}
    d = obj["data"]
    data = {"s": d["s"], "b": d["b"], "a": d["a"], "u": d["u"], "seq": d["u"] * 3}
    return {"topic": "orderbook.50.BTCUSDT", "type": "delta", "ts": d["E"], "data": data, "cts": d["T"]}


def _capture(folder: Path, messages: int, spot: bool, iso: bool, faults: bool, bybit: bool = False) -> Path:
    """The small-message stream, reshaped (Binance spot or USD-M, or Bybit v5) and with
    faults where chunk edges fall."""
    plain = folder / "source.txt"
    build_small_messages(plain, messages)
    lines = plain.read_bytes().split(b"\n")[:-1]
    plain.unlink()
    snapshot, diffs = lines[0], lines[1:]
    # Ids moved so that the first diff chains on the REST snapshot: the stream is live from it.
    last_id = orjson.loads(snapshot.partition(b" ")[2])["lastUpdateId"]
    shift = last_id - orjson.loads(diffs[0].partition(b" ")[2])["data"]["pu"]
    out: list[bytes] = []
    for i, line in enumerate(diffs):
        ts, _, raw = line.partition(b" ")
        obj = orjson.loads(raw)
        d = obj["data"]
        d["U"] += shift
        d["u"] += shift
        d["pu"] += shift
        if spot:
            d = {k: v for k, v in d.items() if k not in ("T", "pu")}
            obj = {"stream": "btcusdt@depth@100ms", "data": d}
        local = int(ts)
        if faults:
            if i == 3001:
                local += 5_000_000_000  # one message five seconds late: drift
            if i == 4000 and d["b"]:
                d["b"][0] = [d["b"][0][0] + "0", d["b"][0][1]]  # the same price written another way
            if i == 5200:
                d["b"].append(["99999.90", "1.000"])  # a bid above every ask: crossed
            if i == 5260:
                d["b"].append(["99999.90", "0.000"])  # and gone again
            if i == 7000 and d["a"]:
                d["a"][0] = [d["a"][0][0], "-1"]  # an invalid quantity
        text = orjson.dumps(_bybit(obj) if bybit else obj)
        stamp = _iso(local) if iso else b"%d" % local
        out.append(stamp + b" " + text)
        if faults and i == 6000:
            out.append(stamp + b" " + text)  # the same message twice: a duplicate
        if faults and i == 6500:
            ticker = {"stream": "btcusdt@bookTicker", "data": {"e": "bookTicker", "u": 1, "s": "BTCUSDT"}}
            out.append(stamp + b" " + orjson.dumps(ticker))
        if faults and i == 8000:
            out.append(b"")  # a blank line (a disconnect in Tardis raw files)
        if faults and i == 8500:
            out[-1] += b"\r"
        if faults and i == 9000:
            snap_ts, _, snap = snapshot.partition(b" ")
            snap = orjson.dumps(_bybit(orjson.loads(snap))) if bybit else snap
            out.append((_iso(local) if iso else b"%d" % local) + b" " + snap)
    if faults:
        del out[-400]  # a message lost near the end: a gap
    path = folder / (
        "capture.txt"
        if bybit
        else "btcusdt_20240808.txt"
        if not iso
        else "binance-futures_depth_2024-08-08.txt"
    )
    snap_ts, _, snap = snapshot.partition(b" ")
    snap = orjson.dumps(_bybit(orjson.loads(snap))) if bybit else snap
    head = (_iso(int(snap_ts)) if iso else snap_ts) + b" " + snap
    path.write_bytes(head + b"\n" + b"\n".join(out) + b"\n")
    return path


def _audit(
    path: Path, out: Path, chunk_mb: float, monkeypatch: pytest.MonkeyPatch
) -> tuple[dict[str, bytes], int]:
    """Outputs of the audit job run stage by stage in this process, and how many chunks were
    laid on the state (not read again on the Python path)."""
    monkeypatch.setenv(chunking.CHUNK_ENV, str(chunk_mb))
    laid = []
    lay = chunking._lay

    def counting(*args: Any) -> bool:
        ok = lay(*args)
        laid.append(ok)
        return ok

    monkeypatch.setattr(chunking, "_lay", counting)
    audit_job.run_in_process([str(path)], AuditConfig(), str(out))
    return outputs(out), sum(laid)


@pytest.fixture(
    scope="module",
    params=["usdm-epoch", "spot-epoch", "usdm-tardis", "spot-tardis", "bybit-epoch", "bybit-tardis"],
)
def capture(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    spot = request.param.startswith("spot")
    iso = request.param.endswith("tardis")
    bybit = request.param.startswith("bybit")
    return _capture(tmp_path_factory.mktemp(request.param), 12_000, spot, iso, faults=True, bybit=bybit)


def test_chunked_audits_give_the_bytes_of_one_process(
    capture: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole, none_laid = _audit(capture, tmp_path / "whole", 0, monkeypatch)
    assert none_laid == 0
    report = orjson.loads(whole["report.json"])
    (book,) = [s for s in report["streams"] if s["channel"] == "book"]
    faults = book["faults"]
    # The faults put in are found (the test means something): the edges fall among them.
    for kind in ("crossed_book", "timestamp_drift", "duplicate", "gap", "invalid_value"):
        assert faults[kind] >= 1, (kind, faults)
    for mb in (0.09, 0.23, 0.61):
        cut, laid = _audit(capture, tmp_path / f"cut{mb}", mb, monkeypatch)
        assert laid >= 2, f"no chunk was laid at {mb} MB"
        assert cut.keys() == whole.keys()
        for name in whole:
            assert cut[name] == whole[name], (mb, name)


def test_a_clean_recording_is_laid_chunk_after_chunk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _capture(tmp_path, 12_000, spot=False, iso=False, faults=False)
    whole, _ = _audit(path, tmp_path / "whole", 0, monkeypatch)
    monkeypatch.setenv(chunking.CHUNK_ENV, "0.2")
    size = path.stat().st_size
    expected = len(chunking.chunks_for(*_plan_of(path), AuditConfig()))
    assert expected >= size // (1 << 20) * 4
    cut, laid = _audit(path, tmp_path / "cut", 0.2, monkeypatch)
    # Every chunk held but maybe the first: its shapes may still be in their warm-up (the
    # Python path counts the first 100 messages of each shape), so it is read again.
    assert laid >= expected - 1
    assert cut == whole


def _plan_of(path: Path) -> tuple[Any, int]:
    from shared.planning import plan

    return plan([str(path)]), 0


def test_two_worker_processes_on_one_recording(capture: Path, tmp_path: Path) -> None:
    """The embedded broker with two real worker processes, chunks on both."""
    out = tmp_path / "out"
    got = retape(
        "audit",
        str(capture),
        "--out",
        str(out),
        "--no-progress",
        "--workers",
        "2",
        environ=env(**{chunking.CHUNK_ENV: "0.15"}),
    )
    assert got.returncode == 0, got.stderr
    single = retape("audit", str(capture), "--out", str(tmp_path / "single"), "--in-process", "--quiet")
    assert single.returncode == 0, single.stderr
    assert outputs(out) == outputs(tmp_path / "single")


def test_spans_of_a_file_are_its_lines_once_each(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Cut anywhere, the spans (lines starting in [start, end)) hold every line once, in
    order; a line longer than the reader's limit comes as LINE_TOO_LONG, as in a whole read."""
    import itertools
    import random

    from shared.formats import lines as lines_module

    monkeypatch.setattr(lines_module, "_CHUNK", 64)
    monkeypatch.setattr(lines_module, "MAX_LINE", 300)
    rng = random.Random(7)
    body = [b"x" * rng.choice([0, 1, 5, 40, 63, 64, 65, 200]) + b"%d" % i for i in range(400)]
    body[100] = b"y" * 2000  # longer than the limit
    path = tmp_path / "lines.txt"
    path.write_bytes(b"\n".join(body) + b"\n" + b"tail without a line end")
    whole = list(lines_module.iter_lines(str(path)))
    size = path.stat().st_size
    for _ in range(30):
        cuts = sorted({0, size, *(rng.randrange(size) for _ in range(rng.randrange(1, 12)))})
        got: list[bytes] = []
        for start, end in itertools.pairwise(cuts):
            first = lines_module.line_start(str(path), start)
            if first >= end:
                continue
            for block in lines_module.span_blocks(str(path), first, end):
                if block is lines_module.LINE_TOO_LONG:
                    got.append(block)
                    continue
                parts = block.split(b"\n")
                got.extend(parts[:-1] if block.endswith(b"\n") else parts)
        assert got == whole


# -- the SHA-256 of a big recording, left to the workers ------------------------------------


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _shown_sha(out: Path, path: Path) -> str:
    report = orjson.loads((out / "report.json").read_bytes())
    (entry,) = [i for i in report["inputs"] if i["path"] == str(path)]
    return str(entry["sha256"])


def test_the_planner_leaves_a_big_recordings_hash_to_the_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Planned for workers, a capture big enough to be cut is not hashed first: its id names
    it by size, times, inode and both ends, and a hash sub-task runs beside the chunks; the
    report still names it by its SHA-256, with the bytes of one process."""
    from shared.jobs import Writer, run_inline

    path = _capture(tmp_path, 12_000, spot=False, iso=False, faults=True)
    single, _ = _audit(path, tmp_path / "single", 0, monkeypatch)
    monkeypatch.setenv(chunking.CHUNK_ENV, "0.15")
    job, plan = audit_job.plan_audit([str(path)], AuditConfig(), str(tmp_path / "out"), Writer.SUBMITTER)
    (summary,) = audit_job.inputs_of(plan)
    assert summary.sha256 == ""
    assert [f.path for f in plan.files] == [str(path)]
    again, _ = audit_job.plan_audit([str(path)], AuditConfig(), str(tmp_path / "out"), Writer.SUBMITTER)
    assert again == job  # the same submission is the same job
    step = audit_job.KIND.run_segment(plan, 0, audit_job.SegmentContext(lambda p: iter(())))
    assert step.result == audit_job.CHUNKED
    assert "hash" in step.subtasks[0].args and all("chunk" in t.args for t in step.subtasks[1:])
    run_inline(audit_job.KIND, plan, str(tmp_path / "out"))
    assert _shown_sha(tmp_path / "out", path) == _sha256(path)
    assert outputs(tmp_path / "out") == single
    # The hash sub-task failed (or ran where the file is not): the last stage hashes it.
    monkeypatch.setattr(audit_job, "run_hash", lambda args: b"")
    run_inline(audit_job.KIND, plan, str(tmp_path / "failed"))
    assert outputs(tmp_path / "failed") == single
    # Any write makes another job, even one that keeps the size and modification time.
    st = path.stat()
    data = bytearray(path.read_bytes())
    middle = data.index(b'"b":[["', len(data) // 2) + 7
    data[middle] = ord("9") if data[middle] != ord("9") else ord("8")
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    changed, _ = audit_job.plan_audit([str(path)], AuditConfig(), str(tmp_path / "out"), Writer.SUBMITTER)
    assert changed != job


def test_a_worker_told_to_read_through_the_broker_opens_no_input_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``RETAPE_READ_INPUTS=broker``: no chunks (they read the file from disk); a chunk or
    hash sub-task that reaches such a worker answers nothing, and the last stage then reads
    the segment through the worker's source, as a worker that never cut it does."""
    from shared.engine import SegmentResult
    from shared.formats.lines import file_blocks
    from shared.jobs import SubtaskContext, Writer

    path = _capture(tmp_path, 12_000, spot=False, iso=False, faults=False)
    monkeypatch.setenv(chunking.CHUNK_ENV, "0.15")
    _, plan = audit_job.plan_audit([str(path)], AuditConfig(), str(tmp_path / "out"), Writer.SUBMITTER)
    step = audit_job.KIND.run_segment(plan, 0, audit_job.SegmentContext(file_blocks))
    assert step.result == audit_job.CHUNKED and len(step.subtasks) > 3
    broker_only = audit_job.SegmentContext(file_blocks, reads_files=False)
    for task in step.subtasks:
        assert audit_job.KIND.run_subtask(plan, 0, 0, task.args, SubtaskContext(reads_files=False)) == b""
    whole = audit_job.KIND.run_segment(plan, 0, broker_only)
    assert whole.final and whole.result != audit_job.CHUNKED
    answers = [b""] * len(step.subtasks)
    continued = audit_job.KIND.continue_segment(plan, 0, 1, step.result, answers, broker_only)
    assert continued.result == whole.result
    (summary,) = SegmentResult.decode(whole.result).inputs
    assert summary.sha256 == _sha256(path) and summary.lines > 12_000


def test_a_recording_read_whole_is_hashed_as_it_is_read(tmp_path: Path) -> None:
    """A big capture that is not cut (its head mixes other messages in) is hashed by the
    worker as it reads it, here through the broker: the report names it by its SHA-256."""
    path = _capture(tmp_path, 12_000, spot=False, iso=False, faults=False)
    lines = path.read_bytes().split(b"\n")
    ticker = b' {"stream":"btcusdt@bookTicker","data":{"e":"bookTicker","u":1,"s":"BTCUSDT"}}'
    mixed = [
        x
        for n, line in enumerate(lines[:-1])
        for x in (line, line.split(b" ")[0] + ticker)[: 1 + (n % 5 == 1)]
    ]
    path.write_bytes(b"\n".join(mixed) + b"\n")
    assert path.stat().st_size > 1 << 20
    out, single = tmp_path / "out", tmp_path / "single"
    environ = env(**{chunking.CHUNK_ENV: "0.15", "RETAPE_READ_INPUTS": "broker"})
    got = retape("audit", str(path), "--out", str(out), "--no-progress", "--workers", "1", environ=environ)
    assert got.returncode == 0, got.stderr
    assert retape("audit", str(path), "--out", str(single), "--in-process", "--quiet").returncode == 0
    assert _shown_sha(out, path) == _sha256(path)
    assert outputs(out) == outputs(single)


def test_a_worker_keeps_the_hash_of_each_file_it_read_to_the_end(tmp_path: Path) -> None:
    from shared.errors import DataCorrupt
    from shared.jobs import file_ref
    from workers.data import direct_blocks

    path = tmp_path / "capture.txt"
    path.write_bytes(b"1 {}\n" * 500_000)
    unhashed = file_ref(str(path), "")
    assert unhashed is not None
    digests: dict[str, str] = {}
    assert b"".join(direct_blocks(unhashed, digests)) == path.read_bytes()
    assert digests == {str(path): _sha256(path)}
    submitted = file_ref(str(path), "0" * 64)  # submitted with other bytes
    assert submitted is not None
    with pytest.raises(DataCorrupt, match="do not match the SHA-256"):
        b"".join(direct_blocks(submitted, {}))
    grown = dataclasses.replace(unhashed, size=unhashed.size - 5)  # written to since it was submitted
    digests.clear()
    with pytest.raises(DataCorrupt, match="changed since it was submitted"):
        b"".join(direct_blocks(grown, digests))
    assert digests == {}

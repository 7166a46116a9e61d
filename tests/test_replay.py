"""Gap repair from replay sources, on a real capture with ranges removed: a capture directory,
the Tardis-compatible API over loopback (``retape serve-archive``, and a scripted server that
misbehaves on cue), every venue in tests/data whose ids can prove a fill.  No machine Redis:
in-process runs keep limits in memory; the default command runs its embedded broker."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from producers.cli import main
from tests.replay_servers import (
    DATA,
    binance_server,
    drop_every,
    holed_usdm,
    html,
    rewritten,
    stall,
    status,
    tardis_server,
    trickle,
    truncated,
)

FAST = "#backoff=0.01&timeout=1"


def audit(
    inputs: Path, out: Path, *sources: str, extra: tuple[str, ...] = ("--in-process",)
) -> dict[str, Any]:
    args = ["audit", str(inputs), "--out", str(out), "--quiet", *extra]
    for s in sources:
        args += ["--replay-source", s]
    assert main(args) == 0
    report: dict[str, Any] = json.loads((out / "report.json").read_text())
    return report


def streams(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["channel"]: s for s in report["streams"]}


def records(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "audit" / "records.jsonl").read_text().splitlines()]


def gap_records(out: Path) -> list[dict[str, Any]]:
    return [r for r in records(out) if r.get("type") == "finding" and r.get("fault") == "gap"]


def books(out: Path) -> dict[str, bytes]:
    d = out / "books"
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())} if d.is_dir() else {}


@pytest.fixture(scope="module")
def usdm(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(full capture dir, holed capture dir, the audit of the full one)."""
    tmp = tmp_path_factory.mktemp("usdm")
    full, holed = holed_usdm(tmp)
    out = tmp / "out_full"
    report = audit(full, out)
    assert all(s["faults"]["gap"] == 0 for s in report["streams"])
    return full, holed, out


def assert_repaired(report: dict[str, Any], source: str) -> None:
    by = streams(report)
    for channel in ("book", "trades"):
        s = by[channel]
        assert s["faults"]["gap"] == 1
        assert s["gaps_repaired"] == 1, s["gaps"]
        gap = s["gaps"][0]
        assert gap["repaired"] is True and gap["source"] == source
        assert s["replayed_messages"] > 0
        assert s["integrity_score"] == 100.0
    # A repaired gap opens no unsafe interval: only the capture's start before its snapshot.
    assert [u["cause"] for u in by["book"]["unsafe"]] == ["no_snapshot"]
    assert by["trades"]["gaps"][0]["missing"] == by["trades"]["replayed_messages"] == 64


def test_without_a_source_the_holes_are_gaps(usdm: tuple[Path, Path, Path], tmp_path: Path) -> None:
    _, holed, _ = usdm
    by = streams(audit(holed, tmp_path / "out"))
    assert by["book"]["faults"]["gap"] == by["trades"]["faults"]["gap"] == 1
    assert by["book"]["gaps"][0]["repaired"] is False and "unrepaired" not in by["book"]["gaps"][0]
    assert by["book"]["integrity_score"] < 100 and by["book"]["unsafe_seconds"] > 200


def test_a_capture_directory_repairs_every_gap_and_the_books_match(
    usdm: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    full, holed, out_full = usdm
    out = tmp_path / "out"
    report = audit(holed, out, str(full))
    assert_repaired(report, f"archive:{full}")
    assert books(out) == books(out_full) and books(out)
    # The audit records say which ids came from where.
    found = {r["stream"]["channel"]: r for r in gap_records(out)}
    book = found["book"]["detail"]
    assert book["repaired"] is True and book["source"] == f"archive:{full}"
    first, last = (int(i) for i in book["replayed_ids"])
    assert int(book["after"]) < first <= last < int(book["before"])
    assert book["replayed_messages"] == streams(report)["book"]["replayed_messages"]


def test_the_tardis_api_repairs_every_gap_same_bytes_as_the_directory(
    usdm: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    full, holed, out_full = usdm
    monkeypatch.setenv("RETAPE_TARDIS_API_KEY", "td-secret-key-123")
    with tardis_server(full) as server:
        out = tmp_path / "out"
        report = audit(holed, out, server.url)
    assert_repaired(report, server.url)
    assert books(out) == books(out_full)
    # One request per minute around each gap, with the key, and the key nowhere in the outputs.
    assert {s.exchange for s in server.seen} == {"binance-futures"}
    assert all(s.auth == "Bearer td-secret-key-123" for s in server.seen)
    assert len(server.seen) == 6
    for path in out.rglob("*"):
        if path.is_file():
            assert b"td-secret-key-123" not in path.read_bytes(), path
    metrics = (out / "metrics.prom").read_text()
    assert f'retape_replay_request_duration_seconds_count{{source="{server.url}"}} 6' in metrics


def test_429_retry_after_is_honoured_exactly(usdm: tuple[Path, Path, Path], tmp_path: Path) -> None:
    full, holed, _ = usdm
    with tardis_server(full, [status(429, Retry_After="1")]) as server:
        report = audit(holed, tmp_path / "out", server.url + FAST)
    assert_repaired(report, server.url)
    first, second = server.seen[0], server.seen[1]
    assert second.minute_us == first.minute_us
    assert second.at - first.at >= 1.0
    assert (
        'retape_replay_rate_limited_total{source="' + server.url + '"} 1'
        in (tmp_path / "out" / "metrics.prom").read_text()
    )


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param([status(500), status(503), status(502)], id="5xx"),
        pytest.param([stall(2.5)], id="timeout"),
        pytest.param([truncated], id="truncated-gzip"),
        pytest.param([trickle(12, 0.45)], id="slow-body-past-the-deadline"),
    ],
)
def test_transient_failures_are_retried_until_the_repair_completes(
    usdm: tuple[Path, Path, Path], tmp_path: Path, fault: list[Any]
) -> None:
    full, holed, out_full = usdm
    with tardis_server(full, fault) as server:
        out = tmp_path / "out"
        report = audit(holed, out, server.url + FAST)
    assert_repaired(report, server.url)
    assert books(out) == books(out_full)
    assert len(server.seen) == 6 + len(fault)
    metrics = (out / "metrics.prom").read_text()
    assert f'retape_upstream_connection_failures_total{{source="{server.url}"}} {len(fault)}' in metrics


def test_a_slow_body_within_its_deadline_is_read(usdm: tuple[Path, Path, Path], tmp_path: Path) -> None:
    full, holed, _ = usdm
    with tardis_server(full, [trickle(4, 0.3)]) as server:
        report = audit(holed, tmp_path / "out", server.url + FAST)
    assert_repaired(report, server.url)
    assert len(server.seen) == 6


def test_a_source_that_stays_down_opens_its_breaker_and_the_next_one_fills(
    usdm: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    full, holed, _ = usdm
    with tardis_server(full, default=status(500)) as down, tardis_server(full) as up:
        out = tmp_path / "out"
        report = audit(holed, out, down.url + FAST + "&breaker=3", up.url)
    assert_repaired(report, up.url)
    # Three failures opened the breaker; the second gap did not even ask the first source.
    assert len(down.seen) == 3
    detail = gap_records(out)[0]["detail"]
    assert "circuit" in detail["failed_sources"][down.url]
    assert f'retape_replay_breaker_open{{source="{down.url}"}} 1' in (out / "metrics.prom").read_text()


def _swap_symbol(lines: bytes) -> bytes:
    return lines.replace(b"btcusdt", b"ethusdt").replace(b"BTCUSDT", b"ETHUSDT")


@pytest.mark.parametrize(
    ("action", "why"),
    [
        pytest.param(html, "HTML page", id="html-error-page"),
        pytest.param(rewritten(_swap_symbol), "streams not asked for", id="wrong-symbol"),
        pytest.param(drop_every(3), "does not bridge", id="not-bridging"),
        pytest.param(rewritten(lambda lines: b""), "holds no message inside the gap", id="wrong-range"),
        pytest.param(rewritten(lambda lines: b"2024-08-08T23:55:00Z not json\n"), "not JSON", id="garbage"),
        pytest.param(status(404), "no such data", id="404"),
    ],
)
def test_bad_answers_are_rejected_with_a_reason_and_nothing_is_merged(
    usdm: tuple[Path, Path, Path], tmp_path: Path, action: Any, why: str
) -> None:
    _, holed, _ = usdm
    with tardis_server(usdm[0], default=action) as server:
        out = tmp_path / "out"
        report = audit(holed, out, server.url + FAST)
    by = streams(report)
    for channel in ("book", "trades"):
        s = by[channel]
        assert s["gaps_repaired"] == 0 and s["replayed_messages"] == 0
        reason = s["gaps"][0]["unrepaired"][server.url]
        assert why in reason, reason
    assert by["book"]["unsafe_seconds"] > 200  # the book stays unsafe: nothing was merged
    assert {r["detail"]["unrepaired"][server.url] for r in gap_records(out)}


@pytest.mark.parametrize("key", [None, "wrong-key-456"])
def test_refused_credentials_fail_at_once_naming_the_variable(
    usdm: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: str | None
) -> None:
    _, holed, _ = usdm
    if key is None:
        monkeypatch.delenv("RETAPE_TARDIS_API_KEY", raising=False)
    else:
        monkeypatch.setenv("RETAPE_TARDIS_API_KEY", key)
    with tardis_server(usdm[0], default=status(401)) as server:
        out = tmp_path / "out"
        report = audit(holed, out, server.url + FAST)
    reason = streams(report)["book"]["gaps"][0]["unrepaired"][server.url]
    assert "RETAPE_TARDIS_API_KEY" in reason
    assert ("needs a key" if key is None else "refused the key") in reason
    assert len(server.seen) == 2  # one try per gap: 401 is not retried
    if key:
        for path in out.rglob("*"):
            if path.is_file():
                assert key.encode() not in path.read_bytes()


# -- every venue whose ids can prove a fill ------------------------------------------------

VENUES = {
    "binance-spot": ("cryptofeed/BINANCE.http.0.0", "cryptofeed/BINANCE.ws.1.0"),
    "binance-futures": ("cryptofeed/BINANCE_FUTURES.http.0.0", "cryptofeed/BINANCE_FUTURES.ws.1.0"),
    "binance-delivery": ("hftbacktest/cm/btcusd_perp_20240808.gz",),
    "binance-spot-trades": ("hftbacktest/spot/btcusdt_20240808.gz",),
    "kraken-futures": ("cryptofeed/KRAKEN_FUTURES.ws.1.0",),
    "deribit": ("cryptofeed_deribit/DERIBIT.ws.30.0",),
    "deribit-2021": ("cryptofeed_deribit/DERIBIT-5dd9ce.0",),
}


@pytest.mark.parametrize("venue", sorted(VENUES))
def test_every_venue_with_ids_is_repaired_to_the_untouched_books(venue: str, tmp_path: Path) -> None:
    files = VENUES[venue]
    full, holed = tmp_path / "full", tmp_path / "holed"
    full.mkdir()
    holed.mkdir()
    for f in files:
        shutil.copy(DATA / f, full)
        shutil.copy(DATA / f, holed)
    target = holed / Path(files[-1]).name
    opener: Any = gzip.open if target.suffix == ".gz" else open
    with opener(target, "rb") as fh:
        lines = fh.readlines()
    middle = len(lines) // 2
    with opener(target, "wb") as fh:
        fh.writelines(line for n, line in enumerate(lines) if not middle <= n < middle + 6)
    out_full, out = tmp_path / "o_full", tmp_path / "o"
    before = audit(full, out_full)
    after = audit(holed, out, str(full))
    gaps_before = sum(s["faults"]["gap"] for s in before["streams"])
    repaired = sum(s["gaps_repaired"] for s in after["streams"])
    gaps_after = sum(s["faults"]["gap"] for s in after["streams"])
    assert gaps_after > gaps_before, "the hole made no gap"
    assert repaired == gaps_after - gaps_before
    for s in after["streams"]:
        for g in s["gaps"]:
            assert g["repaired"], (s["exchange"], s["symbol"], s["channel"], g)
    assert books(out) == books(out_full)


def test_bybit_without_receive_times_asks_by_exchange_time(tmp_path: Path) -> None:
    """The nautilus Bybit v5 capture has no receive times: the gap's messages are looked for
    around the exchange's ``ts``, in an archive holding the same capture as Tardis raw lines."""
    src = DATA / "nautilus" / "2024-12-01_XRPUSDT_ob500.data"
    lines = src.read_bytes().splitlines(True)
    full, holed = tmp_path / "full", tmp_path / "holed"
    full.mkdir()
    holed.mkdir()
    with open(full / "bybit_XRPUSDT.txt", "wb") as out:
        for line in lines:
            ts = json.loads(line)["ts"]
            out.write(
                time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts // 1000)).encode()
                + b".%03dZ " % (ts % 1000)
                + line
            )
    (holed / src.name).write_bytes(b"".join(lines[:25] + lines[31:]))
    report = audit(holed, tmp_path / "o", str(full))
    (book,) = report["streams"]
    assert book["faults"]["gap"] == 1 and book["gaps_repaired"] == 1 and book["replayed_messages"] == 6
    assert book["integrity_score"] == 100.0


def test_bitfinex_gaps_are_reported_as_not_fillable(tmp_path: Path) -> None:
    full, holed = tmp_path / "full", tmp_path / "holed"
    full.mkdir()
    holed.mkdir()
    src = DATA / "cryptofeed" / "BITFINEX.ws.11.0"
    shutil.copy(src, full)
    lines = src.read_bytes().splitlines(True)
    (holed / src.name).write_bytes(b"".join(lines[:850] + lines[870:]))
    report = audit(holed, tmp_path / "o", str(full))
    gaps = [g for s in report["streams"] for g in s["gaps"]]
    assert gaps and not any(g["repaired"] for g in gaps)
    assert all("one connection" in g["unrepaired"]["*"] for g in gaps)


# -- the commands as a user types them -------------------------------------------------------


@contextmanager
def serve_archive(directory: Path) -> Iterator[tuple[str, str]]:
    """``retape serve-archive DIR --port 0`` as a user runs it; its base URL and the line it
    printed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "producers.cli", "serve-archive", str(directory), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert " on http://" in first, first + (proc.stderr.read() if proc.stderr else "")
        yield first.split(" on ")[1].split("/v1/")[0], first
    finally:
        proc.terminate()
        proc.wait(10)


def test_serve_archive_serves_the_tardis_protocol(usdm: tuple[Path, Path, Path]) -> None:
    import httpx

    full, _, _ = usdm
    with serve_archive(full) as (base, first):
        assert "serving 1 capture(s) of binance-futures" in first, first
        filters = json.dumps([{"channel": "depth", "symbols": ["btcusdt"]}])
        r = httpx.get(
            f"{base}/v1/data-feeds/binance-futures",
            params={"from": "2024-08-08", "offset": 1435, "filters": filters},
        )
        assert r.status_code == 200 and r.headers["content-encoding"] == "gzip"
        lines = r.content.splitlines()  # httpx already gunzipped it
        assert lines and all(line.startswith(b"2024-08-08T23:55:") for line in lines)
        assert all(b"btcusdt@depth" in line for line in lines)
        assert httpx.get(f"{base}/v1/nothing").status_code == 404
        bad = httpx.get(
            f"{base}/v1/data-feeds/binance-futures", params={"from": "2024-08-08", "filters": "{"}
        )
        assert bad.status_code == 400 and "filters" in bad.json()["message"]


def test_the_default_command_repairs_with_just_the_flag(
    usdm: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """`retape audit CAPTURE --replay-source URL` against `retape serve-archive`: embedded
    broker, local workers, the replay queue, the fan-in and the re-audit; the same bytes as in
    one process, and the books of the untouched capture."""
    full, holed, out_full = usdm
    with serve_archive(full) as (url, _):
        env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
        done = subprocess.run(
            [sys.executable, "-m", "producers.cli", "audit", str(holed), "--out", str(tmp_path / "dist"),
             "--replay-source", url, "--no-progress"],
            env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        report = json.loads((tmp_path / "dist" / "report.json").read_text())
        assert_repaired(report, url)
        audit(holed, tmp_path / "one", url)
    for name in ("report.json", "audit/records.jsonl"):
        assert (tmp_path / "dist" / name).read_bytes() == (tmp_path / "one" / name).read_bytes()
    assert books(tmp_path / "dist") == books(out_full)


def test_the_tardis_client_runs_on_an_injected_transport() -> None:
    """The transport is injectable (httpx.MockTransport): a 429 with Retry-After, then the minute."""
    import httpx

    from shared.model import StreamKey
    from shared.replay.limits import Limit, LocalGate
    from shared.replay.request import FillRequest
    from shared.replay.retry import Attempts, RetryPolicy
    from shared.replay.tardis import TardisSource

    answers = [httpx.Response(429, headers={"Retry-After": "7"})]
    line = b'2024-08-08T23:55:00.000001Z {"stream":"btcusdt@depth@0ms","data":{}}\n'
    asked: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request)
        if answers:
            return answers.pop(0)
        body = httpx.ByteStream(gzip.compress(line))  # a stream, as a network body is
        return httpx.Response(200, stream=body, headers={"Content-Encoding": "gzip"})

    clock = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        clock[0] += s

    gate = LocalGate("mock", Limit(1000), clock=lambda: clock[0], sleep=sleep)
    source = TardisSource(
        "http://tardis.test", gate, RetryPolicy(), api_key="k", transport=httpx.MockTransport(handler)
    )
    req = FillRequest(
        StreamKey("binance-futures", "BTCUSDT", "book"), "", 1, 5, 3, 1723161300000000, 1723161300000000
    )
    got = list(source.records(req, Attempts(source.name)))
    assert got[0] == (1723161300000001, b'{"stream":"btcusdt@depth@0ms","data":{}}')
    assert sum(slept) >= 7.0  # the Retry-After, exactly
    first = asked[0]
    assert first.url.path == "/v1/data-feeds/binance-futures"
    assert first.url.params["from"] == "2024-08-08" and first.url.params["offset"] == str(23 * 60 + 54)
    assert json.loads(first.url.params["filters"]) == [{"channel": "depth", "symbols": ["btcusdt"]}]
    assert first.headers["Authorization"] == "Bearer k"


# -- Binance REST trade history --------------------------------------------------------------

SPOT = DATA / "hftbacktest" / "spot" / "btcusdt_20240808.gz"


@pytest.fixture(scope="module")
def spot_holed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The spot capture with 10 000 lines removed: a book gap and a trade gap of ~2400 ids."""
    holed = tmp_path_factory.mktemp("spot") / "holed"
    holed.mkdir()
    with gzip.open(SPOT, "rb") as fh:
        lines = fh.readlines()
    with gzip.open(holed / SPOT.name, "wb") as out:
        out.writelines(line for n, line in enumerate(lines) if not 15000 <= n < 25000)
    return holed


def test_binance_rest_fills_trade_gaps_page_by_page_and_says_why_not_books(
    spot_holed: Path, tmp_path: Path
) -> None:
    with binance_server(SPOT) as server:
        out = tmp_path / "out"
        report = audit(spot_holed, out, server.url)
    by = streams(report)
    trades = by["trades"]
    assert trades["gaps_repaired"] == 1 and trades["integrity_score"] == 100.0
    missing = trades["gaps"][0]["missing"]
    assert missing > 2000 and trades["replayed_messages"] == missing
    assert len(server.seen) == -(-missing // 1000)  # pages of 1000
    assert trades["gaps"][0]["source"] == "binance-rest:" + server.url.removeprefix("binance+")
    book = by["book"]["gaps"][0]
    assert (
        book["repaired"] is False
        and "no history of depth updates" in book["unrepaired"][trades["gaps"][0]["source"]]
    )


def test_binance_429_holds_every_request_off_and_never_draws_a_418(spot_holed: Path, tmp_path: Path) -> None:
    with binance_server(SPOT, answer_429=1, retry_after=1.0) as server:
        report = audit(spot_holed, tmp_path / "out", server.url + "#backoff=0.01")
    assert streams(report)["trades"]["gaps_repaired"] == 1
    assert server.banned == 0
    assert server.seen[1][0] - server.seen[0][0] >= 1.0


def test_binance_weight_header_near_the_budget_waits_for_the_next_minute(
    spot_holed: Path, tmp_path: Path
) -> None:
    # Other clients of the IP used 2200 of the 2400 of this minute: after the first page
    # Binance's count passes 90 %, so the next page waits for the minute to turn.
    with binance_server(SPOT, others_used=2200) as server:
        report = audit(spot_holed, tmp_path / "out", server.url + "#weight=2400")
    assert streams(report)["trades"]["gaps_repaired"] == 1
    # Every page after the first came in a later minute than the first one.
    assert len(server.seen) >= 2 and server.minutes_seen() == 2 and server.banned == 0

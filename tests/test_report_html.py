"""``report.html`` in a real browser: Debian's Chromium, headless, driven by Selenium.

The page of an audit of the demo's captures (the Makefile's ``SAMPLES``) loads from ``file://``
with no console error and no network request, lists every stream, sorts by score; a stream with a
gap (one depth message dropped from a real capture) shows that gap on its timeline.  Screenshots
of the demo's report are kept in ``tests/artefacts/`` (or ``$RETAPE_ARTEFACTS``).  The page is the
same bytes across runs and between the in-process engine and the embedded pipeline, and
``retape verify`` covers it.

Without Chromium or ChromeDriver the browser tests skip, except under ``CI=true`` where they fail
(``.ci/run`` installs both).
"""

from __future__ import annotations

import gzip
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from shared.auditors import AuditConfig, StreamResult
from shared.engine import AuditOutcome, Engine, SegmentResult, audit_segment, combine, plan
from shared.html_report import EXACT_MAX, TIME_BINS, render_html
from shared.model import Finding, Gap, StreamKey, Unsafe
from shared.report import report_json, write_outputs

REPO = Path(__file__).parent.parent
DATA = Path(__file__).parent / "data"
USDM = DATA / "hftbacktest" / "usdm" / "btcusdt_20240808.gz"
ARTEFACTS = Path(os.environ.get("RETAPE_ARTEFACTS") or Path(__file__).parent / "artefacts")
CHROME_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--window-size=1400,1000",
]


def _ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _samples() -> list[str]:
    """The inputs of ``make demo``, read from the Makefile so that the two never drift apart."""
    text = (REPO / "Makefile").read_text()
    m = re.search(r"^SAMPLES\s*:=\s*(.+)$", text, re.MULTILINE)
    assert m, "the Makefile has no SAMPLES line"
    return m.group(1).split()


def retape(*args: str) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in ("RETAPE_SIGNING_KEY", "REDIS_URL")}
    return subprocess.run(
        [sys.executable, "-m", "producers.cli", *args],
        capture_output=True,
        check=False,
        cwd=REPO,
        env=env,
    )


def _audit(out: Path, *args: str) -> Path:
    proc = retape("audit", *args, "--out", str(out), "--no-progress")
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert (out / "report.html").is_file()
    return out


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _audit(tmp_path_factory.mktemp("demo"), *_samples(), "--in-process")


@pytest.fixture(scope="module")
def with_gap(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], int]:
    """An audit of the USD-M capture with one depth message (after the snapshot) dropped: the
    output, the book stream's report entry and its index."""
    lines = gzip.decompress(USDM.read_bytes()).split(b"\n")[:-1]
    snap = next(i for i, line in enumerate(lines) if b'"lastUpdateId"' in line[:60])
    depth = [i for i, line in enumerate(lines) if i > snap and b"@depth" in line[:60]]
    k = depth[3000]
    folder = tmp_path_factory.mktemp("gap-in")
    with gzip.open(folder / USDM.name, "wb") as fh:
        fh.write(b"\n".join(lines[:k] + lines[k + 1 :]) + b"\n")
    out = _audit(tmp_path_factory.mktemp("gap-out"), str(folder), "--in-process")
    report = orjson.loads((out / "report.json").read_bytes())
    i, book = next((i, s) for i, s in enumerate(report["streams"]) if s["channel"] == "book")
    assert len(book["gaps"]) == 1, book["gaps"]
    return out, book, i


# ---------------------------------------------------------------------------------------------
# The browser


def _need(what: str) -> None:
    if _ci():
        pytest.fail(f"{what} (CI=true: .ci/run installs chromium and chromium-driver)")
    pytest.skip(what)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _need("selenium is not installed (the dev extra)")
    chromium = next(
        (p for p in ("/usr/bin/chromium", shutil.which("chromium")) if p and os.path.exists(p)), None
    )
    driver_path = next(
        (p for p in ("/usr/bin/chromedriver", shutil.which("chromedriver")) if p and os.path.exists(p)), None
    )
    if chromium is None or driver_path is None:
        _need(f"no Chromium or ChromeDriver here (chromium={chromium}, chromedriver={driver_path})")
    profile = tempfile.mkdtemp(prefix="retape-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in [*CHROME_FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _open(driver: Any, page: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Load ``page`` from disk; return the console messages and every URL it requested."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get("about:blank")
    driver.get_log("browser")  # drain what came before
    driver.get_log("performance")
    driver.get(page.resolve().as_uri())
    WebDriverWait(driver, 60).until(
        lambda d: d.execute_script("return document.documentElement.getAttribute('data-ready')") == "1"
    )
    console = driver.get_log("browser")
    urls = []
    for entry in driver.get_log("performance"):
        message = orjson.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return console, urls


def _open_stream(driver: Any, stream_id: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    row = driver.find_element(By.CSS_SELECTOR, f"#{stream_id} tr.row")
    driver.execute_script("arguments[0].scrollIntoView({block: 'start'})", row)
    row.click()
    WebDriverWait(driver, 30).until(
        lambda d: d.execute_script(
            "var g = document.querySelector(arguments[0]);"
            " return !!(g && g._fullLayout && g.querySelector('svg'));",
            f"#{stream_id} .timeline",
        )
    )


def _artefact(name: str, capsys: pytest.CaptureFixture[str]) -> Path:
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTEFACTS / name
    with capsys.disabled():
        print(f"\n[report.html screenshot] {path}")
    return path


def _scores(driver: Any) -> list[float]:
    values = driver.execute_script(
        "return Array.from(document.querySelectorAll('#stream-table > tbody'))"
        ".map(function (b) { var c = b.rows[0].cells; return c[c.length - 1].getAttribute('data-v'); });"
    )
    return [float(v) for v in values]


def test_demo_page_loads_from_disk_with_no_error_and_no_network(
    browser: Any, demo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page = demo / "report.html"
    console, urls = _open(browser, page)
    errors = [m for m in console if m.get("level") == "SEVERE"]
    assert errors == [], errors
    outside = [u for u in urls if u != page.resolve().as_uri() and not u.startswith(("data:", "blob:"))]
    assert outside == [], outside
    assert page.resolve().as_uri() in urls
    # What a user sees first: the verdict, the worst streams, the fault kinds, the totals.
    text = browser.find_element("css selector", "body").text
    assert "Look at these first" in text and "Faults by kind" in text and "Totals" in text
    browser.save_screenshot(str(_artefact("report-demo.png", capsys)))
    # The worst stream opened, as a user would from "Look at these first".
    browser.find_element("css selector", "#worst a").click()
    worst = browser.execute_script("return location.hash.slice(1)")
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, 30).until(
        lambda d: d.execute_script(
            "var g = document.querySelector(arguments[0]); return !!(g && g._fullLayout);",
            f"#{worst} .latency",
        )
    )
    browser.save_screenshot(str(_artefact("report-demo-worst-stream.png", capsys)))
    assert [m for m in browser.get_log("browser") if m.get("level") == "SEVERE"] == []


def test_table_lists_every_stream_of_the_demo(browser: Any, demo: Path) -> None:
    report = orjson.loads((demo / "report.json").read_bytes())
    _open(browser, demo / "report.html")
    rows = browser.execute_script(
        "return Array.from(document.querySelectorAll('#stream-table > tbody')).map(function (b) {"
        " var c = b.rows[0].cells;"
        " return [b.id, c[0].innerText.trim(), c[1].innerText.trim(),"
        "         b.rows[0].getClientRects().length > 0]; });"
    )
    assert len(rows) == len(report["streams"]) > 100
    shown = {(name, channel) for _, name, channel, visible in rows if visible}
    expected = {(f"{s['exchange']} {s['symbol']}", s["channel"]) for s in report["streams"]}
    assert shown == expected
    # Each row is the report's stream of the same index.
    for stream_id, name, channel, _ in rows:
        s = report["streams"][int(stream_id[1:])]
        assert (name, channel) == (f"{s['exchange']} {s['symbol']}", s["channel"])


def test_sorting_by_score(browser: Any, demo: Path) -> None:
    from selenium.webdriver.common.by import By

    report = orjson.loads((demo / "report.json").read_bytes())
    every = sorted(s["integrity_score"] for s in report["streams"])
    assert every[0] < every[-1]  # the demo has faults: the order shows
    _open(browser, demo / "report.html")
    head = browser.find_element(By.CSS_SELECTOR, "#th-score")
    assert _scores(browser) == every  # worst first, as it opens
    assert head.get_attribute("aria-sort") == "ascending"
    head.find_element(By.TAG_NAME, "button").click()
    assert _scores(browser) == every[::-1]
    assert head.get_attribute("aria-sort") == "descending"
    # Another column, then back to the score: ascending again.
    browser.find_element(By.CSS_SELECTOR, "#th-messages button").click()
    messages = browser.execute_script(
        "return Array.from(document.querySelectorAll('#stream-table > tbody'))"
        ".map(function (b) { return +b.rows[0].cells[2].getAttribute('data-v'); });"
    )
    assert messages == sorted(s["messages"] for s in report["streams"])
    assert head.get_attribute("aria-sort") is None
    head.find_element(By.TAG_NAME, "button").click()
    assert _scores(browser) == every


def test_stream_with_a_gap_shows_it_on_its_timeline(
    browser: Any, with_gap: tuple[Path, dict[str, Any], int], capsys: pytest.CaptureFixture[str]
) -> None:
    out, book, index = with_gap
    console, _ = _open(browser, out / "report.html")
    assert [m for m in console if m.get("level") == "SEVERE"] == []
    _open_stream(browser, f"s{index}")
    gap_us = book["gaps"][0]["local_us"]
    got = browser.execute_script(
        """
        var gd = document.querySelector(arguments[0]);
        var i = gd.data.findIndex(function (t) { return t.name === 'gap'; });
        var u = gd.data.findIndex(function (t) { return t.name === 'unsafe: gap'; });
        var xa = gd._fullLayout.xaxis;
        var point = gd.querySelector('g.trace.scatter.trace' + gd._fullData[i].uid + ' path.point');
        var box = point.getBoundingClientRect(), plot = gd.getBoundingClientRect();
        return {x: gd.data[i].x, hover: gd.data[i].hovertext, unsafe_base: u < 0 ? null : gd.data[u].base,
                drawn_at: box.x + box.width / 2 - plot.x, expected_at: xa.l2p(gd.data[i].x[0]) + xa._offset,
                visible: box.width > 0 && box.height > 0};
        """,
        f"#s{index} .timeline",
    )
    assert got["x"] == [pytest.approx(gap_us / 1000)]
    assert got["visible"]
    assert abs(got["drawn_at"] - got["expected_at"]) < 2  # the marker sits at the gap's receive time
    after, before = book["gaps"][0]["after"], book["gaps"][0]["before"]
    assert f"after {after}, before {before}" in got["hover"][0]
    assert got["unsafe_base"] == [pytest.approx(gap_us / 1000)]  # the unsafe interval the gap opened
    browser.save_screenshot(str(_artefact("report-gap-stream.png", capsys)))
    assert [m for m in browser.get_log("browser") if m.get("level") == "SEVERE"] == []


# ---------------------------------------------------------------------------------------------
# Same bytes, and covered by the MANIFEST


def test_same_bytes_across_runs_and_the_embedded_pipeline_and_verify_passes(
    demo: Path, tmp_path: Path
) -> None:
    again = _audit(tmp_path / "again", *_samples(), "--in-process")
    pipeline = _audit(tmp_path / "pipeline", *_samples(), "--workers", "1")
    html = (demo / "report.html").read_bytes()
    assert (again / "report.html").read_bytes() == html
    assert (pipeline / "report.html").read_bytes() == html
    listing = orjson.loads((pipeline / "audit" / "MANIFEST").read_bytes())
    assert "report.html" in listing["files"]
    for out in (demo, pipeline):
        proc = retape("verify", str(out))
        assert proc.returncode == 0, proc.stdout + proc.stderr
    # The MANIFEST covers the page: one byte changed is found.
    page = pipeline / "report.html"
    data = bytearray(page.read_bytes())
    data[len(data) // 2] ^= 1
    page.write_bytes(bytes(data))
    proc = retape("verify", str(pipeline))
    assert proc.returncode == 1
    assert b"report.html" in proc.stdout + proc.stderr


def test_segments_merged_in_any_order_give_the_same_page(tmp_path: Path) -> None:
    """Workers answer segments in any order: the page the aggregator writes is the same bytes
    as one process reading everything (findings, gaps and latency arrive in another order)."""
    inputs = [str(DATA / "cryptofeed"), str(DATA / "hftbacktest" / "spot")]
    cfg = AuditConfig()
    write_outputs(Engine(cfg).run(inputs), str(tmp_path / "whole"))
    job = plan(inputs)
    assert len(job.segments) > 1
    results = [audit_segment(job, i, cfg) for i in range(len(job.segments))]
    received = [SegmentResult.decode(r.encode()) for r in results]
    random.Random(11).shuffle(received)
    write_outputs(combine(job, received), str(tmp_path / "parts"))
    page = (tmp_path / "whole" / "report.html").read_bytes()
    assert (tmp_path / "parts" / "report.html").read_bytes() == page


# ---------------------------------------------------------------------------------------------
# The page's data, without a browser


def _outcome(findings: int, gaps: int = 2, disconnects: int = 3, symbol: str = "BTCUSDT") -> AuditOutcome:
    key = StreamKey("binance-futures", symbol, "book")
    r = StreamResult(key)
    r.messages = findings + 10
    r.first_us = 1_723_161_255_000_000
    r.last_us = r.first_us + 3_600_000_000
    step = (r.last_us - r.first_us) // max(findings, 1)
    for i in range(findings):
        r.findings.append(
            Finding(key, "timestamp_drift", "cap.gz", i, r.first_us + i * step, {"offset_ms": 250})
        )
    for i in range(disconnects):
        r.findings.append(Finding(key, "disconnect", "cap.gz", 10**6 + i, r.first_us + 1000 * i, {}))
    for i in range(gaps):
        t = r.first_us + (i + 1) * 60_000_000
        r.gaps.append(Gap(100 * i, 100 * i + 5, 4, False, None, t))
        r.unsafe.append(Unsafe(t, t + 1_000_000, "gap", 7))
    r.faults["timestamp_drift"] = findings
    r.faults["disconnect"] = disconnects
    r.faults["gap"] = gaps
    for offset in range(-2000, 50_000, 7):
        r.latency.add(offset)
    return AuditOutcome([], [r])


def _page_data(outcome: AuditOutcome) -> dict[str, Any]:
    html = render_html(report_json(outcome), outcome.streams)
    m = re.search(r'<script type="application/json" id="d0">(.*?)</script>', html, re.DOTALL)
    assert m
    data: dict[str, Any] = orjson.loads(m.group(1))
    return data


def test_many_findings_are_binned_and_the_rest_is_exact() -> None:
    few = _page_data(_outcome(EXACT_MAX))
    assert len(few["exact"]["timestamp_drift"]) == EXACT_MAX
    many = _page_data(_outcome(200_000, gaps=40, disconnects=500))
    assert "timestamp_drift" not in many["exact"]
    bins = many["bins"]["timestamp_drift"]
    assert len(bins) <= TIME_BINS and sum(n for _, n in bins) == 200_000
    assert len(many["exact"]["disconnect"]) == 500  # exact whatever their number
    assert len(many["gaps"]) == 40 and len(many["unsafe"]) == 40
    assert len(orjson.dumps(many)) < 60_000
    assert sum(many["latency"]["counts"]) + many["latency"]["under"][0] + many["latency"]["over"][0] == len(
        range(-2000, 50_000, 7)
    )


def test_names_cannot_break_out_of_the_page() -> None:
    outcome = _outcome(3, symbol="</script><script>alert(1)</script>")
    html = render_html(report_json(outcome), outcome.streams)
    assert "<script>alert(1)" not in html
    assert "&lt;/script&gt;&lt;script&gt;alert(1)" in html  # the table shows it as text
    assert "\\u003c/script\\u003e\\u003cscript\\u003ealert(1)" in html  # the data holds it escaped
    data = _page_data(outcome)
    assert data["name"].endswith("</script><script>alert(1)</script> book")

"""The compiled parts against the pure-Python code they were written from: built by the
README's set-up, the same value for every message of every capture in tests/data, and an
audit with them gives the same bytes as one without (``RETAPE_PURE_PYTHON=1``)."""

from __future__ import annotations

import importlib
from pathlib import Path

import orjson
import pytest
from pipeline_helpers import DATA, env, in_ci, outputs, retape

from shared import compiled
from shared.checks.shapes import py_fingerprint
from shared.formats.detect import detect
from shared.formats.readers import READERS

SAMPLES = ["hftbacktest", "cryptofeed", "cryptofeed_ftx", "cryptofeed_deribit", "nautilus"]


def _compiled(name: str):  # type: ignore[no-untyped-def]
    try:
        return importlib.import_module(name)
    except ImportError:
        message = f"{name} is not built (make setup builds it: gcc and the Python headers are needed)"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)


def test_every_compiled_part_is_built_here() -> None:
    missing = [name for name, ok in compiled.built().items() if not ok]
    if missing and not in_ci():
        pytest.skip(f"not built: {missing}")
    assert missing == []


def test_the_compiled_fingerprint_is_the_reference_on_every_captured_message() -> None:
    fast = _compiled("shared.checks._shapes_c").fingerprint
    checked = 0
    kinds: set[object] = set()
    for path in sorted(p for p in DATA.rglob("*") if p.is_file()):
        read = READERS.get(detect(str(path)) or "")
        if read is None:
            continue
        for rec in read(str(path)):
            if rec.kind != "json":
                continue
            try:
                obj = orjson.loads(rec.raw)
            except orjson.JSONDecodeError:
                continue
            want = py_fingerprint(obj)
            assert fast(obj) == want, (path, rec.line)
            kinds.add(want)
            checked += 1
    assert checked > 100_000 and len(kinds) > 50
    for odd in ([], {}, [[]], [{}], [1, "a", None], {"a": [], "b": {}}, 3, None, "x", [[1.5, True]]):
        assert fast(odd) == py_fingerprint(odd), odd


def test_an_audit_gives_the_same_bytes_with_and_without_the_compiled_parts(tmp_path: Path) -> None:
    _compiled("shared.checks._shapes_c")
    inputs = [str(DATA / name) for name in SAMPLES]
    fast, pure = tmp_path / "compiled", tmp_path / "pure"
    for out, extra in ((fast, {}), (pure, {compiled.PURE_ENV: "1"})):
        proc = retape("audit", *inputs, "--out", str(out), "--in-process", "--quiet", environ=env(**extra))
        assert proc.returncode == 0, proc.stderr
    assert outputs(fast) == outputs(pure)


def _outcome(apply, state, bid, levels):  # type: ignore[no-untyped-def]
    """What applying ``levels`` gave: the invalid levels, or the exception's type (the state,
    changed in place up to there, is compared by the caller)."""
    try:
        return ("applied", apply(*state, bid, levels))
    except Exception as exc:  # the fast path's ways of handing over to the checking path
        return ("raised", type(exc))


def test_the_compiled_book_loop_is_the_reference_level_for_level() -> None:
    import random

    from shared import book

    fast = _compiled("shared._book_c").apply_levels
    rng = random.Random(5)
    prices = ["100", "100.0", "100.00", "99.5", "101.25", "1e2", "0.1", "7", "-1", "abc", "NaN", "", "0"]
    quantities = ["1", "0", "0.000", "2.5", "-3", "x", "inf", "1e-8", 0, 1.5, 3]
    for bid in (False, True):
        a: tuple[dict, dict, list] = ({}, {}, [])
        b: tuple[dict, dict, list] = ({}, {}, [])
        for _ in range(3000):
            levels = [[rng.choice(prices), rng.choice(quantities)] for _ in range(rng.randint(0, 6))]
            want = _outcome(book.py_apply_levels, a, bid, levels)
            got = _outcome(fast, b, bid, levels)
            assert got == want and a == b, levels
        assert a[0], "some levels were applied"
    # What the fast path hands to the checking path, both raise alike.
    for levels, error in (
        ([["1.00000000000000000001", "1"]], book._NeedsExact),
        ([["1", "2", "3"]], ValueError),
        ([[["1"], "2"]], TypeError),
    ):
        for apply in (book.py_apply_levels, fast):
            with pytest.raises(error):
                apply({}, {}, [], False, levels)


TRUTH_TESTS = [
    "tests/core",
    "tests/test_reference_books.py",
    "tests/test_reference_books_venues.py",
    "tests/test_injected_faults.py",
    "tests/test_venue_faults.py",
    "tests/test_report_truth.py",
]


def test_the_truth_tests_pass_on_the_pure_python_path_too() -> None:
    """This run uses the compiled parts; the truth tests (exact books against the independent
    reference, injected faults found exactly, every venue) run again on the references."""
    import subprocess
    import sys

    from pipeline_helpers import ROOT

    if not any(compiled.built().values()):
        pytest.skip("nothing is compiled here: this whole run is the pure-Python path")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TRUTH_TESTS],
        cwd=ROOT,
        env=env(**{compiled.PURE_ENV: "1"}),
        capture_output=True,
        text=True,
        check=False,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]  # 5: none collected
    assert proc.stdout.count(".") >= 200  # one dot a passed test (-q twice: no summary line)


@pytest.fixture(scope="module")
def faulted(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Binance USD-M and spot and Bybit v5 depth streams in hftbacktest and Tardis raw lines,
    with faults (see tests/test_chunking.py): what the fast lane takes, and the lines it must
    hand back."""
    from test_chunking import _capture

    out = []
    for venue in ("usdm", "spot", "bybit"):
        for iso in (False, True):
            folder = tmp_path_factory.mktemp(f"faulted-{venue}-{iso}")
            out.append(_capture(folder, 9_000, venue == "spot", iso, faults=True, bybit=venue == "bybit"))
    return out


def test_the_fast_lane_gives_the_bytes_of_the_python_path(faulted: list[Path], tmp_path: Path) -> None:
    """The default command's configuration (rebuilt books every 60 s included), one process:
    the same bytes with the lane and with every line on the Python path."""
    _compiled("shared._lane_c")
    for n, path in enumerate(faulted):
        fast, pure = tmp_path / f"lane{n}", tmp_path / f"pure{n}"
        for out, extra in ((fast, {}), (pure, {compiled.PURE_ENV: "1"})):
            proc = retape(
                "audit", str(path), "--out", str(out), "--in-process", "--quiet", environ=env(**extra)
            )
            assert proc.returncode == 0, proc.stderr
        assert outputs(fast) == outputs(pure), path.name
        assert any(name.startswith("books/") for name in outputs(fast))


def test_the_fast_lane_takes_nearly_every_line_of_a_depth_stream(faulted: list[Path]) -> None:
    """The lane is not just built but used: it takes all but the lines it must hand back
    (the snapshot, the first diffs, the faults, and in Tardis raw files the ~1000 diffs after
    the disconnect, which wait for a snapshot that never comes)."""
    from shared import fastlane
    from shared.auditors import AuditConfig
    from shared.engine import Engine

    _compiled("shared._lane_c")
    taken: list[tuple[int, int]] = []
    records = fastlane.LaneReader.records

    def counting(self: fastlane.LaneReader):  # type: ignore[no-untyped-def]
        yield from records(self)
        taken.append((self.lane.taken, self.line))

    fastlane.LaneReader.records = counting  # type: ignore[method-assign]
    try:
        for path in faulted:
            Engine(AuditConfig(book_interval_us=60_000_000)).run([str(path)])
    finally:
        fastlane.LaneReader.records = records  # type: ignore[method-assign]
    assert len(taken) == len(faulted)
    for lane_lines, lines in taken:
        assert lane_lines > 0.85 * lines, (lane_lines, lines)

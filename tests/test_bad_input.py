"""Bad input never crashes and is never silent: a finding or an error naming the file."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from shared.auditors import AuditConfig
from shared.engine import Engine, plan
from shared.errors import InputError
from shared.jsonout import materialize
from shared.planning import InputSummary
from shared.report import report_json, write_outputs

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data"
USDM = DATA / "hftbacktest" / "usdm" / "btcusdt_20240808.gz"
NOBODY = 65534


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
    # Read, and simply not captures: audited (nothing in them was left unread).
    assert all(i.audited and i.sha256 for i in outcome.inputs)


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
    elsewhere = tmp_path.parent / f"{tmp_path.name}-elsewhere"
    elsewhere.mkdir()
    (elsewhere / "x.gz").write_bytes(USDM.read_bytes())
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "linked").symlink_to(elsewhere, target_is_directory=True)
    (tmp_path / "sub" / "loop").symlink_to(tmp_path, target_is_directory=True)  # read once
    good = tmp_path / "good.gz"
    good.write_bytes(USDM.read_bytes())
    outcome = _run(tmp_path)
    by_name = {Path(i.path).name: i for i in outcome.inputs}
    assert by_name["good.gz"].error is None and by_name["good.gz"].audited
    assert not by_name["dangling"].audited and "broken symbolic link" in str(by_name["dangling"].error)
    assert not by_name["pipe"].audited and "not a regular file" in str(by_name["pipe"].error)
    # A link to a directory is followed; a link back up the tree is not read twice.
    assert by_name["x.gz"].audited and by_name["x.gz"].path == str(tmp_path / "sub" / "linked" / "x.gz")
    assert "linked" not in by_name and "loop" not in by_name
    assert sum(1 for i in outcome.inputs if Path(i.path).name == "good.gz") == 1
    assert any(s.key.channel == "book" and s.messages > 1000 for s in outcome.streams)


def _capture(path: Path, lines: int = 200) -> Path:
    """The first ``lines`` lines of the real USD-M capture, plain text."""
    with gzip.open(USDM, "rb") as fh:
        head = [next(fh) for _ in range(lines)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(head))
    return path


def test_a_name_that_is_not_utf8_is_listed_with_the_fix_not_read(tmp_path: Path) -> None:
    src = tmp_path / "in"
    good = _capture(src / "good.txt")
    bad = _capture(src / os.fsdecode(b"caf\xe9-\xff.txt"))
    in_bad_dir = _capture(src / os.fsdecode(b"d\xe9j\xe0") / "ok-name.txt")
    outcome = _run(src)
    by_path = {i.path: i for i in outcome.inputs}
    # Shown with the odd bytes escaped: valid UTF-8 that JSON holds.
    assert set(by_path) == {str(good), f"{src}/caf\\xe9-\\xff.txt", f"{src}/d\\xe9j\\xe0/ok-name.txt"}
    for path, what in ((bad, "file"), (in_bad_dir, "directory it is in")):
        entry = by_path[os.fsencode(path).decode("utf-8", "backslashreplace")]
        assert not entry.audited and (entry.lines, entry.sha256, entry.format) == (0, "", None)
        assert entry.error is not None and "not valid UTF-8" in entry.error
        assert f"rename the {what} to audit it" in entry.error
    assert by_path[str(good)].audited and by_path[str(good)].lines == 200
    assert any(s.messages > 10 for s in outcome.streams)
    orjson.dumps(materialize(report_json(outcome)))
    write_outputs(outcome, str(tmp_path / "out"))


def test_the_audited_flag_travels_with_the_summary() -> None:
    entry = InputSummary("x", error="cannot read: Permission denied", audited=False)
    data = orjson.loads(orjson.dumps(entry.as_json()))
    assert data["audited"] is False and InputSummary.from_json(data) == entry
    assert InputSummary("y").as_json()["audited"] is True
    old = {"path": "z", "sha256": "", "format": None, "lines": 0, "malformed": 0, "ignored": 0}
    assert InputSummary.from_json(old).audited is True  # written before the flag existed


def test_a_missing_top_level_path_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        plan([str(tmp_path / "missing")])
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    with pytest.raises(InputError, match="broken symbolic link"):
        plan([str(tmp_path / "link")])


# -- permissions: checked as a user they apply to ---------------------------------------------


@pytest.fixture
def place(tmp_path: Path) -> Iterator[Path]:
    """Where to put the inputs of a permission test.  As root (for whom chmod 000 does not stop
    reading) the audit runs as the user nobody, who cannot enter pytest's private tmp_path: the
    inputs then go to a fresh directory that every user may enter, removed afterwards."""
    if os.geteuid() != 0:
        yield tmp_path
        return
    base = Path(tempfile.mkdtemp(prefix="retape-perm-"))
    try:
        base.chmod(0o755)
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _as_nobody() -> list[str]:
    """The command prefix that runs a command as nobody; skips the test when there is none."""
    why = "running as root, where chmod 000 does not stop reading"
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip(f"{why}, and setpriv is not installed to drop root")
    prefix = [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    if subprocess.run([*prefix, sys.executable, "-c", "pass"], capture_output=True, check=False).returncode:
        pytest.skip(f"{why}, and this Python cannot be run as nobody")
    return prefix


def _audit_as_a_user(paths: list[Path], out: Path) -> dict[str, Any]:
    """report.json of an audit of ``paths``, run by a user whom file permissions bind: this
    one, or nobody (through setpriv) when the tests run as root."""
    code = (
        "import sys\n"
        "from shared.auditors import AuditConfig\n"
        "from shared.engine import Engine\n"
        "from shared.report import write_outputs\n"
        "write_outputs(Engine(AuditConfig()).run(sys.argv[2:]), sys.argv[1])\n"
    )
    cmd = [sys.executable, "-c", code, str(out), *map(str, paths)]
    if os.geteuid() == 0:
        cmd = [*_as_nobody(), *cmd]
        out.mkdir(parents=True)
        out.chmod(0o777)
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    report: dict[str, Any] = orjson.loads((out / "report.json").read_bytes())
    return report


def test_a_file_without_read_permission_is_listed_as_not_audited(place: Path) -> None:
    good = _capture(place / "in" / "good.txt")
    locked = _capture(place / "in" / "locked.txt")
    locked.chmod(0)
    report = _audit_as_a_user([place / "in"], place / "out")
    by_name = {Path(i["path"]).name: i for i in report["inputs"]}
    assert by_name["locked.txt"]["audited"] is False
    assert by_name["locked.txt"]["error"] == "cannot read: Permission denied"
    assert by_name[good.name]["audited"] is True and by_name[good.name]["lines"] == 200


def test_a_directory_that_cannot_be_listed_is_listed_as_not_audited(place: Path) -> None:
    _capture(place / "in" / "good.txt")
    _capture(place / "in" / "closed" / "inside.txt")
    (place / "in" / "closed").chmod(0)
    try:
        report = _audit_as_a_user([place / "in"], place / "out")
    finally:
        (place / "in" / "closed").chmod(0o755)
    entries = {i["path"]: i for i in report["inputs"]}
    closed = entries[str(place / "in" / "closed")]
    assert closed["audited"] is False
    assert "cannot read this directory (Permission denied)" in closed["error"]
    assert entries[str(place / "in" / "good.txt")]["audited"] is True
    assert report["streams"]


def test_a_directory_of_every_kind_of_unreadable_entry_still_audits_the_rest(place: Path) -> None:
    src = place / "in"
    good = _capture(src / "good.txt")
    _capture(src / os.fsdecode(b"\xff\xfe.txt"))
    (src / "dangling").symlink_to(src / "nowhere")
    os.mkfifo(src / "pipe")
    (src / "garbage.bin").write_bytes(b"\x00\x01" * 100)
    _capture(src / "locked.txt").chmod(0)
    _capture(src / "closed" / "inside.txt")
    (src / "closed").chmod(0)
    try:
        report = _audit_as_a_user([src], place / "out")
    finally:
        (src / "closed").chmod(0o755)
    orjson.dumps(report)
    by_name = {Path(i["path"]).name: i for i in report["inputs"]}
    not_audited = sorted(name for name, i in by_name.items() if not i["audited"])
    assert not_audited == ["\\xff\\xfe.txt", "closed", "dangling", "locked.txt", "pipe"]
    assert all(by_name[name]["error"] for name in not_audited)
    assert by_name["garbage.bin"]["audited"] and by_name["garbage.bin"]["error"]
    assert by_name[good.name]["audited"] and "error" not in by_name[good.name]
    assert {s["symbol"] for s in report["streams"]} == {"BTCUSDT"}


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
    assert "after the end of the gzip stream" in next(iter(outcome.malformed)).reason

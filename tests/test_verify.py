"""Tamper evidence: the MANIFEST covers every output, is signed with a key from the
environment, and ``retape verify`` names the first broken thing (on real audits of bundled
captures)."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared import manifest
from shared.planning import InputSummary
from shared.report import verify_records
from shared.signing import fingerprint, public_key
from shared.verify import verify

REPO = Path(__file__).parent.parent
CF = Path(__file__).parent / "data" / "cryptofeed"
CAPTURES = ["BINANCE_FUTURES.ws.1.0", "BINANCE_FUTURES.http.0.0", "KRAKEN.ws.48.0"]
RECORDS = "audit/records.jsonl"


def retape(*args: str, key: Path | str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "RETAPE_SIGNING_KEY"}
    if key is not None:
        env["RETAPE_SIGNING_KEY"] = str(key)
    return subprocess.run(
        [sys.executable, "-m", "producers.cli", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        env=env,
    )


def _pem(private: Ed25519PrivateKey, folder: Path, name: str) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    priv = folder / f"{name}.pem"
    pub = folder / f"{name}.pub.pem"
    priv.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    pub.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return priv, pub


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("keys")
    priv, pub = _pem(Ed25519PrivateKey.generate(), folder, "signer")
    other_priv, other_pub = _pem(Ed25519PrivateKey.generate(), folder, "other")
    return {"private": priv, "public": pub, "other_private": other_priv, "other_public": other_pub}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Copies of real captures (so a test may change one)."""
    folder = tmp_path_factory.mktemp("inputs")
    for name in CAPTURES:
        shutil.copy(CF / name, folder / name)
    return folder


def _audit(inputs: Path, out: Path, key: Path | str | None) -> None:
    proc = retape(
        "audit", str(inputs), "--out", str(out), "--book-interval", "1000", "--in-process", "--quiet", key=key
    )
    assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory, inputs: Path, keys: dict[str, Path]) -> Path:
    out = tmp_path_factory.mktemp("signed") / "out"
    _audit(inputs, out, keys["private"])
    return out


@pytest.fixture
def copy(signed: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(signed, target)
    return target


def check(out: Path, *extra: str) -> tuple[int, str]:
    proc = retape("verify", str(out), *extra)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stdout.splitlines()
    if proc.returncode in (0, 1):
        assert len(lines) == 1 and proc.stderr == "", (proc.stdout, proc.stderr)
        return proc.returncode, lines[0]
    assert proc.stdout == "" and len(proc.stderr.splitlines()) == 1, (proc.stdout, proc.stderr)
    return proc.returncode, proc.stderr.strip()


def _lines(out: Path) -> list[bytes]:
    return (out / RECORDS).read_bytes().splitlines()


def _write_lines(out: Path, lines: list[bytes]) -> None:
    (out / RECORDS).write_bytes(b"".join(line + b"\n" for line in lines))


def _flip(data: bytes, pos: int) -> bytes:
    old = data[pos : pos + 1]
    new = b"1" if old == b"0" else b"0" if old.isdigit() else b"x" if old != b"x" else b"y"
    return data[:pos] + new + data[pos + 1 :]


# -- what is written --------------------------------------------------------------------------


def test_the_manifest_covers_every_output_the_settings_the_version_and_the_inputs(
    signed: Path, inputs: Path, keys: dict[str, Path]
) -> None:
    m = orjson.loads((signed / "audit" / "MANIFEST").read_bytes())
    on_disk = sorted(
        p.relative_to(signed).as_posix()
        for p in signed.rglob("*")
        if p.is_file() and p.name not in ("MANIFEST", "MANIFEST.sig", ".retape.lock")
    )
    assert list(m["files"]) == on_disk
    assert {"report.json", RECORDS, "metrics.prom"} <= set(m["files"])
    assert any(f.startswith("books/") and f.endswith(".csv") for f in m["files"])
    for rel, entry in m["files"].items():
        data = (signed / rel).read_bytes()
        assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    assert m["settings"] == {
        "drift_ms": 100.0,
        "reorder_window": 64,
        "book_interval_us": 1_000_000,
        "book_depth": 25,
        "replay_sources": [],
    }
    assert m["retape_version"] == importlib.metadata.version("retape")
    assert set(m["inputs"]) == {str(inputs / name) for name in CAPTURES}
    for path, entry in m["inputs"].items():
        data = Path(path).read_bytes()
        assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    assert m["records"] == len(_lines(signed))
    assert m["final_hash"] == hashlib.sha256(_lines(signed)[-1]).hexdigest()
    assert m["signing"]["public_key"] == fingerprint(public_key(str(keys["public"])))
    assert (signed / "audit" / "MANIFEST.sig").read_bytes().endswith(b"\n")


def test_the_pipeline_writes_the_same_signed_bytes_as_one_process(
    signed: Path, inputs: Path, keys: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "pipeline"
    proc = retape(
        "audit",
        str(inputs),
        "--out",
        str(out),
        "--book-interval",
        "1000",
        "--workers",
        "1",
        "--quiet",
        key=keys["private"],
    )
    assert proc.returncode == 0, proc.stderr
    assert _tree(out) == _tree(signed)


def _tree(top: Path) -> dict[str, bytes]:
    return {p.relative_to(top).as_posix(): p.read_bytes() for p in top.rglob("*") if p.is_file()}


def test_signed_outputs_are_byte_identical_across_runs(
    signed: Path, inputs: Path, keys: dict[str, Path], tmp_path: Path
) -> None:
    _audit(inputs, tmp_path / "again", keys["private"])
    assert _tree(tmp_path / "again") == _tree(signed)
    assert "audit/MANIFEST.sig" in _tree(signed)


def test_an_unsigned_run_removes_an_earlier_signature_and_verifies(
    signed: Path, inputs: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    shutil.copytree(signed, out)
    _audit(inputs, out, None)
    assert not (out / "audit" / "MANIFEST.sig").exists()
    assert orjson.loads((out / "audit" / "MANIFEST").read_bytes())["signing"] is None
    status, line = check(out)
    assert status == 0 and "not signed" in line


# -- an untouched output ----------------------------------------------------------------------


def test_an_untouched_output_verifies(signed: Path, inputs: Path, keys: dict[str, Path]) -> None:
    status, line = check(signed, "--public-key", str(keys["public"]), "--inputs", str(inputs))
    assert status == 0, line
    assert line.startswith("retape verify: OK:") and "signature checked" in line
    assert f"{len(CAPTURES)} input(s) unchanged" in line
    # The owner's private key works as the public key too; one input file alone is fine.
    status, line = check(signed, "--public-key", str(keys["private"]), "--inputs", str(inputs / CAPTURES[0]))
    assert status == 0 and "1 input(s) unchanged" in line, line
    assert verify_records(str(signed))[0]


def test_a_signed_manifest_without_a_public_key_passes_but_says_it_was_not_checked(signed: Path) -> None:
    status, line = check(signed)
    assert status == 0
    assert "signature was NOT checked" in line


# -- the records ------------------------------------------------------------------------------


def test_one_changed_byte_in_any_record_names_its_line(copy: Path) -> None:
    original = _lines(copy)
    rng = random.Random(8)
    for index in range(len(original)):
        line = original[index]
        # Somewhere in the record, in its `prev` and in its `seq`.
        positions = {rng.randrange(len(line)), line.index(b'"prev":"') + 9, line.index(b'"seq":') + 6}
        for pos in positions:
            changed = list(original)
            changed[index] = _flip(line, pos)
            _write_lines(copy, changed)
            verdict = verify(str(copy))
            assert not verdict.ok
            assert verdict.message.startswith(f"{RECORDS} line {index + 1}:"), (
                index + 1,
                pos,
                verdict.message,
            )
    _write_lines(copy, original)
    assert verify(str(copy)).ok


def test_a_changed_record_through_the_command_line(copy: Path, keys: dict[str, Path]) -> None:
    lines = _lines(copy)
    lines[4] = lines[4].replace(b'"type":"', b'"type":"X', 1)
    _write_lines(copy, lines)
    status, line = check(copy, "--public-key", str(keys["public"]))
    assert status == 1
    assert line == f"retape verify: FAILED: {RECORDS} line 5: changed (its SHA-256 is not the prev of line 6)"


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_a_deleted_record_is_found(copy: Path, where: str) -> None:
    lines = _lines(copy)
    index = {"first": 0, "middle": len(lines) // 2, "last": len(lines) - 1}[where]
    del lines[index]
    _write_lines(copy, lines)
    status, line = check(copy)
    assert status == 1
    if where == "last":
        assert f"{len(lines)} records, the MANIFEST says {len(lines) + 1}: records missing at the end" in line
    else:
        assert (
            f"{RECORDS} line {index + 1}: seq {index + 1}, expected {index}: a record before it is missing"
            in line
        )


def test_reordered_records_are_found(copy: Path) -> None:
    lines = _lines(copy)
    lines[6], lines[7] = lines[7], lines[6]
    _write_lines(copy, lines)
    status, line = check(copy)
    assert status == 1 and f"{RECORDS} lines 7 and 8: in the wrong order" in line, line
    lines[6], lines[7] = lines[7], lines[6]
    lines[2], lines[9] = lines[9], lines[2]
    _write_lines(copy, lines)
    status, line = check(copy)
    assert status == 1 and f"{RECORDS} line 3: seq 9, expected 2" in line, line


# -- the output files -------------------------------------------------------------------------


def test_one_changed_byte_of_any_output_file_names_the_file(copy: Path) -> None:
    book = sorted((copy / "books").glob("*.csv"))[0].relative_to(copy).as_posix()
    for rel in ("report.json", "metrics.prom", book):
        path = copy / rel
        data = path.read_bytes()
        pos = len(data) // 2
        path.write_bytes(_flip(data, pos))
        status, line = check(copy)
        assert status == 1
        assert line.startswith(f"retape verify: FAILED: {rel}: changed (SHA-256 "), line
        path.write_bytes(data)
    assert check(copy)[0] == 0


def test_the_manifest_lists_only_what_the_audit_wrote(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("the user's own notes, there before the audit")
    proc = retape("audit", str(CF / "BINANCE.ws.1.0"), "--out", str(out), "--in-process", "--quiet")
    assert proc.returncode == 0, proc.stderr
    listed = orjson.loads((out / "audit" / "MANIFEST").read_bytes())["files"]
    assert "notes.txt" not in listed and {"report.json", "report.html", "metrics.prom"} <= set(listed)
    status, line = check(out)
    assert status == 1 and line.endswith("notes.txt: not listed in the MANIFEST (the audit did not write it)")


def test_an_extra_file_and_a_missing_file_are_named(copy: Path) -> None:
    (copy / "books" / "zzz.csv").write_text("exchange,symbol\n")
    status, line = check(copy)
    assert status == 1
    assert line.endswith("books/zzz.csv: not listed in the MANIFEST (the audit did not write it)")
    (copy / "books" / "zzz.csv").unlink()
    book = sorted((copy / "books").glob("*.csv"))[-1]
    book.unlink()
    status, line = check(copy)
    assert status == 1
    assert line.endswith(f"books/{book.name}: missing (the MANIFEST lists it)")


def test_lock_temporaries_and_the_workers_log_are_not_outputs(copy: Path) -> None:
    (copy / "retape-workers.log").write_text("a run that went wrong\n")
    (copy / "books" / ".x.csv.1.abcd.retape-tmp").write_text("half a file")
    assert check(copy)[0] == 0


# -- the signature ----------------------------------------------------------------------------


def _forge(out: Path, keep_signing: bool = True) -> None:
    """What a forger without the key can do: change a record and report.json, recompute the
    chain and the MANIFEST (every file's hash)."""
    old = orjson.loads((out / "audit" / "MANIFEST").read_bytes())
    lines = _lines(out)
    records = [orjson.loads(line) for line in lines]
    summary = next(r for r in records if r["type"] == "summary")
    summary["summary"]["integrity_score"] = 100.0
    prev = manifest.GENESIS
    forged = []
    for r in records:
        r["prev"] = prev
        line = orjson.dumps(r, option=orjson.OPT_SORT_KEYS)
        forged.append(line)
        prev = hashlib.sha256(line).hexdigest()
    _write_lines(out, forged)
    report = out / "report.json"
    report.write_bytes(report.read_bytes().replace(b'"integrity_score": ', b'"integrity_score": 1', 1))
    inputs = [InputSummary(p, e["sha256"]) for p, e in old["inputs"].items()]
    outputs = [str(out / rel) for rel in old["files"]]
    new = manifest.build(str(out), outputs, inputs, len(forged), prev, old["settings"], None)
    if keep_signing:
        new["signing"] = old["signing"]
    else:
        (out / "audit" / "MANIFEST.sig").unlink()
    (out / "audit" / "MANIFEST").write_bytes(manifest.dumps(new))


def test_a_forged_chain_and_manifest_without_the_key_fail_the_signature(
    copy: Path, keys: dict[str, Path]
) -> None:
    _forge(copy)
    status, line = check(copy, "--public-key", str(keys["public"]))
    assert status == 1
    assert line == (
        "retape verify: FAILED: audit/MANIFEST.sig: the signature does not match audit/MANIFEST "
        "(the MANIFEST was rewritten without the signing key)"
    )
    # Without the public key only the chain and the hashes can be checked: they hold.
    status, line = check(copy)
    assert status == 0 and "NOT checked" in line


def test_a_forgery_that_drops_the_signature_fails_with_the_key(copy: Path, keys: dict[str, Path]) -> None:
    _forge(copy, keep_signing=False)
    status, line = check(copy, "--public-key", str(keys["public"]))
    assert status == 1 and "audit/MANIFEST: not signed, but --public-key expects a signature" in line


def test_a_forgery_signed_with_another_key_or_a_wrong_public_key_fails(
    copy: Path, signed: Path, keys: dict[str, Path], inputs: Path
) -> None:
    theirs = fingerprint(public_key(str(keys["other_public"])))
    ours = fingerprint(public_key(str(keys["public"])))
    status, line = check(signed, "--public-key", str(keys["other_public"]))
    assert status == 1
    assert line.endswith(f"audit/MANIFEST: signed by key {ours}, not by the --public-key given ({theirs})")
    _audit(inputs, copy, keys["other_private"])  # a whole directory rewritten with another key
    status, line = check(copy, "--public-key", str(keys["public"]))
    assert status == 1 and f"signed by key {theirs}, not by the --public-key given ({ours})" in line


def test_a_missing_or_damaged_signature_file(copy: Path, keys: dict[str, Path]) -> None:
    sig = copy / "audit" / "MANIFEST.sig"
    data = sig.read_bytes()
    sig.write_bytes(data[:10] + (b"A" if data[10:11] != b"A" else b"B") + data[11:])
    status, line = check(copy, "--public-key", str(keys["public"]))
    assert status == 1 and "audit/MANIFEST.sig: the signature does not match" in line
    sig.unlink()
    status, line = check(copy)
    assert status == 1 and "audit/MANIFEST.sig: missing (the MANIFEST says it is signed by sha256:" in line


# -- the inputs -------------------------------------------------------------------------------


def test_a_changed_or_missing_input_is_named(signed: Path, inputs: Path, tmp_path: Path) -> None:
    target = inputs / CAPTURES[2]
    original = target.read_bytes()
    try:
        target.write_bytes(_flip(original, 100))
        status, line = check(signed, "--inputs", str(inputs))
        assert status == 1 and line.startswith(f"retape verify: FAILED: input {target}: changed (SHA-256 "), (
            line
        )
        target.unlink()
        status, line = check(signed, "--inputs", str(inputs))
        assert status == 1 and line == f"retape verify: FAILED: input {target}: missing"
    finally:
        target.write_bytes(original)
    assert check(signed, "--inputs", str(inputs))[0] == 0
    # A place that holds none of the inputs is a usage error.
    status, line = check(signed, "--inputs", str(tmp_path))
    assert status == 2 and "holding none of, the inputs the MANIFEST lists" in line


# -- a broken MANIFEST and usage errors -------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (b"{not json", "audit/MANIFEST: not valid JSON"),
        (b"[1, 2]\n", "audit/MANIFEST: not a JSON object"),
        (b'{"format": 1, "records": "x"}\n', "audit/MANIFEST: no record count or final hash"),
        (
            b'{"records": 1}\n',
            "audit/MANIFEST: not of format 1 (format None: written by another retape version?)",
        ),
        (None, "audit/MANIFEST: missing"),
    ],
)
def test_a_broken_manifest_is_one_clean_line(copy: Path, content: bytes | None, said: str) -> None:
    path = copy / "audit" / "MANIFEST"
    if content is None:
        path.unlink()
    else:
        path.write_bytes(content)
    status, line = check(copy)
    assert (status, line) == (1, f"retape verify: FAILED: {said}")


def test_usage_errors_exit_2(signed: Path, keys: dict[str, Path], tmp_path: Path) -> None:
    proc = retape("verify", "--help")
    assert proc.returncode == 0 and "--public-key" in proc.stdout and "--inputs" in proc.stdout
    bad_key = tmp_path / "bad.pem"
    bad_key.write_text("not a key\n")
    for args in (
        [str(tmp_path / "nowhere")],
        [str(signed), "--public-key", str(tmp_path / "nokey.pem")],
        [str(signed), "--public-key", str(bad_key)],
        [str(signed), "--inputs", str(tmp_path / "nowhere")],
        [],
    ):
        status, line = check_usage(*args)
        assert status == 2 and line.startswith("retape: error:"), (args, line)


def check_usage(*args: str) -> tuple[int, str]:
    proc = retape("verify", *args)
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    return proc.returncode, proc.stderr.strip()


def test_a_signing_key_that_cannot_be_read_is_a_usage_error_before_any_work(
    inputs: Path, keys: dict[str, Path], tmp_path: Path
) -> None:
    rsa_like = "-----BEGIN PRIVATE KEY-----\nU0VDUkVUU0VDUkVU\n-----END PRIVATE KEY-----\n"
    for value, said in (
        (rsa_like, "RETAPE_SIGNING_KEY (PEM text): not a PEM private key"),
        ("hunter2-secret", "RETAPE_SIGNING_KEY is neither the PEM text"),
        (str(keys["public"]), f"RETAPE_SIGNING_KEY file {keys['public']}: not a PEM private key"),
    ):
        out = tmp_path / "never"
        proc = retape("audit", str(inputs), "--out", str(out), "--in-process", key=value)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith("retape: error: ") and said in proc.stderr
        assert len(proc.stderr.splitlines()) == 1
        assert "U0VDUkVU" not in proc.stderr and "hunter2" not in proc.stderr
        assert not out.exists()  # nothing done
    # The key as PEM text in the variable works as well as its path.
    out = tmp_path / "pem"
    _audit(inputs, out, keys["private"].read_text())
    assert check(out, "--public-key", keys["public"].read_text())[0] == 0

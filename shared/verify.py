"""``retape verify``: check an output directory as an auditor would, and name the first broken thing.

In order: the MANIFEST is JSON of the expected shape; its signature (with a public key: the
MANIFEST must be signed by that key, so every later check can trust it; without one, a signed
MANIFEST's signature file must be there, and the answer says it was not checked); every audit
record links to the SHA-256 of the one before and carries its sequence number; the record count
and final hash are the MANIFEST's; every output file has the SHA-256 and size the MANIFEST names,
none is missing and none was added; with ``inputs``, every input still has its SHA-256.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from shared.errors import UsageError
from shared.manifest import (
    FORMAT,
    GENESIS,
    MANIFEST_PATH,
    RECORDS_PATH,
    SIGNATURE_PATH,
    file_digest,
    output_files,
)
from shared.signing import ALGORITHM, fingerprint, signature_holds


class Broken(Exception):
    """The first thing found broken, as one line."""


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    message: str  # what was checked, or the first broken thing
    final_hash: str | None = None


def verify(out_dir: str, inputs: Sequence[str] | None = None, key: Ed25519PublicKey | None = None) -> Verdict:
    """Check ``out_dir``; :class:`UsageError` when it is not a directory or ``inputs`` name
    nothing the MANIFEST lists."""
    if not os.path.isdir(out_dir):
        raise UsageError(f"{out_dir}: not a directory")
    if not os.access(out_dir, os.R_OK | os.X_OK):
        raise UsageError(f"{out_dir}: not readable (permission denied)")
    try:
        raw, manifest = _manifest(out_dir)
        signature = _signature(out_dir, raw, manifest, key)
        final = _chain(_path(out_dir, RECORDS_PATH), manifest["records"], manifest["final_hash"])
        _files(out_dir, manifest["files"])
        checked = _inputs(manifest["inputs"], inputs) if inputs else None
    except Broken as exc:
        return Verdict(False, str(exc))
    parts = [f"{manifest['records']} records chained to {final[:16]}…", f"{len(manifest['files'])} files"]
    parts.append(signature)
    if checked is not None:
        parts.append(f"{checked} input(s) unchanged")
    return Verdict(True, ", ".join(parts), final)


def _path(out_dir: str, rel: str) -> str:
    return os.path.join(out_dir, *rel.split("/"))


# -- the MANIFEST and its signature ------------------------------------------------------------


def _manifest(out_dir: str) -> tuple[bytes, dict[str, Any]]:
    try:
        with open(_path(out_dir, MANIFEST_PATH), "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise Broken(f"{MANIFEST_PATH}: missing") from None
    except OSError as exc:
        raise Broken(f"{MANIFEST_PATH}: cannot read it ({exc.strerror or exc})") from None
    try:
        manifest = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise Broken(f"{MANIFEST_PATH}: not valid JSON") from None
    problem = _shape_problem(manifest)
    if problem:
        raise Broken(f"{MANIFEST_PATH}: {problem}")
    return raw, manifest


def _is_digest(entry: Any, *, nullable: bool = False) -> bool:
    if not isinstance(entry, dict):
        return False
    sha, size = entry.get("sha256"), entry.get("size")
    if nullable and sha is None:
        return True
    return isinstance(sha, str) and (type(size) is int or (nullable and size is None))


def _shape_problem(m: Any) -> str | None:
    if not isinstance(m, dict):
        return "not a JSON object"
    if m.get("format") != FORMAT:
        return f"not of format {FORMAT} (format {m.get('format')!r}: written by another retape version?)"
    if type(m.get("records")) is not int or not isinstance(m.get("final_hash"), str):
        return "no record count or final hash"
    files, inputs, signing = m.get("files"), m.get("inputs"), m.get("signing")
    if not isinstance(files, dict) or not all(_is_digest(v) for v in files.values()):
        return "no list of output files with their SHA-256 and size"
    if not isinstance(inputs, dict) or not all(_is_digest(v, nullable=True) for v in inputs.values()):
        return "no list of inputs with their SHA-256"
    if signing is not None and (
        not isinstance(signing, dict)
        or signing.get("algorithm") != ALGORITHM
        or not isinstance(signing.get("public_key"), str)
    ):
        return f"a signing entry that is not {ALGORITHM} with a key fingerprint"
    return None


def _signature(out_dir: str, raw: bytes, manifest: dict[str, Any], key: Ed25519PublicKey | None) -> str:
    signing = manifest.get("signing")
    sig_path = _path(out_dir, SIGNATURE_PATH)
    if signing is None:
        if key is not None:
            raise Broken(f"{MANIFEST_PATH}: not signed, but --public-key expects a signature")
        if os.path.lexists(sig_path):
            raise Broken(f"{SIGNATURE_PATH}: present, but the MANIFEST names no signing key")
        return "not signed"
    signer = signing["public_key"]
    try:
        with open(sig_path, "rb") as fh:
            sig = fh.read()
    except FileNotFoundError:
        raise Broken(f"{SIGNATURE_PATH}: missing (the MANIFEST says it is signed by {signer})") from None
    except OSError as exc:
        raise Broken(f"{SIGNATURE_PATH}: cannot read it ({exc.strerror or exc})") from None
    if key is None:
        return f"signed by {signer} but the signature was NOT checked (give --public-key)"
    given = fingerprint(key)
    if given != signer:
        raise Broken(f"{MANIFEST_PATH}: signed by key {signer}, not by the --public-key given ({given})")
    if not signature_holds(key, raw, sig):
        raise Broken(
            f"{SIGNATURE_PATH}: the signature does not match {MANIFEST_PATH} "
            "(the MANIFEST was rewritten without the signing key)"
        )
    return f"signature checked ({signer})"


# -- the records --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Line:
    n: int  # 1-based line number
    digest: str
    prev: Any
    seq: Any
    error: str | None


def _lines(path: str) -> Iterator[_Line]:
    try:
        fh = open(path, "rb")  # noqa: SIM115 (closed below; a generator)
    except FileNotFoundError:
        raise Broken(f"{RECORDS_PATH}: missing") from None
    except OSError as exc:
        raise Broken(f"{RECORDS_PATH}: cannot read it ({exc.strerror or exc})") from None
    with fh:
        for n, raw in enumerate(fh, 1):
            line = raw.removesuffix(b"\n")
            digest = hashlib.sha256(line).hexdigest()
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                yield _Line(n, digest, None, None, "not a JSON record")
                continue
            if not isinstance(record, dict):
                yield _Line(n, digest, None, None, "not a JSON object")
                continue
            yield _Line(n, digest, record.get("prev"), record.get("seq"), None)


def _chain(path: str, records: int, final_hash: str) -> str:
    """Check the chain of ``path``; its final hash.  A changed line breaks the link to the next
    one (the next record's ``prev``); a changed ``prev`` breaks the link to the line before too."""
    where = RECORDS_PATH
    last, count = GENESIS, 0
    lines = _lines(path)
    following = next(lines, None)
    while following is not None:
        cur, following = following, next(lines, None)
        n, count = cur.n, cur.n
        if cur.error is not None:
            raise Broken(f"{where} line {n}: {cur.error}")
        if cur.seq != n - 1:
            if following is not None and following.seq == n - 1 and cur.seq == n:
                raise Broken(f"{where} lines {n} and {n + 1}: in the wrong order (seq {n} before {n - 1})")
            why = "a record before it is missing"
            if type(cur.seq) is not int or cur.seq <= n - 1:
                why = "a record was repeated or moved"
            raise Broken(f"{where} line {n}: seq {cur.seq!r}, expected {n - 1}: {why}")
        if cur.prev != last:
            after = final_hash if following is None else following.prev
            if after != cur.digest or n == 1:
                before = f"the SHA-256 of line {n - 1}" if n > 1 else "the chain's start (64 zeros)"
                raise Broken(f"{where} line {n}: changed (its prev is not {before})")
            raise Broken(f"{where} line {n - 1}: changed (its SHA-256 is not the prev of line {n})")
        last = cur.digest
    if count != records:
        what = "missing at the end" if count < records else "added at the end"
        raise Broken(f"{where}: {count} records, the MANIFEST says {records}: records {what}")
    if last != final_hash:
        if count == 0:
            raise Broken(f"{where}: no records, and the MANIFEST's final hash is not the empty chain's")
        raise Broken(f"{where} line {count}: changed (its SHA-256 is not the MANIFEST's final hash)")
    return last


# -- output files and inputs --------------------------------------------------------------------


def _files(out_dir: str, listed: dict[str, dict[str, Any]]) -> None:
    present = output_files(out_dir)
    for rel in sorted(set(listed) | set(present)):
        if rel not in present:
            if os.path.lexists(_path(out_dir, rel)):
                raise Broken(f"{rel}: not a regular file (the MANIFEST lists a file)")
            raise Broken(f"{rel}: missing (the MANIFEST lists it)")
        if rel not in listed:
            raise Broken(f"{rel}: not listed in the MANIFEST (the audit did not write it)")
        _same(present[rel], listed[rel], rel)


def _same(path: str, want: dict[str, Any], what: str) -> None:
    try:
        got = file_digest(path)
    except FileNotFoundError:
        raise Broken(f"{what}: missing") from None
    except OSError as exc:
        raise Broken(f"{what}: cannot read it ({exc.strerror or exc})") from None
    if got["sha256"] != want["sha256"]:
        raise Broken(
            f"{what}: changed (SHA-256 {got['sha256'][:16]}…, the MANIFEST says {want['sha256'][:16]}…)"
        )
    if want.get("size") is not None and got["size"] != want["size"]:
        raise Broken(f"{what}: changed ({got['size']} bytes, the MANIFEST says {want['size']})")


def _inputs(listed: dict[str, dict[str, Any]], given: Sequence[str]) -> int:
    """Check the MANIFEST's inputs found at or under the ``given`` paths; how many were."""
    places = [(os.path.abspath(p), os.path.isdir(p)) for p in given]
    covered: dict[str, dict[str, Any]] = {}
    used = [False] * len(places)
    for path in sorted(listed):
        full = os.path.abspath(path)
        for k, (place, is_dir) in enumerate(places):
            if full == place or (is_dir and full.startswith(place.rstrip(os.sep) + os.sep)):
                covered[path] = listed[path]
                used[k] = True
    for (place, _), hit, text in zip(places, used, given, strict=True):
        if not hit:
            if not os.path.exists(place):
                raise UsageError(f"--inputs {text}: no such file or directory")
            raise UsageError(f"--inputs {text}: not, and holding none of, the inputs the MANIFEST lists")
    checked = 0
    for path, want in covered.items():
        if want.get("sha256") is None:
            continue  # the audit could not read it either: nothing to compare
        _same(path, want, f"input {path}")
        checked += 1
    return checked

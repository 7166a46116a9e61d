"""``audit/MANIFEST``: what an output directory holds, so that nothing in it can change unseen.

The MANIFEST (JSON, sorted keys, no wall-clock time: the same inputs and options give the same
bytes) names the retape version, the audit settings, every input (SHA-256 and size), the number
of audit records and the SHA-256 of the last one, and every output file of the directory (SHA-256
and size), listed after all of them are written.  With a signing key (:mod:`shared.signing`) it
also names the key's fingerprint, and ``audit/MANIFEST.sig`` holds its signature.

The MANIFEST lists the files the audit wrote, and only them (the same inputs and options give the
same MANIFEST whatever else the directory held).  ``retape verify`` reports any other regular
file of the directory, except the MANIFEST, its signature, the lock file, temporary files and the
workers' log, which a run may write after the MANIFEST.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import os
import stat
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared.outdir import LOCK_NAME, TMP_SUFFIX, atomic_write
from shared.planning import InputSummary
from shared.signing import ALGORITHM, fingerprint, sign

FORMAT = 1
GENESIS = "0" * 64  # the `prev` of the first audit record
AUDIT_DIR = "audit"
RECORDS_NAME = "records.jsonl"
MANIFEST_NAME = "MANIFEST"
SIGNATURE_NAME = "MANIFEST.sig"
RECORDS_PATH = f"{AUDIT_DIR}/{RECORDS_NAME}"
MANIFEST_PATH = f"{AUDIT_DIR}/{MANIFEST_NAME}"
SIGNATURE_PATH = f"{AUDIT_DIR}/{SIGNATURE_NAME}"
WORKERS_LOG = "retape-workers.log"  # producers.cli keeps it after the outputs when a run went wrong
NOT_OUTPUTS = frozenset({MANIFEST_PATH, SIGNATURE_PATH, LOCK_NAME, WORKERS_LOG})


def retape_version() -> str:
    try:
        return importlib.metadata.version("retape")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _relative(root: str, path: str) -> str:
    """``path`` under ``root`` as a POSIX path that is valid UTF-8 (odd bytes as ``\\xNN``)."""
    rel = os.path.relpath(path, root).replace(os.sep, "/")
    return os.fsencode(rel).decode("utf-8", "backslashreplace")


def output_files(out_dir: str) -> dict[str, str]:
    """Every output file under ``out_dir``: its name in the MANIFEST -> its path, sorted."""
    found: dict[str, str] = {}
    for root, dirs, files in os.walk(out_dir):
        dirs.sort()
        for name in files:
            path = os.path.join(root, name)
            rel = _relative(out_dir, path)
            if rel in NOT_OUTPUTS or name.endswith(TMP_SUFFIX):
                continue
            with contextlib.suppress(OSError):
                if stat.S_ISREG(os.lstat(path).st_mode):
                    found[rel] = path
    return dict(sorted(found.items()))


def file_digest(path: str) -> dict[str, Any]:
    """``{"sha256", "size"}`` of a file (OSError when it cannot be read)."""
    with open(path, "rb") as fh:
        digest = hashlib.file_digest(fh, "sha256")
        size = fh.tell()
    return {"sha256": digest.hexdigest(), "size": size}


def _input_size(path: str, sizes: Mapping[str, int]) -> int | None:
    if path in sizes:
        return sizes[path]
    try:
        return os.stat(path).st_size
    except (OSError, ValueError):
        return None


def build(
    out_dir: str,
    outputs: Iterable[str],
    inputs: Iterable[InputSummary],
    records: int,
    final_hash: str,
    settings: Mapping[str, Any] | None,
    key: Ed25519PrivateKey | None,
    input_sizes: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The MANIFEST of the ``outputs`` written into ``out_dir`` (they are hashed here)."""
    sizes = input_sizes or {}
    signing = None
    if key is not None:
        fp = fingerprint(key.public_key())
        signing = {"algorithm": ALGORITHM, "public_key": fp, "signature": SIGNATURE_PATH}
    return {
        "format": FORMAT,
        "retape_version": retape_version(),
        "settings": None if settings is None else dict(settings),
        "inputs": {
            i.path: {"sha256": i.sha256 or None, "size": _input_size(i.path, sizes) if i.sha256 else None}
            for i in inputs
        },
        "records": records,
        "final_hash": final_hash,
        "files": {_relative(out_dir, path): file_digest(path) for path in sorted(outputs)},
        "signing": signing,
    }


def dumps(manifest: Mapping[str, Any]) -> bytes:
    return orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def write(out_dir: str, manifest: Mapping[str, Any], key: Ed25519PrivateKey | None) -> None:
    """Write ``audit/MANIFEST`` and, with a key, its signature (else remove an old one)."""
    data = dumps(manifest)
    atomic_write(os.path.join(out_dir, *MANIFEST_PATH.split("/")), data)
    sig_path = os.path.join(out_dir, *SIGNATURE_PATH.split("/"))
    if key is None:
        with contextlib.suppress(FileNotFoundError):
            os.remove(sig_path)
    else:
        atomic_write(sig_path, sign(key, data))

"""Ed25519 signing of the audit MANIFEST (through the ``cryptography`` library).

The signing key comes from the environment: ``RETAPE_SIGNING_KEY`` holds either the PEM text
of an unencrypted Ed25519 private key (PKCS#8, what ``openssl genpkey -algorithm ed25519``
writes; its line breaks may be written as ``\\n``) or the path of a file holding it.  Unset or
empty: outputs are not signed.  The key's value is never printed, logged or written anywhere;
errors name the variable (and the file, when it is one), never its content.

The signature (``audit/MANIFEST.sig``) is the 64-byte Ed25519 signature of the MANIFEST's exact
bytes, base64-encoded (standard alphabet, padded) on one line.  Ed25519 is deterministic: the
same MANIFEST and key give the same signature bytes.  A key is named by its fingerprint,
``sha256:`` and the hex SHA-256 of its 32 raw public-key bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Mapping

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from shared.errors import UsageError

ENV_KEY = "RETAPE_SIGNING_KEY"
ALGORITHM = "ed25519"
_PEM = b"-----BEGIN"
_KEY_ERRORS = (ValueError, TypeError, UnsupportedAlgorithm)


def signing_key(environ: Mapping[str, str] | None = None) -> Ed25519PrivateKey | None:
    """The key of ``RETAPE_SIGNING_KEY``, None when it is unset or empty; a one-line
    :class:`UsageError` (that never shows the value) when it cannot be read."""
    value = (os.environ if environ is None else environ).get(ENV_KEY, "").strip()
    if not value:
        return None
    if value.startswith(_PEM.decode()):
        # An env file holds one line: accept the PEM's line breaks written as \n.
        data, where = value.replace("\\n", "\n").encode(), f"{ENV_KEY} (PEM text)"
    elif os.path.isfile(value):
        where = f"{ENV_KEY} file {value}"
        try:
            with open(value, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise UsageError(f"{where}: cannot read it ({exc.strerror or exc})") from None
    else:
        raise UsageError(
            f"{ENV_KEY} is neither the PEM text of an Ed25519 private key nor the path of a readable "
            "file holding one (its value is not shown)"
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise UsageError(f"{where}: the key is encrypted; retape needs an unencrypted PKCS#8 key") from None
    except _KEY_ERRORS:
        raise UsageError(f"{where}: not a PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise UsageError(f"{where}: not an Ed25519 key (openssl genpkey -algorithm ed25519 makes one)")
    return key


def public_key(text_or_path: str) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM text or a PEM file (a public key, or a private key whose
    public half is taken); :class:`UsageError` when it cannot be read."""
    if text_or_path.lstrip().startswith(_PEM.decode()):
        data, where = text_or_path.strip().encode(), "--public-key (PEM text)"
    else:
        where = f"--public-key {text_or_path}"
        try:
            with open(text_or_path, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise UsageError(f"{where}: cannot read it ({exc.strerror or exc})") from None
    if b"PRIVATE KEY" in data.split(b"\n", 1)[0]:
        try:
            private = serialization.load_pem_private_key(data, password=None)
        except _KEY_ERRORS:
            raise UsageError(f"{where}: not an unencrypted PEM private key") from None
        if not isinstance(private, Ed25519PrivateKey):
            raise UsageError(f"{where}: not an Ed25519 key")
        return private.public_key()
    try:
        key = serialization.load_pem_public_key(data)
    except _KEY_ERRORS:
        raise UsageError(f"{where}: not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise UsageError(f"{where}: not an Ed25519 key")
    return key


def fingerprint(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def sign(key: Ed25519PrivateKey, data: bytes) -> bytes:
    """The signature file's bytes: base64 of the signature of ``data``, and a newline."""
    return base64.b64encode(key.sign(data)) + b"\n"


def signature_holds(key: Ed25519PublicKey, data: bytes, signature_file: bytes) -> bool:
    """Whether ``signature_file`` (as :func:`sign` writes it) is ``key``'s signature of ``data``."""
    try:
        raw = base64.b64decode(signature_file.strip(), validate=True)
        key.verify(raw, data)
    except (binascii.Error, ValueError, InvalidSignature):
        return False
    return True

"""The upstream's Ed25519 signing key, kept in a key file: the 32 raw
private-key bytes, base64 on one line, mode 0600."""

from __future__ import annotations

import base64
import binascii
import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sync.contract import public_key_to_b64

KEY_BYTES = 32
KEY_FILE_NAME = "signing.key"  # in the state directory unless a key file is given


class KeyFileError(Exception):
    """The key file is unreadable, readable by others or not a key."""


def load_or_create_key(path: Path) -> tuple[Ed25519PrivateKey, bool]:
    """The key in `path`, written first if the file does not exist; the flag
    says whether it was created."""
    if path.exists():
        return read_key(path), False
    raw = os.urandom(KEY_BYTES)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(base64.b64encode(raw).decode("ascii") + "\n")
    return Ed25519PrivateKey.from_private_bytes(raw), True


def read_key(path: Path) -> Ed25519PrivateKey:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"signing key file {path} is readable by others (mode {stat.S_IMODE(mode):o}); run `chmod 600 {path}`")
    try:
        raw = base64.b64decode(path.read_text(encoding="ascii").strip(), validate=True)
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise KeyFileError(f"signing key file {path} is not base64 of 32 bytes") from exc
    if len(raw) != KEY_BYTES:
        raise KeyFileError(f"signing key file {path} holds {len(raw)} bytes; an Ed25519 private key is {KEY_BYTES}")
    return Ed25519PrivateKey.from_private_bytes(raw)


def public_key_b64(private_key: Ed25519PrivateKey) -> str:
    """The public key in the contract's form: base64 of the raw 32 bytes."""
    return public_key_to_b64(private_key.public_key())

"""Where the appliance's keys come from.

The master key (32 bytes) comes from SONAE_SECURITY_KEY or from
security.key_file, never from inside SONAE_HOME. Per-purpose keys are derived
from it (sync.crypto.derive_key), so one file protects the snapshots and the
operational database with independent keys. The certificate signing key is a
separate Ed25519 key: it can be rotated without re-encrypting anything.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fallback.access import blocking_path, permission_message
from fallback.config import Config
from sync.crypto import KeyFileError, MalformedKey, decode_key, derive_key, read_key_file


def _read_key(path: str | Path, config: Config) -> bytes:
    """A key file's 32 bytes; a file this uid may not read is refused
    naming its owner and mode (KeyFileError, like every other key problem)."""
    try:
        return read_key_file(path, forbidden_dir=config.home)
    except PermissionError:
        raise KeyFileError(permission_message(path)) from None


def encrypted_data(config: Config) -> list[Path]:
    """What under SONAE_HOME was written with the master key: the
    operational database and the snapshot generations (empty on a new box)."""
    written = [config.ops_db_path] if os.path.exists(config.ops_db_path) else []
    return written + sorted(config.snapshot_dir.glob("gen-*"))


RESTORE_THE_KEY = "restore the key from its offline copy (runbook 07-kagi-kanri); a new key from `sonae key init` cannot read that data"


def lost_master_key_problem(config: Config) -> str | None:
    """The one line for a master key file that is not there while
    SONAE_HOME holds data written with it: `sonae key init` (what a missing
    key on a new box needs) would make a key that cannot read that data."""
    path = Path(config["security"]["key_file"])
    if config["security"]["key"] or os.path.exists(path) or blocking_path(path):
        return None
    data = encrypted_data(config)
    if not data:
        return None
    link = f" (a symlink to {os.readlink(path)}, not there: a container sees only the folder mounted)" if path.is_symlink() else ""
    return f"master key {path} is missing{link}, and {config.home} holds data encrypted with it ({data[0].name}): {RESTORE_THE_KEY}"


def master_key(config: Config) -> bytes:
    inline = config["security"]["key"]
    if inline:
        return decode_key(inline, "SONAE_SECURITY_KEY")
    if problem := lost_master_key_problem(config):
        raise KeyFileError(problem)
    try:
        return _read_key(config["security"]["key_file"], config)
    except MalformedKey as exc:
        # Damaged or emptied: a new key would leave the data unreadable.
        if data := encrypted_data(config):
            raise KeyFileError(f"the master {exc.problem}, and {config.home} holds data encrypted with the key it held "
                               f"({data[0].name}): {RESTORE_THE_KEY}") from None
        raise


def snapshot_key(config: Config) -> bytes:
    return derive_key(master_key(config), "snapshot")


def drill_snapshot_key(config: Config) -> bytes:
    """The drills' synthetic registers have their own key: nothing keyed
    for the real register opens them, nor they it."""
    return derive_key(master_key(config), "drill-snapshot")


def ops_key(config: Config) -> bytes:
    return derive_key(master_key(config), "ops")


def login_name_key(config: Config) -> bytes:
    """Keys the fingerprint the audit log keeps instead of a name typed at a
    failed login that no account has (fallback.staff.users.recorded_name):
    without the key, nobody can test guesses of the typed text against it."""
    return derive_key(master_key(config), "login-name")


def signing_key(config: Config) -> Ed25519PrivateKey:
    """The Ed25519 key that signs certificate QR codes (32 raw private bytes,
    base64, mode 0600 — the same file format as the master key)."""
    return Ed25519PrivateKey.from_private_bytes(_read_key(config["security"]["signing_key_file"], config))


def session_secret(config: Config) -> bytes:
    """Flask's session secret. Derived from the master key when no separate
    file exists, so a fresh appliance needs one secret, not three."""
    path = Path(config["security"]["secret_key_file"])
    if path.exists():
        return _read_key(path, config)
    return derive_key(master_key(config), "flask-session")


def key_status(config: Config) -> str | None:
    """None when the master key loads, otherwise the reason it does not (for
    /readyz and the 'encryption key missing' alert)."""
    try:
        master_key(config)
    except KeyFileError as exc:
        return str(exc)
    return None


def signing_key_status(config: Config) -> str | None:
    """None when the signing key loads, otherwise the reason it does not:
    without it no certificate is signed nor checked (/readyz, the counter's
    refusal before any serial is taken)."""
    try:
        signing_key(config)
    except KeyFileError as exc:
        return str(exc)
    return None


"""Keys and encrypted SQLite connections.

Every SQLite file Sonae writes (snapshot generations, the operational
database) is a SQLCipher database keyed with a *raw* 256-bit key derived from
the master key by HKDF, one key per purpose. A raw key skips SQLCipher's
PBKDF2 (≈100 ms per connection), which matters for a web server that opens
the current snapshot often; the master key is already 32 random bytes, so key
stretching buys nothing.
"""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlcipher3 import dbapi2 as sqlcipher

KEY_BYTES = 32


class KeyFileError(Exception):
    """A key file is missing, unreadable, too permissive or malformed."""


class MalformedKey(KeyFileError):
    """A key that is not 32 bytes of base64: `problem` says what it holds,
    the message adds what to do on a new box (a caller that knows of data
    written with the key says instead to restore it)."""

    def __init__(self, problem: str):
        self.problem = problem
        super().__init__(f"{problem}; write a new one with `sonae key init PATH`")


class WrongKeyError(Exception):
    """An encrypted database could not be opened with the key given."""


# What SQLCipher answers when the key does not decrypt the first page (or
# the file is no SQLCipher database at all): the only failure at open that
# is the key's. Everything else is the disk's or the file system's.
NOT_A_DATABASE = "file is not a database"  # SQLITE_NOTADB


class DiskError(sqlcipher.OperationalError):
    """An encrypted database could not be opened for a reason of its disk,
    not its key: an I/O error (SQLITE_IOERR, also what a full disk gives
    when SQLite cannot size the WAL index), a full disk, a lock another
    process holds, a file that cannot be opened. The message keeps SQLite's
    own words after the path."""

    def __init__(self, path: str, cause: Exception):
        super().__init__(f"{path}: {cause}")
        self.path = path


def folder_not_file(path: str | os.PathLike, kind: str, remedy: str) -> str:
    """The one line for a secret's path that is a folder: what `docker run
    -v FILE:FILE` leaves when FILE is missing on the host, so the folder is
    named as such (never "is a directory" as a traceback, nor its mode as
    the fault)."""
    return f"{path} is a folder, not a {kind} (Docker makes a folder when the file to mount is missing): remove it and {remedy}"


def key_folder_message(path: str | os.PathLike) -> str:
    return folder_not_file(path, "key file", f"write the key with `sonae key init {path}`")


def refuse_inside(path: Path, data_dir: str | os.PathLike, do: str) -> None:
    """KeyFileError for a key file inside the data directory: a copy of the
    data must not carry its key."""
    resolved, data_dir = path.resolve(), Path(data_dir).resolve()
    if resolved == data_dir or data_dir in resolved.parents:
        raise KeyFileError(f"key file {path} is inside the data directory {data_dir}; {do} "
                           "(e.g. /etc/sonae/) so that a copy of the data does not carry its key")


def write_key_file(path: str | os.PathLike, *, overwrite: bool = False, forbidden_dir: str | os.PathLike | None = None) -> Path:
    """Write 32 random bytes, base64 on one line, mode 0600 (never inside
    `forbidden_dir`, the data directory)."""
    path = Path(path)
    if forbidden_dir is not None:
        refuse_inside(path, forbidden_dir, "write it outside")
    if path.exists() and not overwrite:
        raise KeyFileError(f"{path} already exists; refusing to overwrite a key (losing it loses the data it protects)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(base64.b64encode(os.urandom(KEY_BYTES)).decode("ascii") + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return path


def decode_key(text: str, source: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except ValueError as exc:  # binascii.Error, or characters outside ASCII
        raise MalformedKey(f"{source} is not base64") from exc
    if len(raw) != KEY_BYTES:
        raise MalformedKey(f"{source} holds {len(raw)} bytes, a key must be {KEY_BYTES}")
    return raw


def read_key_file(path: str | os.PathLike, *, forbidden_dir: str | os.PathLike | None = None) -> bytes:
    """Read a key file, refusing one that others can read or one kept inside
    the data directory (a copied data directory must not carry its key)."""
    path = Path(path)
    if forbidden_dir is not None:
        refuse_inside(path, forbidden_dir, "move it outside")
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise KeyFileError(f"key file {path} does not exist; create it with `sonae key init {path}` or set SONAE_SECURITY_KEY") from None
    except PermissionError:
        raise KeyFileError(f"key file {path} cannot be read by this user") from None
    if stat.S_ISDIR(mode):
        raise KeyFileError(key_folder_message(path))
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"key file {path} is readable by others (mode {stat.S_IMODE(mode):04o}); run `chmod 600 {path}`")
    return decode_key(path.read_text(encoding="ascii", errors="replace"), f"key file {path}")


def derive_key(master: bytes, purpose: str) -> bytes:
    """One independent key per purpose ("snapshot", "ops", ...)."""
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=f"sonae:{purpose}".encode()).derive(master)


def apply_key(conn, key: bytes, page_hmac: str | None = None) -> None:
    """Key a fresh connection; `page_hmac`: the HMAC that authenticates each
    page (None: SQLCipher's default, HMAC_SHA512) — part of the file's
    format, so a file opens only with the one it was written with."""
    conn.execute("PRAGMA cipher_log_level = NONE")
    conn.execute(f"PRAGMA key = \"x'{key.hex()}'\"")
    if page_hmac is not None:
        conn.execute(f"PRAGMA cipher_hmac_algorithm = {page_hmac}")


def connect(path: str | os.PathLike, key: bytes, *, readonly: bool = False, check_same_thread: bool = True, page_hmac: str | None = None):
    """Open an encrypted SQLite database; raise WrongKeyError (never a bare
    "file is not a database") if the key does not open it, and DiskError
    when its disk does not let it open (never called a wrong key).
    `page_hmac`: see apply_key (a file written with another one does not
    open either: WrongKeyError)."""
    path = str(path)
    if readonly:
        conn = sqlcipher.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=check_same_thread)
    else:
        conn = sqlcipher.connect(path, check_same_thread=check_same_thread)
    apply_key(conn, key, page_hmac)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlcipher.DatabaseError as exc:
        conn.close()
        if NOT_A_DATABASE not in str(exc):
            raise DiskError(path, exc) from exc
        raise WrongKeyError(
            f"{path} cannot be opened with the configured key (wrong key, or not a Sonae database); "
            "check security.key_file / SONAE_SECURITY_KEY"
        ) from exc
    return conn


def rekey(path: str | os.PathLike, old_key: bytes, new_key: bytes, *, page_hmac: str | None = None) -> None:
    """Re-encrypt a database in place under a new key (used by key
    rotation), keeping its page HMAC. In WAL mode the re-encrypted pages
    land in the WAL: they are copied back into the file at once, or the file
    would hold pages under the old key (which its page checks report as
    damage) until some later checkpoint."""
    conn = connect(path, old_key, page_hmac=page_hmac)
    try:
        conn.execute(f"PRAGMA rekey = \"x'{new_key.hex()}'\"")
        conn.commit()
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    connect(path, new_key, page_hmac=page_hmac).close()


DatabaseError = sqlcipher.DatabaseError
OperationalError = sqlcipher.OperationalError
IntegrityError = sqlcipher.IntegrityError

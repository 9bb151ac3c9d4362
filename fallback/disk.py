"""The disk under SONAE_HOME: a reserve that keeps the counters issuing
after the disk fills, and the write probe behind /readyz.

When something else fills the disk (a copy, a log, a WAL), the operational
database can no longer commit a serial, and the counters stop. So the
worker keeps a file of `disk.reserve_mb` pre-allocated under SONAE_HOME;
when the free space falls below `disk.release_below_mb` — or a write of the
operational database meets a full disk — the file is deleted and its space
is the counters' again. IT is alerted at once, with what the space left
is worth in certificates; the reserve is made again when the disk has room
for it twice over. It buys time against a filler that stops when the disk
is full (which most do: the copy or the load fails), not against one that
keeps writing: that one the alert is for.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from fallback.config import Config
from fallback.ops import Transaction, now_iso
from sync import crypto

log = logging.getLogger("sonae.disk")

RESERVE_FILE = "disk-reserve"
RELEASED_FILE = "disk-reserve.released"  # when and why the reserve went, for the alert
PROBE_KEY = "write_probe"
PROBE_EVERY_S = 1.0  # /readyz is public: at most one probe write a second per process
# What a write can fail with when the disk is full or failing: SQLite's
# FULL, IOERR and READONLY; the OS's ENOSPC, EDQUOT, EIO and EROFS.
_SQLITE_WRITE_FAILURES = {8, 10, 13}
_OS_WRITE_FAILURES = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS}
_DISK_FULL = {13}


def is_write_failure(exc: BaseException) -> bool:
    if isinstance(exc, crypto.DatabaseError):
        return (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in _SQLITE_WRITE_FAILURES
    return isinstance(exc, OSError) and exc.errno in _OS_WRITE_FAILURES


def is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, crypto.DatabaseError):
        return (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in _DISK_FULL
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


@dataclass(frozen=True)
class Reserve:
    size: int  # bytes configured (0: no reserve)
    present: bool
    released: dict | None  # {"at", "why", "free_before"} while it is released


def reserve_path(config: Config) -> Path:
    return config.home / RESERVE_FILE


def reserve_size(config: Config) -> int:
    return max(0, config["disk"]["reserve_mb"]) << 20


def reserve_state(config: Config) -> Reserve:
    released = None
    with contextlib.suppress(FileNotFoundError, ValueError):
        released = json.loads((config.home / RELEASED_FILE).read_text(encoding="utf-8"))
    return Reserve(reserve_size(config), reserve_path(config).exists(), released)


def free_bytes(config: Config) -> int:
    return shutil.disk_usage(config.home).free


def release_reserve(config: Config, why: str) -> bool:
    """Give the reserve's space back; True when there was one to give."""
    path = reserve_path(config)
    free_before = free_bytes(config)
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    # Written after the unlink: there is room for it now.
    with contextlib.suppress(OSError):
        (config.home / RELEASED_FILE).write_text(json.dumps({"at": now_iso(), "why": why, "free_before": free_before}), encoding="utf-8")
    log.error("disk reserve released (%s): %d bytes free before, %d now", why, free_before, free_bytes(config))
    return True


def release_if_short(config: Config) -> bool:
    """Release the reserve when the free space is below disk.release_below_mb."""
    if not reserve_path(config).exists():
        return False
    floor = config["disk"]["release_below_mb"] << 20
    free = free_bytes(config)
    if free >= floor:
        return False
    return release_reserve(config, f"only {free / 2**20:.1f} MB free, under disk.release_below_mb ({floor >> 20} MB)")


def keep_reserve(config: Config) -> None:
    """The worker's turn: release when short, make the reserve (again) when
    the disk has room for it twice over above the floor."""
    size = reserve_size(config)
    path = reserve_path(config)
    if size == 0:  # none wanted (any more)
        path.unlink(missing_ok=True)
        (config.home / RELEASED_FILE).unlink(missing_ok=True)
        return
    config.home.mkdir(parents=True, exist_ok=True)
    if release_if_short(config) or path.exists() or free_bytes(config) < 2 * size + (config["disk"]["release_below_mb"] << 20):
        return
    building = path.with_name(path.name + ".new")
    try:
        fd = os.open(building, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.posix_fallocate(fd, 0, size)  # blocks taken, nothing written
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(building, path)
    except OSError as exc:  # the space went meanwhile: next turn
        building.unlink(missing_ok=True)
        log.warning("disk reserve not made: %s", exc)
        return
    (config.home / RELEASED_FILE).unlink(missing_ok=True)
    log.info("disk reserve of %d MB in place at %s", size >> 20, path)


_last_success: dict[str, float] = {}  # by database path: when a probe write last succeeded


def write_probe(config: Config, conn) -> str | None:
    """Can the operational database commit, durably, now? None when it can,
    else why not. A full disk releases the reserve and is tried again. A
    success stands for PROBE_EVERY_S (at most one probe write a second per
    process); a failure is looked at again on the next call."""
    key = str(config.ops_db_path)
    if time.monotonic() - _last_success.get(key, -PROBE_EVERY_S) < PROBE_EVERY_S:
        return None
    problem = _probe_once(conn)
    if problem is not None and problem[1] and release_reserve(config, "a write of the operational database met a full disk"):
        problem = _probe_once(conn)
    if problem is None:
        _last_success[key] = time.monotonic()
        return None
    return problem[0]


def _probe_once(conn) -> tuple[str, bool] | None:
    try:
        with Transaction(conn):
            conn.execute("INSERT OR REPLACE INTO monitor_state (key, value) VALUES (?, ?)", (PROBE_KEY, json.dumps(now_iso())))
    except (crypto.DatabaseError, OSError) as exc:
        if not is_write_failure(exc):
            raise
        return f"{type(exc).__name__}: {exc}", is_disk_full(exc)
    return None


def bytes_per_certificate(conn) -> int:
    """What one more certificate takes on disk: its PDF (the mean of those
    issued; 64 KB before the first) and its rows, indexes and audit entries.
    Measured: one-person 住民票 41 KB of PDF, 45 KB in the database with its
    search, view and issue entries (120 certificates, checkpointed)."""
    mean = conn.execute("SELECT avg(length(pdf)) FROM certificates WHERE pdf IS NOT NULL").fetchone()[0]
    return int(mean or 64 * 1024) + 8 * 1024


# More than any certificate takes with its rows: with this much free space
# the database is not asked what one takes (every open screen asks).
_AMPLE_BYTES = 16 << 20


def room_for_a_certificate(config: Config, conn) -> bool:
    """Can one more certificate be issued and recorded on this disk?"""
    free = free_bytes(config)
    return free >= _AMPLE_BYTES or free >= bytes_per_certificate(conn)


def init_app(app) -> None:
    """Before every request, give the reserve back if the disk is short:
    the request may be the issuance that needs the room (a statvfs, a few
    microseconds)."""

    @app.before_request
    def release_reserve_if_short():
        # A state directory this uid may no longer read (chowned under the
        # running server) is for the request to answer — a storage page,
        # /readyz's reason — and /healthz still says the process is alive.
        with contextlib.suppress(PermissionError):
            release_if_short(app.config["SONAE"])

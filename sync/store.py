"""Snapshot generations on disk and the one pointer that says which is current.

    SNAPSHOT_DIR/
        CURRENT                  "gen-000042" — replaced atomically
        gen-000041/register.db   older generations, kept for rollback
        gen-000042/register.db   the current one (WAL; the change feed writes here)
        gen-000043.tmp/          a generation being built (deleted if the build fails)
        gen-000040.deleting/     a generation being pruned
        sync.lock                flock'd by whoever writes (load, changes, rollback, prune, rekey)

The state machine has one rule: a generation becomes visible only by
renaming a fully written and fsync'd `.tmp` directory, and becomes current
only by atomically replacing CURRENT. A crash at any instant therefore
leaves the old or the new generation current, both intact; leftovers
(`.tmp`, `.deleting`) are removed by the next writer.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sync import crypto
from sync.errors import NoSnapshot, SnapshotDiskFull, StoreDamaged, SyncBusy
from sync.register import DB_NAME, Register, SnapshotMeta, check_schema, read_meta
from sync.schema import DIGEST_MODULUS, RECORD_TABLE, SEARCH_TABLE, record_digest

CURRENT_FILE = "CURRENT"
LOCK_FILE = "sync.lock"
WAL_AUTOCHECKPOINT_PAGES = 100_000  # ~400 MB of WAL: a catch-up of several full batches
_GENERATION_DIR = re.compile(r"^gen-(\d{6,})$")
_LEFTOVER_DIR = re.compile(r"^gen-(\d{6,})\.(tmp|deleting)$")


def generation_name(number: int) -> str:
    return f"gen-{number:06d}"


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_atomically(path: Path, data: bytes) -> None:
    """Write a temp file, fsync it, rename it over `path`, fsync the
    directory: readers see the old content or the new, never a mix."""
    tmp = path.with_name(path.name + ".new")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_path(path.parent)


@contextlib.contextmanager
def disk_full_reported(directory: Path) -> Iterator[None]:
    """Turn ENOSPC (from the OS or from SQLite) into SnapshotDiskFull."""
    try:
        yield
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        raise SnapshotDiskFull(_disk_full_message(directory)) from exc
    except crypto.OperationalError as exc:
        if "disk is full" not in str(exc):
            raise
        raise SnapshotDiskFull(_disk_full_message(directory)) from exc


def _disk_full_message(directory: Path) -> str:
    try:
        usage = shutil.disk_usage(directory)
        figures = f"{usage.free / 1e6:,.1f} MB free of {usage.total / 1e6:,.1f} MB"
    except OSError:
        figures = "free space unknown"
    return (
        f"the snapshot disk is full ({figures} in {directory}); the previous generation keeps serving. "
        "Free space (lower sync.keep_generations, or grow the disk) and rerun"
    )


@dataclass(frozen=True)
class GenerationInfo:
    number: int
    path: Path
    current: bool
    size_bytes: int
    meta: SnapshotMeta | None
    problem: str | None = None


@dataclass
class VerifyReport:
    generation: int
    problems: list[str] = field(default_factory=list)
    residents: int = 0
    seals: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems


LOCK_PATIENCE_S = 0.5  # longer than any probe holds the lock (writer_active), far shorter than a sync


def _flock_within(fd: int, seconds: float) -> bool:
    """Take the exclusive lock, trying again for `seconds` (a probe may
    hold it for an instant); False if it stays held."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)


class SnapshotStore:
    """The snapshot directory. Readers call `current`, `open_register`,
    `generations` and `verify`; writers (loader, change feed, rollback,
    prune, rekey) hold `write_lock` — one writer at a time across processes."""

    def __init__(self, directory: str | os.PathLike, key: bytes):
        self.directory = Path(directory)
        self.key = key
        self._lock_owner: int | None = None
        self._lock_depth = 0

    # --- reading ---------------------------------------------------------

    def path_of(self, generation: int) -> Path:
        return self.directory / generation_name(generation) / DB_NAME

    def current(self) -> int | None:
        """The current generation's number, or None before the first load."""
        pointer = self.directory / CURRENT_FILE
        try:
            text = pointer.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return None
        match = _GENERATION_DIR.match(text)
        if not match:
            raise StoreDamaged(f"{pointer} holds {text!r}, not a generation name; point it at a good one with `sonae snapshot rollback N`")
        number = int(match.group(1))
        if not self.path_of(number).exists():
            raise StoreDamaged(f"{pointer} names {text}, which does not exist; choose another with `sonae snapshot rollback N`")
        return number

    def generation_numbers(self) -> list[int]:
        """Complete generations, oldest first."""
        if not self.directory.exists():
            return []
        numbers = []
        for entry in self.directory.iterdir():
            match = _GENERATION_DIR.match(entry.name)
            if match and (entry / DB_NAME).exists():
                numbers.append(int(match.group(1)))
        return sorted(numbers)

    def current_if_readable(self) -> int | None:
        """current(), or None when the pointer itself is damaged — for the
        operations that repair it (list, rollback, a new load)."""
        try:
            return self.current()
        except StoreDamaged:
            return None

    def generations(self) -> list[GenerationInfo]:
        """Every complete generation, oldest first; one that cannot be read
        is listed with `problem` set instead of `meta`."""
        current = self.current_if_readable()
        infos = []
        for number in self.generation_numbers():
            directory = self.directory / generation_name(number)
            size = sum(p.stat().st_size for p in directory.iterdir() if p.is_file())
            meta, problem = None, None
            try:
                with self.open_register(number) as register:
                    meta = register.meta
            except crypto.DatabaseError as exc:
                problem = f"cannot be read ({exc}); run `sonae snapshot verify {number}`"
            except StoreDamaged as exc:  # an older layout
                problem = str(exc)
            infos.append(GenerationInfo(number, directory, number == current, size, meta, problem))
        return infos

    def open_register(self, generation: int | None = None) -> Register:
        """A read-only Register of `generation` (default: the current one)."""
        number = self._existing(generation)
        return Register(self.path_of(number), self.key, number)

    def _existing(self, generation: int | None) -> int:
        if generation is None:
            current = self.current()
            if current is None:
                raise NoSnapshot(f"no snapshot has been loaded into {self.directory} yet; run `sonae sync full`")
            return current
        if not self.path_of(generation).exists():
            known = ", ".join(map(str, self.generation_numbers())) or "none"
            raise NoSnapshot(f"generation {generation} does not exist in {self.directory} (generations: {known})")
        return generation

    def verify(self, generation: int | None = None) -> VerifyReport:
        """Check a generation end to end: every page's HMAC (the file was not
        altered or damaged), SQLite's structure, row counts, the record
        digests against `meta`, and one search summary per resident."""
        number = self._existing(generation)
        report = VerifyReport(number)
        started = time.monotonic()
        conn = crypto.connect(self.path_of(number), self.key, readonly=True)
        try:
            conn.isolation_level = None
            for (message,) in conn.execute("PRAGMA cipher_integrity_check"):
                report.problems.append(f"encrypted page check: {message}")
            try:
                structure = [row[0] for row in conn.execute("PRAGMA integrity_check")]
                if structure != ["ok"]:
                    report.problems.extend(f"integrity check: {message}" for message in structure[:10])
                conn.execute("BEGIN")  # one read snapshot: the change feed may be writing
                try:
                    meta = read_meta(conn, number)
                    for kind in ("residents", "seals"):
                        self._verify_kind(conn, kind, getattr(meta, kind), getattr(meta, f"{kind}_digest"), report)
                finally:
                    conn.execute("COMMIT")
            except crypto.DatabaseError as exc:
                report.problems.append(f"reading the database failed: {exc}")
        finally:
            conn.close()
        report.seconds = time.monotonic() - started
        return report

    @staticmethod
    def _verify_kind(conn, kind: str, expected_count: int, expected_digest: str, report: VerifyReport) -> None:
        rows = conn.execute(f"SELECT count(*) FROM {SEARCH_TABLE[kind]}").fetchone()[0]
        setattr(report, kind, rows)
        if rows != expected_count:
            report.problems.append(f"{kind}: {rows:,} rows, meta says {expected_count:,}")
        digest, records = 0, 0
        for (text,) in conn.execute(f"SELECT record FROM {RECORD_TABLE[kind]}"):
            digest += record_digest(text.encode("utf-8"))
            records += 1
        if records != rows:
            report.problems.append(f"{kind}: {records:,} records for {rows:,} search rows")
        orphans = conn.execute(
            f"SELECT count(*) FROM {SEARCH_TABLE[kind]} s WHERE NOT EXISTS (SELECT 1 FROM {RECORD_TABLE[kind]} r WHERE r.id = s.id)"
        ).fetchone()[0]
        if orphans:
            report.problems.append(f"{kind}: {orphans:,} search rows have no record")
        if f"{digest % DIGEST_MODULUS:064x}" != expected_digest:
            report.problems.append(f"{kind}: record digest differs from meta (records were added, lost or altered)")
        if kind == "residents":
            # Both sides read in one pass each (an index and the table), not
            # a lookup per resident: a million random reads of an encrypted
            # file would double the time of the whole check.
            summaries, summary_keys = _count_and_digest(conn.execute("SELECT kana_key, birth_date, id FROM resident_summaries"))
            _, resident_keys = _count_and_digest(conn.execute("SELECT kana_key, birth_date, id FROM residents"))
            if (summaries, summary_keys) != (rows, resident_keys):
                report.problems.append(f"residents: the search summaries ({summaries:,}) are not keyed one to one by the residents ({rows:,})")

    # --- writing -----------------------------------------------------------

    @contextlib.contextmanager
    def write_lock(self) -> Iterator[None]:
        """Exclusive right to change the directory, across processes (flock)
        and threads; re-entrant within one thread of one store object."""
        me = threading.get_ident()
        if self._lock_owner == me:
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if not _flock_within(fd, LOCK_PATIENCE_S):
                holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
                raise SyncBusy(
                    f"another sync is running ({holder} holds {path}); two syncs never run at once — wait for it to finish and rerun"
                ) from None
            with contextlib.suppress(OSError):  # who holds the lock is only for the message above
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"pid {os.getpid()} since {dt.datetime.now().astimezone():%Y-%m-%d %H:%M:%S %z}".encode(), 0)
            self._lock_owner, self._lock_depth = me, 1
            try:
                yield
            finally:
                self._lock_owner, self._lock_depth = None, 0
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def writer_active(self) -> bool:
        """Whether a writer holds the lock at this instant (a probe for
        schedulers that would rather skip a turn than be refused)."""
        path = self.directory / LOCK_FILE
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing also releases a lock taken by the probe
        return False

    def cleanup_incomplete(self) -> list[str]:
        """Remove generations a crash left half-built or half-deleted."""
        removed = []
        with self.write_lock():
            for entry in sorted(self.directory.iterdir()):
                if _LEFTOVER_DIR.match(entry.name):
                    shutil.rmtree(entry)
                    removed.append(entry.name)
        return removed

    @contextlib.contextmanager
    def new_generation(self) -> Iterator[tuple[int, Path]]:
        """A fresh `.tmp` directory for the next generation number; yields
        (number, database path). Removed again if the block fails before
        `install` renamed it."""
        with self.write_lock():
            numbers = [0]
            for entry in self.directory.iterdir():
                match = _GENERATION_DIR.match(entry.name) or _LEFTOVER_DIR.match(entry.name)
                if match:
                    numbers.append(int(match.group(1)))
            number = max(numbers) + 1
            building = self.directory / f"{generation_name(number)}.tmp"
            building.mkdir()
            try:
                yield number, building / DB_NAME
            finally:
                if building.exists():
                    shutil.rmtree(building, ignore_errors=True)

    def install(self, number: int) -> None:
        """Make a fully written `.tmp` generation durable and visible (not yet
        current)."""
        with self.write_lock(), disk_full_reported(self.directory):
            building = self.directory / f"{generation_name(number)}.tmp"
            for entry in building.iterdir():
                fsync_path(entry)
            fsync_path(building)
            os.rename(building, self.directory / generation_name(number))
            fsync_path(self.directory)

    def promote_snapshot(self, generation: int) -> None:
        """Make `generation` current (atomic: CURRENT is replaced, not edited)."""
        with self.write_lock(), disk_full_reported(self.directory):
            self._existing(generation)
            write_file_atomically(self.directory / CURRENT_FILE, f"{generation_name(generation)}\n".encode("ascii"))

    def rollback(self, generation: int) -> int | None:
        """Make an existing, verified generation current again; returns the
        generation that was current. Refuses a generation that fails verify."""
        with self.write_lock():
            previous = self.current_if_readable()
            report = self.verify(generation)
            if not report.ok:
                raise StoreDamaged(f"generation {generation} fails verification ({'; '.join(report.problems)}); not rolling back to it")
            self.promote_snapshot(generation)
            return previous

    def prune(self, keep: int) -> list[int]:
        """Delete all but the `keep` newest generations; the current one is
        never deleted. Returns the numbers removed."""
        with self.write_lock():
            current = self.current()
            numbers = self.generation_numbers()
            kept = set(numbers[-keep:] if keep > 0 else []) | {current}
            removed = []
            for number in numbers:
                if number in kept:
                    continue
                doomed = self.directory / f"{generation_name(number)}.deleting"
                os.rename(self.directory / generation_name(number), doomed)
                shutil.rmtree(doomed)
                removed.append(number)
            if removed:
                fsync_path(self.directory)
            return removed

    def open_writable(self, generation: int):
        """A read-write connection to a generation, for the change feed.
        WAL: readers keep reading while a batch commits. synchronous=NORMAL:
        never corrupt; a power cut may undo the last committed batches, but
        they carry their own last_seq in the same transaction, so the feed
        simply delivers them again."""
        number = self._existing(generation)
        conn = crypto.connect(self.path_of(number), self.key)
        check_schema(conn, number)
        conn.isolation_level = None
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA busy_timeout = 10000")
        # 128 MiB: a batch of 10,000 changes reads ~45,000 pages and dirties
        # ~30,000; a page read to find a held record is then still decrypted
        # when the batch writes it. Only pages in use take memory.
        conn.execute("PRAGMA cache_size = -131072")
        # Copying a batch's pages back into the database (a checkpoint, with
        # its fsyncs) must not hold the batch up: by default SQLite does it
        # inside every commit of more than 1,000 pages. apply_changes does it
        # when the next run starts; this limit only bounds the WAL during a
        # long catch-up. (Closing the last connection checkpoints too.)
        conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}")
        return conn

    def rekey(self, new_key: bytes) -> list[int]:
        """Re-encrypt every generation under `new_key`. Resumable: a
        generation that already opens with the new key (an interrupted
        earlier run) is skipped. Returns the generations re-encrypted."""
        rekeyed = []
        with self.write_lock():
            self.cleanup_incomplete()
            for number in self.generation_numbers():
                path = self.path_of(number)
                try:
                    crypto.connect(path, new_key, readonly=True).close()
                    continue
                except crypto.WrongKeyError:
                    pass
                crypto.rekey(path, self.key, new_key)
                rekeyed.append(number)
            self.key = new_key
        return rekeyed


def _count_and_digest(rows) -> tuple[int, int]:
    """How many rows, and an order-independent digest of them (equal for
    equal multisets within this process)."""
    count = digest = 0
    for row in rows:
        count += 1
        digest += hash(row)
    return count, digest

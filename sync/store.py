"""Snapshot generations on disk and the one pointer that says which is current.

    SNAPSHOT_DIR/
        CURRENT                  "gen-000042" and its checksum — replaced atomically
        CURRENT.copy             the same, written just before CURRENT
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

The pointer is one small file, and one damaged byte in it must not leave
the appliance guessing: each copy carries the SHA-256 of the name it holds,
so damage is recognised as damage (never read as another generation), and
the copy says what CURRENT said. With both unusable nobody can tell which
generation was current; the newest generation that opens is offered, and
serving it waits for a person to confirm (`sonae snapshot rollback N`): an
older generation may undo changes such as a support measure.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import hashlib
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sqlcipher3 import dbapi2 as sqlcipher

from sync import crypto
from sync.contract import TOKYO
from sync.errors import NoSnapshot, SnapshotDiskFull, StoreDamaged, SyncBusy
from sync.register import (
    DB_NAME,
    Register,
    SnapshotMeta,
    connect_any_layout,
    connect_snapshot,
    older_layout,
    open_generation,
    outdated,
    read_meta,
)
from sync.schema import DIGEST_MODULUS, PAGE_HMAC, RECORD_TABLE, SEARCH_TABLE, record_digest

CURRENT_FILE = "CURRENT"
POINTER_COPY_FILE = "CURRENT.copy"
LOCK_FILE = "sync.lock"
WAL_AUTOCHECKPOINT_PAGES = 100_000  # ~400 MB of WAL: a catch-up of several full batches
WAL_SIZE_LIMIT_BYTES = 64 << 20  # what a rewound WAL is cut back to (a batch of 10,000 changes writes ~120 MB)
_GENERATION_DIR = re.compile(r"^gen-(\d{6,})$")
_LEFTOVER_DIR = re.compile(r"^gen-(\d{6,})\.(tmp|deleting)$")
_PAGE_FAILURE = re.compile(r"HMAC verification failed for page (\d+)")


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


OK, DAMAGED, WRONG_KEY, OUTDATED, UNREADABLE = "ok", "damaged", "wrong_key", "outdated", "unreadable"


@dataclass(frozen=True)
class GenerationInfo:
    number: int
    path: Path
    current: bool
    size_bytes: int
    meta: SnapshotMeta | None
    problem: str | None = None
    state: str = OK  # OK, DAMAGED, WRONG_KEY, OUTDATED or UNREADABLE (an I/O error)


@dataclass(frozen=True)
class Pointer:
    """What CURRENT says. `generation`: the one to serve (None before the
    first load, or when damage leaves it undecided); `damage`: what is wrong
    with the pointer (None: intact); `candidate`: when undecided, the newest
    generation that opens — to be confirmed by a person before it serves."""

    generation: int | None
    damage: str | None = None
    candidate: int | None = None

    @property
    def undecided(self) -> bool:
        return self.generation is None and self.damage is not None


def pointer_text(generation: int) -> bytes:
    name = generation_name(generation)
    return f"{name}\nsha256 {hashlib.sha256(name.encode('ascii')).hexdigest()}\n".encode("ascii")


def summarise_page_failures(messages: list[str], pages: int | None = None) -> str:
    """One line for any number of pages failing SQLCipher's check (a damaged
    disk can fail thousands: the operator needs the count and where)."""
    numbers = [int(m.group(1)) for m in map(_PAGE_FAILURE.search, messages) if m]
    others = [message for message in messages if not _PAGE_FAILURE.search(message)]
    parts = []
    if numbers:
        of = f" of {pages:,}" if pages else ""
        where = f"page {numbers[0]:,}" + (f", last: page {numbers[-1]:,}" if len(numbers) > 1 else "")
        parts.append(f"{len(numbers):,}{of} page(s) fail their check (damaged); first: {where}")
    parts += others[:3]
    if len(others) > 3:
        parts.append(f"{len(others) - 3:,} more")
    return "; ".join(parts)


def page_check(path: Path, key: bytes) -> tuple[list[str], int]:
    """SQLCipher's check of every page's HMAC, on a connection that does not
    need page 1 to be readable (a damaged first page must read as damage,
    not as a wrong key); returns (the failures, the page count)."""
    conn = sqlcipher.connect(f"file:{path}?mode=ro", uri=True)
    try:
        crypto.apply_key(conn, key, PAGE_HMAC)
        failures = [message for (message,) in conn.execute("PRAGMA cipher_integrity_check")]
        pages = _page_count(conn, path)
    finally:
        conn.close()
    return failures, pages


def _page_count(conn, path: Path) -> int:
    return -(-path.stat().st_size // int(conn.execute("PRAGMA cipher_page_size").fetchone()[0]))


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


# Longer than any probe holds the lock (writer_active) even on a busy box,
# where its instant can last most of a second; far shorter than a sync.
LOCK_PATIENCE_S = 3.0


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
        """The current generation's number, or None before the first load.
        Raises StoreDamaged when the pointer is damaged and its copy cannot
        say what it held."""
        pointer = self.pointer()
        if pointer.undecided:
            raise StoreDamaged(self.undecided_message(pointer))
        return pointer.generation

    def pointer(self) -> Pointer:
        """Read CURRENT, falling back to its copy when CURRENT is damaged."""
        number, problem = self._read_pointer(CURRENT_FILE)
        if number is not None:
            return Pointer(number)
        copy, copy_problem = self._read_pointer(POINTER_COPY_FILE)
        if problem is None and copy is None and copy_problem is None:
            return Pointer(None)  # nothing loaded yet
        where = self.directory / CURRENT_FILE
        problem = problem or "is missing"
        if copy is not None:
            return Pointer(copy, f"{where} {problem}; its copy names {generation_name(copy)}, which serves")
        copy_state = "is missing too" if copy_problem is None else copy_problem
        return Pointer(None, f"{where} {problem}; its copy {copy_state}", self.newest_openable())

    def _read_pointer(self, name: str) -> tuple[int | None, str | None]:
        """(generation, None), or (None, what is wrong); (None, None) when the
        file does not exist."""
        try:
            raw = (self.directory / name).read_bytes()
        except FileNotFoundError:
            return None, None
        except OSError as exc:
            return None, f"cannot be read ({exc.strerror})"
        try:
            lines = raw.decode("ascii").split("\n")
        except UnicodeDecodeError:
            return None, "is damaged (it holds bytes that are not text)"
        text = lines[0].strip()
        match = _GENERATION_DIR.match(text)
        if not match:
            return None, f"is damaged (it holds {text[:40]!r}, not a generation name)"
        number = int(match.group(1))
        checksum = lines[1].strip() if len(lines) > 1 else ""
        # A pointer written before checksums were has only the name.
        if checksum and pointer_text(number).decode("ascii").split("\n")[1] != checksum:
            return None, f"is damaged (it names {text}, but its checksum does not match)"
        if not self.path_of(number).exists():
            return None, f"names {text}, which does not exist"
        return number, None

    def undecided_message(self, pointer: Pointer) -> str:
        if pointer.candidate is None:
            return f"{pointer.damage}, and no generation opens; load one with `sonae sync full`"
        return (
            f"{pointer.damage}. The newest generation that opens is {pointer.candidate}; serving it needs a supervisor's or IT's "
            "confirmation, because an older generation may undo changes such as a support measure: check it with "
            f"`sonae snapshot list`, then choose it with `sonae snapshot rollback {pointer.candidate} --reason ...`"
        )

    def newest_openable(self) -> int | None:
        """The newest generation that opens and reads its meta (a quick
        check; `rollback` verifies every page before making it current)."""
        for number in reversed(self.generation_numbers()):
            try:
                with self.open_register(number) as register:
                    register.meta  # noqa: B018 - reading it is the check
                return number
            except (crypto.WrongKeyError, crypto.DatabaseError, StoreDamaged, OSError):
                continue
        return None

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
        return self.pointer().generation

    def generations(self) -> list[GenerationInfo]:
        """Every complete generation, oldest first, each with its own state:
        one that cannot be read is listed with `problem` set instead of
        `meta`, and never stops the others from being listed."""
        current = self.current_if_readable()
        infos = []
        unopened = []
        for number in self.generation_numbers():
            directory = self.directory / generation_name(number)
            size = sum(p.stat().st_size for p in directory.iterdir() if p.is_file())
            meta, problem, state = None, None, OK
            try:
                with self.open_register(number) as register:
                    meta = register.meta
            except (crypto.WrongKeyError, crypto.DatabaseError) as exc:
                state = DAMAGED if isinstance(exc, crypto.DatabaseError) else WRONG_KEY
                unopened.append(len(infos))
            except StoreDamaged as exc:  # an older layout
                problem, state = str(exc), OUTDATED
            except OSError as exc:
                problem, state = f"cannot be read (I/O error: {exc.strerror}); check the disk (dmesg) and run `sonae snapshot verify {number}`", UNREADABLE
            infos.append(GenerationInfo(number, directory, number == current, size, meta, problem, state))
        key_opens_some = any(info.state in (OK, OUTDATED) for info in infos)
        for index in unopened:
            infos[index] = self._diagnosed(infos[index], key_opens_some)
        return infos

    def _diagnosed(self, info: GenerationInfo, key_opens_some: bool) -> GenerationInfo:
        """Why a generation does not open: damage, or the key. When the key
        opens another generation it is the right key, so this one is
        damaged; otherwise every page is checked (a wrong key fails them
        all, damage only some)."""
        verify = f"`sonae snapshot verify {info.number}` counts the damaged pages; roll back to a good generation or run `sonae sync full`"
        if key_opens_some:
            problem = f"damaged: it cannot be read although the key opens the other generations — {verify}"
            return GenerationInfo(info.number, info.path, info.current, info.size_bytes, None, problem, DAMAGED)
        try:
            failures, pages = page_check(self.path_of(info.number), self.key)
        except (crypto.DatabaseError, OSError) as exc:
            problem = f"cannot be read ({exc}); check the disk (dmesg) and run `sonae snapshot verify {info.number}`"
            return GenerationInfo(info.number, info.path, info.current, info.size_bytes, None, problem, UNREADABLE)
        if failures and len(failures) >= pages:
            problem = ("cannot be opened with the configured key (wrong key, or not a Sonae database); check security.key_file / "
                       "SONAE_SECURITY_KEY (every page fails its check: not damage)")
            return GenerationInfo(info.number, info.path, info.current, info.size_bytes, None, problem, WRONG_KEY)
        problem = f"damaged: {summarise_page_failures(failures, pages) or 'its structure cannot be read'} — {verify}"
        return GenerationInfo(info.number, info.path, info.current, info.size_bytes, None, problem, DAMAGED)

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
        path = self.path_of(number)
        try:
            conn = connect_snapshot(path, self.key, readonly=True)
        except crypto.WrongKeyError:
            layout = older_layout(path, self.key)
            if layout is not None:
                raise outdated(number, layout) from None
            failures, pages = page_check(path, self.key)
            if not failures or len(failures) >= pages:
                raise  # every page fails: the key, not the file
            report.problems.append(f"encrypted page check: {summarise_page_failures(failures, pages)}")
            report.problems.append("its first page cannot be read, so nothing else can be checked")
            report.seconds = time.monotonic() - started
            return report
        try:
            conn.isolation_level = None
            failures = [message for (message,) in conn.execute("PRAGMA cipher_integrity_check")]
            if failures:
                report.problems.append(f"encrypted page check: {summarise_page_failures(failures, _page_count(conn, path))}")
            try:
                # One message a line (SQLite puts up to 100 in one row, under a heading).
                structure = [line for (text,) in conn.execute("PRAGMA integrity_check") for line in text.splitlines()
                             if line.strip() and not line.startswith("*** in database")]
                if structure != ["ok"]:
                    report.problems.append(f"integrity check: {summarise_page_failures(structure)}")
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
                os.pwrite(fd, f"pid {os.getpid()} since {dt.datetime.now(TOKYO):%Y-%m-%d %H:%M:%S %Z}".encode(), 0)
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
        """What every writer does first: remove generations a crash left
        half-built or half-deleted (a killed load's `.tmp` may be the size of
        a whole generation), and write CURRENT again when only its copy
        still says what it held. Returns what was removed."""
        removed = []
        with self.write_lock():
            for entry in sorted(self.directory.iterdir()):
                if _LEFTOVER_DIR.match(entry.name):
                    shutil.rmtree(entry)
                    removed.append(entry.name)
            pointer = self.pointer()
            if pointer.damage and pointer.generation is not None:
                self.promote_snapshot(pointer.generation)
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
            try:
                # Inside the try: a stop signal the moment after mkdir (a
                # KeyboardInterrupt between two bytecodes) left it behind.
                building.mkdir()
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
            # The copy first: after a crash between the two, CURRENT still
            # names the old generation, and the copy the new one.
            write_file_atomically(self.directory / POINTER_COPY_FILE, pointer_text(generation))
            write_file_atomically(self.directory / CURRENT_FILE, pointer_text(generation))

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
        conn = open_generation(self.path_of(number), self.key, number, readonly=False)
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
        conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT_BYTES}")
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
                    connect_any_layout(path, new_key).close()
                    continue
                except crypto.WrongKeyError:
                    pass
                # A generation of an older layout keeps its cipher settings (it is still refused as outdated).
                crypto.rekey(path, self.key, new_key, page_hmac=None if older_layout(path, self.key) is not None else PAGE_HMAC)
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

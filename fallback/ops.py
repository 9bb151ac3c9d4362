"""The operational database: everything the appliance itself records
(modes, users, issuance, serials, audit, sync runs, probes, drills).

It is a SQLCipher file under SONAE_HOME, keyed with the "ops" key derived
from the master key. The web server's threads and the worker process share
it, so every connection uses WAL, a busy timeout, and synchronous=FULL —
an issued serial must survive a power cut the instant it is committed.

The schema is an ordered list of migrations; `migrate` applies the ones a
database has not seen yet, in one transaction each. A migration is SQL, or a
function of a sqlite-utils Database over the same connection and inside the
same transaction (sqlite-utils' create, add_column and create_index stay
inside it; table changes go through `transform_table`, which keeps the
table's triggers and indexes).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import threading
from collections.abc import Callable
from pathlib import Path

import sqlite_utils

from fallback.config import Config
from fallback.keys import ops_key
from sync import crypto
from sync.contract import TOKYO

# The box that ran alone before pairs (counter.box_id's default): migration
# 9 gives it the serial counters kept until then.
BOX_BEFORE_PAIRS = "1"


def _serial_counters_per_box(db: sqlite_utils.Database) -> None:
    """Each box of a pair allocates from its own range: the counter of a
    scope becomes one per box, with the range it covers and the host that
    runs the box, so that a box whose range overlaps another's, or a
    second host under a box's id, is refused. The counters kept before
    pairs belong to box "1" (BOX_BEFORE_PAIRS) on no host yet: the first
    host to start as box 1 claims them. Their range starts at the lowest
    serial issued (what a box that ran alone has used)."""
    counters = db["serial_counters"]
    counters.add_column("box_id", str, not_null_default=BOX_BEFORE_PAIRS)
    counters.add_column("host", str, not_null_default="")
    counters.add_column("first_serial", int, not_null_default=0)
    db.execute("UPDATE serial_counters SET first_serial = coalesce("
               "(SELECT min(serial) FROM certificates c WHERE c.scope = serial_counters.scope), next_serial)")
    transform_table(db, "serial_counters", pk=("scope", "box_id"), not_null={"scope"})



def _create_issue_keys(db: sqlite_utils.Database) -> None:
    """Migration 11 (below): one row per idempotency key that issued, with
    the requested items its certificates left out (the answer a replay repeats)."""
    db["issue_keys"].create(
        {"actor": str, "key": str, "request_id": int, "fingerprint": str, "omissions": str, "created_at": str},
        pk=("actor", "key"), not_null={"request_id", "fingerprint", "omissions", "created_at"},
        foreign_keys=[("request_id", "requests", "id")],
    )


MIGRATIONS: list[str | Callable[[sqlite_utils.Database], None]] = [
    # 1: audit trail, modes, users, sync runs
    """
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT,
        detail TEXT NOT NULL,
        drill INTEGER NOT NULL DEFAULT 0,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    );
    CREATE INDEX audit_at ON audit(at);
    CREATE INDEX audit_actor_action ON audit(actor, action, at);
    CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
    CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;

    CREATE TABLE mode_changes (
        id INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        from_mode TEXT,
        to_mode TEXT NOT NULL,
        actor TEXT NOT NULL,
        reason TEXT NOT NULL
    );

    CREATE TABLE users (
        username TEXT PRIMARY KEY,
        display_name TEXT NOT NULL,
        role TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        disabled INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        password_changed_at TEXT NOT NULL
    );
    CREATE TABLE login_failures (
        id INTEGER PRIMARY KEY,
        username TEXT NOT NULL,
        remote TEXT,
        at TEXT NOT NULL
    );
    CREATE INDEX login_failures_user ON login_failures(username, at);

    CREATE TABLE sync_runs (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        started_at TEXT NOT NULL,
        finished_at TEXT,
        outcome TEXT NOT NULL,
        generation INTEGER,
        records INTEGER,
        bytes INTEGER,
        as_of TEXT,
        error TEXT,
        detail TEXT
    );
    CREATE INDEX sync_runs_started ON sync_runs(started_at);
    """,
    # 2: server-side sessions (a cookie only carries the session id, so a
    # logout or an idle timeout really ends the session)
    """
    CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        username TEXT NOT NULL,
        role TEXT NOT NULL,
        terminal TEXT NOT NULL,
        office TEXT NOT NULL,
        printer TEXT NOT NULL,
        remote TEXT,
        created_at TEXT NOT NULL,
        last_seen TEXT NOT NULL,
        ended_at TEXT,
        end_reason TEXT
    );
    CREATE INDEX sessions_user ON sessions(username, created_at);
    """,
    # 3: issuance — requests, one certificate row per copy, serial counters,
    # deferred requests. A serial is committed (status 'allocated') before
    # its PDF exists; one whose PDF never got made is voided, never reused.
    """
    CREATE TABLE serial_counters (
        scope TEXT PRIMARY KEY,
        next_serial INTEGER NOT NULL,
        last_serial INTEGER NOT NULL
    );
    CREATE TABLE requests (
        id INTEGER PRIMARY KEY,
        created_at TEXT NOT NULL,
        scope TEXT NOT NULL,
        drill_id INTEGER,
        clerk TEXT NOT NULL,
        office TEXT NOT NULL,
        terminal TEXT NOT NULL,
        printer TEXT NOT NULL,
        kind TEXT NOT NULL,
        subject_code TEXT NOT NULL,
        requester_type TEXT NOT NULL,
        requester_name TEXT,
        requester_key TEXT,
        identity_document TEXT,
        purpose TEXT,
        contact TEXT,
        options TEXT NOT NULL,
        copies INTEGER NOT NULL,
        fee_yen INTEGER NOT NULL,
        outcome TEXT NOT NULL,
        refusal_rule TEXT,
        refusal_reason TEXT,
        approved_by TEXT,
        flags TEXT NOT NULL DEFAULT '[]',
        snapshot_generation INTEGER,
        data_as_of TEXT
    );
    CREATE INDEX requests_created ON requests(scope, created_at);
    CREATE INDEX requests_requester ON requests(requester_key, created_at);
    CREATE TABLE certificates (
        serial INTEGER NOT NULL,
        scope TEXT NOT NULL,
        request_id INTEGER NOT NULL REFERENCES requests(id),
        copy_number INTEGER NOT NULL,
        status TEXT NOT NULL,
        issued_at TEXT NOT NULL,
        rendered_at TEXT,
        pages INTEGER,
        content_digest TEXT,
        resident_codes TEXT NOT NULL,
        printed_records TEXT NOT NULL,
        pdf BLOB,
        print_job TEXT,
        print_state TEXT,
        PRIMARY KEY (scope, serial)
    );
    CREATE INDEX certificates_request ON certificates(request_id);
    CREATE TABLE deferred_requests (
        id INTEGER PRIMARY KEY,
        created_at TEXT NOT NULL,
        scope TEXT NOT NULL,
        drill_id INTEGER,
        clerk TEXT NOT NULL,
        office TEXT NOT NULL,
        kind TEXT NOT NULL,
        resident_code TEXT,
        name TEXT NOT NULL,
        contact TEXT NOT NULL,
        delivery TEXT NOT NULL,
        consent INTEGER NOT NULL,
        note TEXT,
        status TEXT NOT NULL DEFAULT 'open',
        status_changed_at TEXT,
        status_changed_by TEXT
    );
    """,
    # 4: drills — everything a drill does is tagged with its id and kept
    # out of real figures
    """
    CREATE TABLE drills (
        id INTEGER PRIMARY KEY,
        scenario TEXT NOT NULL,
        title TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        planned_start TEXT NOT NULL,
        planned_end TEXT NOT NULL,
        participants TEXT NOT NULL,
        terminals TEXT NOT NULL,
        status TEXT NOT NULL,
        created_by TEXT NOT NULL,
        created_at TEXT NOT NULL,
        started_at TEXT,
        ended_at TEXT,
        end_reason TEXT
    );
    CREATE TABLE drill_events (
        id INTEGER PRIMARY KEY,
        drill_id INTEGER NOT NULL REFERENCES drills(id),
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        event TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT '{}'
    );
    """,
    # 5: monitoring — one row per probe of one upstream component, the
    # debounced state of each component, alerts and every delivery attempt,
    # the morning reports, and the monitor's own cursors
    """
    CREATE TABLE probes (
        id INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        component TEXT NOT NULL,
        ok INTEGER NOT NULL,
        state TEXT NOT NULL,
        latency_ms REAL,
        error TEXT
    );
    CREATE INDEX probes_component_at ON probes(component, at);
    CREATE INDEX probes_at ON probes(at);
    CREATE TABLE component_status (
        component TEXT PRIMARY KEY,
        status TEXT NOT NULL,
        since TEXT NOT NULL,
        streak_ok INTEGER NOT NULL,
        streak_count INTEGER NOT NULL,
        streak_since TEXT NOT NULL,
        last_at TEXT NOT NULL,
        last_state TEXT NOT NULL,
        last_latency_ms REAL,
        last_error TEXT,
        probes_ok INTEGER NOT NULL DEFAULT 0,
        probes_failed INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE alerts (
        id INTEGER PRIMARY KEY,
        key TEXT NOT NULL,
        severity TEXT NOT NULL,
        title TEXT NOT NULL,
        what TEXT NOT NULL,
        still_works TEXT NOT NULL,
        runbook TEXT NOT NULL,
        since TEXT NOT NULL,
        opened_at TEXT NOT NULL,
        last_notified_at TEXT NOT NULL,
        notifications INTEGER NOT NULL DEFAULT 1,
        resolved_at TEXT
    );
    CREATE UNIQUE INDEX alerts_one_open ON alerts(key) WHERE resolved_at IS NULL;
    CREATE TABLE alert_deliveries (
        id INTEGER PRIMARY KEY,
        alert_id INTEGER NOT NULL REFERENCES alerts(id),
        at TEXT NOT NULL,
        event TEXT NOT NULL,
        channel TEXT NOT NULL,
        ok INTEGER NOT NULL,
        attempts INTEGER NOT NULL,
        error TEXT
    );
    CREATE TABLE morning_reports (
        day TEXT PRIMARY KEY,
        generated_at TEXT NOT NULL,
        report TEXT NOT NULL,
        mailed INTEGER NOT NULL,
        mail_error TEXT
    );
    CREATE TABLE monitor_state (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # 6: runbook ticks, drill personas, post-outage reconciliation. Ticks
    # are appended (a withdrawn tick is a new row with done = 0), so the
    # incident report can show who ticked what and when.
    """
    CREATE TABLE runbook_ticks (
        id INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        scope TEXT NOT NULL,
        drill_id INTEGER,
        runbook TEXT NOT NULL,
        step_id TEXT NOT NULL,
        step_text TEXT NOT NULL,
        role TEXT NOT NULL,
        actor TEXT NOT NULL,
        done INTEGER NOT NULL
    );
    CREATE INDEX runbook_ticks_scope ON runbook_ticks(scope, drill_id, at);

    CREATE TABLE drill_personas (
        id INTEGER PRIMARY KEY,
        drill_id INTEGER NOT NULL REFERENCES drills(id),
        case_key TEXT NOT NULL,
        resident_code TEXT,
        synthetic TEXT,
        UNIQUE (drill_id, case_key)
    );

    CREATE TABLE recovery_checks (
        id INTEGER PRIMARY KEY,
        request_id INTEGER NOT NULL REFERENCES requests(id),
        resident_code TEXT NOT NULL,
        checked_at TEXT NOT NULL,
        printed_version INTEGER NOT NULL,
        printed_updated_at TEXT NOT NULL,
        upstream_version INTEGER,
        upstream_updated_at TEXT,
        verdict TEXT NOT NULL,
        difference TEXT NOT NULL DEFAULT '[]',
        action TEXT NOT NULL DEFAULT '',
        status TEXT NOT NULL DEFAULT 'open',
        status_changed_at TEXT,
        status_changed_by TEXT,
        UNIQUE (request_id, resident_code)
    );
    CREATE TABLE recovery_attempts (
        id INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        outcome TEXT NOT NULL,
        checked INTEGER NOT NULL,
        pending INTEGER NOT NULL,
        error TEXT
    );
    """,
    # 7: the residents' notice — every version Sonae drafted and a
    # supervisor approved, kept for the incident report. An approved
    # version is frozen (only its later withdrawal is recorded on it) and
    # no version is ever deleted.
    """
    CREATE TABLE notice_versions (
        id INTEGER PRIMARY KEY,
        scope TEXT NOT NULL,
        drill_id INTEGER,
        created_at TEXT NOT NULL,
        created_by TEXT NOT NULL,
        situation TEXT NOT NULL,
        drafted_texts TEXT NOT NULL,
        texts TEXT NOT NULL,
        next_update_at TEXT,
        status TEXT NOT NULL,
        edited_at TEXT,
        edited_by TEXT,
        approved_at TEXT,
        approved_by TEXT,
        withdrawn_at TEXT,
        withdrawn_by TEXT
    );
    CREATE INDEX notice_versions_approved ON notice_versions(scope, approved_at);
    CREATE TRIGGER notice_versions_frozen BEFORE UPDATE OF texts, next_update_at, status, approved_at, approved_by
        ON notice_versions WHEN OLD.status = 'approved'
        BEGIN SELECT RAISE(ABORT, 'an approved notice version cannot be changed'); END;
    CREATE TRIGGER notice_versions_kept BEFORE DELETE ON notice_versions
        BEGIN SELECT RAISE(ABORT, 'notice versions are kept'); END;
    """,
    # 8: the upstream's clock as the probes saw it (fallback/clock.py): the
    # offset from this clock, with the boot clock to notice this one moving
    """
    CREATE TABLE clock_readings (
        id INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        offset_s REAL NOT NULL,
        source TEXT NOT NULL,
        boot_id TEXT NOT NULL,
        boottime_s REAL NOT NULL
    );
    CREATE INDEX clock_readings_at ON clock_readings(at);
    """,
    # 9: the long outage — holds that change issuance at once (until a
    # supervisor reconciles them with the register), 届出 received at the
    # counter for re-entry after recovery and the re-entry worklist's ticks,
    # and the maintenance calendar with each window's preparation. No row
    # of these is ever deleted: a hold is reconciled, a window cancelled.
    """
    CREATE TABLE holds (
        id INTEGER PRIMARY KEY,
        scope TEXT NOT NULL,
        drill_id INTEGER,
        kind TEXT NOT NULL,
        resident_code TEXT NOT NULL,
        seal_number TEXT,
        details TEXT NOT NULL DEFAULT '{}',
        filing_id INTEGER,
        recorded_at TEXT NOT NULL,
        recorded_by TEXT NOT NULL,
        confirmed_by TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'active',
        reconciled_at TEXT,
        reconciled_by TEXT,
        reconcile_note TEXT
    );
    CREATE INDEX holds_scope ON holds(scope, drill_id, status);
    CREATE TRIGGER holds_kept BEFORE DELETE ON holds
        BEGIN SELECT RAISE(ABORT, 'holds are kept: a hold is reconciled, never deleted'); END;

    CREATE TABLE filings (
        id INTEGER PRIMARY KEY,
        scope TEXT NOT NULL,
        drill_id INTEGER,
        kind TEXT NOT NULL,
        notified_on TEXT NOT NULL,
        recorded_at TEXT NOT NULL,
        clerk TEXT NOT NULL,
        office TEXT NOT NULL,
        terminal TEXT NOT NULL,
        notifier_name TEXT NOT NULL,
        notifier_relation TEXT NOT NULL,
        documents TEXT NOT NULL,
        persons TEXT NOT NULL,
        fields TEXT NOT NULL,
        manual_entry INTEGER NOT NULL DEFAULT 0,
        note TEXT NOT NULL DEFAULT '',
        confirmed_by TEXT
    );
    CREATE INDEX filings_scope ON filings(scope, drill_id, kind);
    CREATE TABLE reentry_ticks (
        id INTEGER PRIMARY KEY,
        filing_id INTEGER NOT NULL REFERENCES filings(id),
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        done INTEGER NOT NULL
    );
    CREATE INDEX reentry_ticks_filing ON reentry_ticks(filing_id, id);

    CREATE TABLE maintenance_windows (
        id INTEGER PRIMARY KEY,
        starts_at TEXT NOT NULL,
        ends_at TEXT NOT NULL,
        vendor TEXT NOT NULL,
        description TEXT NOT NULL,
        created_at TEXT NOT NULL,
        created_by TEXT NOT NULL,
        cancelled_at TEXT,
        cancelled_by TEXT,
        prepared_at TEXT,
        preparation TEXT,
        notice_version_id INTEGER,
        declared_at TEXT
    );
    CREATE INDEX maintenance_windows_start ON maintenance_windows(starts_at);
    """,
    # 10: a pair of boxes (README "The pair"): serial counters per box
    _serial_counters_per_box,
    # 11: idempotency keys of issuance (a rendered request form, or the API's
    # Idempotency-Key header): a key the server has seen answers with the
    # request it issued, never with a second certificate.
    _create_issue_keys,
    # 12: the PCs registered as terminals (fallback.staff.terminals), so that
    # a registration can be withdrawn with the sessions opened under it;
    # those made before it are taken from their audit entries and stay valid.
    """
    ALTER TABLE sessions ADD COLUMN device TEXT;
    CREATE TABLE terminal_registrations (
        device TEXT PRIMARY KEY,
        terminal TEXT NOT NULL,
        registered_at TEXT NOT NULL,
        registered_by TEXT NOT NULL,
        withdrawn_at TEXT,
        withdrawn_by TEXT,
        withdrawn_why TEXT
    );
    CREATE INDEX terminal_registrations_terminal ON terminal_registrations(terminal);
    INSERT OR IGNORE INTO terminal_registrations (device, terminal, registered_at, registered_by)
        SELECT json_extract(detail, '$.device'), target, at, actor FROM audit
        WHERE action = 'terminal.register' AND json_extract(detail, '$.device') IS NOT NULL AND target IS NOT NULL;
    """,
    # 13: certificates cancelled after they were issued (fallback.cancellations):
    # 書損 and 誤交付; the certificate row, its serial and its PDF stay as they were.
    """
    CREATE TABLE certificate_cancellations (
        scope TEXT NOT NULL,
        serial INTEGER NOT NULL,
        request_id INTEGER NOT NULL REFERENCES requests(id),
        cancelled_at TEXT NOT NULL,
        cancelled_by TEXT NOT NULL,
        reason TEXT NOT NULL,
        note TEXT NOT NULL,
        PRIMARY KEY (scope, serial),
        FOREIGN KEY (scope, serial) REFERENCES certificates(scope, serial)
    );
    CREATE INDEX certificate_cancellations_at ON certificate_cancellations(scope, cancelled_at);
    """,
    # 14: whether a deferred request's person was under a 支援措置 when it was
    # recorded ('self', 'household'): a hold reconciled since must not drop the mark.
    """
    ALTER TABLE deferred_requests ADD COLUMN protected_when_recorded TEXT;
    """,
    # 15: a clerk's look-ups are counted for the bulk-viewing flag within
    # their scope (a drill's apart from the real register's), newest first.
    """
    CREATE INDEX audit_actor_action_scope ON audit(actor, action, drill, at);
    DROP INDEX audit_actor_action;
    """,
]



def now() -> dt.datetime:
    """The appliance's clock, always in Japan time (every figure a ward sees
    is in JST)."""
    return dt.datetime.now(TOKYO)


def now_iso() -> str:
    return now().isoformat(timespec="milliseconds")


def connect_ops(path: str | Path, key: bytes, *, check_same_thread: bool = True):
    path = Path(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # Created owner-only whatever the process umask; SQLite gives its WAL
    # and shared-memory files the database file's mode.
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    conn = crypto.connect(path, key, check_same_thread=check_same_thread)
    conn.isolation_level = None  # explicit BEGIN/COMMIT: we decide what is atomic
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA busy_timeout = 10000")
    conn.execute("PRAGMA foreign_keys = ON")
    migrate(conn)
    return conn


def open_ops(config: Config, *, check_same_thread: bool = True):
    return connect_ops(config.ops_db_path, ops_key(config), check_same_thread=check_same_thread)


def migrate(conn) -> int:
    """Apply pending migrations; return the schema version."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have migrated while we waited for the lock.
            if conn.execute("PRAGMA user_version").fetchone()[0] >= number:
                conn.execute("COMMIT")
                continue
            if callable(script):
                script(schema_database(conn))
            else:
                for statement in _statements(script):
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return len(MIGRATIONS)


def schema_database(conn) -> sqlite_utils.Database:
    """sqlite-utils over an open connection, for migrations: no plugins, no
    connection-wide pragmas of its own."""
    return sqlite_utils.Database(conn, recursive_triggers=False, execute_plugins=False)


def transform_table(db: sqlite_utils.Database, table: str, **changes) -> None:
    """sqlite-utils' transform (rebuild a table with changed columns,
    types, constraints) as statements inside the caller's transaction.
    The rebuild drops the table's triggers with the old table (sqlite-utils
    re-creates only its indexes), so whatever went is created again from
    its stored SQL: without this the audit table would silently stop being
    append-only."""
    def attached() -> dict[str, str]:
        return dict(db.execute(
            "SELECT name, sql FROM sqlite_master WHERE tbl_name = ? AND type IN ('index', 'trigger') AND sql IS NOT NULL",
            [table],
        ).fetchall())

    before = attached()
    for statement in db[table].transform_sql(**changes):
        db.execute(statement)
    after = attached()
    for name, sql in sorted(before.items()):
        if name not in after:
            db.execute(sql)


def _statements(script: str) -> list[str]:
    """Split a migration into statements; sqlite3.complete_statement keeps
    trigger bodies (which contain ';') whole."""
    from sqlcipher3 import dbapi2

    statements, buffer = [], ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if dbapi2.complete_statement(buffer):
            if buffer.strip():
                statements.append(buffer.strip())
            buffer = ""
    if buffer.strip():
        statements.append(buffer.strip())
    return statements


def damage(conn) -> list[str]:
    """What is wrong with an open operational database, page by page and
    structurally (empty: nothing). Reads every page: for `sonae ops verify`,
    not for a request."""
    found = [f"encrypted page check: {message}" for (message,) in conn.execute("PRAGMA cipher_integrity_check")]
    structure = [row[0] for row in conn.execute("PRAGMA integrity_check")]
    if structure != ["ok"]:
        found += [f"integrity check: {message}" for message in structure[:10]]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version != len(MIGRATIONS):
        found.append(f"schema version {version}, this Sonae expects {len(MIGRATIONS)}")
    return found


class Transaction:
    """`with Transaction(conn):` — BEGIN IMMEDIATE … COMMIT, or ROLLBACK on
    any exception. IMMEDIATE takes the write lock up front, so two writers
    never both read a counter before either writes it.

    durable=False commits without waiting for the disk (WAL with
    synchronous=NORMAL: safe against a crash of the process, not against a
    power cut in the following instant). It is for high-rate records whose
    loss in a power cut harms no one — the audit entries of searches and
    record views, which would otherwise cost a disk sync each. Serials,
    issuance, modes and everything else stay durable."""

    def __init__(self, conn, *, durable: bool = True):
        self.conn = conn
        self.durable = durable

    def __enter__(self):
        _writer.acquire(self.conn)
        try:
            if not self.durable:
                self.conn.execute("PRAGMA synchronous = NORMAL")
            self.conn.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._restore()
            raise
        return self.conn

    def __exit__(self, exc_type, exc, tb):
        try:
            self.conn.execute("ROLLBACK" if exc_type else "COMMIT")
        finally:
            self._restore()
        return False

    def _restore(self) -> None:
        try:
            if not self.durable:
                self.conn.execute("PRAGMA synchronous = FULL")
        finally:
            _writer.release()


class _Writer:
    """Writers of ops.db queue here, in order, instead of inside SQLite: its
    busy handler sleeps in growing steps (up to 100 ms), which turned a 1 ms
    audit write into a 100 ms tail under load. Threads of one process queue
    on a lock; processes (the serving processes of `sonae serve`, the
    worker) on an flock of a file beside the database, which the kernel
    hands to the next waiter at once. Without that file (a read-only state
    directory) they meet SQLite's lock as before."""

    SUFFIX = "-writer.lock"
    KEPT_OPEN = 8

    def __init__(self):
        self._threads = threading.RLock()
        self._depth = 0  # transactions the holding thread has open (changed by it alone)
        self._held: int | None = None
        self._files: dict[str, int | None] = {}

    def acquire(self, conn) -> None:
        self._threads.acquire()
        if self._depth == 0:
            try:
                fd = self._lock_file(conn)
                if fd is not None:
                    fcntl.flock(fd, fcntl.LOCK_EX)
            except BaseException:
                self._threads.release()
                raise
            self._held = fd
        self._depth += 1

    def release(self) -> None:
        self._depth -= 1
        try:
            if self._depth == 0 and self._held is not None:
                fcntl.flock(self._held, fcntl.LOCK_UN)
        finally:
            self._threads.release()

    def _lock_file(self, conn) -> int | None:
        database = next((file for _, name, file in conn.execute("PRAGMA database_list") if name == "main"), "")
        if database not in self._files:
            try:
                self._files[database] = os.open(database + self.SUFFIX, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600) if database else None
            except OSError:  # e.g. made by another uid: SQLite's own lock still holds
                self._files[database] = None
            # A box has one ops.db; a process that opened many (the tests)
            # keeps the newest few open. None is held while this runs.
            while len(self._files) > self.KEPT_OPEN:
                fd = self._files.pop(next(iter(self._files)))
                if fd is not None:
                    os.close(fd)
        return self._files[database]


_writer = _Writer()

"""Whether the counters can read the snapshot, and if not, why, in words
for the counter: a damaged pointer waiting for a person's decision, a
generation that does not open, reads that fail.

A generation can open and still fail most reads: in the fault campaign a
server on a generation with 1,208 damaged pages kept answering /readyz with
200 while searches failed. Every server thread reads through a watched
register; a read that fails because the file is damaged or the disk cannot
be read (SQLite's CORRUPT, NOTADB, IOERR) is recorded in the operational
database, where readiness and the alert cycle of every process see it.
Nothing from a record is recorded: the generation, a count, times and
SQLite's own message.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging

from fallback.ops import Transaction, now
from sync import crypto
from sync.errors import NoSnapshot, SnapshotOutdated
from sync.store import SnapshotStore

log = logging.getLogger("sonae.mirror")

STATE_KEY = "snapshot.read_errors"
WINDOW = dt.timedelta(minutes=10)  # errors this recent keep the counters "not ready"
# SQLite's primary result codes for a file that is damaged or cannot be read.
DAMAGE_CODES = {10: "SQLITE_IOERR", 11: "SQLITE_CORRUPT", 26: "SQLITE_NOTADB"}


def is_damage(exc: BaseException) -> bool:
    return isinstance(exc, crypto.DatabaseError) and (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in DAMAGE_CODES


def record(conn, generation: int, exc: BaseException) -> None:
    """Count one failed read of `generation` (a run of errors more than
    WINDOW apart starts a new count). Never raises: the request that met
    the error answers with its own failure either way."""
    stamp = now().isoformat(timespec="milliseconds")
    try:
        with Transaction(conn, durable=False):
            held = recent(conn, generation, now())
            count, first_at = (held["count"], held["first_at"]) if held else (0, stamp)
            value = {"generation": generation, "count": count + 1, "first_at": first_at, "last_at": stamp, "error": str(exc)[:200]}
            conn.execute("INSERT OR REPLACE INTO monitor_state (key, value) VALUES (?, ?)", (STATE_KEY, json.dumps(value)))
    except Exception as failure:  # the database may be where the trouble is
        log.error("a read error of snapshot generation %d could not be recorded: %s", generation, failure)


def recent(conn, generation: int, at: dt.datetime) -> dict | None:
    """The read errors of `generation` within WINDOW before `at`, or None."""
    held = latest(conn, at)
    return held if held is not None and held["generation"] == generation else None


def latest(conn, at: dt.datetime) -> dict | None:
    """The read errors within WINDOW before `at`, of whichever generation
    had them (its number is "generation"), or None."""
    row = conn.execute("SELECT value FROM monitor_state WHERE key = ?", (STATE_KEY,)).fetchone()
    if row is None:
        return None
    held = json.loads(row[0])
    return held if at - dt.datetime.fromisoformat(held["last_at"]) <= WINDOW else None


class WatchedRegister:
    """A Register whose damaged reads are recorded before they are raised
    (every other attribute is the register's own)."""

    def __init__(self, register, on_damage):
        self._register = register
        self._on_damage = on_damage

    def __getattr__(self, name):
        try:
            value = getattr(self._register, name)  # `meta` is a property that reads
        except crypto.DatabaseError as exc:
            self._seen(exc)
            raise
        if not callable(value):
            return value

        @functools.wraps(value)
        def watched(*args, **kwargs):
            try:
                return value(*args, **kwargs)
            except crypto.DatabaseError as exc:
                self._seen(exc)
                raise

        return watched

    def _seen(self, exc: BaseException) -> None:
        if is_damage(exc):
            self._on_damage(self._register.generation, exc)


def unavailable_message(problem: Exception | None, store: SnapshotStore) -> str:
    """What a counter screen says when the snapshot cannot be used: why, and
    what to do. A damaged pointer names the generation a supervisor or IT
    would confirm (DECISIONS: an older generation may undo a support measure,
    so nobody falls back to it silently)."""
    if problem is None or isinstance(problem, NoSnapshot):
        return "住民記録の写しがまだ読み込まれていません。情報政策課に連絡してください。"
    pointer = store.pointer()
    if pointer.undecided and pointer.candidate is not None:
        return (
            "住民記録の写しのうち、どの世代を使うかを記録したファイル（CURRENT）が壊れています。"
            f"開ける最も新しい世代は世代{pointer.candidate}ですが、前に使っていた世代より古い場合、"
            "支援措置などの変更が取り消されているおそれがあるため、係長または情報政策課の確認なしには使いません。"
            f"情報政策課に連絡し、監視画面の「世代{pointer.candidate}で再開する」または "
            f"sonae snapshot rollback {pointer.candidate} で確認してもらってください。"
        )
    if isinstance(problem, SnapshotOutdated):
        return ("住民記録の写しは Sonae の更新前に作られた古い形式のため、更新後の Sonae では使えません（壊れてはいません）。"
                "情報政策課に連絡し、sonae sync full で写しを読み込み直してもらってください。")
    return "住民記録の写しを開けません（写しが壊れているか、読み出せません）。情報政策課に連絡してください。理由は監視画面に表示されています。"

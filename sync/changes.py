"""Change feed → the current generation, one page per transaction.

Each page of changes is checked whole before anything of it is written
(consecutive seq, valid envelope and record, a seal's resident present),
then applied in ONE SQLite transaction together with the meta update
(last_seq, as_of, counts, digests): a reader sees the page entirely or not
at all. A page that fails a check raises FeedBroken and leaves the
generation exactly as it was; the caller schedules a full export.

Applying is idempotent: an upsert whose version is not newer than the held
one is skipped (an export and the feed overlap at the export's last_seq), and
so is a delete of a key that is not held.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Iterator
from dataclasses import dataclass

from sync.contract import ContractError, parse_timestamp, validate_change
from sync.errors import FeedBroken, NoSnapshot
from sync.register import read_meta
from sync.schema import (
    COLUMNS,
    DIGEST_MODULUS,
    KEY_COLUMN,
    RECORD_TABLE,
    ROW_BUILDERS,
    SEARCH_TABLE,
    blank_individual_number,
    record_digest,
    record_text,
)
from sync.store import SnapshotStore, disk_full_reported


@dataclass(frozen=True)
class ChangesResult:
    generation: int
    from_seq: int
    last_seq: int
    applied: int
    skipped: int
    pages: int
    as_of: dt.datetime
    seconds: float


@dataclass
class _FeedState:
    """The generation's meta as the transaction in progress changes it."""

    last_seq: int
    as_of: dt.datetime
    counts: dict[str, int]
    digests: dict[str, int]

    @classmethod
    def read(cls, conn, generation: int) -> _FeedState:
        meta = read_meta(conn, generation)
        return cls(
            last_seq=meta.last_seq,
            as_of=meta.as_of,
            counts={"residents": meta.residents, "seals": meta.seals},
            digests={"residents": int(meta.residents_digest, 16), "seals": int(meta.seals_digest, 16)},
        )

    def write(self, conn) -> None:
        values = {
            "last_seq": self.last_seq,
            "as_of": self.as_of.isoformat(),
            "residents": self.counts["residents"],
            "seals": self.counts["seals"],
            "residents_digest": f"{self.digests['residents'] % DIGEST_MODULUS:064x}",
            "seals_digest": f"{self.digests['seals'] % DIGEST_MODULUS:064x}",
        }
        conn.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", values.items())


def apply_changes(upstream, store: SnapshotStore, *, batch: int = 10000, mirror_individual_number: bool = False) -> ChangesResult:
    """Apply the feed from the current generation's last_seq until caught up.
    Raises FeedBroken, UpstreamUnavailable, NoSnapshot, SyncBusy or
    SnapshotDiskFull; pages committed before the failure stay applied (each
    is complete and consistent)."""
    started = time.monotonic()
    with store.write_lock(), disk_full_reported(store.directory):
        generation = store.current()
        if generation is None:
            raise NoSnapshot("no snapshot to apply changes to; run `sonae sync full` first")
        conn = store.open_writable(generation)
        try:
            state = _FeedState.read(conn, generation)
            from_seq, applied, skipped, pages = state.last_seq, 0, 0, 0
            while True:
                page = upstream.changes(after=state.last_seq, limit=batch)
                changes, page_as_of = check_page(page, state.last_seq)
                if not changes:
                    if page_as_of > state.as_of:  # nothing changed upstream up to its as_of
                        with _transaction(conn):
                            state.as_of = page_as_of
                            state.write(conn)
                    break
                caught_up = changes[-1]["seq"] >= page["last_seq"]
                with _transaction(conn):
                    for change in changes:
                        if _apply(conn, change, state, mirror_individual_number):
                            applied += 1
                        else:
                            skipped += 1
                    state.last_seq = changes[-1]["seq"]
                    reached = page_as_of if caught_up else parse_timestamp(changes[-1]["at"], "change.at")
                    state.as_of = max(state.as_of, reached)
                    state.write(conn)
                pages += 1
                if caught_up:
                    break
        finally:
            conn.close()
    return ChangesResult(generation, from_seq, state.last_seq, applied, skipped, pages, state.as_of, time.monotonic() - started)


@contextlib.contextmanager
def _transaction(conn) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if conn.in_transaction:  # SQLite may already have rolled back (e.g. disk full)
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def check_page(page: dict, last_seq: int) -> tuple[list[dict], dt.datetime]:
    """Validate a whole page before any of it is applied; returns the
    changes and the page's as_of."""
    try:
        page_as_of = parse_timestamp(page["as_of"], "as_of")
    except ContractError as exc:
        raise FeedBroken(f"change feed page: {exc}") from None
    if page["last_seq"] < last_seq:
        raise FeedBroken(
            f"the upstream feed ends at seq {page['last_seq']:,}, before seq {last_seq:,} already applied: the feed was reset"
        )
    changes = page["changes"]
    expected = last_seq + 1
    for change in changes:
        try:
            validate_change(change)
        except ContractError as exc:
            raise FeedBroken(f"malformed change after seq {expected - 1:,}: {exc}") from None
        seq = change["seq"]
        if seq < expected:
            raise FeedBroken(f"seq {seq:,} repeated (expected {expected:,}): the feed cannot be trusted")
        if seq > expected:
            raise FeedBroken(f"gap in the change feed: expected seq {expected:,}, got {seq:,} ({seq - expected:,} missing)")
        expected += 1
    if changes and changes[-1]["seq"] > page["last_seq"]:
        raise FeedBroken(f"change seq {changes[-1]['seq']:,} is beyond the page's last_seq {page['last_seq']:,}")
    if not changes and page["last_seq"] > last_seq:
        raise FeedBroken(f"the feed reports last_seq {page['last_seq']:,} but returned no changes after {last_seq:,}")
    return changes, page_as_of


def _apply(conn, change: dict, state: _FeedState, mirror_individual_number: bool) -> bool:
    """Apply one change inside the page's transaction; False if skipped.
    An update rewrites only the search columns that changed, so SQLite
    touches only the indexes that hold them."""
    kind, key = change["kind"], change["key"]
    search, records, columns = SEARCH_TABLE[kind], RECORD_TABLE[kind], COLUMNS[kind]
    held = conn.execute(
        f"SELECT {', '.join('s.' + c for c in columns)}, r.record FROM {search} s JOIN {records} r ON r.id = s.id WHERE s.{KEY_COLUMN[kind]} = ?",
        (key,),
    ).fetchone()
    if change["op"] == "delete":
        if held is None:
            return False
        conn.execute(f"DELETE FROM {search} WHERE id = ?", (held[0],))
        conn.execute(f"DELETE FROM {records} WHERE id = ?", (held[0],))
        state.digests[kind] -= record_digest(held[-1].encode("utf-8"))
        state.counts[kind] -= 1
        return True
    record = dict(change["record"])
    if held is not None and held[columns.index("version")] >= record["version"]:
        return False
    if kind == "seals" and conn.execute("SELECT 1 FROM residents WHERE resident_code = ?", (record["resident_code"],)).fetchone() is None:
        raise FeedBroken(f"change {change['seq']:,}: seal {key} points at resident {record['resident_code']}, who is not in the register")
    if kind == "residents":
        blank_individual_number(record, mirror_individual_number)
    text = record_text(record)
    if held is None:
        row = ROW_BUILDERS[kind](None, record)
        row_id = conn.execute(f"INSERT INTO {search} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})", row).lastrowid
        conn.execute(f"INSERT INTO {records} (id, record) VALUES (?, ?)", (row_id, text))
        state.counts[kind] += 1
    else:
        row = ROW_BUILDERS[kind](held[0], record)
        changed = [(column, new) for column, old, new in zip(columns[1:], held[1:-1], row[1:]) if old != new]
        conn.execute(f"UPDATE {search} SET {', '.join(c + ' = ?' for c, _ in changed)} WHERE id = ?", (*(v for _, v in changed), held[0]))
        conn.execute(f"UPDATE {records} SET record = ? WHERE id = ?", (text, held[0]))
        state.digests[kind] -= record_digest(held[-1].encode("utf-8"))
    state.digests[kind] += record_digest(text.encode("utf-8"))
    return True

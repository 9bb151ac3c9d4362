"""Change feed → the current generation, one page per transaction.

Each page of changes is checked whole before anything of it is written
(consecutive seq, valid envelope and record, a seal's resident present),
then applied in ONE SQLite transaction together with the meta update
(last_seq, as_of, counts, digests): a reader sees the page entirely or not
at all. A page that fails a check raises FeedBroken and leaves the
generation exactly as it was; the caller schedules a full export.

While a page is written, the next one is fetched, verified, checked and
turned into rows on a thread of its own (_fetch_page): SQLite's share of a
page (B-tree work, page encryption and HMAC, the commit) runs without the
GIL, so on two cores the Python work of one page and the SQLite work of
the other overlap. A page fetched ahead is only ever applied after the page
before it committed; if that one fails, the page fetched ahead is dropped.

Applying is idempotent: an upsert whose version is not newer than the held
one is skipped (an export and the feed overlap at the export's last_seq), and
so is a delete of a key that is not held.

Pages arrive verified by the upstream client (signed, contract 2, echoing
the `after` asked for and the ward's code, not from the future); a page
older than the data already held is refused here (UpstreamUntrusted: the
contract counts it as no answer, nothing of it is applied).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from sync.contract import ContractError, RuleBroken, check_not_older, parse_timestamp, validate_change
from sync.errors import FeedBroken, NoSnapshot, UpstreamUntrusted
from sync.register import read_meta
from sync.schema import (
    COLUMNS,
    DIGEST_MODULUS,
    KEY_COLUMN,
    RECORD_TABLE,
    ROW_BUILDERS,
    SEARCH_TABLE,
    blank_individual_number,
    insert_sql,
    record_digest,
    record_text,
    summary_key,
    summary_text,
)
from sync.store import SnapshotStore, disk_full_reported

KEYS_PER_QUERY = 500  # keys bound in one `IN (...)` lookup, well under SQLite's variable limit
CHECKPOINT_CHANGES = 10_000  # during a catch-up, the WAL is copied into the database after about this many changes
WAL_SHARE_OF_DATABASE = 4  # ... or as soon as it outgrows a quarter of the database (a small register, large records)


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


def apply_changes(upstream, store: SnapshotStore, *, batch: int = 2500, mirror_individual_number: bool = False,
                  checkpoint_changes: int = CHECKPOINT_CHANGES, stop_if_asked: Callable[[], None] = lambda: None) -> ChangesResult:
    """Apply the feed from the current generation's last_seq until caught up,
    `batch` changes a page (one transaction each: pages of a few thousand
    keep a page's dirty pages inside the connection's cache and let the
    next page be fetched while one is written).
    Raises FeedBroken, UpstreamUnavailable (UpstreamUntrusted for a page
    that breaks a rule of the contract), NoSnapshot, SyncBusy or
    SnapshotDiskFull; pages committed before the failure stay applied (each
    is complete and consistent).
    `stop_if_asked`: called before each page; it raises to stop the run
    there (a stopping worker), with the pages before it applied."""
    started = time.monotonic()
    with store.write_lock(), disk_full_reported(store.directory):
        store.cleanup_incomplete()  # a killed load's .tmp would hold its disk space until the next full load
        generation = store.current()
        if generation is None:
            raise NoSnapshot("no snapshot to apply changes to; run `sonae sync full` first")
        conn = store.open_writable(generation)
        try:
            followed = follow_feed(conn, generation, upstream, batch=batch, mirror_individual_number=mirror_individual_number,
                                   checkpoint_changes=checkpoint_changes, stop_if_asked=stop_if_asked)
        finally:
            conn.close()
    return ChangesResult(generation, followed.from_seq, followed.state.last_seq, followed.applied, followed.skipped, followed.pages,
                         followed.state.as_of, time.monotonic() - started)


@dataclass(frozen=True)
class Followed:
    from_seq: int
    applied: int
    skipped: int
    pages: int
    state: _FeedState


def follow_feed(conn, generation: int, upstream, *, batch: int, mirror_individual_number: bool,
                checkpoint_changes: int = CHECKPOINT_CHANGES, stop_if_asked: Callable[[], None] = lambda: None) -> Followed:
    """Apply the feed to `generation` (open as `conn`, in WAL mode) from its
    last_seq until caught up, `batch` changes a page (one transaction each:
    pages of a few thousand keep a page's dirty pages inside the
    connection's cache and let the next page be fetched while one is
    written): the current generation's, or a new one's before it is
    promoted (sync.loader). Raises as apply_changes does."""
    state = _FeedState.read(conn, generation)
    from_seq, applied, skipped, pages = state.last_seq, 0, 0, 0
    database = Path(conn.execute("PRAGMA database_list").fetchone()[2])
    since_checkpoint = 0
    with ThreadPoolExecutor(1, thread_name_prefix="sonae-feed-fetch") as fetcher:
        ahead = fetcher.submit(_fetch_page, upstream, state.last_seq, batch, mirror_individual_number)
        # While the first page is fetched, copy what earlier runs left in
        # the WAL into the database. A run leaves its own pages there:
        # readers see them as soon as they are committed, and copying them
        # (≈0.6 s with its fsyncs for 10,000 changes at 1 M residents)
        # belongs to no page; SQLite does it without the GIL, beside the
        # fetch. PASSIVE: never waits for the counter's readers; what they
        # still use is copied next time.
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        while True:
            stop_if_asked()
            fetched = ahead.result()
            _check_not_older(fetched.as_of, state)
            changes = fetched.changes
            if not changes:
                if fetched.as_of > state.as_of:  # nothing changed upstream up to its as_of
                    with _transaction(conn):
                        state.as_of = fetched.as_of
                        state.write(conn)
                break
            caught_up = changes[-1]["seq"] >= fetched.last_seq
            if not caught_up:
                ahead = fetcher.submit(_fetch_page, upstream, changes[-1]["seq"], batch, mirror_individual_number)
            with _transaction(conn):
                page_applied, page_skipped = _apply_page(conn, fetched, state)
                applied += page_applied
                skipped += page_skipped
                state.last_seq = changes[-1]["seq"]
                reached = fetched.as_of if caught_up else parse_timestamp(changes[-1]["at"], "change.at")
                state.as_of = max(state.as_of, reached)
                state.write(conn)
            pages += 1
            since_checkpoint += len(changes)
            if caught_up:
                break
            rest_fits_one_page = fetched.last_seq - state.last_seq <= batch
            if (since_checkpoint >= checkpoint_changes and not rest_fits_one_page) or _wal_outgrows_database(database):
                # A catch-up: copy what the WAL holds back into the
                # database before going on, so it holds about
                # `checkpoint_changes` changes (and never much more than a
                # share of the database: on a small register a few pages of
                # large records are already that), not the whole backlog
                # (it grew to 3-4x the database and filled a freed disk
                # again). When one more page ends the run, its copy is left
                # to the next run, which makes it beside its first fetch:
                # the WAL then holds at most one page more than
                # `checkpoint_changes`. PASSIVE never waits for the
                # counter's readers; the WAL is rewound by the next page's
                # commit and cut back to journal_size_limit.
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                since_checkpoint = 0
    return Followed(from_seq, applied, skipped, pages, state)


def _wal_outgrows_database(database: Path) -> bool:
    """Whether the database's WAL is larger than 1/WAL_SHARE_OF_DATABASE of the database file."""
    wal = database.with_name(database.name + "-wal")
    return wal.stat().st_size * WAL_SHARE_OF_DATABASE > database.stat().st_size


def _check_not_older(page_as_of: dt.datetime, state: _FeedState) -> None:
    try:
        check_not_older(page_as_of, state.as_of, "the change-feed page")
    except RuleBroken as exc:
        raise UpstreamUntrusted(
            f"change-feed page after seq {state.last_seq:,}: refused by the contract's {exc}; counted as no answer, nothing of it applied"
        ) from None


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


@dataclass(frozen=True)
class _Row:
    """A record as stored: its search-table row (id first) and its JSON
    (and a resident's summary, when the page brings the record)."""

    row: tuple
    text: str
    summary: str | None = None


@dataclass(frozen=True)
class _Page:
    """A page of the feed, verified and checked, each upsert already turned
    into the row it would store (None for a delete)."""

    changes: list[dict]
    rows: list[_Row | None]
    as_of: dt.datetime
    last_seq: int  # the feed's, as the page reports it


def _fetch_page(upstream, after: int, limit: int, mirror_individual_number: bool) -> _Page:
    """Fetch and check the page after `after`, and build its rows: all
    that a page needs before the database (on the fetcher's thread)."""
    page = upstream.changes(after=after, limit=limit)
    changes, page_as_of = check_page(page, after)
    rows = []
    for change in changes:
        if change["op"] == "delete":
            rows.append(None)
            continue
        kind, record = change["kind"], dict(change["record"])
        if kind == "residents":
            blank_individual_number(record, mirror_individual_number)
        rows.append(_Row(ROW_BUILDERS[kind](None, record), record_text(record), summary_text(record) if kind == "residents" else None))
    return _Page(changes, rows, page_as_of, page["last_seq"])


def _apply_page(conn, page: _Page, state: _FeedState) -> tuple[int, int]:
    """Apply a checked page inside its transaction; returns (applied, skipped).

    The page is first played through in memory, change by change, against
    the records it touches (read in one indexed pass per kind, in key order),
    so a key changed several times in one page is written once, with its
    final state. The writes then go out per kind as a few executemany
    statements in id order, touching each table page once."""
    changes = page.changes
    touched: dict[str, set[str]] = {kind: set() for kind in SEARCH_TABLE}
    for change in changes:
        touched[change["kind"]].add(change["key"])
    held = {kind: _held_rows(conn, kind, keys) for kind, keys in touched.items()}
    final: dict[str, dict[str, _Row | None]] = {kind: {key: held[kind].get(key) for key in keys} for kind, keys in touched.items()}
    seal_residents = {c["record"]["resident_code"] for c in changes if c["kind"] == "seals" and c["op"] == "upsert"}
    residents_held = _existing_keys(conn, "residents", seal_residents - touched["residents"])
    version = {kind: COLUMNS[kind].index("version") for kind in SEARCH_TABLE}
    applied = skipped = 0
    for change, stored in zip(changes, page.rows, strict=True):
        kind, key = change["kind"], change["key"]
        current = final[kind][key]
        if change["op"] == "delete":
            if current is None:
                skipped += 1
                continue
            final[kind][key] = None
            applied += 1
            continue
        if current is not None and current.row[version[kind]] >= stored.row[version[kind]]:
            skipped += 1
            continue
        if kind == "seals":
            owner = change["record"]["resident_code"]
            known = final["residents"][owner] is not None if owner in final["residents"] else owner in residents_held
            if not known:
                raise FeedBroken(f"change {change['seq']:,}: seal {key} points at resident {owner}, who is not in the register")
        final[kind][key] = stored
        applied += 1
    for kind in SEARCH_TABLE:
        _write(conn, kind, held[kind], final[kind], state)
    return applied, skipped


def _in_chunks(keys: set[str]) -> Iterator[list[str]]:
    ordered = sorted(keys)
    for start in range(0, len(ordered), KEYS_PER_QUERY):
        yield ordered[start : start + KEYS_PER_QUERY]


def _held_rows(conn, kind: str, keys: set[str]) -> dict[str, _Row]:
    """The stored rows of `keys` (absent keys are left out)."""
    search, columns = SEARCH_TABLE[kind], COLUMNS[kind]
    key_at = columns.index(KEY_COLUMN[kind])
    held = {}
    for chunk in _in_chunks(keys):
        for *row, text in conn.execute(
            f"SELECT {', '.join('s.' + c for c in columns)}, r.record FROM {search} s JOIN {RECORD_TABLE[kind]} r ON r.id = s.id "
            f"WHERE s.{KEY_COLUMN[kind]} IN ({', '.join('?' * len(chunk))})",
            chunk,
        ):
            held[row[key_at]] = _Row(tuple(row), text)
    return held


def _existing_keys(conn, kind: str, keys: set[str]) -> set[str]:
    found = set()
    for chunk in _in_chunks(keys):
        sql = f"SELECT {KEY_COLUMN[kind]} FROM {SEARCH_TABLE[kind]} WHERE {KEY_COLUMN[kind]} IN ({', '.join('?' * len(chunk))})"
        found.update(key for (key,) in conn.execute(sql, chunk))
    return found


def _write(conn, kind: str, held: dict[str, _Row], final: dict[str, _Row | None], state: _FeedState) -> None:
    """Write the difference between the held and the final rows of one kind
    and move the count and digest with it. An update rewrites only the
    search columns that changed, so SQLite touches only the indexes that
    hold them; updates are grouped by the set of columns they change."""
    search, records, columns = SEARCH_TABLE[kind], RECORD_TABLE[kind], COLUMNS[kind]
    deletes: list[tuple[int]] = []
    inserts: list[_Row] = []
    updates: dict[tuple[int, ...], list[tuple]] = {}  # by the positions of the columns they change
    texts: list[tuple[str, int]] = []
    summaries_gone: list[tuple] = []  # residents: summary keys to delete
    summaries: list[tuple] = []  # residents: summary rows to write
    for key in sorted(final):  # new rows get their ids in key order
        before, after = held.get(key), final[key]
        if after is before:
            continue  # every change of this key was skipped, or it came and went within the page
        if before is not None:
            state.digests[kind] -= record_digest(before.text.encode("utf-8"))
        if after is None:
            deletes.append((before.row[0],))
            state.counts[kind] -= 1
            if kind == "residents":
                summaries_gone.append(summary_key(before.row))
            continue
        state.digests[kind] += record_digest(after.text.encode("utf-8"))
        if before is None:
            inserts.append(after)
            state.counts[kind] += 1
            continue
        row_id = before.row[0]
        if kind == "residents":
            old_key, new_key = summary_key(before.row), summary_key((row_id, *after.row[1:]))
            if old_key != new_key:
                summaries_gone.append(old_key)
            summaries.append((*new_key, after.summary))
        changed = tuple(i for i in range(1, len(columns)) if before.row[i] != after.row[i])
        if changed:  # a key deleted and upserted again within the page may come back with the same search columns
            updates.setdefault(changed, []).append((*(after.row[i] for i in changed), row_id))
        texts.append((after.text, row_id))
    if deletes:
        deletes.sort()
        conn.executemany(f"DELETE FROM {search} WHERE id = ?", deletes)
        conn.executemany(f"DELETE FROM {records} WHERE id = ?", deletes)
    for changed, rows in updates.items():
        rows.sort(key=lambda values: values[-1])
        conn.executemany(f"UPDATE {search} SET {', '.join(columns[i] + ' = ?' for i in changed)} WHERE id = ?", rows)
    if texts:
        texts.sort(key=lambda values: values[1])
        conn.executemany(f"UPDATE {records} SET record = ? WHERE id = ?", texts)
    if inserts:
        # Ids as SQLite would choose them (max + 1): the transaction holds
        # the write lock, so nobody else can take them meanwhile.
        next_id = conn.execute(f"SELECT coalesce(max(id), 0) + 1 FROM {search}").fetchone()[0]
        numbered = list(enumerate(inserts, start=next_id))
        conn.executemany(insert_sql(kind), [(row_id, *row.row[1:]) for row_id, row in numbered])
        conn.executemany(f"INSERT INTO {records} (id, record) VALUES (?, ?)", [(row_id, row.text) for row_id, row in numbered])
        if kind == "residents":
            summaries += [(*summary_key((row_id, *row.row[1:])), row.summary) for row_id, row in numbered]
    if summaries_gone:
        conn.executemany("DELETE FROM resident_summaries WHERE kana_key = ? AND birth_date = ? AND id = ?", sorted(summaries_gone))
    if summaries:
        conn.executemany("INSERT OR REPLACE INTO resident_summaries (kana_key, birth_date, id, summary) VALUES (?, ?, ?, ?)",
                         sorted(summaries))

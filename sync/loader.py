"""Full export → new snapshot generation, or a refusal that changes nothing.

The order of work, cheapest refusal first:

1. manifest: signature, contract shape, not dated more than five minutes
   ahead of this appliance's clock (ExportInvalid);
2. gates decided by the manifest alone: the contract version (a version 1
   export only from a dropped directory, with --allow-contract-1), the
   order of exports against the one the current generation was built from
   (replay: a lower export_seq or an earlier as_of, with
   --allow-older-export; the same export_seq under another export_id is
   never loaded), municipality, record-count drop (GateRefused, overridable);
3. stream every file into `gen-N.tmp/register.db`: SHA-256 and byte count of
   the compressed bytes as they arrive, gunzip, contract validation of every
   record, batched inserts; at the end of each file its bytes, SHA-256,
   gzip end and record count must match the manifest (ExportInvalid).
   The work stays linear in what arrives, whatever arrives: zlib is fed
   small slices (its unconsumed input is copied at every output step), no
   line may grow beyond what one record may take, and a file may not
   decompress to more than its manifest's record count allows — so a small
   hostile file is refused after a bounded amount of work, not after
   inflating a gigabyte into one line;
4. unique indexes (duplicate keys → ExportInvalid), the residents' summaries
   in kana order, search indexes, ANALYZE;
5. upstream data anomalies (sync.anomalies) from the facts the parsing
   kept in the scratch database: reported, and kept in the generation for
   the counter; a duplicate 宛名番号 gates (GateRefused, overridable); then
   the gate on seals whose resident is not in the export (GateRefused);
6. install (fsync, rename) and promote (replace CURRENT), then prune.

The pipeline of step 3: this thread reads, hashes and gunzips a file and
cuts it into blocks of whole lines; the blocks are parsed and validated
(sync.parsing) in worker processes (for a large export; in this process for
a small one); a BlockInserter thread inserts the parsed blocks in file
order — the search rows from the workers, the records as lines of the block
this process kept (only lines Sonae rewrote come back from a worker). Memory
does not grow with the register: a file is held a few blocks at a time, and
duplicates are found by the unique index, not a Python set. The tmp
database is written with journal and fsync off — if the process dies, the
whole tmp directory is discarded — and made durable with one fsync before
it is renamed into place.

The summaries (see sync.schema) must be stored in kana order, but arrive in
file order, and sorting a million of them in memory would double the load's
memory. Each parsing task sorts its block's summaries; the inserter writes
them, run after run, into a scratch database beside the new one (encrypted
with the same key: it holds names); a k-way merge of the runs, one row per
run in memory, then appends them to `resident_summaries` in key order, and
the scratch database is deleted.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import gc
import hashlib
import heapq
import itertools
import os
import queue
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from sync import crypto
from sync.anomalies import (
    FACT_INSERTS,
    FACT_TABLES,
    FINDING_INSERT,
    OVERRIDE_DUPLICATE_ATENA,
    AnomalyReport,
    check_duplicate_atena,
    find_anomalies,
)
from sync.changes import follow_feed
from sync.contract import (
    CONTRACT_VERSION,
    KEY_FIELD,
    ContractError,
    check_not_ahead,
    parse_timestamp,
    verify_manifest,
)
from sync.errors import ExportInvalid, FeedBroken, GateRefused, StoreDamaged, UpstreamUnavailable
from sync.parsing import MAX_RECORD_BYTES, ParsingProcesses, PendingBlock, parse_block
from sync.register import SnapshotMeta, connect_any_layout, connect_snapshot, read_meta
from sync.schema import (
    DIGEST_MODULUS,
    SCHEMA_VERSION,
    SEARCH_INDEXES,
    SEARCH_TABLE,
    TABLES,
    UNIQUE_INDEXES,
    insert_record_sql,
    insert_sql,
)
from sync.store import SnapshotStore, disk_full_reported
from sync.upstream import DirectoryUpstream, system_clock

OVERRIDE_DROP = "allow-drop"
OVERRIDE_UNKNOWN_SEAL_RESIDENTS = "allow-unknown-seal-residents"
OVERRIDE_MUNICIPALITY = "allow-municipality-mismatch"
OVERRIDE_CONTRACT_1 = "allow-contract-1"
OVERRIDE_OLDER_EXPORT = "allow-older-export"
OVERRIDES = frozenset({OVERRIDE_DROP, OVERRIDE_UNKNOWN_SEAL_RESIDENTS, OVERRIDE_MUNICIPALITY, OVERRIDE_CONTRACT_1, OVERRIDE_OLDER_EXPORT,
                       OVERRIDE_DUPLICATE_ATENA})

BLOCK_BYTES = 2 << 20  # lines parsed and inserted together (~2,000 residents, ~600 seals)
PARALLEL_MIN_BYTES = 16 << 20  # below this, parsing in this process is quicker than starting workers
MAX_WORKERS = 4
DECOMPRESS_LIMIT = 1 << 20  # output per step, so a hostile file cannot inflate in one go
INPUT_SLICE = 64 << 10  # compressed bytes given to zlib at a time: the unconsumed rest is copied at every output step
BUILD_CACHE_KIB = 16384
INDEX_BUILD_CACHE_KIB = 2048
SCRATCH_NAME = "summaries-scratch.db"  # beside register.db in the generation being built


class Phases(dict):
    """Wall seconds per step of a load, in order: what its time went to."""

    @contextlib.contextmanager
    def timed(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self[name] = round(self.get(name, 0.0) + time.monotonic() - started, 2)


@dataclass(frozen=True)
class BuildFigures:
    residents: int
    seals: int
    bytes: int
    residents_digest: str
    seals_digest: str


@dataclass(frozen=True)
class LoadResult:
    generation: int
    previous_generation: int | None
    export_id: str
    export_seq: int | None  # None for a contract 1 export
    as_of: dt.datetime  # of the promoted generation's data: the export's, or where the catch-up on the feed brought it
    last_seq: int  # likewise
    export_last_seq: int  # the export's own; below last_seq when the load caught up on the feed
    residents: int  # in the promoted generation
    seals: int
    bytes: int
    seconds: float
    source: str
    overridden: tuple[str, ...]  # refusals waived by an override flag, with their figures
    pruned: tuple[int, ...]
    anomalies: AnomalyReport  # upstream data anomalies found in the export (sync.anomalies)
    phases: Phases


def load_full(
    upstream,
    store: SnapshotStore,
    *,
    public_key: Ed25519PublicKey,
    municipality_code: str,
    max_drop_ratio: float = 0.05,
    keep: int = 7,
    mirror_individual_number: bool = False,
    overrides: Iterable[str] = frozenset(),
    workers: int | None = None,
    clock: Callable[[], dt.datetime] = system_clock,
    feed=None,
    feed_batch: int = 10000,
    committing: Callable[[], None] = lambda: None,
    stop_if_asked: Callable[[], None] = lambda: None,
) -> LoadResult:
    """Load the upstream's latest full export as a new current generation.
    Raises ExportInvalid, GateRefused, UpstreamUnavailable, SnapshotDiskFull
    or SyncBusy; in every such case the current generation is unchanged.
    `clock`: this appliance's time, which no as_of may be ahead of.
    `feed`: where the change feed that catches the new generation up is
    read (default: `upstream`), `feed_batch` changes a page.
    `committing`: called once the new generation is built, checked and
    caught up, before it is installed and promoted — from then on the load
    runs to its end (the command line holds a stop signal back until it
    has, rather than report a load that happened as one that did not).
    `stop_if_asked`: called between the steps before that (each block of
    an export file, each index, each page of the catch-up); it raises to
    stop the load there (a stopping worker), which then unwinds as after an
    error."""
    overrides = frozenset(overrides)
    unknown = overrides - OVERRIDES
    if unknown:
        raise ValueError(f"unknown override(s) {sorted(unknown)}; known: {sorted(OVERRIDES)}")
    started = time.monotonic()
    phases = Phases()
    with store.write_lock():
        store.cleanup_incomplete()
        manifest = upstream.manifest()
        try:
            verify_manifest(manifest, public_key)
        except ContractError as exc:
            raise ExportInvalid(f"manifest: {exc}") from None
        as_of = parse_timestamp(manifest["as_of"], "manifest.as_of")
        try:
            check_not_ahead(as_of, clock(), "the export")
        except ContractError as exc:
            raise ExportInvalid(f"manifest: {exc}", "if this appliance's clock is behind, correct it and rerun; otherwise ask the upstream vendor") from None
        overridden: list[str] = []
        _gate(check_contract_version(manifest, upstream), OVERRIDE_CONTRACT_1, overrides, overridden)
        held = HeldGeneration.read(store)
        _gate(check_order(manifest, held), OVERRIDE_OLDER_EXPORT, overrides, overridden)
        _gate(check_municipality(manifest, municipality_code), OVERRIDE_MUNICIPALITY, overrides, overridden)
        previous = store.current_if_readable()
        _gate(check_count_drop(manifest, held, max_drop_ratio), OVERRIDE_DROP, overrides, overridden)
        with store.new_generation() as (number, db_path), disk_full_reported(store.directory):
            conn = connect_snapshot(db_path, store.key, check_same_thread=False)  # BlockInserter writes from its thread
            scratch_path = db_path.with_name(SCRATCH_NAME)
            # SQLCipher's default settings: sync.anomalies ATTACHes it, and an attached file opens only with those.
            scratch = crypto.connect(scratch_path, store.key, check_same_thread=False)
            try:
                prepare_bulk_build(conn)
                prepare_bulk_build(scratch)
                figures = build_register(conn, upstream, manifest, mirror_individual_number=mirror_individual_number, workers=workers,
                                         scratch=scratch, phases=phases, stop_if_asked=stop_if_asked)
                stop_if_asked()
                with phases.timed("anomalies and gates"):
                    anomalies = report_anomalies(conn, scratch_path, store.key, overrides, overridden)
                    scratch.close()
                    scratch_path.unlink()
                    _gate(check_seal_residents(conn), OVERRIDE_UNKNOWN_SEAL_RESIDENTS, overrides, overridden)
                write_meta(conn, manifest, figures, source=upstream.describe(), mirror_individual_number=mirror_individual_number)
                conn.commit()
                conn.execute("PRAGMA journal_mode = WAL")  # readers and the change feed from now on
                with phases.timed("catch-up on the change feed"):
                    caught_up = catch_up(conn, number, feed or upstream, held, batch=feed_batch, mirror_individual_number=mirror_individual_number,
                                         stop_if_asked=stop_if_asked)
                _gate(caught_up, OVERRIDE_OLDER_EXPORT, overrides, overridden)
                promoted = read_meta(conn, number)
            finally:
                scratch.close()
                conn.close()
            committing()
            with phases.timed("install (fsync)"):
                store.install(number)
        store.promote_snapshot(number)
        pruned = store.prune(keep)
    return LoadResult(
        generation=number,
        previous_generation=previous,
        export_id=manifest["export_id"],
        export_seq=manifest.get("export_seq"),
        as_of=promoted.as_of,
        last_seq=promoted.last_seq,
        export_last_seq=manifest["last_seq"],
        residents=promoted.residents,
        seals=promoted.seals,
        bytes=figures.bytes,
        seconds=time.monotonic() - started,
        source=upstream.describe(),
        overridden=tuple(overridden),
        pruned=tuple(pruned),
        anomalies=anomalies,
        phases=phases,
    )


# --- gates ---------------------------------------------------------------


def _gate(refusal: GateRefused | None, override: str, overrides: frozenset[str], overridden: list[str]) -> None:
    if refusal is None:
        return
    if override not in overrides:
        raise refusal
    overridden.append(f"{refusal.gate}: {refusal.figures}")


@dataclass(frozen=True)
class HeldGeneration:
    """The current generation's meta, which the gates compare an export
    with: None before the first load; `problem` when it cannot be read
    (damaged file or pointer, another key, an older layout) — then it
    cannot vouch for anything, and loading takes the operator's overrides."""

    meta: SnapshotMeta | None
    problem: str | None = None

    @classmethod
    def read(cls, store: SnapshotStore) -> HeldGeneration:
        try:
            current = store.current()
            if current is None:
                return cls(None)
            conn = connect_any_layout(store.path_of(current), store.key)  # an older layout's meta still counts
            try:
                return cls(read_meta(conn, current))
            finally:
                conn.close()
        except (StoreDamaged, crypto.DatabaseError, crypto.WrongKeyError, KeyError) as exc:
            return cls(None, str(exc))

    def unreadable(self, gate: str, compared: str, override: str) -> GateRefused | None:
        if self.problem is None:
            return None
        return GateRefused(gate, f"the current generation cannot be read to compare {compared} ({self.problem})", f"--{override}")


def check_contract_version(manifest: dict, upstream) -> GateRefused | None:
    """A contract 1 export has no export_seq (the replay rule cannot protect
    it) and comes with an unsigned feed: it is read only from a dropped
    directory, and only when the operator says so."""
    if manifest["contract"] == CONTRACT_VERSION:
        return None
    if not isinstance(upstream, DirectoryUpstream):
        raise ExportInvalid(
            f"manifest: contract version rule: the upstream serves a contract {manifest['contract']} export and this appliance loads "
            f"contract {CONTRACT_VERSION} from the upstream; a version 1 export is accepted only dropped into a directory, with "
            "`sonae sync full --from DIR --allow-contract-1`"
        )
    return GateRefused(
        "contract version",
        f"the export is contract {manifest['contract']}: it has no export_seq, so the replay rule cannot protect it, and its change feed is unsigned",
        f"--{OVERRIDE_CONTRACT_1}",
    )


def check_order(manifest: dict, held: HeldGeneration) -> GateRefused | None:
    """The order rule against the export the current generation was built
    from: the same export_seq under another export_id is never loaded; a
    lower export_seq, or an as_of before the held export's, is a replay."""
    unreadable = held.unreadable("replay", "the order of exports", OVERRIDE_OLDER_EXPORT)
    if unreadable or held.meta is None:
        return unreadable
    meta, seq = held.meta, manifest.get("export_seq")
    replayed = []
    if seq is not None and meta.export_seq is not None:
        if seq == meta.export_seq and manifest["export_id"] != meta.export_id:
            raise ExportInvalid(
                f"manifest: order rule: export_seq {seq:,} is the one this appliance holds, but under export_id "
                f"{manifest['export_id']!r} instead of {meta.export_id!r} — two different exports cannot share a sequence number"
            )
        if seq < meta.export_seq:
            replayed.append(f"export_seq {seq:,} is lower than the {meta.export_seq:,} this appliance holds (export {meta.export_id})")
    as_of = dt.datetime.fromisoformat(manifest["as_of"])
    if as_of < meta.export_as_of:
        replayed.append(f"its as_of {manifest['as_of']} is earlier than the held export's {meta.export_as_of.isoformat()}")
    if not replayed:
        return None
    return GateRefused(
        "replay",
        f"{'; '.join(replayed)}: an older export would undo every change since, a support measure (支援措置) among them",
        f"--{OVERRIDE_OLDER_EXPORT}",
    )


def catch_up(conn, generation: int, feed, held: HeldGeneration, *, batch: int, mirror_individual_number: bool,
             stop_if_asked: Callable[[], None] = lambda: None) -> GateRefused | None:
    """A new generation is never promoted with data older than the serving
    one's: an export behind what the change feed already brought (the same
    export reloaded, or the feed ahead of the newest export) follows the
    feed from its last_seq first. Refused (replay) when the feed cannot
    bring it level; the serving generation keeps serving."""
    if held.meta is None:
        return None
    new = read_meta(conn, generation)
    if new.as_of >= held.meta.as_of and new.last_seq >= held.meta.last_seq:
        return None
    try:
        new = follow_feed(conn, generation, feed, batch=batch, mirror_individual_number=mirror_individual_number,
                          stop_if_asked=stop_if_asked).state
    except (UpstreamUnavailable, FeedBroken) as exc:
        problem = f"the change feed could not catch it up ({exc})"
    else:
        if new.as_of >= held.meta.as_of and new.last_seq >= held.meta.last_seq:
            return None
        problem = f"the change feed brought it only to seq {new.last_seq:,}, as of {new.as_of.isoformat()}"
    return GateRefused(
        "replay",
        f"its data as of {new.as_of.isoformat()} (seq {new.last_seq:,}) is behind generation {held.meta.generation}, which serves data "
        f"as of {held.meta.as_of.isoformat()} (seq {held.meta.last_seq:,}), and {problem}; generation {held.meta.generation} keeps serving",
        f"--{OVERRIDE_OLDER_EXPORT}",
    )


def check_municipality(manifest: dict, municipality_code: str) -> GateRefused | None:
    code = (manifest.get("municipality") or {}).get("code")
    if code == municipality_code:
        return None
    return GateRefused(
        "municipality",
        f"the export is for municipality {code!r}, this appliance serves {municipality_code!r}",
        f"--{OVERRIDE_MUNICIPALITY}",
    )


def check_count_drop(manifest: dict, held: HeldGeneration, max_drop_ratio: float) -> GateRefused | None:
    unreadable = held.unreadable("record count", "record counts", OVERRIDE_DROP)
    if unreadable or held.meta is None:
        return unreadable
    current = {"residents": held.meta.residents, "seals": held.meta.seals}
    drops = []
    for entry in manifest["files"]:
        kind, new = entry["kind"], entry["records"]
        old = current.get(kind, 0)
        if old and new < old * (1 - max_drop_ratio):
            drops.append(f"{kind} {new:,} vs {old:,} ({(new - old) / old:+.1%})")
    if not drops:
        return None
    return GateRefused(
        "record count",
        f"{'; '.join(drops)} exceeds the {max_drop_ratio:.0%} limit of sync.max_drop_ratio",
        f"--{OVERRIDE_DROP}",
    )


def report_anomalies(conn, scratch_path, key: bytes, overrides: frozenset[str], overridden: list[str]) -> AnomalyReport:
    """The export's data anomalies (sync.anomalies), kept in the new
    generation; a duplicate 宛名番号 refuses the load unless overridden."""
    report = find_anomalies(conn, scratch_path, key)
    _gate(check_duplicate_atena(report), OVERRIDE_DUPLICATE_ATENA, overrides, overridden)
    return report


def check_seal_residents(conn) -> GateRefused | None:
    orphan_sql = "FROM seals s WHERE NOT EXISTS (SELECT 1 FROM residents r WHERE r.resident_code = s.resident_code)"
    count = conn.execute(f"SELECT count(*) {orphan_sql}").fetchone()[0]
    if not count:
        return None
    examples = ", ".join(f"{seal} → {resident}" for seal, resident in conn.execute(f"SELECT s.seal_number, s.resident_code {orphan_sql} LIMIT 3"))
    return GateRefused(
        "seal residents",
        f"{count:,} seal(s) point at residents not in the export (e.g. {examples})",
        f"--{OVERRIDE_UNKNOWN_SEAL_RESIDENTS}",
    )


# --- building ------------------------------------------------------------


def prepare_bulk_build(conn) -> None:
    """Settings for writing a generation nobody reads yet."""
    conn.execute("PRAGMA journal_mode = OFF")  # a failed build is discarded whole
    conn.execute("PRAGMA synchronous = OFF")  # one fsync before install instead
    conn.execute(f"PRAGMA cache_size = -{BUILD_CACHE_KIB}")  # appends and sorts need little cache; memory stays flat
    # Sort runs of the index builds stay in memory: temporary files are not
    # covered by the database key and would hold names in plain text.
    conn.execute("PRAGMA temp_store = MEMORY")


def build_register(conn, upstream, manifest: dict, *, mirror_individual_number: bool, scratch, workers: int | None = None,
                   phases: Phases | None = None, stop_if_asked: Callable[[], None] = lambda: None) -> BuildFigures:
    """Create the schema in `conn` and fill it from the export's files,
    checking each against the manifest. Works on any SQLite connection
    opened with check_same_thread=False (rows are inserted from a thread of
    their own); the benchmark uses it to measure the cost of encryption.
    `scratch`: a connection like `conn` to an empty database the caller
    deletes afterwards, where the summaries are sorted.
    `workers`: parsing processes (None: decided by the export's size).
    `phases`: where each step's time is added up.
    `stop_if_asked`: as load_full's."""
    phases = Phases() if phases is None else phases
    conn.executescript(TABLES)
    scratch.execute(SUMMARY_RUNS)
    scratch.executescript(FACT_TABLES)
    runs: list[tuple[int, int]] = []
    loaded: dict[str, tuple[int, str]] = {}
    total_bytes = 0
    files = {entry["kind"]: entry for entry in manifest["files"]}
    with parsing_for(manifest, workers) as parsing:
        for kind in ("residents", "seals"):  # residents first: the seal gate looks them up
            entry = files[kind]
            chunks = upstream.iter_file(manifest["export_id"], entry["name"])
            with phases.timed(f"{kind}: download, parse, insert"):
                loaded[kind] = _load_file(conn, scratch, runs, chunks, entry, manifest["contract"], mirror_individual_number, parsing,
                                          stop_if_asked)
            total_bytes += entry["bytes"]
    conn.commit()
    release_memory(conn, scratch)
    stop_if_asked()
    with phases.timed("unique indexes"):
        for kind, statement in UNIQUE_INDEXES.items():
            try:
                conn.execute(statement)
            except conn.IntegrityError:  # the connection's own driver (sqlcipher3 or sqlite3)
                raise ExportInvalid(_duplicates_message(conn, kind, files[kind]["name"])) from None
    scratch.commit()
    stop_if_asked()
    with phases.timed("summaries in kana order"):
        merge_summary_runs(conn, scratch, runs, stop_if_asked)
    release_memory(conn, scratch)
    with phases.timed("search indexes"):
        # Building an index reads the table in order and appends to the new
        # B-tree: a small cache does, and leaves the memory to the sort.
        conn.execute(f"PRAGMA cache_size = -{INDEX_BUILD_CACHE_KIB}")
        for statement in SEARCH_INDEXES:
            stop_if_asked()
            conn.execute(statement)
            # The sort's keys are freed once its index is written, but glibc
            # keeps the pages: handed back, the next sort, the anomaly checks
            # and the catch-up start from the floor again, not above it.
            release_memory(conn)
        conn.execute(f"PRAGMA cache_size = -{BUILD_CACHE_KIB}")
        # Statistics for the planner, from a sample; only the search tables: the
        # record tables are read by id alone, and counting them would scan
        # every record again.
        conn.execute("PRAGMA analysis_limit = 1000")
        conn.execute("ANALYZE residents")
        conn.execute("ANALYZE seals")
        conn.commit()
    return BuildFigures(
        residents=loaded["residents"][0],
        seals=loaded["seals"][0],
        bytes=total_bytes,
        residents_digest=loaded["residents"][1],
        seals_digest=loaded["seals"][1],
    )


def release_memory(*connections) -> None:
    """Hand back to the OS what the steps before left allocated, before an
    index build: SQLite sorts an index's keys in memory (temporary files
    would hold names in plain text), about 90 bytes a resident for the
    largest, so what this process already holds adds straight to the peak.
    The connections' page caches are emptied and glibc returns its free
    heap (malloc_trim)."""
    for connection in connections:
        connection.execute("PRAGMA shrink_memory")
    gc.collect()
    ctypes.CDLL(None).malloc_trim(0)


SUMMARY_SLICE = 8192  # ≈ 4 MB of summaries
SUMMARY_RUNS = "CREATE TABLE summary_runs (kana_key TEXT NOT NULL, birth_date TEXT NOT NULL, id INTEGER NOT NULL, summary TEXT NOT NULL)"


def merge_summary_runs(conn, scratch, runs: list[tuple[int, int]], stop_if_asked: Callable[[], None]) -> None:
    """Append every summary to resident_summaries in key order: a k-way merge
    of the sorted runs (rowid ranges of scratch's summary_runs), so memory
    holds one row per run and every insert lands at the end of the B-tree.
    In slices of SUMMARY_SLICE rows, each a point where the load may stop
    (a minute at 4M residents)."""
    cursors = [scratch.execute("SELECT kana_key, birth_date, id, summary FROM summary_runs WHERE rowid >= ? AND rowid < ?", run) for run in runs]
    merged = heapq.merge(*cursors)
    while rows := list(itertools.islice(merged, SUMMARY_SLICE)):
        stop_if_asked()
        conn.executemany("INSERT INTO resident_summaries (kana_key, birth_date, id, summary) VALUES (?, ?, ?, ?)", rows)


def _load_file(conn, scratch, runs: list[tuple[int, int]], chunks: Iterable[bytes], entry: dict, contract: int,
               mirror_individual_number: bool, parsing: Parsing, stop_if_asked: Callable[[], None]) -> tuple[int, str]:
    """Insert one file's records (and add its summary runs to `runs`);
    returns (records, digest). This thread reads and cuts the file into
    blocks, `parsing` parses them (in worker processes for a large export)
    and a BlockInserter inserts them in order."""
    name, kind = entry["name"], entry["kind"]
    export_file = ExportFile(chunks, entry)
    inserter = BlockInserter(conn, kind, parsing.blocks_ahead, scratch, runs, abandon_parsing=parsing.processes.kill)
    try:
        with inserter:
            for first_line, block in export_file.blocks():
                stop_if_asked()
                parsed = parsing.processes.submit(kind, name, first_line, block, mirror_individual_number, contract)
                inserter.put(parsed, first_line, block)
    except ExportInvalid as exc:
        if exc is not inserter.error:
            raise  # the file itself differs from the manifest
        # A bad record, unless the file itself is damaged: that is the cause to report.
        raise ExportInvalid(export_file.damage() or exc.reason) from None
    if inserter.count != entry["records"]:
        raise ExportInvalid(f"{name}: {inserter.count:,} records, the manifest says {entry['records']:,}")
    return inserter.count, f"{inserter.digest % DIGEST_MODULUS:064x}"


class BlockInserter:
    """Inserts parsed blocks, in file order, on a thread of its own: SQLite's
    share of a load (B-tree inserts, page encryption — run without the GIL)
    then overlaps with reading and decompressing the next blocks. The queue
    of blocks waiting is bounded (memory); the first error stops the load.
    A block's sorted summaries go to `scratch` as one run."""

    def __init__(self, conn, kind: str, blocks_ahead: int, scratch, runs: list[tuple[int, int]], *,
                 abandon_parsing: Callable[[], None]):
        self._conn = conn
        self._abandon_parsing = abandon_parsing
        self._scratch = scratch
        self._runs = runs
        self._statements = (insert_sql(kind), insert_record_sql(kind), FACT_INSERTS[kind])
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, blocks_ahead))
        self.error: BaseException | None = None  # the first failure; stops the load
        self._thread = threading.Thread(target=self._run, name="sonae-load-inserter", daemon=True)
        self.count = self.digest = 0

    def __enter__(self) -> BlockInserter:
        self._thread.start()
        return self

    def put(self, parsed: PendingBlock | Future, first_line: int, block: bytes) -> None:
        if self.error is not None:
            raise self.error
        self._queue.put((parsed, first_line, block))

    def _run(self) -> None:
        insert_row, insert_record, insert_fact = self._statements
        while (item := self._queue.get()) is not None:
            future, first_line, block = item
            if self.error is not None:
                # After an error, only drain: a parsing process waits for its
                # result to be read before it takes its next block, and `put` must not block.
                with contextlib.suppress(Exception):
                    future.result()
                continue
            try:
                parsed = future.result()
                self._conn.executemany(insert_row, parsed.rows)
                lines = block.split(b"\n")
                self._conn.executemany(
                    insert_record, [(row[0], parsed.rewritten.get(row[0]) or lines[row[0] - first_line]) for row in parsed.rows]
                )
                if parsed.summaries:
                    # Rowids follow on from the previous run: the table only grows.
                    first = self._runs[-1][1] if self._runs else 1
                    self._scratch.executemany("INSERT INTO summary_runs (kana_key, birth_date, id, summary) VALUES (?, ?, ?, ?)", parsed.summaries)
                    self._runs.append((first, first + len(parsed.summaries)))
                self._scratch.executemany(insert_fact, parsed.facts)
                self._scratch.executemany(FINDING_INSERT, parsed.findings)
                self.count += len(parsed.rows)
                self.digest += parsed.digest
            except BaseException as exc:
                self.error = exc

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._abandon_parsing()  # a result it may wait for ends at once
        # Wait for the thread to end even through a stop signal (SIGTERM,
        # Ctrl-C): the caller closes the connection it writes through next,
        # and SQLite crashes the process when a connection is closed under
        # a running statement. The parsing is abandoned, so the wait is short.
        interrupted: KeyboardInterrupt | None = None
        ended = False
        while self._thread.is_alive():
            try:
                if not ended:
                    self._queue.put(None)
                    ended = True
                self._thread.join()
            except KeyboardInterrupt as stop:
                interrupted = stop
                self._abandon_parsing()
        if interrupted is not None:
            raise interrupted
        if exc_type is None and self.error is not None:
            raise self.error


class InlineParsing:
    """Parses each block when it is submitted, in this process: for small
    exports, where starting worker processes would cost more than the
    parsing."""

    def submit(self, *task) -> Future:
        future: Future = Future()
        try:
            future.set_result(parse_block(*task))
        except Exception as exc:
            future.set_exception(exc)
        return future

    def kill(self) -> None:
        pass  # nothing runs apart from the caller

    def stop(self) -> None:
        pass


@dataclass(frozen=True)
class Parsing:
    processes: ParsingProcesses | InlineParsing
    blocks_ahead: int


@contextlib.contextmanager
def parsing_for(manifest: dict, workers: int | None) -> Iterator[Parsing]:
    """Worker processes for parsing, or none for a small export. `workers`
    None: one per CPU when the export is large."""
    if workers is None:
        large = sum(entry["bytes"] for entry in manifest["files"]) >= PARALLEL_MIN_BYTES
        workers = min(os.cpu_count() or 1, MAX_WORKERS) if large else 1
    processes = ParsingProcesses(workers) if workers > 1 else InlineParsing()
    try:
        # Blocks parsed ahead of the inserts: enough to keep every worker
        # busy, few enough to bound memory; none when parsing inline.
        yield Parsing(processes, 2 * workers if workers > 1 else 0)
    finally:
        processes.stop()


class ExportFile:
    """One export file as its chunks arrive. `blocks()` yields its NDJSON
    lines in blocks and, after the last one, checks byte count, SHA-256 and
    gzip end against the manifest entry. When something inside the file
    looks wrong (bad gzip, a broken record, too much text), `damage()` reads
    the rest and says whether the file itself differs from the manifest —
    the root cause to report.

    Every byte costs a bounded amount of work: the compressed bytes are
    hashed as they arrive and handed to zlib in slices of INPUT_SLICE, the
    text comes out DECOMPRESS_LIMIT at a time, a line may not grow past
    MAX_RECORD_BYTES (so cutting blocks at a newline never rescans what it
    scanned before) and the whole text may not grow past the record count's
    room — a file that tries to inflate further is refused there."""

    def __init__(self, chunks: Iterable[bytes], entry: dict):
        self.entry = entry
        self.name = entry["name"]
        self._chunks = iter(chunks)
        self._sha = hashlib.sha256()
        self._received = 0
        self._max_line = MAX_RECORD_BYTES[entry["kind"]]
        self._max_text = (entry["records"] + 1) * self._max_line

    def _arriving(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            self._sha.update(chunk)
            self._received += len(chunk)
            if self._received > self.entry["bytes"]:
                raise ExportInvalid(f"{self.name}: more than the {self.entry['bytes']:,} bytes the manifest lists")
            yield chunk

    def _size_or_hash_problem(self) -> str | None:
        if self._received != self.entry["bytes"]:
            return f"{self.name}: {self._received:,} bytes, the manifest says {self.entry['bytes']:,} (truncated or altered)"
        if self._sha.hexdigest() != self.entry["sha256"]:
            return f"{self.name}: SHA-256 {self._sha.hexdigest()} differs from the manifest's {self.entry['sha256']} (altered or damaged)"
        return None

    def damage(self) -> str | None:
        """Read the rest of the file; the size or hash difference, if any."""
        try:
            for _ in self._arriving():
                pass
        except ExportInvalid as exc:
            return exc.reason
        return self._size_or_hash_problem()

    def _refuse(self, problem: str) -> ExportInvalid:
        return ExportInvalid(self.damage() or problem)

    def _slices(self) -> Iterator[bytes]:
        for chunk in self._arriving():
            for start in range(0, len(chunk), INPUT_SLICE):
                yield chunk[start:start + INPUT_SLICE]

    def _text(self) -> Iterator[bytes]:
        """The decompressed text, DECOMPRESS_LIMIT at most at a time, of
        every gzip member in turn; checks the size, hash and gzip end after
        the last."""
        decompressor = zlib.decompressobj(wbits=31)
        for data in self._slices():
            while True:
                if decompressor.eof:
                    if not data:
                        break
                    decompressor = zlib.decompressobj(wbits=31)  # a further gzip member follows
                try:
                    text = decompressor.decompress(data, DECOMPRESS_LIMIT)
                except zlib.error as exc:
                    raise self._refuse(f"{self.name}: not valid gzip at byte {self._received:,} ({exc})") from None
                if text:
                    yield text
                data = decompressor.unused_data if decompressor.eof else decompressor.unconsumed_tail
                if not data and not decompressor.eof and len(text) < DECOMPRESS_LIMIT:
                    break  # input used up and no output left inside zlib
        problem = self._size_or_hash_problem()
        if problem:
            raise ExportInvalid(problem)
        if not decompressor.eof:
            raise ExportInvalid(f"{self.name}: the gzip stream ends before its end marker (truncated)")

    def blocks(self) -> Iterator[tuple[int, bytes]]:
        """(number of the first line, whole lines joined by newlines) in
        blocks of about BLOCK_BYTES, as the file decompresses."""
        buffered: list[bytes] = []
        size = total = unfinished = 0  # bytes buffered, decompressed, and since the last newline
        next_line = 1
        for text in self._text():
            total += len(text)
            if total > self._max_text:
                raise self._refuse(
                    f"{self.name}: decompresses to more than the {self._max_text:,} bytes its {self.entry['records']:,} records may take"
                )
            newline = text.rfind(b"\n")
            unfinished = unfinished + len(text) if newline < 0 else len(text) - newline - 1
            if unfinished >= self._max_line:
                line = next_line + sum(piece.count(b"\n") for piece in buffered) + text.count(b"\n")
                raise self._refuse(f"{self.name} line {line:,}: longer than the {self._max_line:,} bytes one record may take")
            buffered.append(text)
            size += len(text)
            if size >= BLOCK_BYTES:  # a newline is in there: no line is as long as a block
                joined = b"".join(buffered)
                cut = joined.rfind(b"\n")
                yield next_line, joined[:cut]
                next_line += joined.count(b"\n", 0, cut) + 1
                rest = joined[cut + 1 :]
                buffered, size = [rest], len(rest)
        rest = b"".join(buffered)
        if rest.strip():
            yield next_line, rest


def _duplicates_message(conn, kind: str, name: str) -> str:
    column = KEY_FIELD[kind]
    duplicates = conn.execute(
        f"SELECT {column}, count(*) FROM {SEARCH_TABLE[kind]} GROUP BY {column} HAVING count(*) > 1 LIMIT 3"
    ).fetchall()
    listed = ", ".join(f"{key} ({n} rows)" for key, n in duplicates)
    return f"{name}: duplicate {column} {listed}; each key must appear once"


def write_meta(conn, manifest: dict, figures: BuildFigures, *, source: str, mirror_individual_number: bool) -> None:
    municipality = manifest["municipality"]
    values = {
        "schema_version": SCHEMA_VERSION,
        "contract": manifest["contract"],
        "export_id": manifest["export_id"],
        "export_seq": manifest.get("export_seq"),
        "municipality_code": municipality.get("code", ""),
        "municipality_prefecture": municipality.get("prefecture", ""),
        "municipality_name": municipality.get("name", ""),
        "as_of": manifest["as_of"],
        "export_as_of": manifest["as_of"],
        "last_seq": manifest["last_seq"],
        "loaded_at": dt.datetime.now(dt.UTC).astimezone().isoformat(timespec="seconds"),
        "source": source,
        "residents": figures.residents,
        "seals": figures.seals,
        "residents_digest": figures.residents_digest,
        "seals_digest": figures.seals_digest,
        "individual_number_mirrored": int(mirror_individual_number),
    }
    conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", values.items())

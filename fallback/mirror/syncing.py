"""Running sync from the appliance: configuration in, records out.

`sync` is a library taking explicit arguments; this module reads the
configuration, calls it, and records every run in the operational database
(`sync_runs`: start, end, outcome ok / refused / failed / stopped, figures, the
reason) and in the audit log where a person took a decision (an override
flag, a rollback). Runs never overlap: the snapshot directory's write lock
is held for the whole run, so a second `sonae sync …` is refused with a
clear message and not recorded, since it never ran (the worker skips its
change-feed turn instead). A run cut off by a crash stays 'running' until the next run
marks it failed as interrupted.

After every successful full load — by the worker or by hand — the worker
prepares the IPAmj subset for the rare glyphs of the new generation's
residents (printing.glyphs), so certificates printed from it cut their own
small font quickly; `certificate_font_due` reads from the run history which
load has not had its font yet. The step is not part of the load: it reads
a generation that already serves, without the write lock, and cannot turn
a load into a failure. A character no font has is recorded in the load's
run detail (code point and residents, in the encrypted operational
database) and counted in the log; any other failure is recorded likewise.

A broken change feed is recorded as a refused `changes` run with
detail.feed_broken; `full_export_due` reads that back, so the worker runs a
full export next. Deriving "a full export is due" from the run history
keeps one source of truth: a later successful full run clears it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

from fallback import audit
from fallback.access import permission_message
from fallback.config import Config, ConfigError
from fallback.mirror.registry import snapshot_store
from fallback.ops import Transaction, now, now_iso, open_ops
from printing.glyphs import GlyphMissingError, prepare_rare_glyph_font, rare_clusters
from sync.changes import ChangesResult, apply_changes
from sync.contract import ContractError, public_key_from_b64
from sync.crypto import DiskError, KeyFileError, WrongKeyError, folder_not_file
from sync.errors import ExportInvalid, FeedBroken, GateRefused, NoSnapshot, SnapshotOutdated, SyncBusy, SyncError, UpstreamUntrusted
from sync.loader import LoadResult, load_full
from sync.store import SnapshotStore
from sync.upstream import DirectoryUpstream, HttpUpstream, UpstreamTrust

REFUSALS = (GateRefused, ExportInvalid, FeedBroken, UpstreamUntrusted, SyncBusy, NoSnapshot)
EXPECTED_FAILURES = (SyncError, WrongKeyError, DiskError, KeyFileError, ContractError, ConfigError)
WORKER_ACTOR = "worker"
INTERRUPTED = "interrupted: the process stopped before finishing (crash, kill or power cut); the previous generation kept serving"
STOPPED = "stopped by {how} before finishing; {kept}"
FONT_CACHE_DIR = "font-cache"  # under SONAE_HOME; fallback.counter.rendering gives printing the same directory
RESIDENTS_PER_STOP_POINT = 10_000
RESIDENTS_NAMED_PER_GLYPH = 20  # enough for IT to find and correct the records; the count says how many in all

log = logging.getLogger("sonae.sync")


def upstream_from_config(config: Config) -> HttpUpstream:
    """The upstream client, refusing a plain-http URL unless the
    configuration allows it (only the demo and tests do), and checking every
    signed answer against the configured key, the ward and this clock."""
    section = config["upstream"]
    check_upstream_url(section["url"], section["allow_insecure_http"])
    trust = UpstreamTrust(upstream_public_key(config), config["municipality"]["code"], now)
    token = section["token"]
    if not token:
        path = Path(section["token_file"])
        if os.path.isdir(path):  # a root-owned folder would otherwise read as "permission denied"
            raise ConfigError(token_folder_message(path))
        try:
            token = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            raise ConfigError(f"upstream token file {path} does not exist; put the bearer token there or set SONAE_UPSTREAM_TOKEN") from None
        except PermissionError:
            raise ConfigError(permission_message(path)) from None
    return HttpUpstream(section["url"], token, trust=trust, timeout=section["timeout_s"])


def token_folder_message(path: Path) -> str:
    return folder_not_file(path, "token file", "put the vendor's bearer token there")


def check_upstream_url(url: str, allow_insecure_http: bool) -> None:
    scheme = urlsplit(url).scheme.lower()
    if scheme == "https" or (scheme == "http" and allow_insecure_http):
        return
    if scheme == "http":
        raise ConfigError(
            f"upstream.url {url} is plain http: refused, since anyone on the way could read the token and the register; "
            "use the upstream's https:// address (upstream.allow_insecure_http = true is for the demo and tests only)"
        )
    raise ConfigError(f"upstream.url {url!r} is not an https:// address")


def upstream_public_key(config: Config):
    text = config["upstream"]["public_key"]
    if not text:
        raise ConfigError("upstream.public_key is not set; configure the upstream's Ed25519 public key (base64): every answer is checked against it")
    try:
        return public_key_from_b64(text)
    except ContractError as exc:
        raise ConfigError(str(exc)) from None


def run_full_sync(config: Config, source_dir: str | os.PathLike | None = None, overrides: Iterable[str] = frozenset(), actor: str = WORKER_ACTOR,
                  committing: Callable[[], None] = lambda: None, stop_if_asked: Callable[[], None] = lambda: None) -> LoadResult:
    """Load the latest full export (from the upstream, or from `source_dir`).
    `committing`, `stop_if_asked`: as sync.loader.load_full's."""
    overrides = frozenset(overrides)
    store = snapshot_store(config)
    public_key = upstream_public_key(config)
    upstream = DirectoryUpstream(source_dir) if source_dir else upstream_from_config(config)
    feed = _feed_for(config, upstream)
    detail = {"source": upstream.describe(), "actor": actor, "overrides": sorted(overrides)}
    sync_config = config["sync"]
    try:
        with _recorded_run(config, store, "full", detail, audit_action="sync.override" if overrides else None) as run:
            result = load_full(
                upstream,
                store,
                public_key=public_key,
                municipality_code=config["municipality"]["code"],
                max_drop_ratio=sync_config["max_drop_ratio"],
                keep=sync_config["keep_generations"],
                mirror_individual_number=sync_config["mirror_individual_number"],
                overrides=overrides,
                clock=now,
                feed=feed,
                feed_batch=sync_config["changes_batch"],
                committing=committing,
                stop_if_asked=stop_if_asked,
            )
            run.update(
                generation=result.generation,
                records=result.residents + result.seals,
                bytes=result.bytes,
                as_of=result.as_of.isoformat(),
                detail={"export_id": result.export_id, "export_seq": result.export_seq, "residents": result.residents, "seals": result.seals,
                        "overridden": list(result.overridden), "pruned": list(result.pruned), "seconds": round(result.seconds, 1),
                        "anomalies": result.anomalies.figures(), "phases": result.phases},
            )
            return result
    finally:
        upstream.close()
        if feed is not upstream:
            feed.close()


def _feed_for(config: Config, upstream):
    """Where a new generation behind the serving one follows the change
    feed: the upstream it came from, or for an export directory the
    configured upstream when there is one (else the directory, which says
    it has no feed)."""
    if not isinstance(upstream, DirectoryUpstream) or not config["upstream"]["url"]:
        return upstream
    try:
        return upstream_from_config(config)
    except ConfigError:
        return upstream


def certificate_font_due(config: Config) -> tuple[int, int] | None:
    """(sync run id, generation) of the successful full load that made the
    current generation, if its certificate font has not been prepared yet."""
    generation = snapshot_store(config).current_if_readable()
    if generation is None:
        return None
    ops = open_ops(config)
    try:
        row = ops.execute(
            "SELECT id FROM sync_runs WHERE kind = 'full' AND outcome = 'ok' AND generation = ? "
            "AND json_extract(detail, '$.certificate_font') IS NULL ORDER BY id DESC LIMIT 1",
            (generation,),
        ).fetchone()
    finally:
        ops.close()
    return (row[0], generation) if row else None


def prepare_certificate_font(config: Config, stop_if_asked: Callable[[], None] = lambda: None) -> dict | None:
    """Prepare the certificate font for the current generation if it is due;
    returns the figures recorded in its load's run detail, or None when
    nothing was due. `stop_if_asked`: called every RESIDENTS_PER_STOP_POINT
    residents read (a minute's reading at 4M); a stop leaves the font due."""
    due = certificate_font_due(config)
    if due is None:
        return None
    run_id, generation = due
    figures = _prepare_certificate_font(config, snapshot_store(config), generation, stop_if_asked)
    ops = open_ops(config)
    try:
        with Transaction(ops):
            ops.execute(
                "UPDATE sync_runs SET detail = json_set(coalesce(detail, '{}'), '$.certificate_font', json(?)) WHERE id = ?",
                (json.dumps(figures, ensure_ascii=False), run_id),
            )
    finally:
        ops.close()
    return figures


def _prepare_certificate_font(config: Config, store: SnapshotStore, generation: int, stop_if_asked: Callable[[], None]) -> dict:
    """Build the IPAmj subset for every rare glyph that the residents of
    `generation` print with; returns the figures for the run's detail.
    Never raises: the generation already serves, and without this font a
    certificate with a rare glyph is only slower (it cuts its subset from
    IPAmj itself)."""
    started = time.monotonic()
    holders: dict[str, list[str]] = {}
    counts: Counter[str] = Counter()
    figures: dict = {}
    try:
        with store.open_register(generation) as register:
            for read, (resident_code, text) in enumerate(register.printed_texts()):
                if read % RESIDENTS_PER_STOP_POINT == 0:
                    stop_if_asked()
                for cluster in rare_clusters((text,)):
                    counts[cluster] += 1
                    named = holders.setdefault(cluster, [])
                    if len(named) < RESIDENTS_NAMED_PER_GLYPH:
                        named.append(resident_code)
        missing = _build_rare_glyph_font(set(counts), config.home / FONT_CACHE_DIR)
        figures["rare_glyphs"] = len(counts) - len(missing)
        figures["missing"] = [
            {"character": " ".join(f"U+{ord(c):04X}" for c in cluster), "residents": holders[cluster], "count": counts[cluster]}
            for cluster in missing
        ]
        if missing:
            log.warning(
                "certificate font: %d character(s) used by %d resident(s) exist in no certificate font; their certificates "
                "are refused until the records are corrected. The code points and resident codes are in the detail of the "
                "full sync run (`sonae sync status --json`)",
                len(missing), sum(counts[cluster] for cluster in missing),
            )
    except Exception as exc:  # whatever fails here, the generation serves on and the failure is recorded
        figures["error"] = f"{type(exc).__name__}: {exc}"
        # The message may quote register text: it stays in the run's detail.
        log.error("certificate font for generation %d not prepared (%s); see the full sync run's detail", generation, type(exc).__name__)
    figures["seconds"] = round(time.monotonic() - started, 1)
    return figures


def _build_rare_glyph_font(clusters: set[str], cache_dir: Path) -> list[str]:
    """Prepare the font for the clusters some font has; returns the others.
    GlyphMissingError names the first character it finds missing (its only
    handle on it): set that aside and build again."""
    missing: list[str] = []
    while True:
        try:
            prepare_rare_glyph_font(sorted(clusters), cache_dir)
            return missing
        except GlyphMissingError as exc:
            named = {cluster for cluster in clusters if f"「{cluster}」" in str(exc)}
            if not named:
                raise
            missing.extend(sorted(named))
            clusters -= named


def run_changes(config: Config, actor: str = WORKER_ACTOR, stop_if_asked: Callable[[], None] = lambda: None) -> ChangesResult:
    """Apply the change feed to the current generation until caught up.
    `stop_if_asked`: as sync.changes.apply_changes's."""
    store = snapshot_store(config)
    upstream = upstream_from_config(config)
    try:
        with _recorded_run(config, store, "changes", {"source": upstream.describe(), "actor": actor}) as run:
            from_seq = _feed_position(store)
            try:
                result = apply_changes(
                    upstream,
                    store,
                    batch=config["sync"]["changes_batch"],
                    mirror_individual_number=config["sync"]["mirror_individual_number"],
                    stop_if_asked=stop_if_asked,
                )
            except KeyboardInterrupt:
                _record_pages_kept(run, store, from_seq)
                raise
            run.update(
                generation=result.generation,
                records=result.applied,
                as_of=result.as_of.isoformat(),
                detail={"from_seq": result.from_seq, "last_seq": result.last_seq, "applied": result.applied,
                        "skipped": result.skipped, "pages": result.pages},
            )
            return result
    finally:
        upstream.close()


def _feed_position(store: SnapshotStore) -> int | None:
    """The current generation's last_seq, or None without a readable one
    (apply_changes then says what is wrong with it)."""
    try:
        with store.open_register() as register:
            return register.meta.last_seq
    except Exception:
        return None


def _record_pages_kept(run: dict, store: SnapshotStore, from_seq: int | None) -> None:
    """What a stopped change-feed run leaves: the pages applied before the
    stop are committed, each whole, so IT is told how far it came."""
    if from_seq is None:
        return
    with store.open_register() as register:
        meta = register.meta
    run.update(generation=meta.generation, as_of=meta.as_of.isoformat(),
               detail={"from_seq": from_seq, "last_seq": meta.last_seq})
    run["kept"] = (f"the pages applied before it are kept (seq {from_seq:,} → {meta.last_seq:,}) and the next run applies the rest"
                   if meta.last_seq != from_seq else f"no page was applied (still at seq {from_seq:,}); the next run fetches and applies the changes after it")


def rollback_snapshot(config: Config, generation: int, reason: str, actor: str) -> int | None:
    """Make an older generation current again; audited. Returns the
    generation that was current."""
    store = snapshot_store(config)
    previous = store.rollback(generation)
    ops = open_ops(config)
    try:
        audit.record(ops, actor, "snapshot.rollback", str(generation), {"from": previous, "to": generation, "reason": reason})
    finally:
        ops.close()
    return previous


def reclaim_leftovers(config: Config) -> list[str]:
    """What the worker does at start, as every sync does: remove what a
    killed load or prune left (`gen-N.tmp`, `gen-N.deleting`) and write a
    damaged CURRENT again from its copy. Returns what was removed; nothing
    while another sync holds the snapshot directory (it does the same)."""
    try:
        removed = snapshot_store(config).cleanup_incomplete()
    except SyncBusy:
        return []
    for name in removed:
        log.warning("removed %s, left by a sync that did not finish", name)
    return removed


def full_export_due(config: Config) -> str | None:
    """Why a full export should run now (no snapshot yet, one of an older
    layout, or the change feed broke after the last successful full load),
    or None."""
    store = snapshot_store(config)
    if store.current() is None:
        return "no snapshot has been loaded yet"
    try:
        store.open_register().close()
    except SnapshotOutdated as exc:
        return str(exc)
    ops = open_ops(config)
    try:
        row = ops.execute(
            "SELECT started_at, error FROM sync_runs WHERE kind = 'changes' AND json_extract(detail, '$.feed_broken') "
            "AND id > (SELECT coalesce(max(id), 0) FROM sync_runs WHERE kind = 'full' AND outcome = 'ok') ORDER BY id DESC LIMIT 1"
        ).fetchone()
    finally:
        ops.close()
    return f"the change feed broke at {row[0]} ({row[1]})" if row else None


def latest_load_anomalies(ops) -> dict | None:
    """The upstream data anomalies (sync.anomalies) the last successful full
    load found: {"counts": {kind: n}, "positions": {kind: [line, …]}, "run": id,
    "started_at": …}, or None before any such load."""
    row = ops.execute(
        "SELECT id, started_at, json_extract(detail, '$.anomalies') FROM sync_runs WHERE kind = 'full' AND outcome = 'ok' "
        "AND json_extract(detail, '$.anomalies') IS NOT NULL ORDER BY id DESC LIMIT 1"
    ).fetchone()
    return None if row is None else {**json.loads(row[2]), "run": row[0], "started_at": row[1]}


def recent_runs(config: Config, limit: int = 20) -> list[dict]:
    ops = open_ops(config)
    try:
        cursor = ops.execute("SELECT * FROM sync_runs ORDER BY id DESC LIMIT ?", (limit,))
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor]
    finally:
        ops.close()


# --- run records -----------------------------------------------------------


@contextlib.contextmanager
def _recorded_run(config: Config, store: SnapshotStore, kind: str, detail: dict, audit_action: str | None = None) -> Iterator[dict]:
    """Record a run from start to outcome, holding the write lock throughout.
    Yields a dict the body fills with figures (generation, records, bytes,
    as_of, detail)."""
    ops = open_ops(config)
    run: dict = {"detail": {}}
    detail = {**detail, "pid": os.getpid()}
    try:
        outcome, error, run_id = "failed", None, None
        try:
            # Recorded once it holds the lock: a run turned away because
            # another holds it never ran (it is told so), and a record made
            # before would stand as the latest run over the one that holds it.
            with store.write_lock():
                with Transaction(ops):
                    run_id = ops.execute(
                        "INSERT INTO sync_runs (kind, started_at, outcome, detail) VALUES (?, ?, 'running', ?)",
                        (kind, now_iso(), json.dumps(detail, ensure_ascii=False)),
                    ).lastrowid
                _close_interrupted_runs(ops, run_id)
                yield run
            outcome = "ok"
        except REFUSALS as exc:
            outcome, error = "refused", str(exc)
            if isinstance(exc, FeedBroken):
                detail["feed_broken"] = True
            if isinstance(exc, GateRefused):
                detail["gate"] = exc.gate
            raise
        except KeyboardInterrupt as exc:
            outcome = "stopped"
            error = STOPPED.format(how=_how(exc), kept=run.get("kept") or _nothing_kept(store))
            if isinstance(exc, SyncStopped):
                exc.reason = error
            raise
        except BaseException as exc:
            error = str(exc) if isinstance(exc, EXPECTED_FAILURES) else f"{type(exc).__name__}: {exc}"
            raise
        finally:
            if run_id is not None:
                _record_outcome(ops, run_id, run, detail, outcome, error, kind, audit_action)
    finally:
        ops.close()


def _record_outcome(ops, run_id: int, run: dict, detail: dict, outcome: str, error: str | None, kind: str,
                    audit_action: str | None) -> None:
    detail.update(run["detail"])
    with Transaction(ops):
        ops.execute(
            "UPDATE sync_runs SET finished_at = ?, outcome = ?, generation = ?, records = ?, bytes = ?, as_of = ?, error = ?, detail = ? WHERE id = ?",
            (now_iso(), outcome, run.get("generation"), run.get("records"), run.get("bytes"), run.get("as_of"), error,
             json.dumps(detail, ensure_ascii=False), run_id),
        )
        if audit_action:
            audit.append(ops, detail["actor"], audit_action, str(run.get("generation") or ""),
                         {"run": run_id, "kind": kind, "outcome": outcome, "error": error, **detail})


class SyncStopped(KeyboardInterrupt):
    """SIGTERM (`kill`, `systemctl stop`) or Ctrl-C during a sync run: from
    the command line (fallback.mirror.sync_commands) raised where the run
    is, in the worker (StopRequest) at the run's next step. The run unwinds
    through the same clean-ups as after an error (the generation being
    built is discarded, its parsing processes ended) and is recorded as
    stopped."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum
        self.reason: str | None = None  # what the run's record says it left (_recorded_run)

    @property
    def how(self) -> str:
        return "SIGTERM" if self.signum == signal.SIGTERM else "Ctrl-C (SIGINT)"


class StopRequest(threading.Event):
    """SIGTERM or Ctrl-C to `sonae worker`, as its jobs see it. The signal
    arrives on the main thread while a sync runs on a job's thread, where
    no signal handler can raise: the event is set (waits between retries
    end at once) and the run stops at its next step — an export block, an
    index, a page of the feed — when it calls `stop_if_asked`. So
    `systemctl stop` ends a nightly load in seconds, recorded as stopped,
    rather than waiting for systemd's SIGKILL."""

    def __init__(self) -> None:
        super().__init__()
        self.signum: int | None = None

    def request(self, signum: int) -> None:
        self.signum = signum
        self.set()

    def stop_if_asked(self) -> None:
        if self.signum is not None:
            raise SyncStopped(self.signum)


def _how(exc: KeyboardInterrupt) -> str:
    return exc.how if isinstance(exc, SyncStopped) else "Ctrl-C (SIGINT)"


def _nothing_kept(store: SnapshotStore) -> str:
    serving = store.current_if_readable()
    where = f"generation {serving} kept serving" if serving is not None else "no generation is loaded yet"
    return f"nothing half-done was kept and {where}"


def stopped_reason(exc: KeyboardInterrupt) -> str:
    """What a stopped run left, as its record says it (_recorded_run)."""
    return getattr(exc, "reason", None) or STOPPED.format(how=_how(exc), kept="nothing half-done was kept")


def _close_interrupted_runs(ops, own_run_id: int) -> None:
    """Runs left 'running' by a process that no longer exists were cut off
    (we hold the lock, so no other run is live)."""
    for run_id, detail in ops.execute("SELECT id, detail FROM sync_runs WHERE outcome = 'running' AND id != ?", (own_run_id,)).fetchall():
        pid = json.loads(detail or "{}").get("pid")
        if pid and _alive(pid):
            continue  # a live process records its own outcome
        with Transaction(ops):
            ops.execute("UPDATE sync_runs SET outcome = 'failed', finished_at = ?, error = ? WHERE id = ?", (now_iso(), INTERRUPTED, run_id))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

"""Running sync from the appliance: configuration in, records out.

`sync` is a library taking explicit arguments; this module reads the
configuration, calls it, and records every run in the operational database
(`sync_runs`: start, end, outcome ok / refused / failed, figures, the
reason) and in the audit log where a person took a decision (an override
flag, a rollback). Runs never overlap: the snapshot directory's write lock
is held for the whole run, so a second `sonae sync …` is refused with a
clear message and recorded as refused (the worker skips its change-feed
turn instead). A run cut off by a crash stays 'running' until the next run
marks it failed as interrupted.

A broken change feed is recorded as a refused `changes` run with
detail.feed_broken; `full_export_due` reads that back, so the worker runs a
full export next. Deriving "a full export is due" from the run history
keeps one source of truth: a later successful full run clears it.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from fallback import audit
from fallback.config import Config, ConfigError
from fallback.ops import Transaction, now_iso, open_ops
from fallback.registry import snapshot_store
from sync.changes import ChangesResult, apply_changes
from sync.contract import ContractError, public_key_from_b64
from sync.crypto import KeyFileError, WrongKeyError
from sync.errors import ExportInvalid, FeedBroken, GateRefused, NoSnapshot, SyncBusy, SyncError
from sync.loader import LoadResult, load_full
from sync.store import SnapshotStore
from sync.upstream import DirectoryUpstream, HttpUpstream

REFUSALS = (GateRefused, ExportInvalid, FeedBroken, SyncBusy, NoSnapshot)
EXPECTED_FAILURES = (SyncError, WrongKeyError, KeyFileError, ContractError, ConfigError)
WORKER_ACTOR = "worker"
INTERRUPTED = "interrupted: the process stopped before finishing (crash, kill or power cut); the previous generation kept serving"


def upstream_from_config(config: Config) -> HttpUpstream:
    section = config["upstream"]
    token = section["token"]
    if not token:
        path = Path(section["token_file"])
        try:
            token = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            raise ConfigError(f"upstream token file {path} does not exist; put the bearer token there or set SONAE_UPSTREAM_TOKEN") from None
        except PermissionError:
            raise ConfigError(f"upstream token file {path} cannot be read by this user") from None
    return HttpUpstream(section["url"], token, timeout=section["timeout_s"])


def upstream_public_key(config: Config):
    text = config["upstream"]["public_key"]
    if not text:
        raise ConfigError("upstream.public_key is not set; configure the upstream's Ed25519 public key (base64) before loading exports")
    return public_key_from_b64(text)


def run_full_sync(config: Config, source_dir: str | os.PathLike | None = None, overrides: Iterable[str] = frozenset(), actor: str = WORKER_ACTOR) -> LoadResult:
    """Load the latest full export (from the upstream, or from `source_dir`)."""
    overrides = frozenset(overrides)
    store = snapshot_store(config)
    public_key = upstream_public_key(config)
    upstream = DirectoryUpstream(source_dir) if source_dir else upstream_from_config(config)
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
            )
            run.update(
                generation=result.generation,
                records=result.residents + result.seals,
                bytes=result.bytes,
                as_of=result.as_of.isoformat(),
                detail={"export_id": result.export_id, "residents": result.residents, "seals": result.seals,
                        "overridden": list(result.overridden), "pruned": list(result.pruned), "seconds": round(result.seconds, 1)},
            )
            return result
    finally:
        upstream.close()


def run_changes(config: Config, actor: str = WORKER_ACTOR) -> ChangesResult:
    """Apply the change feed to the current generation until caught up."""
    store = snapshot_store(config)
    upstream = upstream_from_config(config)
    try:
        with _recorded_run(config, store, "changes", {"source": upstream.describe(), "actor": actor}) as run:
            result = apply_changes(
                upstream,
                store,
                batch=config["sync"]["changes_batch"],
                mirror_individual_number=config["sync"]["mirror_individual_number"],
            )
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


def full_export_due(config: Config) -> str | None:
    """Why a full export should run now (no snapshot yet, or the change feed
    broke after the last successful full load), or None."""
    if snapshot_store(config).current() is None:
        return "no snapshot has been loaded yet"
    ops = open_ops(config)
    try:
        row = ops.execute(
            "SELECT started_at, error FROM sync_runs WHERE kind = 'changes' AND json_extract(detail, '$.feed_broken') "
            "AND id > (SELECT coalesce(max(id), 0) FROM sync_runs WHERE kind = 'full' AND outcome = 'ok') ORDER BY id DESC LIMIT 1"
        ).fetchone()
    finally:
        ops.close()
    return f"the change feed broke at {row[0]} ({row[1]})" if row else None


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
        with Transaction(ops):
            run_id = ops.execute(
                "INSERT INTO sync_runs (kind, started_at, outcome, detail) VALUES (?, ?, 'running', ?)",
                (kind, now_iso(), json.dumps(detail, ensure_ascii=False)),
            ).lastrowid
        outcome, error = "failed", None
        try:
            with store.write_lock():
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
        except BaseException as exc:
            error = str(exc) if isinstance(exc, EXPECTED_FAILURES) else f"{type(exc).__name__}: {exc}"
            raise
        finally:
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
    finally:
        ops.close()


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

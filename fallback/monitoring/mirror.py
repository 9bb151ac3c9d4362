"""What the monitor needs to know about the appliance's own mirror: the
current snapshot and the one before it, the sync runs the worker recorded,
the next scheduled runs, and the disk the snapshots live on.

These readers work inside and outside a web request (the worker has no
Flask `g`), so they open the snapshot store themselves.
"""

from __future__ import annotations

import datetime as dt
import shutil
from dataclasses import dataclass

from apscheduler.triggers.cron import CronTrigger

from fallback.config import Config
from fallback.mirror.registry import snapshot_store
from sync.register import SnapshotMeta, connect_snapshot

SYNC_RUN_COLUMNS = ("id", "kind", "started_at", "finished_at", "outcome", "generation", "records", "bytes", "as_of", "error")
FULL, CHANGES = "full", "changes"
# What IT reads for each kind of run, in every alert, report and screen.
RUN_KINDS = {FULL: "全件取込", CHANGES: "差分取込"}
# A run stopped by an operator (`systemctl stop`, Ctrl-C) did not finish either:
# the morning report lists it beside the failures, under its own name.
FAILED_OUTCOMES = ("failed", "refused", "stopped")


@dataclass(frozen=True)
class SnapshotFacts:
    current: SnapshotMeta
    previous: SnapshotMeta | None  # the generation before, for the change in counts

    def age_hours(self, at: dt.datetime) -> float:
        return (at - self.current.as_of).total_seconds() / 3600

    def change(self, kind: str) -> int | None:
        if self.previous is None:
            return None
        return getattr(self.current, kind) - getattr(self.previous, kind)


def snapshot_facts(config: Config) -> SnapshotFacts | None:
    """The current generation and its predecessor, or None before the first
    load. A damaged store or a wrong key raises (sync.errors / KeyFileError /
    WrongKeyError): the caller reports that, it is not "no snapshot"."""
    store = snapshot_store(config)
    current = store.current()
    if current is None:
        return None
    with store.open_register(current) as register:
        meta = register.meta
    older = [n for n in store.generation_numbers() if n < current]
    previous = None
    if older:
        with store.open_register(older[-1]) as register:
            previous = register.meta
    return SnapshotFacts(meta, previous)


def any_resident_code(config: Config) -> str | None:
    """A current resident's code from the current snapshot, for the synthetic
    probe — always the same one while the generation lasts, so the probe's
    history is comparable. Only the code is read, never the record."""
    store = snapshot_store(config)
    current = store.current()
    if current is None:
        return None
    conn = connect_snapshot(store.path_of(current), store.key, readonly=True)
    try:
        row = conn.execute("SELECT resident_code FROM residents WHERE status = 'active' ORDER BY id LIMIT 1").fetchone()
    finally:
        conn.close()
    return row[0] if row else None


@dataclass(frozen=True)
class SyncRun:
    id: int
    kind: str
    started_at: str
    finished_at: str | None
    outcome: str
    generation: int | None
    records: int | None
    bytes: int | None
    as_of: str | None
    error: str | None

    @property
    def duration_s(self) -> float | None:
        if not self.finished_at:
            return None
        return (dt.datetime.fromisoformat(self.finished_at) - dt.datetime.fromisoformat(self.started_at)).total_seconds()

    @property
    def failed(self) -> bool:
        return self.outcome in FAILED_OUTCOMES


def _runs(conn, where: str, params: tuple, limit: int) -> list[SyncRun]:
    rows = conn.execute(
        f"SELECT {', '.join(SYNC_RUN_COLUMNS)} FROM sync_runs {where} ORDER BY started_at DESC, id DESC LIMIT ?", (*params, limit)
    ).fetchall()
    return [SyncRun(*row) for row in rows]


def recent_runs(conn, limit: int = 30) -> list[SyncRun]:
    return _runs(conn, "", (), limit)


def runs_since(conn, since: str) -> list[SyncRun]:
    return _runs(conn, "WHERE started_at >= ?", (since,), 10_000)


def latest_finished(conn, kind: str) -> SyncRun | None:
    runs = _runs(conn, "WHERE kind = ? AND finished_at IS NOT NULL", (kind,), 1)
    return runs[0] if runs else None


def latest_success(conn, kind: str | None = None) -> SyncRun | None:
    if kind is None:
        runs = _runs(conn, "WHERE outcome = 'ok'", (), 1)
    else:
        runs = _runs(conn, "WHERE outcome = 'ok' AND kind = ?", (kind,), 1)
    return runs[0] if runs else None


def failing_since(conn, kind: str) -> SyncRun | None:
    """The first run of the current streak of failed runs of `kind` (None
    when the latest finished run succeeded)."""
    latest = latest_finished(conn, kind)
    if latest is None or not latest.failed:
        return None
    success = latest_success(conn, kind)
    after = success.started_at if success else ""
    runs = _runs(conn, "WHERE kind = ? AND finished_at IS NOT NULL AND started_at > ?", (kind, after), 10_000)
    return runs[-1]


@dataclass(frozen=True)
class DiskUsage:
    path: str
    total: int
    used: int
    free: int

    @property
    def free_percent(self) -> float:
        return 100.0 * self.free / self.total if self.total else 0.0


def disk_usage(config: Config) -> DiskUsage:
    """The filesystem holding SONAE_HOME (snapshots and the operational database)."""
    config.home.mkdir(parents=True, exist_ok=True)
    usage = shutil.disk_usage(config.home)
    return DiskUsage(str(config.home), usage.total, usage.used, usage.free)


def next_full_load(config: Config, at: dt.datetime) -> dt.datetime | None:
    sync = config["sync"]
    return CronTrigger.from_crontab(sync["full_cron"], timezone=sync["timezone"]).get_next_fire_time(None, at)


def next_changes_run(conn, config: Config, at: dt.datetime) -> dt.datetime:
    runs = _runs(conn, "WHERE kind = ?", (CHANGES,), 1)
    if not runs:
        return at
    return max(at, dt.datetime.fromisoformat(runs[0].started_at) + dt.timedelta(seconds=config["sync"]["changes_interval_s"]))


def snapshot_age_series(conn, start: dt.datetime, end: dt.datetime, step: dt.timedelta) -> list[tuple[dt.datetime, float | None]]:
    """Hours between each sample time and the data-as-of of the snapshot
    that was current then (from successful sync runs); None before the
    first load. Sampled, because a minute-by-minute sawtooth over a week
    says no more than its samples."""
    before = conn.execute(
        "SELECT finished_at, as_of FROM sync_runs WHERE outcome = 'ok' AND as_of IS NOT NULL AND finished_at < ? "
        "ORDER BY finished_at DESC LIMIT 1", (start.isoformat(timespec="milliseconds"),)
    ).fetchall()
    within = conn.execute(
        "SELECT finished_at, as_of FROM sync_runs WHERE outcome = 'ok' AND as_of IS NOT NULL AND finished_at >= ? AND finished_at <= ? "
        "ORDER BY finished_at", (start.isoformat(timespec="milliseconds"), end.isoformat(timespec="milliseconds"))
    ).fetchall()
    changes = [(dt.datetime.fromisoformat(f), dt.datetime.fromisoformat(a)) for f, a in before + within]
    series, index, as_of = [], 0, None
    moment = start
    while moment <= end:
        while index < len(changes) and changes[index][0] <= moment:
            as_of = changes[index][1]
            index += 1
        series.append((moment, None if as_of is None else (moment - as_of).total_seconds() / 3600))
        moment += step
    return series

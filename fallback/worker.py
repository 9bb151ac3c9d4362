"""The background scheduler behind `sonae worker` (a process of its own,
never inside the web server).

Every periodic job of the appliance is one entry in JOBS: an id, how to
build its trigger from the configuration, and what to run. `build_scheduler`
turns the list into an APScheduler 3 scheduler. Each job runs at most once
at a time (max_instances=1) and missed runs collapse into one (coalesce).

Sync jobs:
- sync-full: the full export on sync.full_cron in sync.timezone (02:00 JST);
- sync-changes: every sync.changes_interval_s, and once at start. It runs a
  full export instead when one is due (no snapshot yet, or the change feed
  broke), otherwise it applies the change feed; while another sync runs
  (the nightly full export) its turn is skipped.
Both retry on UpstreamUnavailable (and a held lock) with exponential
backoff (sync.retry_attempts attempts, waiting sync.retry_backoff_s × 2^n
between them). Two syncs never overlap: the snapshot write lock refuses the
second.
A stopping worker (SIGTERM, Ctrl-C) ends a running sync at its next step,
recorded as stopped (fallback.mirror.syncing.StopRequest).
Beside them, certificate-font (every sync.changes_interval_s, and once at
start) prepares the rare-glyph font of the current generation when the full
load that made it — the worker's or one by hand — has not had it yet.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from fallback import disk
from fallback.config import Config
from fallback.counter.issuance import void_unrendered
from fallback.maintenance import register_maintenance_jobs
from fallback.mirror.registry import snapshot_store
from fallback.mirror.syncing import (
    EXPECTED_FAILURES,
    StopRequest,
    SyncStopped,
    full_export_due,
    prepare_certificate_font,
    run_changes,
    run_full_sync,
    stopped_reason,
)
from fallback.monitoring import register_monitoring_jobs
from fallback.ops import open_ops
from fallback.recovery import register_recovery_jobs
from sync.errors import FeedBroken, SyncBusy, UpstreamUnavailable

log = logging.getLogger("sonae.worker")


class DiskFaultsInOneLine(logging.Filter):
    """On APScheduler's log of a job's exception: a write the disk refused
    (full, an I/O error, read-only) is no bug but a state IT is alerted to
    (disk.full, ops.unwritable) — one line a turn, not a traceback every
    ten seconds that buries the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and disk.is_write_failure(exc):
            record.msg, record.args = f"{record.getMessage()}: the disk refused a write ({exc}); runbooks/09-disk-full.md", ()
            record.exc_info = record.exc_text = None
        return True
T = TypeVar("T")


@dataclass(frozen=True)
class Job:
    id: str
    trigger: Callable[[Config], BaseTrigger]
    run: Callable[[Config, StopRequest], None]
    run_at_start: bool = False


def with_retry(action: Callable[[], T], *, attempts: int, backoff_s: float, stopping: threading.Event, what: str) -> T:
    """Run `action`; when the upstream does not answer (or another sync holds
    the lock) wait backoff_s, 2×, 4× … and try again, `attempts` times in
    all. A stopping worker stops waiting."""
    attempt = 1
    while True:
        try:
            return action()
        except (UpstreamUnavailable, SyncBusy) as exc:
            if attempt >= attempts or stopping.is_set():
                raise
            delay = backoff_s * 2 ** (attempt - 1)
            log.warning("%s: %s; attempt %d of %d, retrying in %.0f s", what, exc, attempt, attempts, delay)
            if stopping.wait(delay):
                raise
            attempt += 1


def _retrying(config: Config, stopping: threading.Event, action: Callable[[], T], what: str) -> T:
    sync = config["sync"]
    return with_retry(action, attempts=max(1, sync["retry_attempts"]), backoff_s=sync["retry_backoff_s"], stopping=stopping, what=what)


def full_sync_job(config: Config, stopping: StopRequest) -> None:
    if stopping.is_set():  # due in the moment between the signal and the scheduler's shutdown
        return
    try:
        result = _retrying(config, stopping, lambda: run_full_sync(config, stop_if_asked=stopping.stop_if_asked), "full export")
        log.info("full export: generation %d is current (%d residents, %d seals, as of %s)", result.generation, result.residents, result.seals, result.as_of)
    except EXPECTED_FAILURES as exc:
        log.error("full export not loaded: %s", exc)  # recorded in sync_runs
    except SyncStopped as exc:
        log.warning("full export: %s", stopped_reason(exc))  # recorded in sync_runs


def changes_job(config: Config, stopping: StopRequest) -> None:
    if stopping.is_set():  # as in full_sync_job
        return
    if snapshot_store(config).writer_active():
        log.info("another sync is running (the nightly full export?); this change-feed turn is skipped")
        return
    try:
        due = full_export_due(config)
        if due is None:
            try:
                result = _retrying(config, stopping, lambda: run_changes(config, stop_if_asked=stopping.stop_if_asked), "change feed")
                if result.applied or result.skipped:
                    log.info("change feed: %d applied, %d skipped, now at seq %d", result.applied, result.skipped, result.last_seq)
                return
            except FeedBroken as exc:
                due = f"the change feed broke ({exc})"
        log.warning("running a full export now: %s", due)
        full_sync_job(config, stopping)
    except EXPECTED_FAILURES as exc:
        log.error("change feed not applied: %s", exc)  # recorded in sync_runs
    except SyncStopped as exc:
        log.warning("change feed: %s", stopped_reason(exc))  # recorded in sync_runs


def certificate_font_job(config: Config, stopping: StopRequest) -> None:
    if stopping.is_set():  # as in full_sync_job
        return
    try:
        figures = prepare_certificate_font(config, stopping.stop_if_asked)
    except EXPECTED_FAILURES as exc:
        log.error("certificate font not prepared: %s", exc)
        return
    except SyncStopped as exc:
        log.warning("certificate font: stopped by %s before finishing; it is prepared when the worker next runs", exc.how)
        return
    if figures is not None and "error" not in figures:
        log.info("certificate font: %d rare glyph(s) prepared in %.1f s", figures["rare_glyphs"], figures["seconds"])


JOBS: list[Job] = [
    Job(
        "sync-full",
        lambda config: CronTrigger.from_crontab(config["sync"]["full_cron"], timezone=config["sync"]["timezone"]),
        full_sync_job,
    ),
    Job(
        "sync-changes",
        lambda config: IntervalTrigger(seconds=config["sync"]["changes_interval_s"], timezone=config["sync"]["timezone"]),
        changes_job,
        run_at_start=True,
    ),
    Job(
        "certificate-font",
        lambda config: IntervalTrigger(seconds=config["sync"]["changes_interval_s"], timezone=config["sync"]["timezone"]),
        certificate_font_job,
        run_at_start=True,
    ),
]


def build_scheduler(config: Config, stopping: StopRequest, scheduler: BaseScheduler | None = None) -> BaseScheduler:
    """The scheduler with every job in JOBS added (not started); its jobs
    run on threads of their own, beside the caller's."""
    scheduler = scheduler or BackgroundScheduler(timezone=config["sync"]["timezone"])
    for job in JOBS:
        scheduler.add_job(
            job.run,
            job.trigger(config),
            args=(config, stopping),
            id=job.id,
            name=job.id,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=3600,
            **({"next_run_time": dt.datetime.now(dt.UTC)} if job.run_at_start else {}),
        )
    register_monitoring_jobs(scheduler, config)
    register_recovery_jobs(scheduler, config)
    register_maintenance_jobs(scheduler, config, stopping)
    scheduler.add_job(void_unrendered_serials, IntervalTrigger(seconds=config["counter"]["void_unrendered_after_s"]), args=(config,), id="issuance-void",
                      name="issuance-void", max_instances=1, coalesce=True, next_run_time=dt.datetime.now(dt.UTC))
    return scheduler


def void_unrendered_serials(config: Config) -> None:
    """Serials committed by a web server that died before rendering their
    PDF are voided (never reused), so the issuance log stays consistent."""
    conn = open_ops(config)
    try:
        voided = void_unrendered(conn, older_than=dt.timedelta(seconds=config["counter"]["void_unrendered_after_s"]))
    finally:
        conn.close()
    if voided:
        log.warning("voided %d serial(s) whose certificate was never rendered", len(voided))

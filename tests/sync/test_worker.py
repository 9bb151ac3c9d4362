"""The scheduler: its jobs, retries with backoff, and a real `sonae worker`."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time

import pytest
from apscheduler.schedulers.background import BackgroundScheduler

from fallback.mirror.registry import snapshot_store
from fallback.mirror.syncing import StopRequest, SyncStopped, full_export_due, run_changes
from fallback.worker import build_scheduler, changes_job, with_retry
from sync.errors import SyncBusy, UpstreamUnavailable
from sync.store import LOCK_FILE, LOCK_PATIENCE_S
from tests.sync.conftest import SONAE, reload_config, sync_runs
from tests.sync.exports import change, make_resident, population, write_export
from tests.sync.upstream_server import TOKEN, TestUpstream


class RecordingEvent(threading.Event):
    """A stop event that records the waits asked of it instead of sleeping."""

    def __init__(self):
        super().__init__()
        self.waits: list[float] = []

    def wait(self, timeout=None):
        self.waits.append(timeout)
        return self.is_set()


def test_scheduler_has_the_sync_jobs_from_the_configuration(config, monkeypatch):
    monkeypatch.setenv("SONAE_SYNC_FULL_CRON", "30 3 * * *")
    monkeypatch.setenv("SONAE_SYNC_CHANGES_INTERVAL_S", "45")
    scheduler = build_scheduler(reload_config(), StopRequest(), BackgroundScheduler(timezone="Asia/Tokyo"))
    scheduler.start(paused=True)
    try:
        jobs = {job.id: job for job in scheduler.get_jobs()}
        assert {"sync-full", "sync-changes", "certificate-font"} <= set(jobs)
        full = jobs["sync-full"]
        assert (full.next_run_time.hour, full.next_run_time.minute, str(full.next_run_time.tzinfo)) == (3, 30, "Asia/Tokyo")
        assert jobs["sync-changes"].trigger.interval.total_seconds() == 45
        assert jobs["certificate-font"].trigger.interval.total_seconds() == 45
        assert all(jobs[name].max_instances == 1 and jobs[name].coalesce for name in ("sync-full", "sync-changes", "certificate-font"))
    finally:
        scheduler.shutdown(wait=False)


def test_retry_backs_off_exponentially_then_succeeds():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise UpstreamUnavailable("GET /v1/changes: no answer within 10 s")
        return "done"

    stopping = RecordingEvent()
    assert with_retry(flaky, attempts=5, backoff_s=30, stopping=stopping, what="test") == "done"
    assert stopping.waits == [30, 60]


def test_retry_gives_up_after_the_last_attempt():
    def down():
        raise UpstreamUnavailable("GET /v1/changes: cannot connect (connection refused)")

    stopping = RecordingEvent()
    with pytest.raises(UpstreamUnavailable, match="connection refused"):
        with_retry(down, attempts=3, backoff_s=2, stopping=stopping, what="test")
    assert stopping.waits == [2, 4]


def test_changes_tick_loads_a_full_export_when_one_is_due(config, upstream):
    config = reload_config()
    stopping = StopRequest()
    changes_job(config, stopping)  # no snapshot yet: the tick runs a full export
    assert snapshot_store(config).current() == 1
    upstream.changes = [change(1001, make_resident(100)), change(1003, make_resident(101))]  # a gap
    changes_job(config, stopping)  # the feed breaks; the tick loads a full export right away
    kinds = [(r["kind"], r["outcome"]) for r in sync_runs(config)]
    assert kinds == [("full", "ok"), ("changes", "refused"), ("full", "ok")]
    assert snapshot_store(config).current() == 2 and full_export_due(config) is None


def test_worker_process_syncs_and_stops_on_sigterm(config, upstream):
    upstream.changes = [change(1001, make_resident(100))]
    env = {"SONAE_SYNC_CHANGES_INTERVAL_S": "1"}
    worker = subprocess.Popen([SONAE, "worker"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **env})
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            runs = sync_runs(config) if config.ops_db_path.exists() else []
            if any(r["kind"] == "changes" and r["outcome"] == "ok" and r["records"] == 1 for r in runs):
                break
            time.sleep(0.3)
        else:
            pytest.fail(f"the worker did not sync within 60 s: {runs}")
        # A second worker on the same SONAE_HOME would probe, alert and mail twice.
        second = subprocess.run([SONAE, "worker"], capture_output=True, text=True, timeout=60)
        assert second.returncode == 1 and second.stderr.strip() == (
            f"Error: another `sonae worker` is running on {config.home} (pid {worker.pid}, holding {config.home / 'worker.lock'}); "
            "a box runs one worker — leave that one running, or stop it first"), second.stderr
        assert worker.poll() is None
    finally:
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=60)
    assert worker.returncode == 0, err
    assert "sonae worker: stopped" in err
    with snapshot_store(config).open_register() as register:
        assert register.meta.last_seq == 1001


@pytest.mark.parametrize("first_gap", [0.1, 0], ids=["a-train-of-signals", "two-signals-at-once"])
def test_a_stopped_worker_stops_its_full_load_at_the_next_step(config, tmp_path, monkeypatch, first_gap):
    # `systemctl stop sonae-worker` during the nightly load: the load runs
    # on a job's thread, where the signal cannot raise, so it used to run
    # on to its end (or to systemd's SIGKILL 30 s later, found "interrupted"
    # at the next start). Now it stops at its next export block, discards
    # the generation it was building and is recorded as stopped at once.
    residents, seals = population(20000)
    write_export(tmp_path / "export", residents, seals)
    server = TestUpstream(tmp_path / "export").start()
    monkeypatch.setenv("SONAE_UPSTREAM_URL", server.url)
    monkeypatch.setenv("SONAE_UPSTREAM_TOKEN", TOKEN)
    store = snapshot_store(reload_config())
    worker = subprocess.Popen([SONAE, "worker"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not list(store.directory.glob("*.tmp")) and worker.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        worker.send_signal(signal.SIGTERM)
        # An impatient operator's next ones change nothing, even while the
        # worker exits; a SIGINT right behind the SIGTERM is pending with it.
        for pause in [first_gap] + [0.1] * 5:
            if pause:
                time.sleep(pause)
            if worker.poll() is None:
                worker.send_signal(signal.SIGINT)
        out, err = worker.communicate(timeout=60)
    finally:
        server.stop()
    assert worker.returncode == 0, err
    # Named after the signal handled first: a SIGINT that arrives while the
    # SIGTERM is still pending (the interpreter busy in C) is handled first.
    reason = r"stopped by (SIGTERM|Ctrl-C \(SIGINT\)) before finishing; nothing half-done was kept and no generation is loaded yet"
    assert re.search(f"full export: {reason}\n", err), err
    assert err.rstrip().endswith("sonae worker: stopped") and "Traceback" not in err
    assert store.current() is None, "the load was stopped, not run to its end"
    assert not [p.name for p in store.directory.iterdir() if p.name.endswith((".tmp", ".deleting"))]
    (run,) = sync_runs(config)
    assert (run["kind"], run["outcome"]) == ("full", "stopped") and re.fullmatch(reason, run["error"]) and run["finished_at"] is not None


def test_a_stop_request_ends_a_change_feed_run_between_pages(loaded, upstream, monkeypatch):
    monkeypatch.setenv("SONAE_SYNC_CHANGES_BATCH", "10")
    upstream.changes = [change(1001 + i, make_resident(100 + i)) for i in range(50)]
    stopping = StopRequest()
    pages_fetched = []

    def page_then_stop(*args):
        pages_fetched.append(args)
        if len(pages_fetched) == 2:
            stopping.request(signal.SIGINT)
        return serve_page(*args)

    serve_page = upstream.serve_page
    upstream.serve_page = page_then_stop
    changes_job(reload_config(), stopping)
    last = sync_runs(loaded)[-1]
    with snapshot_store(loaded).open_register() as register:
        # The page fetched when the stop came may have been applied (it had
        # been fetched ahead); none after it.
        reached = register.meta.last_seq
        assert reached in (1010, 1020)
        as_of = register.meta.as_of.isoformat()
    assert len(pages_fetched) <= 3
    # IT reads how far the run came, not only that it stopped.
    assert (last["kind"], last["outcome"], last["generation"], last["as_of"]) == ("changes", "stopped", 1, as_of)
    assert last["error"] == (f"stopped by Ctrl-C (SIGINT) before finishing; the pages applied before it are kept "
                             f"(seq 1,000 → {reached:,}) and the next run applies the rest")
    assert (last["detail"]["from_seq"], last["detail"]["last_seq"]) == (1000, reached)


def test_a_change_feed_turn_is_skipped_while_another_sync_runs(loaded, store, upstream):
    upstream.changes = [change(1001, make_resident(100))]
    with store.write_lock():  # the nightly full export, say
        changes_job(reload_config(), StopRequest())
    assert [r["kind"] for r in sync_runs(loaded)] == ["full"], "nothing recorded: the turn was skipped, not refused"
    changes_job(reload_config(), StopRequest())
    assert sync_runs(loaded)[-1]["kind"] == "changes" and sync_runs(loaded)[-1]["outcome"] == "ok"


def test_retry_waits_for_a_held_lock():
    calls = []

    def busy_then_free():
        calls.append(1)
        if len(calls) == 1:
            raise SyncBusy("another sync is running")
        return "loaded"

    stopping = RecordingEvent()
    assert with_retry(busy_then_free, attempts=3, backoff_s=5, stopping=stopping, what="test") == "loaded"
    assert stopping.waits == [5]


def test_list_jobs(config):
    result = subprocess.run([SONAE, "worker", "--list-jobs"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "sync-full" in result.stdout and "sync-changes" in result.stdout and "cron[" in result.stdout
    lines = result.stdout.splitlines()
    # Every next run in the ward's zone (the jobs run at start were given theirs in UTC), in one column.
    assert all(re.search(r" next \d{4}-\d\d-\d\d \d\d:\d\d:\d\d JST  ", line) for line in lines), lines
    assert len({line.index(" next ") for line in lines}) == 1, lines


def test_the_workers_probe_never_refuses_a_sync_started_by_hand(loaded, store):
    """writer_active takes the lock for an instant; a writer arriving in that
    instant waits for it instead of being refused."""
    import fcntl
    import os

    probe = os.open(store.directory / LOCK_FILE, os.O_RDWR)
    fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the probe, caught holding it
    releaser = threading.Timer(0.05, os.close, args=(probe,))
    releaser.start()
    started = time.monotonic()
    try:
        with store.write_lock():
            waited = time.monotonic() - started
    finally:
        releaser.join()
    assert 0.04 < waited < LOCK_PATIENCE_S


def test_a_worker_without_its_home_folder_says_so_in_one_line(config, tmp_path):
    missing = tmp_path / "not-created"
    result = subprocess.run([SONAE, "worker"], capture_output=True, text=True, timeout=60, env={**os.environ, "SONAE_HOME": str(missing)})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().endswith(f"Error: {missing} (SONAE_HOME) is not a folder; create it for the user the services run as, "
                                          "or point SONAE_HOME at the appliance's folder")


def test_a_feed_run_stopped_before_its_first_page_says_none_was_applied(loaded, upstream):
    upstream.changes = [change(1001, make_resident(100))]

    def stop_at_once():
        raise SyncStopped(signal.SIGTERM)

    with pytest.raises(SyncStopped):
        run_changes(reload_config(), stop_if_asked=stop_at_once)
    last = sync_runs(loaded)[-1]
    assert last["error"] == "stopped by SIGTERM before finishing; no page was applied (still at seq 1,000); the next run fetches and applies the changes after it"
    # and a job due in the moment between a stop and the scheduler's shutdown does not start
    stopping = StopRequest()
    stopping.request(signal.SIGTERM)
    changes_job(reload_config(), stopping)
    assert sync_runs(loaded)[-1]["id"] == last["id"]


def test_a_job_the_full_disk_stops_is_logged_in_one_line_and_any_other_fault_with_its_traceback():
    """APScheduler logs a job's exception with its traceback: a full disk,
    which IT is alerted to already, made eight of them a minute."""
    import errno
    import io
    import logging

    from fallback.worker import DiskFaultsInOneLine

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("test.apscheduler.executors")
    logger.addHandler(handler)
    logger.addFilter(DiskFaultsInOneLine())
    try:
        for fault in (OSError(errno.ENOSPC, "No space left on device"), ValueError("a bug")):
            try:
                raise fault
            except Exception:
                logger.exception('Job "%s" raised an exception', "上流の監視")
    finally:
        logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert lines[0] == ('Job "上流の監視" raised an exception: the disk refused a write ([Errno 28] No space left on device); '
                        "runbooks/09-disk-full.md")
    assert lines[1] == 'Job "上流の監視" raised an exception' and lines[2] == "Traceback (most recent call last):"
    assert lines[-1] == "ValueError: a bug" and "Errno 28" not in "\n".join(lines[1:])

"""`sonae worker`: the scheduler process (sync, probes, alerts, reconciliation)."""

from __future__ import annotations

import logging
import os
import signal
import time

import click

from fallback.access import blocking_path, permission_message
from fallback.cli_support import configure_logging, service_config, service_running, the_only_worker, warn_without_config_file
from fallback.mirror.syncing import token_folder_message
from fallback.serve import claim_serial_ranges


def refuse_an_unreadable_token(config) -> None:
    """The worker asks the upstream with the token file's token: one this
    uid may not read, or a folder in its place, is refused at start in one
    line, never taken for an upstream that does not answer. (A token file not there at all is
    doctor's finding and, while the worker runs, the same IT alert.)"""
    path = config["upstream"]["token_file"]
    if config["upstream"]["token"]:
        return
    if os.path.isdir(path):
        raise click.ClickException(token_folder_message(path))
    if blocking_path(path):
        raise click.ClickException(permission_message(path))


@click.command()
@click.option("--list-jobs", is_flag=True, help="Print the jobs and their next run times, then exit.")
def worker(list_jobs):
    """Run the scheduled jobs until stopped (SIGTERM or Ctrl-C): the nightly
    full export on sync.full_cron and the change feed every
    sync.changes_interval_s. Stopping ends a running sync at its next step
    (recorded as stopped), then the worker exits."""
    from fallback.mirror.syncing import StopRequest

    stopping = StopRequest()
    if list_jobs:
        _list_jobs(stopping)
        return
    # At once: a signal while the worker starts stops it as cleanly.
    _stop_on_signals(stopping)
    try:
        _run_jobs(stopping)
    finally:
        _ignore_further_stops()
    click.echo("sonae worker: stopped", err=True)


def _list_jobs(stopping) -> None:
    from fallback.worker import build_scheduler

    config = service_config()
    refuse_an_unreadable_token(config)
    scheduler = build_scheduler(config, stopping)
    scheduler.start(paused=True)  # next run times are computed on start
    jobs = scheduler.get_jobs()
    width = max(len(job.id) for job in jobs)
    for job in jobs:
        # A job run at start was given its first time in UTC: shown, like the others, in the ward's zone.
        next_run = job.next_run_time.astimezone(scheduler.timezone)
        click.echo(f"{job.id:<{width}}  next {next_run:%Y-%m-%d %H:%M:%S %Z}  {job.trigger}")
    scheduler.shutdown(wait=False)


def _run_jobs(stopping) -> None:
    from fallback.worker import DiskFaultsInOneLine, build_scheduler

    config = service_config()
    refuse_an_unreadable_token(config)
    with service_running(config), the_only_worker(config):
        claim_serial_ranges(config)  # a box that is not itself in ops.db runs nothing
        configure_logging()
        logging.getLogger("apscheduler.executors.default").addFilter(DiskFaultsInOneLine())
        warn_without_config_file(config)
        from fallback.mirror.syncing import reclaim_leftovers

        reclaim_leftovers(config)  # a killed load's gen-N.tmp may be the size of a generation
        scheduler = build_scheduler(config, stopping)
        if stopping.signum is None:
            click.echo("sonae worker: started; stop with SIGTERM or Ctrl-C", err=True)
            scheduler.start()
            # Polled rather than waited for: a handler that set an event the
            # main thread is waiting on could meet that event's lock held.
            while stopping.signum is None:
                time.sleep(0.2)
            click.echo(f"sonae worker: {signal.Signals(stopping.signum).name}; stopping (a running sync stops at its next step)", err=True)
            scheduler.shutdown(wait=True)


def _stop_on_signals(stopping) -> None:
    """SIGTERM and Ctrl-C request the stop; the ones after the first change
    nothing: it is being carried out."""
    # The handler stays for the later ones rather than setting SIG_IGN from
    # within: a signal already pending when it did so (a SIGTERM behind a
    # SIGINT, handled in number order) met SIG_IGN, and CPython printed
    # "Signal 15 ignored due to race condition" with a traceback.
    def stop(signum, frame):
        if stopping.signum is None:
            stopping.request(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


def _ignore_further_stops() -> None:
    """From here to the process's end: as the interpreter finalises it puts
    back the default action for its handlers, and a late Ctrl-C would then
    kill a worker that has already stopped cleanly. (signal.signal runs the
    handler for any signal already pending before it changes it.)"""
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, signal.SIG_IGN)

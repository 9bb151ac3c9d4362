"""`sonae sync full|changes|status`: load the upstream register into the
snapshot store and keep it current."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import signal
from collections.abc import Iterator

import click

from fallback.cli_support import config as load_config
from fallback.cli_support import operator
from fallback.mirror.syncing import (
    SyncStopped,
    full_export_due,
    latest_load_anomalies,
    recent_runs,
    run_changes,
    run_full_sync,
    snapshot_store,
    stopped_reason,
)
from fallback.ops import TOKYO, now, open_ops
from sync.anomalies import OVERRIDE_DUPLICATE_ATENA, positions_text
from sync.errors import UpstreamUnavailable
from sync.loader import OVERRIDE_CONTRACT_1, OVERRIDE_DROP, OVERRIDE_MUNICIPALITY, OVERRIDE_OLDER_EXPORT, OVERRIDE_UNKNOWN_SEAL_RESIDENTS


def jst(moment) -> str:
    return moment.astimezone(TOKYO).strftime("%Y-%m-%d %H:%M JST")


def jst_text(stamp: str | None) -> str:
    """A stored ISO time as every other time these commands print."""
    return dt.datetime.fromisoformat(stamp).astimezone(TOKYO).strftime("%Y-%m-%d %H:%M:%S JST") if stamp else "-"


AHEAD_OF_THE_CLOCK = "data as of after this box's clock: check the clock, runbooks/10-tokei.md"


def clock_behind(meta, moment) -> bool:
    """A copy dated after now: this box's clock is behind (the data cannot be from the future)."""
    return meta.age(moment).total_seconds() < 0


@click.group("sync")
def sync_group():
    """Mirror the upstream resident register into encrypted snapshots."""


@sync_group.command("full")
@click.option("--from", "source_dir", type=click.Path(exists=True, file_okay=False), help="Load an export directory (manifest.json beside its files) instead of the upstream URL.")
@click.option("--allow-drop", is_flag=True, help="Accept an export whose record count dropped by more than sync.max_drop_ratio.")
@click.option("--allow-unknown-seal-residents", is_flag=True, help="Accept seals that point at residents not in the export.")
@click.option("--allow-municipality-mismatch", is_flag=True, help="Accept an export for another municipality code.")
@click.option("--allow-older-export", is_flag=True, help="Accept an export older than the one held (lower export_seq or earlier as_of): it undoes the changes since.")
@click.option("--allow-contract-1", is_flag=True, help="Accept a contract version 1 export (with --from only): it has no export_seq for the replay rule.")
@click.option("--allow-duplicate-atena", is_flag=True, help="Accept an export in which residents share a 宛名番号 (the standard gives each person one).")
@click.option("--actor", help="Who runs this, for the audit log (default: the OS user).")
def full(source_dir, allow_drop, allow_unknown_seal_residents, allow_municipality_mismatch, allow_older_export, allow_contract_1,
         allow_duplicate_atena, actor):
    """Load the latest full export as a new snapshot generation.

    The export is verified (signature, checksums, counts, every record, its
    order and time) and gated before it replaces the current generation; if
    anything is wrong the current generation keeps serving and the reason
    is printed and recorded. Override flags are audited.
    """
    if allow_contract_1 and not source_dir:
        raise click.UsageError("--allow-contract-1 needs --from DIR: a version 1 export is accepted only dropped into a directory")
    flags = {OVERRIDE_DROP: allow_drop, OVERRIDE_UNKNOWN_SEAL_RESIDENTS: allow_unknown_seal_residents, OVERRIDE_MUNICIPALITY: allow_municipality_mismatch,
             OVERRIDE_OLDER_EXPORT: allow_older_export, OVERRIDE_CONTRACT_1: allow_contract_1, OVERRIDE_DUPLICATE_ATENA: allow_duplicate_atena}
    config = load_config()
    with StopSignals().installed() as stop, upstream_down_said(config):
        result = run_full_sync(config, source_dir, {name for name, given in flags.items() if given}, operator(actor), committing=stop.hold)
    sequence = f"export_seq {result.export_seq:,}" if result.export_seq is not None else "contract 1, no export_seq"
    click.echo(
        f"generation {result.generation} is current: {result.residents:,} residents, {result.seals:,} seals, "
        f"data as of {jst(result.as_of)} (export {result.export_id}, {sequence}{_caught_up(result)}), loaded in {result.seconds:.1f} s"
    )
    for waived in result.overridden:
        click.echo(f"overridden (audited): {waived}")
    if result.pruned:
        click.echo(f"pruned generation(s) {', '.join(map(str, result.pruned))}")
    click.echo(_anomaly_line(result.anomalies.figures()))


class StopSignals:
    """How SIGTERM and Ctrl-C stop a sync run from the command line: as an
    error would — the run unwinds, is recorded as stopped, and the operator
    reads what that left in one line (not a silent death, nor click's bare
    "Aborted!"), with exit status 128 + the signal, as a shell reports a
    process the signal ended.

    Only the first signal counts: a second one (an impatient Ctrl-C) would
    cut short the clean-up the first started, or kill the process while it
    says why. And once the load is
    committing (built, checked, being installed and promoted) a signal is
    held back until the run has ended, rather than report a load that
    happened as one that did not."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._committing = False

    def hold(self) -> None:
        self._committing = True

    def _arrived(self, signum, frame) -> None:
        # The ones after it are ignored here, not by setting SIG_IGN from
        # within: one already pending then (a SIGTERM behind a Ctrl-C,
        # handled in number order) met SIG_IGN, and CPython printed "Signal
        # 15 ignored due to race condition" with a traceback.
        if self.received is not None:
            return
        self.received = signum
        if not self._committing:
            raise SyncStopped(signum)

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopSignals]:
        previous = {signum: signal.signal(signum, self._arrived) for signum in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield self
        except SyncStopped as exc:
            stopped = click.ClickException(stopped_reason(exc) + "; rerun when ready")
            stopped.exit_code = 128 + exc.signum
            raise stopped from None
        finally:
            if self.received is None:
                for signum, handler in previous.items():
                    signal.signal(signum, handler)
            else:
                # To the process's end: as the interpreter exits it puts back
                # the default action, and a late Ctrl-C would kill the process
                # while it says why. (signal.signal first runs the handler
                # for any signal already pending.)
                for signum in previous:
                    signal.signal(signum, signal.SIG_IGN)
        if self.received is not None:
            click.echo(f"{signal.Signals(self.received).name} arrived while the new generation was being installed: "
                       "the load was completed first", err=True)


@contextlib.contextmanager
def upstream_down_said(config) -> Iterator[None]:
    """A sync by hand that found the upstream not answering says what that
    leaves and what happens next, as the other refusals do."""
    try:
        yield
    except UpstreamUnavailable as exc:
        current = snapshot_store(config).current_if_readable()
        keeps = f"generation {current} keeps serving" if current is not None else "no generation is loaded yet"
        raise click.ClickException(f"{exc}; {keeps}, and the worker retries on its own every sync.changes_interval_s — "
                                   "rerun by hand once the upstream answers (the IT dashboard shows when it does)") from None


def _caught_up(result) -> str:
    """The catch-up on the change feed that brought the new generation level
    with the serving one, if there was one: its data is then newer than the
    export's, and the time it took is part of the load's."""
    if result.last_seq == result.export_last_seq:
        return ""
    seconds = result.phases.get("catch-up on the change feed", 0.0)
    return f", then caught up on the change feed from seq {result.export_last_seq:,} to {result.last_seq:,} in {seconds:.1f} s"


def _anomaly_line(anomalies: dict) -> str:
    """The upstream data anomalies of a load, with counts and a few examples."""
    counts = anomalies["counts"]
    line = "upstream data anomalies: " + ", ".join(f"{kind} {count:,}" for kind, count in counts.items())
    # `positions`: where in the export (older runs recorded resident codes, never shown)
    examples = "; ".join(f"{kind}: {positions_text(kind, lines)}" for kind, lines in anomalies.get("positions", {}).items())
    return f"{line} (e.g. {examples})" if examples else line


@sync_group.command("changes")
@click.option("--actor", help="Who runs this, for the sync record (default: the OS user).")
def changes(actor):
    """Apply the upstream change feed to the current generation."""
    config = load_config()
    with StopSignals().installed(), upstream_down_said(config):
        result = run_changes(config, operator(actor))
    click.echo(
        f"generation {result.generation}: {result.applied:,} change(s) applied, {result.skipped:,} skipped as not newer; "
        f"seq {result.from_seq:,} → {result.last_seq:,}; data as of {jst(result.as_of)}"
    )


@sync_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(as_json):
    """The current generation, its data age, whether a full export is due,
    and the latest sync runs."""
    config = load_config()
    store = snapshot_store(config)
    current = store.current()
    meta = None
    if current is not None:
        with store.open_register(current) as register:
            meta = register.meta
    due = full_export_due(config)
    runs = recent_runs(config, 10)
    ops = open_ops(config)
    try:
        anomalies = latest_load_anomalies(ops)
    finally:
        ops.close()
    if as_json:
        click.echo(json.dumps({
            "generation": current,
            "as_of": meta.as_of.isoformat() if meta else None,
            "age_hours": round(meta.age(now()).total_seconds() / 3600, 2) if meta else None,
            "last_seq": meta.last_seq if meta else None,
            "export_seq": meta.export_seq if meta else None,
            "full_export_due": due,
            "anomalies": anomalies,
            "runs": runs,
        }, ensure_ascii=False, indent=2))
        return
    if meta is None:
        click.echo("no snapshot loaded yet")
    else:
        moment = now()
        age = f"{AHEAD_OF_THE_CLOCK}" if clock_behind(meta, moment) else f"{meta.age(moment).total_seconds() / 3600:.1f} h old"
        click.echo(f"generation {current}: data as of {jst(meta.as_of)} ({age}), seq {meta.last_seq:,}, "
                   f"{meta.residents:,} residents, {meta.seals:,} seals")
    click.echo(f"full export due: {due}" if due else "full export due: no")
    if anomalies:
        click.echo(f"last full load ({jst_text(anomalies['started_at'])}): {_anomaly_line(anomalies)}")
    for run in runs:
        click.echo(f"  {jst_text(run['started_at'])}  {run['kind']:<8} {run['outcome']:<8} {run['error'] or ''}")

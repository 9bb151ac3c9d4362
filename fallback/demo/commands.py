"""`sonae demo`: a working appliance on one machine — cloudsim as the cloud
register, a full sync, the worker, the counter app — with one account per
role. It drives the real commands as subprocesses, exactly as a ward's box
runs them, so the demo exercises what production runs."""

from __future__ import annotations

import shutil
import signal
import sys
import time
from pathlib import Path

import click

from fallback.demo.outage_day import FAULTS, DayOptions, run_outage_day
from fallback.demo.site import DemoSite


@click.group("demo")
def demo_group():
    """Demonstrations on one machine (synthetic data only)."""


@demo_group.command("run")
@click.option("--dir", "root", type=click.Path(file_okay=False, path_type=Path), default=Path("demo-state"), show_default=True)
@click.option("--residents", type=int, default=20000, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--port", "web_port", type=int, default=8080, show_default=True)
@click.option("--upstream-port", type=int, default=8700, show_default=True)
@click.option("--fresh", is_flag=True, help="Delete the demo directory first.")
def run_demo(root, residents, seed, web_port, upstream_port, fresh):
    """Start cloudsim, sync, the worker and the counter app; print the
    accounts; run until Ctrl+C."""
    if fresh and root.exists():
        shutil.rmtree(root)
    site = DemoSite(root, residents=residents, seed=seed, web_port=web_port, upstream_port=upstream_port)
    # `kill` (SIGTERM) must stop the children too, as Ctrl+C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        click.echo(f"starting cloudsim with {residents:,} synthetic residents …", err=True)
        upstream = site.start_cloudsim()
        site.configure(upstream)
        click.echo("loading the full export …", err=True)
        click.echo(site.run("sync", "full", "--actor", "demo").strip(), err=True)
        accounts = site.seed_accounts()
        site.start("worker", log="worker.log")
        site.start("serve", log="web.log")
        click.echo(f"\nSonae demo: http://127.0.0.1:{web_port}/\n")
        click.echo("accounts (username / role / password):")
        for username, role, password in accounts:
            click.echo(f"  {username:12} {role:18} {password}")
        click.echo("\nThe counters are locked until a supervisor declares downtime: log in as kakaricho,")
        click.echo("open 係長メニュー and declare ダウン対策モード; then log in as madoguchi1 to search and issue.")
        click.echo("Ctrl+C stops everything.")
        while all(p.poll() is None for p in site.processes):
            time.sleep(1)
        raise click.ClickException(f"a demo process exited; see the logs in {site.root / 'logs'}")
    except KeyboardInterrupt:
        click.echo("\nstopping …", err=True)
    finally:
        site.stop()


@demo_group.command("outage")
@click.option("--dir", "root", type=click.Path(file_okay=False, path_type=Path), default=Path("demo-outage"), show_default=True,
              help="State of the day; the upstream's generated register in DIR/cloudsim is reused, the rest starts afresh.")
@click.option("--residents", type=int, default=100_000, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--port", "web_port", type=int, default=8080, show_default=True)
@click.option("--upstream-port", type=int, default=8700, show_default=True)
@click.option("--change-rate", type=float, default=30.0, show_default=True, help="upstream changes per minute on the live feed")
@click.option("--probe-interval", type=click.IntRange(1), default=2, show_default=True, help="seconds between probes of the upstream")
@click.option("--fault", "faults", multiple=True, type=click.Choice(list(FAULTS)),
              help="inject a fault during the day (repeatable); see fallback/outage_day.py")
@click.option("--flap-every", type=float, default=30.0, show_default=True, help="seconds between flips of the flapping fault")
@click.option("--printer-queue", default="", help="CUPS queue of the first counter (printing; needed by printer_stopped)")
@click.option("--screenshots", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="where the PNG of each step goes [default: DIR/screenshots]")
def outage_demo(root, residents, seed, web_port, upstream_port, change_rate, probe_interval, faults, flap_every, printer_queue, screenshots):
    """The outage day, scripted: the upstream goes down, alerts arrive, a
    supervisor declares downtime and three counters work in headless
    Chromium; on a second day they take 届出 and meet holds; the upstream
    comes back, reconciliation lists the certificates at risk, the re-entry
    files and the incident report are written to DIR."""
    options = DayOptions(residents=residents, seed=seed, change_rate=change_rate, probe_interval_s=probe_interval,
                         faults=frozenset(faults), flap_every_s=flap_every, printer_queue=printer_queue,
                         screenshots=screenshots or root / "screenshots", web_port=web_port, upstream_port=upstream_port)
    # `kill` (SIGTERM) must stop the children too, as Ctrl+C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    record = run_outage_day(root, options, say=lambda line: click.echo(line, err=True))
    (root / "incident-report.md").write_text(record.report_markdown, encoding="utf-8")
    (root / "incident-report.pdf").write_bytes(record.report_pdf)
    click.echo(f"\nThe outage day ({residents:,} residents{', faults: ' + ', '.join(sorted(faults)) if faults else ''}):")
    click.echo(f"  alerts received by mail (and webhook): {len(record.mails)}")
    for subject in record.mails:
        click.echo(f"    {subject}")
    click.echo(f"  certificates issued: {record.certificates} in {len(record.issued)} requests; refused: "
               f"{', '.join(r.rule for r in record.refused)}; deferred requests: {len(record.deferred)}")
    if record.filings:
        reentry = root / "reentry"
        reentry.mkdir(exist_ok=True)
        for kind, content in record.reentry_files.items():
            (reentry / f"{kind}.csv").write_bytes(content)
        (reentry / "worklist.pdf").write_bytes(record.worklist_pdf)
        (reentry / "issuance-history.csv").write_text(record.issuance_history_csv, encoding="utf-8-sig")
        click.echo(f"  day two: {len(record.filings)} 届出 taken, {sum(len(f.holds) for f in record.filings) + len(record.holds)} holds "
                   f"({len(record.reconciled_holds)} reconciled with the register after recovery); re-entry files, the worklist "
                   f"({len(record.ticked)} ticked off) and the issuance history in {reentry}")
    click.echo(f"  incident report: {root / 'incident-report.md'} and .pdf; screenshots: {options.screenshots}")
    if record.problems:
        raise click.ClickException("the issuance log is not consistent: " + "; ".join(record.problems))
    click.echo("  issuance log consistent; `sonae audit verify` passes")

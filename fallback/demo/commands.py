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
from fallback.demo.site import DemoSite, training_password_problem


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
@click.option("--password", envvar="SONAE_DEMO_PASSWORD", default=None,
              help="one fixed password for every demo account (a training room); default: a fresh random one each")
def run_demo(root, residents, seed, web_port, upstream_port, fresh, password):
    """Start cloudsim, sync, the worker and the counter app; print the
    accounts; run until Ctrl+C."""
    if password is not None and (problem := training_password_problem(password)):
        raise click.ClickException(problem)
    if fresh and root.exists():
        shutil.rmtree(root)
    site = DemoSite(root, residents=residents, seed=seed, web_port=web_port, upstream_port=upstream_port)
    site.check_ports()
    # `kill` (SIGTERM) must stop the children too, as Ctrl+C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        click.echo(f"starting cloudsim with {residents:,} synthetic residents …", err=True)
        upstream = site.start_cloudsim()
        site.configure(upstream)
        click.echo("loading the full export …", err=True)
        click.echo(site.run("sync", "full", "--actor", "demo").strip(), err=True)
        accounts = site.seed_accounts(password)
        site.start("worker", log="worker.log")
        site.wait_for_web(site.start("serve", log="web.log"))
        click.echo(f"\nSonae demo: http://127.0.0.1:{web_port}/\n")
        click.echo("accounts (username / role / password):")
        for username, role, account_password in accounts:
            click.echo(f"  {username:12} {role:18} {account_password}")
        click.echo("\nThe counters are locked until a supervisor declares downtime: log in as kakaricho,")
        click.echo("open 係長メニュー and declare ダウン対策モード. A counter PC is registered once at /terminal")
        click.echo("(kakaricho's password); then log in as madoguchi1 there to search and issue.")
        click.echo(f"\nThe cloud register (cloudsim): {upstream['url']}; its admin port: {upstream['admin_url']}")
        click.echo(f"  (bearer token in {site.etc / 'upstream.token'}). Make it fail and come back:")
        click.echo(f"  sonae demo cloud down --dir {root}    sonae demo cloud up --dir {root}")
        click.echo("Ctrl+C stops everything.")
        while all(p.poll() is None for p in site.processes):
            time.sleep(1)
        raise click.ClickException(f"a demo process exited; see the logs in {site.root / 'logs'}")
    except KeyboardInterrupt:
        click.echo("\nstopping …", err=True)
    finally:
        site.stop()


@demo_group.group("cloud")
def cloud_group():
    """Make the running demo's cloud register fail, and come back."""


def _dir_option(command):
    return click.option("--dir", "root", type=click.Path(file_okay=False, path_type=Path), default=Path("demo-state"),
                        show_default=True, help="the directory of `sonae demo run`")(command)


def _site(root: Path) -> DemoSite:
    return DemoSite(root, residents=0, seed=0, web_port=0, upstream_port=0)


@cloud_group.command("down")
@_dir_option
def cloud_down(root):
    """The cloud register stops answering (an outage, as cloudsim's `down` fault)."""
    _site(root).cloud(down=True)
    click.echo("the cloud register is down: the worker's probes notice within three probes (about 30 s), "
               "IT's dashboard (監視) says so, and a supervisor can declare ダウン対策モード")


@cloud_group.command("up")
@_dir_option
def cloud_up(root):
    """The cloud register answers again."""
    _site(root).cloud(down=False)
    click.echo("the cloud register is back: the probes see it within two probes; a supervisor ends downtime (復旧確認へ)")


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
    DemoSite(root, residents=residents, seed=seed, web_port=web_port, upstream_port=upstream_port).check_ports()
    options = DayOptions(residents=residents, seed=seed, change_rate=change_rate, probe_interval_s=probe_interval,
                         faults=frozenset(faults), flap_every_s=flap_every, printer_queue=printer_queue,
                         screenshots=screenshots or root / "screenshots", web_port=web_port, upstream_port=upstream_port)
    # `kill` (SIGTERM) must stop the children too, as Ctrl+C does, and the
    # day that ends so says why (a silent exit 1 reads like a crash).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("the outage day was stopped by SIGTERM; its servers are stopped too"))
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

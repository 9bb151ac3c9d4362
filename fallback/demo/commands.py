"""`sonae demo`: a working appliance on one machine — cloudsim as the cloud
register, a full sync, the worker, the counter app — with one account per
role. It drives the real commands as subprocesses, exactly as a ward's box
runs them, so the demo exercises what production runs."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import click

from fallback.config import DEFAULTS, render_toml
from fallback.outage_day import FAULTS, DayOptions, run_outage_day
from sync.crypto import write_key_file

DEMO_ACCOUNTS = (
    ("madoguchi1", "窓口 一郎", "clerk"),
    ("madoguchi2", "窓口 二郎", "clerk"),
    ("madoguchi3", "窓口 三子", "clerk"),
    ("kakaricho", "係長 花子", "supervisor"),
    ("kunren", "訓練 担当", "drill_coordinator"),
    ("joho", "情報 政策", "it"),
    ("kansa", "監査 太郎", "auditor"),
)


class DemoSite:
    """Paths and processes of one demo installation under `root`."""

    def __init__(self, root: Path, *, residents: int, seed: int, web_port: int, upstream_port: int):
        self.root = root.resolve()
        self.home = self.root / "home"
        self.etc = self.root / "etc"
        self.cloudsim_dir = self.root / "cloudsim"
        self.residents, self.seed = residents, seed
        self.web_port, self.upstream_port = web_port, upstream_port
        self.processes: list[subprocess.Popen] = []

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(SONAE_HOME=str(self.home), SONAE_CONFIG=str(self.etc / "sonae.toml"))
        return env

    def sonae(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "fallback.cli", *args]

    def run(self, *args: str) -> str:
        result = subprocess.run(self.sonae(*args), env=self.env, capture_output=True, text=True)
        if result.returncode != 0:
            raise click.ClickException(f"`sonae {' '.join(args)}` failed: {result.stderr.strip().splitlines()[-1:] or result.returncode}")
        return result.stdout

    def start(self, *args: str, log: str) -> subprocess.Popen:
        self.root.joinpath("logs").mkdir(parents=True, exist_ok=True)
        with open(self.root / "logs" / log, "ab") as out:
            process = subprocess.Popen(self.sonae(*args), env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.processes.append(process)
        return process

    def start_cloudsim(self, change_rate: float | None = None) -> dict:
        """Start cloudsim (changes per minute on its live feed: its default
        unless given) and wait until it serves."""
        self.etc.mkdir(parents=True, exist_ok=True)
        ready = self.root / "cloudsim-ready.json"
        ready.unlink(missing_ok=True)
        token = (self.etc / "upstream.token")
        if not token.exists():
            token.write_text(secrets.token_urlsafe(24))
            token.chmod(0o600)
        self.start(
            "cloudsim", "serve", "--residents", str(self.residents), "--seed", str(self.seed),
            "--port", str(self.upstream_port), "--admin-port", str(self.upstream_port + 1),
            "--token", token.read_text().strip(), "--key-file", str(self.etc / "upstream-signing.key"),
            "--state-dir", str(self.cloudsim_dir), "--ready-file", str(ready),
            *([] if change_rate is None else ["--change-rate", str(change_rate)]),
            log="cloudsim.log",
        )
        deadline = time.monotonic() + 300
        while not ready.exists():
            if self.processes[-1].poll() is not None:
                raise click.ClickException(f"cloudsim exited; see {self.root / 'logs' / 'cloudsim.log'}")
            if time.monotonic() > deadline:
                raise click.ClickException("cloudsim did not become ready within 5 minutes")
            time.sleep(0.2)
        return json.loads(ready.read_text())

    def configure(self, upstream: dict, extra: dict | None = None) -> None:
        """Write keys and sonae.toml; `extra` overrides keys per section."""
        for name in ("master.key", "signing.key"):
            if not (self.etc / name).exists():
                write_key_file(self.etc / name)
        values = {section: dict(items) for section, items in DEFAULTS.items()}
        values["upstream"].update(url=upstream["url"], token_file=str(self.etc / "upstream.token"), public_key=upstream["public_key"])
        values["security"].update(key_file=str(self.etc / "master.key"), signing_key_file=str(self.etc / "signing.key"),
                                  secret_key_file=str(self.etc / "session.key"))
        values["web"].update(port=self.web_port, public_base_url=f"http://127.0.0.1:{self.web_port}")
        values["probes"].update(interval_s=10)
        for section, items in (extra or {}).items():
            values[section].update(items)
        (self.etc / "sonae.toml").write_text(render_toml(values), encoding="utf-8")
        self.home.mkdir(parents=True, exist_ok=True)

    def seed_accounts(self) -> list[tuple[str, str, str]]:
        existing = self.run("user", "list")
        created = []
        for username, display, role in DEMO_ACCOUNTS:
            password = secrets.token_urlsafe(9)
            if f"{username}\t" in existing:
                self.run("user", "reset", username, "--password", password, "--actor", "demo")
            else:
                self.run("user", "add", username, "--name", display, "--role", role, "--password", password, "--actor", "demo")
            created.append((username, role, password))
        return created

    def kill(self, process: subprocess.Popen) -> None:
        """SIGKILL one of the processes (and its children), as a crash or
        the OOM killer would; it is no longer one of the site's."""
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        self.processes.remove(process)

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


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
    Chromium; the upstream comes back, reconciliation lists the certificates
    at risk and the incident report is written to DIR."""
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
    click.echo(f"  incident report: {root / 'incident-report.md'} and .pdf; screenshots: {options.screenshots}")
    if record.problems:
        raise click.ClickException("the issuance log is not consistent: " + "; ".join(record.problems))
    click.echo("  issuance log consistent; `sonae audit verify` passes")

"""One demo installation: its paths, its configuration and accounts, and the
real `sonae` and `cloudsim` processes it runs, shared by `sonae demo run`
and the scripted outage day."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import click
import requests

from fallback.config import DEFAULTS, render_toml
from fallback.staff import users
from fallback.staff.commands import PASSWORD_ENV
from printing.model import SPECIMEN_SEAL_IMAGE
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

def training_password_problem(password: str) -> str | None:
    """Why `password` cannot be every demo account's, by the rules `sonae
    user add` applies to each, or None. Asked before anything starts: a
    refusal halfway would leave a half-built demo. Never shows the password."""
    for username, _, _ in DEMO_ACCOUNTS:
        if problem := users.password_problem(password, username):
            names = ", ".join(name for name, _, _ in DEMO_ACCOUNTS)
            return (f"--password cannot be used for demo account {username}: {problem}. Choose one of at least "
                    f"{users.MIN_PASSWORD_LENGTH} characters, not a common password, that contains none of the account names "
                    f"({names}), or leave out --password for a random one per account")
    return None


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

    def check_ports(self) -> None:
        """Refuse to start, in one line, when a port the demo needs is taken:
        never a URL and passwords that would lead to another program."""
        wanted = ((self.web_port, "the counter app, --port"), (self.upstream_port, "cloudsim, --upstream-port"),
                  (self.upstream_port + 1, "cloudsim's admin port, --upstream-port + 1"))
        for port, what in wanted:
            with socket.socket() as probe:
                # As the servers bind: a connection of an earlier run left in
                # TIME_WAIT (the outage day's, just before) is no program.
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind(("127.0.0.1", port))
                except OSError as exc:
                    raise click.ClickException(
                        f"port {port} ({what}) is already in use by another program ({exc.strerror}): "
                        "stop that program or choose another port") from None

    def wait_for_web(self, process: subprocess.Popen, timeout_s: float = 60) -> None:
        """Wait until this demo's own counter app answers (not another server
        on the port); a web server that exited is named with its log."""
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                raise click.ClickException(f"the counter app exited; see {self.root / 'logs' / 'web.log'}")
            try:
                if requests.get(f"http://127.0.0.1:{self.web_port}/healthz", timeout=2).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise click.ClickException(f"the counter app did not answer on port {self.web_port} within {timeout_s:.0f} s")
            time.sleep(0.3)

    @property
    def upstream(self) -> dict:
        """What cloudsim wrote once it served: url, admin_url, token, …"""
        ready = self.root / "cloudsim-ready.json"
        if not ready.exists():
            raise click.ClickException(f"no demo cloud register in {self.root}: start it with `sonae demo run --dir {self.root}`")
        return json.loads(ready.read_text())

    def cloud(self, *, down: bool) -> None:
        """Make the demo's cloud register fail (every request refused, as in
        an outage) or come back, through cloudsim's admin port."""
        upstream = self.upstream
        url = upstream["admin_url"].rstrip("/") + "/admin/faults/down"
        try:
            answer = requests.request("PUT" if down else "DELETE", url, timeout=30,
                                      headers={"Authorization": f"Bearer {upstream['token']}"})
        except requests.ConnectionError:
            raise click.ClickException(f"the demo's cloudsim does not answer at {upstream['admin_url']}: is `sonae demo run` running?") from None
        if answer.status_code != 200:
            raise click.ClickException(f"cloudsim refused {answer.request.method} {url}: HTTP {answer.status_code}")

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(SONAE_HOME=str(self.home), SONAE_CONFIG=str(self.etc / "sonae.toml"))
        return env

    def sonae(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "fallback.cli", *args]

    def run(self, *args: str, secrets_env: dict[str, str] | None = None) -> str:
        """`sonae *args`, its output; `secrets_env` as for start()."""
        result = subprocess.run(self.sonae(*args), env={**self.env, **(secrets_env or {})}, capture_output=True, text=True)
        if result.returncode != 0:
            raise click.ClickException(f"`sonae {' '.join(args)}` failed: {result.stderr.strip().splitlines()[-1:] or result.returncode}")
        return result.stdout

    def start(self, *args: str, log: str, secrets_env: dict[str, str] | None = None) -> subprocess.Popen:
        """`sonae *args` in the background, its output in logs/`log`;
        `secrets_env` reaches it in its environment, which other users
        cannot read, rather than on its command line, which they can."""
        self.root.joinpath("logs").mkdir(parents=True, exist_ok=True)
        with open(self.root / "logs" / log, "ab") as out:
            process = subprocess.Popen(self.sonae(*args), env={**self.env, **(secrets_env or {})}, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
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
            "--key-file", str(self.etc / "upstream-signing.key"),
            "--state-dir", str(self.cloudsim_dir), "--ready-file", str(ready),
            *([] if change_rate is None else ["--change-rate", str(change_rate)]),
            log="cloudsim.log", secrets_env={"SONAE_CLOUDSIM_TOKEN": token.read_text().strip()},
        )
        # Generating takes ≈ 40 s a million residents on two idle cores: room
        # for a busy machine, the hang guard only.
        minutes = 5 + 5 * self.residents // 1_000_000
        deadline = time.monotonic() + 60 * minutes
        while not ready.exists():
            if self.processes[-1].poll() is not None:
                raise click.ClickException(f"cloudsim exited; see {self.root / 'logs' / 'cloudsim.log'}")
            if time.monotonic() > deadline:
                raise click.ClickException(f"cloudsim did not become ready within {minutes} minutes; see {self.root / 'logs' / 'cloudsim.log'}")
            time.sleep(0.2)
        return json.loads(ready.read_text())

    def configure(self, upstream: dict, extra: dict | None = None) -> None:
        """Write keys and sonae.toml; `extra` overrides keys per section."""
        for name in ("master.key", "signing.key"):
            if not (self.etc / name).exists():
                write_key_file(self.etc / name)
        values = {section: dict(items) for section, items in DEFAULTS.items()}
        values["upstream"].update(url=upstream["url"], token_file=str(self.etc / "upstream.token"), public_key=upstream["public_key"],
                                  allow_insecure_http=True)  # cloudsim serves plain http on loopback
        values["security"].update(key_file=str(self.etc / "master.key"), signing_key_file=str(self.etc / "signing.key"),
                                  secret_key_file=str(self.etc / "session.key"))
        values["web"].update(port=self.web_port, public_base_url=f"http://127.0.0.1:{self.web_port}")
        values["probes"].update(interval_s=10)
        values["printing"].update(official_seal_image=str(SPECIMEN_SEAL_IMAGE))  # the synthetic 見本 電子公印, never a ward's
        for section, items in (extra or {}).items():
            values[section].update(items)
        (self.etc / "sonae.toml").write_text(render_toml(values), encoding="utf-8")
        self.home.mkdir(parents=True, exist_ok=True)

    def seed_accounts(self, password: str | None = None) -> list[tuple[str, str, str]]:
        """One account per role; each with a fresh random password, or all
        with `password` (a training room's fixed one; the password rules
        still apply, to every account before any is made, and a refusal
        names the account and the rule)."""
        if password is not None and (problem := training_password_problem(password)):
            raise click.ClickException(problem)
        existing = self.run("user", "list")
        created = []
        for username, display, role in DEMO_ACCOUNTS:
            password_of_account = password or secrets.token_urlsafe(9)
            given = {PASSWORD_ENV: password_of_account}
            if f"{username}\t" in existing:
                self.run("user", "reset", username, "--actor", "demo", secrets_env=given)
            else:
                self.run("user", "add", username, "--name", display, "--role", role, "--actor", "demo", secrets_env=given)
            created.append((username, role, password_of_account))
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

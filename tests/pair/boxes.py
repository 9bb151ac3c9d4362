"""The boxes of a pair as the tests run them: real `sonae` processes, each
box with its own configuration (box id, serial ranges, the audit anchor on
its own disk) over a state directory, and, where a test needs two hosts on
one machine, a UTS namespace with the other box's host name."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from fallback.demo.outage_day import free_ports
from tests.support import PASSWORD, register_terminal_over_http

# Box 1 and box 2 of the runbook's example: each its own half of the
# appliance's default ranges.
BOX_1_RANGES = ((900001, 949999), (800001, 849999))
BOX_2_RANGES = ((950000, 999999), (850000, 899999))


@dataclass(frozen=True)
class Box:
    box_id: str
    home: Path  # SONAE_HOME: on the pair's replicated disk
    local: Path  # this box's own disk: its audit anchor
    serial_range: tuple[int, int]
    drill_serial_range: tuple[int, int]
    hostname: str | None = None  # run as this host (a UTS namespace); None: this machine's name
    settings: tuple[tuple[str, str], ...] = ()  # more SONAE_* overrides

    @property
    def anchor(self) -> Path:
        return self.local / "audit-anchor.json"

    def env(self) -> dict[str, str]:
        """The environment of this box's processes: the test's appliance
        (keys, upstream key, seal) with this box's own settings."""
        return {**os.environ, "SONAE_HOME": str(self.home), "SONAE_COUNTER_BOX_ID": self.box_id,
                "SONAE_COUNTER_SERIAL_RANGE": json.dumps(list(self.serial_range)),
                "SONAE_COUNTER_DRILL_SERIAL_RANGE": json.dumps(list(self.drill_serial_range)),
                "SONAE_SECURITY_AUDIT_ANCHOR_FILE": str(self.anchor), **dict(self.settings)}

    def command(self, *args: str) -> list[str]:
        sonae = [sys.executable, "-m", "fallback.cli", *args]
        if self.hostname is None:
            return sonae
        return ["unshare", "--uts", "--", "sh", "-c", 'hostname "$1" && shift && exec "$@"', "sh", self.hostname, *sonae]

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(*args), env=self.env(), capture_output=True, text=True, timeout=timeout)

    @contextmanager
    def serving(self, port: int | None = None) -> Iterator[str]:
        """`sonae serve` on this box until the block ends; yields its base
        URL once /healthz answers."""
        port = port or free_port()
        process = subprocess.Popen(self.command("serve", "--port", str(port)), env=self.env(),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_until_answering(base, process)
            yield base
        finally:
            stop(process)


def free_port() -> int:
    """Below the ephemeral range: another test's outgoing connection cannot take it (fallback.demo.outage_day)."""
    return free_ports(1)[0]


def wait_until_answering(base: str, process: subprocess.Popen, timeout: float = 60) -> float:
    """Seconds until `base`/healthz answers 200; fails with the server's
    own words if it exits first."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if process.poll() is not None:
            pytest.fail(f"sonae serve exited {process.returncode}: {process.stderr.read().strip()}")
        try:
            if requests.get(f"{base}/healthz", timeout=2).status_code == 200:
                return time.monotonic() - started
        except (requests.ConnectionError, requests.Timeout):
            pass  # not listening yet, or listening with no process ready to answer (web.processes)
        time.sleep(0.05)
    pytest.fail(f"sonae serve did not answer on {base} within {timeout} s")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Counter:
    """A counter PC talking to a box's JSON API, as a clerk's browser does."""

    def __init__(self, base: str, username: str = "clerk1", terminal: str = "本庁1"):
        self.base = base
        self.http = requests.Session()
        register_terminal_over_http(self.http, base, terminal)
        answer = self.http.post(f"{base}/api/v1/session", json={"username": username, "password": PASSWORD},
                                headers={"X-CSRF-Token": self.http.get(f"{base}/api/v1/session").json()["csrf_token"]}, timeout=30)
        assert answer.status_code == 201, answer.text
        self.http.headers["X-CSRF-Token"] = answer.json()["csrf_token"]

    def issue(self, resident: str, timeout: float = 60) -> requests.Response:
        return self.http.post(f"{self.base}/api/v1/residents/{resident}/certificates", timeout=timeout,
                              json={"kind": "juminhyo", "requester_type": "self", "identity_document": "運転免許証", "copies": 1,
                                    "confirm_repeat": True})  # the same residents over and over: repeats confirmed

    def search(self, kana: str, timeout: float = 30) -> requests.Response:
        return self.http.get(f"{self.base}/api/v1/residents", params={"kana": kana}, timeout=timeout)


@functools.cache
def uts_refusal() -> str | None:
    """None when this process may run a command under another host name
    (a UTS namespace: root, CAP_SYS_ADMIN), else why not."""
    probe = subprocess.run(["unshare", "--uts", "--", "hostname", "sonae-probe"], capture_output=True, text=True)
    if probe.returncode:
        return " ".join((probe.stderr or probe.stdout).split()) or f"unshare exited {probe.returncode}"
    return None


def require_other_hosts() -> None:
    """Skip the calling test, saying why, unless a box can run as another host."""
    if reason := uts_refusal():
        pytest.skip(f"cannot run a box under another host name (unshare --uts): {reason}")

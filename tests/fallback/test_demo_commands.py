"""The explorable demo: a busy port is refused in one line before anything
starts, the cloud register is made to fail and come back with
`sonae demo cloud down|up` (cloudsim's admin port), and a training room
can give every demo account one fixed password."""

from __future__ import annotations

import socket
from pathlib import Path

import click
import pytest
import requests

from fallback.config import load_config
from fallback.demo.site import DEMO_ACCOUNTS, DemoSite
from fallback.ops import open_ops
from fallback.staff import users
from tests.pair.boxes import free_port
from tests.support import sonae


def test_a_busy_port_is_refused_in_one_line_before_anything_starts(tmp_path):
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        busy = other.getsockname()[1]
        answer = sonae("demo", "run", "--dir", str(tmp_path / "demo"), "--port", str(busy), "--upstream-port", str(free_port()))
    assert answer.returncode != 0
    lines = answer.stderr.strip().splitlines()
    assert len(lines) == 1 and f"port {busy} (the counter app, --port) is already in use" in lines[0]
    assert "http://" not in answer.stdout + answer.stderr and "password" not in answer.stdout
    assert not (tmp_path / "demo" / "cloudsim").exists()  # nothing was started


def test_a_training_password_an_account_refuses_is_refused_before_anything_starts(tmp_path):
    """Each demo account's password rules are asked first, as `sonae user
    add` asks them: kunren's name is in this one."""
    password = "Kunren-2026-pw!"
    answer = sonae("demo", "run", "--dir", str(tmp_path / "demo"), "--residents", "300", "--password", password,
                   "--port", str(free_port()), "--upstream-port", str(free_port()))
    assert answer.returncode != 0
    lines = answer.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert "demo account kunren: password must not contain the username" in lines[0]
    assert "or leave out --password for a random one per account" in lines[0]
    assert password not in answer.stdout + answer.stderr
    assert not (tmp_path / "demo").exists()  # nothing was started, nor written


def test_cloud_commands_without_a_running_demo_say_so(tmp_path):
    answer = sonae("demo", "cloud", "down", "--dir", str(tmp_path / "nothing"))
    assert answer.returncode != 0 and "start it with `sonae demo run" in answer.stderr


@pytest.fixture
def running_cloud(tmp_path):
    site = DemoSite(tmp_path / "demo", residents=300, seed=3, web_port=free_port(), upstream_port=free_port())
    upstream = site.start_cloudsim()
    yield site, upstream
    site.stop()


def health(upstream) -> int:
    """The upstream's health status code; 0 when it takes no connection (cloudsim's `down`)."""
    try:
        return requests.get(upstream["url"] + "/v1/health", headers={"Authorization": f"Bearer {upstream['token']}"},
                            timeout=10).status_code
    except requests.ConnectionError:
        return 0


def test_the_upstream_token_is_neither_on_a_command_line_nor_in_a_log(running_cloud):
    """Any local user reads other processes' command lines (ps)."""
    site, upstream = running_cloud
    token = upstream["token"].encode()
    assert token == (site.etc / "upstream.token").read_bytes().strip()
    command_lines = [Path(f"/proc/{process.pid}/cmdline").read_bytes() for process in site.processes]
    assert any(b"cloudsim" in line for line in command_lines)
    assert not any(token in line for line in command_lines)
    logs = list((site.root / "logs").iterdir())
    assert logs and not any(token in log.read_bytes() for log in logs)


def test_the_cloud_goes_down_and_comes_back(running_cloud):
    site, upstream = running_cloud
    assert health(upstream) == 200
    down = sonae("demo", "cloud", "down", "--dir", str(site.root))
    assert down.returncode == 0, down.stderr
    assert health(upstream) != 200
    up = sonae("demo", "cloud", "up", "--dir", str(site.root))
    assert up.returncode == 0, up.stderr
    assert health(upstream) == 200


def test_a_training_room_password_for_every_account_and_the_rules_still_hold(running_cloud):
    site, upstream = running_cloud
    site.configure(upstream)
    with pytest.raises(click.ClickException, match="10"):
        site.seed_accounts("short1")  # the password rules apply to a fixed one too
    accounts = site.seed_accounts("sonae-kenshu-2026")
    assert {password for _, _, password in accounts} == {"sonae-kenshu-2026"}
    conn = open_ops(load_config(site.etc / "sonae.toml", env=site.env))
    try:
        assert all(users.password_matches(conn, username, "sonae-kenshu-2026") for username, _, _ in DEMO_ACCOUNTS)
    finally:
        conn.close()

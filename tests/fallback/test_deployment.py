"""How the appliance sits on its machine and its network: everything it
writes under SONAE_HOME is its own user's only, and served over HTTPS
(TLS ended by a reverse proxy, or the whole site) its cookie is Secure and
HSTS is sent — without HTTPS the IT dashboard says so."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from contextlib import ExitStack

import pytest
import requests

from fallback.app import create_app
from fallback.serve import waitress_options
from tests.support import PASSWORD, Staff, served, text_of


def modes_under(root) -> dict[str, int]:
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            found[os.path.relpath(path, root)] = stat.S_IMODE(os.lstat(path).st_mode)
    return found


def test_commands_write_nothing_others_can_read(sonae_env, fresh_example_export, tmp_path):
    home = tmp_path / "fresh-home"
    env = {**os.environ, "SONAE_HOME": str(home)}
    for args in (["sync", "full", "--from", str(fresh_example_export)],
                 ["user", "add", "clerk1", "--name", "窓口 一郎", "--role", "clerk", "--password", "tsukimi-dango-42"]):
        done = subprocess.run([sys.executable, "-m", "fallback.cli", *args], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    found = modes_under(home)
    assert "ops.db" in found and any(name.endswith("register.db") for name in found)
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    exposed = {name: oct(mode) for name, mode in found.items() if mode & 0o077}
    assert not exposed


def test_the_web_app_creates_its_database_owner_only_whatever_the_umask(sonae_env, tmp_path, monkeypatch):
    home = tmp_path / "web-home"
    monkeypatch.setenv("SONAE_HOME", str(home))
    from fallback.config import load_config

    previous = os.umask(0o022)
    try:
        create_app(load_config())
    finally:
        os.umask(previous)
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    database = {name: oct(mode) for name, mode in modes_under(home).items() if name.startswith("ops.db")}
    assert "ops.db" in database and set(database.values()) == {"0o600"}, database  # the WAL and shm files too


def test_over_plain_http_the_cookie_is_not_secure_and_it_says_so(appliance, login):
    staff = login("it1")
    cookie = staff.client.get_cookie("sonae_session")
    assert cookie is not None and not cookie.secure
    page = staff.get("/monitor/")
    assert "Strict-Transport-Security" not in page.headers
    assert "HTTPS で配信されていません" in text_of(page)


def test_when_the_site_is_https_the_cookie_is_secure_and_hsts_is_sent(configure_app):
    appliance = configure_app(web={"https": True})
    client = appliance.test_client()
    answer = client.get("/login", base_url="https://sonae.ward.example")
    assert answer.headers["Strict-Transport-Security"].startswith("max-age=")
    assert "Secure" in answer.headers["Set-Cookie"]
    staff = Staff(appliance, "it1")
    assert "HTTPS で配信されていません" not in text_of(staff.get("/monitor/", base_url="https://sonae.ward.example"))


@pytest.fixture
def behind(configure_app):
    """The app under waitress with the options `sonae serve` uses, trusting
    the given proxy address."""
    with ExitStack() as stack:
        def start(trusted_proxy: str) -> str:
            app = configure_app(web={"trusted_proxy": trusted_proxy})
            server = stack.enter_context(served(app, **waitress_options(app.config["SONAE"])))
            return f"http://127.0.0.1:{server.effective_port}"

        yield start


FORWARDED = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "10.70.0.5"}


def login_through(base_url: str) -> requests.Response:
    """Log in as the proxy would pass it on. The cookie is handed back by
    hand: behind a real proxy the browser speaks HTTPS and sends a Secure
    cookie, which a client speaking plain HTTP to waitress would withhold."""
    first = requests.get(f"{base_url}/api/v1/session", headers=FORWARDED, timeout=10)
    cookie = first.headers["Set-Cookie"].split(";", 1)[0]
    return requests.post(f"{base_url}/api/v1/session", json={"username": "it1", "password": PASSWORD},
                         headers={**FORWARDED, "X-CSRF-Token": first.json()["csrf_token"], "Cookie": cookie}, timeout=10)


def remotes(appliance) -> list[str]:
    from fallback.ops import open_ops

    conn = open_ops(appliance.config["SONAE"])
    try:
        return [row[0] for row in conn.execute("SELECT remote FROM sessions ORDER BY created_at")]
    finally:
        conn.close()


def test_the_trusted_proxy_says_https_and_who_the_client_is(appliance, behind):
    answer = login_through(behind("127.0.0.1"))
    assert answer.status_code == 201
    assert answer.headers["Strict-Transport-Security"].startswith("max-age=") and "Secure" in answer.headers["Set-Cookie"]
    assert remotes(appliance) == ["10.70.0.5"]


def test_forwarded_headers_from_anyone_else_are_ignored(appliance, behind):
    answer = login_through(behind(""))
    assert answer.status_code == 201
    assert "Strict-Transport-Security" not in answer.headers and "Secure" not in answer.headers["Set-Cookie"]
    assert remotes(appliance) == ["127.0.0.1"]


# --- half-open connections ------------------------------------------------------------------

HALF_OPEN = 150  # above waitress's own default limit (100), which they once exhausted


def half_open_connections(port: int, count: int) -> list[socket.socket]:
    """Connections whose headers never end (slowloris): each has sent a
    request line and one header, and waits."""
    held = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: sonae\r\n")
        held.append(sock)
    return held


@pytest.mark.parametrize("limit, answers", [(None, True), (HALF_OPEN - 50, False)])
def test_half_open_connections_do_not_take_the_counters_off_the_air(configure_app, limit, answers):
    """With `sonae serve`'s options, 150 idle half-open sockets leave room
    for /healthz and a login page; a connection limit below them (as
    waitress's default was) shows what the attack did."""
    app = configure_app(**({"web": {"connection_limit": limit}} if limit else {}))
    with served(app, **waitress_options(app.config["SONAE"])) as server, ExitStack() as held:
        for sock in half_open_connections(server.effective_port, HALF_OPEN):
            held.callback(sock.close)
        base_url = f"http://127.0.0.1:{server.effective_port}"
        try:
            healthz = requests.get(f"{base_url}/healthz", timeout=5).status_code
            login_page = requests.get(f"{base_url}/login", timeout=5).status_code
        except requests.Timeout:
            healthz = login_page = None
        assert (healthz == login_page == 200) is answers


def test_a_connection_silent_past_the_channel_timeout_is_closed(configure_app):
    app = configure_app(web={"channel_timeout_s": 1})
    with served(app, **waitress_options(app.config["SONAE"])) as server:
        (sock,) = half_open_connections(server.effective_port, 1)
        with sock:
            sock.settimeout(8)
            assert sock.recv(1024) == b""  # closed by the server, not answered


def test_health_checks_get_no_session_cookie_while_pages_do(appliance):
    client = appliance.test_client()
    for path in ("/healthz", "/readyz", "/metrics"):
        assert "Set-Cookie" not in client.get(path).headers, path
    assert "sonae_session=" in appliance.test_client().get("/login").headers["Set-Cookie"]


def test_key_init_says_what_each_key_protects(tmp_path):
    said = subprocess.run([sys.executable, "-m", "fallback.cli", "key", "init", str(tmp_path / "signing.key")],
                          capture_output=True, text=True, check=True).stdout
    assert "without the master key the data cannot be read, without the signing key certificates already issued cannot be checked" in said

"""`sonae key rotate` and the running services: refused while `sonae serve`
or `sonae worker` holds the databases (a rotation under a running server
left it writing with the old key into files under the new one: the audit
anchor, ops.db's pages, a generation's WAL, all reported as tampering and
damage afterwards); after a proper stop → rotate → start, every verify is
clean. And a failure nobody foresaw answers in Japanese, not Flask's
English page."""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import requests

from fallback.cli_support import services_stopped
from fallback.keys import master_key
from sync import crypto
from tests.pair.boxes import free_port, stop, wait_until_answering
from tests.support import PASSWORD, register_terminal_over_http

SONAE = str(Path(sys.executable).with_name("sonae"))
REQUEST = {"kind": "juminhyo", "requester_type": "self", "identity_document": "運転免許証", "copies": 1}
YAMADA_TARO = "10000000011"


def sonae(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([SONAE, *args], capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})})


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


@contextmanager
def services():
    """`sonae serve` and `sonae worker` as real processes; yields the
    server's URL and both PIDs once the server answers."""
    port = free_port()
    serve = subprocess.Popen([SONAE, "serve", "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    worker = subprocess.Popen([SONAE, "worker"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_answering(base, serve)
        assert worker.poll() is None, "sonae worker exited"
        yield base, serve.pid, worker.pid
    finally:
        stop(serve)
        stop(worker)


def clerk_at(base: str) -> tuple[requests.Session, str]:
    """clerk1 logged in on 本庁1 through the running server: the session
    and its CSRF token."""
    clerk = requests.Session()
    register_terminal_over_http(clerk, base, "本庁1")
    csrf = clerk.get(f"{base}/api/v1/session", timeout=10).json()["csrf_token"]
    logged_in = clerk.post(f"{base}/api/v1/session", json={"username": "clerk1", "password": PASSWORD, "terminal": "本庁1"},
                           headers={"X-CSRF-Token": csrf}, timeout=30)
    assert logged_in.status_code in (200, 201), logged_in.text
    return clerk, clerk.get(f"{base}/api/v1/session", timeout=10).json()["csrf_token"]


def issue_one(base: str) -> None:
    """A certificate, so the audit anchor exists (rotation must carry it over)."""
    clerk, csrf = clerk_at(base)
    issued = clerk.post(f"{base}/api/v1/residents/{YAMADA_TARO}/certificates", json={**REQUEST, "confirm_repeat": True},
                        headers={"X-CSRF-Token": csrf}, timeout=30)
    assert issued.status_code == 201, issued.text[:300]


def test_rotation_is_refused_while_the_services_run_and_clean_after_stop_rotate_start(loaded_env, tmp_path, monkeypatch):
    assert sonae("mode", "set", "downtime", "--reason", "住民記録システム障害").returncode == 0
    new_key_file = tmp_path / "etc" / "master-2027.key"
    assert sonae("key", "init", str(new_key_file)).returncode == 0

    with services() as (base, serve_pid, worker_pid):
        issue_one(base)
        line = one_line_error(sonae("key", "rotate", "--new-key-file", str(new_key_file)))
    assert f"(pid {min(serve_pid, worker_pid)}, {max(serve_pid, worker_pid)}," in line, line
    assert "stop both services first (runbooks/07-kagi-kanri.md step 8), then rerun" in line
    # nothing was re-encrypted: the configured key still opens ops.db
    crypto.connect(loaded_env.ops_db_path, crypto.derive_key(master_key(loaded_env), "ops"), readonly=True).close()

    rotated = sonae("key", "rotate", "--new-key-file", str(new_key_file))
    assert rotated.returncode == 0, rotated.stderr
    monkeypatch.setenv("SONAE_SECURITY_KEY_FILE", str(new_key_file))
    with services() as (base, _, _):
        issue_one(base)
    for check in (("audit", "verify"), ("ops", "verify"), ("snapshot", "verify")):
        result = sonae(*check)
        assert result.returncode == 0, f"sonae {' '.join(check)}: {result.stdout}{result.stderr}"


def test_the_services_do_not_start_while_a_rotation_runs(loaded_env):
    with services_stopped(loaded_env):
        for command in (("serve", "--port", str(free_port())), ("worker",)):
            line = one_line_error(sonae(*command))
            assert line == ("Error: `sonae key rotate` is running; start the service again once it has finished "
                            "and security.key_file names the new key (runbooks/07-kagi-kanri.md)"), line


def test_a_failure_nobody_foresaw_answers_in_japanese(loaded_env):
    with services() as (base, _, _):
        clerk, _ = clerk_at(base)
        # ops.db re-encrypted under the running server, as a rotation that did not stop it did
        crypto.rekey(loaded_env.ops_db_path, crypto.derive_key(master_key(loaded_env), "ops"), crypto.derive_key(os.urandom(32), "ops"))
        page = clerk.get(f"{base}/counter/", timeout=10)
        api = clerk.get(f"{base}/api/v1/status", timeout=10)
    assert page.status_code == 500 and "Internal Server Error" not in page.text, page.text[:300]
    assert "装置の内部でエラーが起きました" in page.text and "紙の手順に切り替え" in page.text
    assert api.status_code == 500 and api.json()["error"] == "internal" and "情報政策課" in api.json()["message"]

"""`sonae cloudsim …` as a demo script uses it: a real process, its startup
line and ready file, the key it prints, and the admin commands."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time

import pytest
import requests

from sync.contract import public_key_from_b64, verify_manifest
from tests.cloudsim.conftest import REGISTER_DATE, RESIDENTS, SEED, TOKEN

SONAE = [sys.executable, "-m", "fallback.cli"]


def sonae(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*SONAE, "cloudsim", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def served(generated_state, tmp_path_factory):
    """`sonae cloudsim serve` in its own process, on a copy of the session state."""
    state = tmp_path_factory.mktemp("cli") / "state"
    shutil.copytree(generated_state, state)
    ready = state.parent / "ready.json"
    process = subprocess.Popen(
        [*SONAE, "cloudsim", "serve", "--residents", str(RESIDENTS), "--seed", str(SEED), "--as-of", REGISTER_DATE.isoformat(),
         "--state-dir", str(state), "--port", "0", "--admin-port", "0", "--token", TOKEN, "--change-rate", "0",
         "--ready-file", str(ready)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not ready.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ready.exists(), process.stderr.read() if process.poll() is not None else "no ready file in time"
    yield state, json.loads(ready.read_text()), process
    process.terminate()
    process.wait(timeout=30)


def test_the_ready_file_and_the_startup_line_say_how_to_connect(served):
    state, info, process = served
    assert set(info) >= {"url", "admin_url", "token", "public_key", "export_id"}
    assert info["token"] == TOKEN
    assert (state.parent / "ready.json").stat().st_mode & 0o777 == 0o600  # it holds the token
    line = process.stdout.readline()
    assert line.startswith("cloudsim ready:")
    for key in ("url", "public_key", "admin_url", "export_id"):
        assert f"{key}={info[key]}" in line
    assert "token=(as given)" in line and TOKEN not in line  # the starter knows it; a log need not
    manifest = requests.get(info["url"] + "/v1/exports/latest", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10).json()
    verify_manifest(manifest, public_key_from_b64(info["public_key"]))


def test_public_key_prints_the_key_the_server_signs_with(served):
    state, info, _ = served
    result = sonae("public-key", "--state-dir", str(state))
    assert result.returncode == 0 and result.stdout.strip() == info["public_key"]
    assert len(base64.b64decode(result.stdout.strip())) == 32


def test_admin_commands_publish_and_make_changes(served):
    _, info, _ = served
    env = {"SONAE_CLOUDSIM_ADMIN_URL": info["admin_url"], "SONAE_CLOUDSIM_TOKEN": TOKEN}
    made = sonae("changes", "--events", "3", env=env)
    assert made.returncode == 0 and "last_seq=" in made.stdout
    published = sonae("publish", env=env)
    assert published.returncode == 0, published.stderr
    status = json.loads(sonae("status", env=env).stdout)
    assert published.stdout.startswith(status["export_id"]) and status["export_id"] != info["export_id"]
    assert f"last_seq={status['last_seq']}" in published.stdout


def test_a_new_key_file_is_written_private(tmp_path):
    key_file = tmp_path / "upstream.key"
    result = sonae("public-key", "--key-file", str(key_file))
    assert result.returncode == 0
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert len(base64.b64decode(key_file.read_text().strip())) == 32
    assert sonae("public-key", "--key-file", str(key_file)).stdout == result.stdout


def test_a_key_file_others_can_read_is_refused(tmp_path):
    key_file = tmp_path / "loose.key"
    key_file.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    key_file.chmod(0o644)
    result = sonae("public-key", "--key-file", str(key_file))
    assert result.returncode != 0
    assert "chmod 600" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_export_writes_a_signed_directory(tmp_path):
    out = tmp_path / "drop"
    result = sonae("export", "--residents", "400", "--seed", "3", "--as-of", "2026-11-24", "--state-dir", str(tmp_path), "--out", str(out))
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    public_key = sonae("public-key", "--state-dir", str(tmp_path)).stdout.strip()
    verify_manifest(manifest, public_key_from_b64(public_key))
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "residents.ndjson.gz", "seals.ndjson.gz"]
    assert manifest["files"][0]["records"] == 400


def test_serve_fails_in_one_line_when_the_port_is_taken(served, tmp_path):
    _, info, _ = served
    port = info["url"].rsplit(":", 1)[1]
    result = sonae("serve", "--residents", "50", "--state-dir", str(tmp_path / "s"), "--port", port, "--admin-port", "0")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith("Error: cannot start")

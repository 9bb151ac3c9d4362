"""`sonae serve` starting as the appliance's uid: an address it cannot
listen on is one line naming web.host / web.port and what to do (never a
traceback, never "on http://…" first); bound, it says where it listens; with
no configuration file it says which file it looked for."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
import requests

from tests.deploy.conftest import APPLIANCE_UID, ROOT, as_uid, one_line_error
from tests.pair.boxes import free_port, stop, wait_until_answering

RUNS_AS = f"uid {APPLIANCE_UID} (nobody)"


@pytest.fixture
def appliance_box(box):
    """A box the appliance's uid may use: its keys, its state."""
    box.give(box.etc)
    box.give(box.home)
    return box


def configure(box, **web) -> None:
    lines = ["[web]", "render_processes = 1"] + [f"{key} = {value!r}".replace("'", '"') for key, value in web.items()]
    (box.etc / "sonae.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    box.give(box.etc / "sonae.toml")


def refusal(box, *options: str) -> str:
    result = box.sonae("serve", *options)
    assert "Sonae counter app on" not in result.stderr, result.stderr
    return one_line_error(result)


def test_a_port_in_use_is_named_with_the_setting(appliance_box):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        configure(appliance_box, host="127.0.0.1", port=port)
        assert refusal(appliance_box) == (f"Error: port {port} (web.port) on 127.0.0.1 is already in use by another program "
                                          "(another `sonae serve`?): stop that program, or set web.port to a free port")


@pytest.mark.parametrize("processes", [1, 2])
def test_a_port_in_use_given_with_the_option_is_named_as_the_option(appliance_box, processes):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        configure(appliance_box, host="127.0.0.1", port=free_port(), processes=processes)
        assert refusal(appliance_box, "--port", str(port)) == (
            f"Error: port {port} (--port) on 127.0.0.1 is already in use by another program "
            "(another `sonae serve`?): stop that program, or give --port a free port")


def test_an_address_given_with_the_option_is_named_as_the_option(appliance_box):
    configure(appliance_box, host="127.0.0.1", port=free_port())
    assert refusal(appliance_box, "--host", "192.0.2.1") == ("Error: 192.0.2.1 (--host) is not an address of this host: "
                                                             "give --host one of its addresses, or 0.0.0.0 for all")


def test_a_port_below_1024_as_an_unprivileged_uid_says_what_to_do(appliance_box):
    if int(open("/proc/sys/net/ipv4/ip_unprivileged_port_start").read()) <= 80:
        pytest.skip("this kernel lets every uid bind port 80 (net.ipv4.ip_unprivileged_port_start)")
    configure(appliance_box, host="127.0.0.1", port=80)
    assert refusal(appliance_box) == (f"Error: {RUNS_AS} may not listen on port 80 (web.port): ports below 1024 need root; use a port "
                                      "of 1024 or above, with a reverse proxy in front for 80 or 443 (README \"Serving over HTTPS\")")


def test_an_address_not_on_this_host_is_named(appliance_box):
    configure(appliance_box, host="192.0.2.1", port=free_port())  # TEST-NET-1: never a local address
    assert refusal(appliance_box) == ("Error: 192.0.2.1 (web.host) is not an address of this host: "
                                      "set web.host to one of its addresses, or 0.0.0.0 for all")


@pytest.mark.parametrize("port", [0, -1, 65536, 70000])
def test_a_port_outside_1_to_65535_is_refused_by_serve_and_doctor_in_one_line(appliance_box, port):
    configure(appliance_box, host="127.0.0.1", port=port)
    expected = (f"{appliance_box.etc / 'sonae.toml'}: web.port: {port} is not a port: set a fixed port from 1 to 65535 "
                "(1024 or above unless Sonae runs as root; e.g. 8080)")
    assert refusal(appliance_box) == f"Error: {expected}"
    doctor = appliance_box.sonae("doctor")
    assert doctor.returncode == 1 and doctor.stdout.splitlines() == [f"PROBLEM  configuration  {expected}"], (doctor.stdout, doctor.stderr)


def test_the_highest_port_is_a_port(appliance_box):
    configure(appliance_box, host="127.0.0.1", port=65535)
    doctor = appliance_box.sonae("doctor")
    assert "is not a port" not in doctor.stdout, doctor.stdout
    assert any(line.split()[1] == "web" and "65535" in line for line in doctor.stdout.splitlines()), doctor.stdout


def test_serve_without_its_master_key_beside_its_data_says_to_restore_it(box):
    assert box.sonae("user", "list", uid=None).returncode == 0  # ops.db, written with the master key
    (box.etc / "master.key").unlink()
    assert one_line_error(box.sonae("serve", "--port", "1", uid=None)) == (
        f"Error: master key {box.etc / 'master.key'} is missing, and {box.home} holds data encrypted with it (ops.db): restore the key "
        "from its offline copy (runbook 07-kagi-kanri); a new key from `sonae key init` cannot read that data")


def test_serve_on_a_new_box_without_a_master_key_says_to_make_one(box):
    (box.etc / "master.key").unlink()
    assert one_line_error(box.sonae("serve", "--port", "1", uid=None)) == (
        f"Error: key file {box.etc / 'master.key'} does not exist; create it with `sonae key init {box.etc / 'master.key'}` "
        "or set SONAE_SECURITY_KEY")


def serving(box) -> tuple[str, str]:
    """Start `sonae serve` as the appliance's uid; once it answers, stop it:
    (its base URL, what it wrote to stderr)."""
    port = free_port()
    configured = (box.etc / "sonae.toml").exists()
    env = box.env() if configured else {**box.env(), "SONAE_WEB_PORT": str(port), "SONAE_WEB_RENDER_PROCESSES": "1"}
    if configured:
        configure(box, host="127.0.0.1", port=port)
    process = subprocess.Popen([*as_uid(APPLIANCE_UID), sys.executable, "-m", "fallback.cli", "serve"], cwd=ROOT, env=env,
                               stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_answering(base, process)
    finally:
        stop(process)
    return base, process.stderr.read()


def test_bound_it_says_where_it_listens_and_no_warning_with_a_configuration_file(appliance_box):
    configure(appliance_box)
    base, said = serving(appliance_box)
    assert f"Sonae counter app on {base}/" in said and "no configuration file" not in said, said


def test_without_a_configuration_file_it_says_which_file_it_looked_for(appliance_box):
    base, said = serving(appliance_box)
    assert f"Sonae counter app on {base}/" in said
    assert (f"no configuration file at {appliance_box.etc / 'sonae.toml'}: running on the defaults and SONAE_* variables only; "
            "write it from deploy/sonae.toml.example (or point SONAE_CONFIG at it)") in said, said


def test_state_taken_from_the_appliance_under_the_running_server_is_json_and_the_storage_page(appliance_box):
    port = free_port()
    configure(appliance_box, host="127.0.0.1", port=port)
    with open(appliance_box.etc / "sonae.toml", "a", encoding="utf-8") as toml:
        toml.write('[alerts]\nmetrics_token = "metrics-secret"\n')
    process = subprocess.Popen([*as_uid(APPLIANCE_UID), sys.executable, "-m", "fallback.cli", "serve"], cwd=ROOT,
                               env=appliance_box.env(), stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    token = {"Authorization": "Bearer metrics-secret"}
    try:
        wait_until_answering(base, process)
        assert requests.get(f"{base}/login", timeout=10).status_code == 200
        assert "state" not in requests.get(f"{base}/readyz", timeout=10).json().get("failing", [])
        appliance_box.give(appliance_box.home, uid=0)  # a restore run as root, under the running server
        healthz = requests.get(f"{base}/healthz", timeout=10)
        assert healthz.status_code == 200 and healthz.json()["status"] == "alive"
        readyz = requests.get(f"{base}/readyz", timeout=10)
        assert readyz.status_code == 503 and readyz.json() == {"status": "not_ready", "failing": ["state"]}
        reason = requests.get(f"{base}/readyz", headers=token, timeout=10).json()["checks"]["state"]["reason"]
        assert reason.startswith(f"permission denied: Sonae cannot write {appliance_box.home}, owner uid 0 (root)"), reason
        assert RUNS_AS in reason
        login = requests.get(f"{base}/login", timeout=10)
        assert login.status_code == 503 and "装置の記録を読み書きする権限がなくなっています" in login.text
        assert "装置の内部でエラーが起きました" not in login.text
    finally:
        stop(process)
    said = process.stderr.read()
    assert "Traceback" not in said, said


def test_a_web_host_that_does_not_resolve_is_named(appliance_box):
    configure(appliance_box, host="no-such-host.invalid", port=free_port())
    line = refusal(appliance_box)
    assert line.startswith("Error: web.host 'no-such-host.invalid' is not an address or a name this host resolves (")
    assert line.endswith("): set web.host to one of this host's addresses, or 0.0.0.0 for all")

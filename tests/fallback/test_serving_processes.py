"""`sonae serve` with web.processes above 1: that many serving processes
accept on the one port the server bound. Both answer; certificates issued
through both at once keep every serial distinct and the audit chain whole;
one killed is replaced while the other goes on answering; the server's
SIGTERM ends them all and a server killed outright takes them with it; one
that keeps dying as it starts ends the server with a line saying so."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from fallback.config import ConfigError, load_config
from fallback.ops import open_ops
from tests.conftest import write_config
from tests.fallback.test_counter import YAMADA_TARO
from tests.pair.boxes import Counter, free_port, wait_until_answering


def _serving_children(server: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and b"--listen-fd" in (entry / "cmdline").read_bytes():
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == server:
                    children.append(int(entry.name))
        except (OSError, ValueError):
            pass  # ended meanwhile
    return sorted(children)


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def _wait_for(condition, what: str, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.1)
    return found


@pytest.fixture
def two_processes(loaded_env):
    """`sonae serve` with two serving processes over the loaded appliance,
    in downtime: (the server process, its base URL)."""
    port = free_port()
    write_config(web={"processes": 2, "render_processes": 2, "port": port}, counter={"daily_cap_per_requester": 0})
    declared = subprocess.run([sys.executable, "-m", "fallback.cli", "mode", "set", "downtime", "--reason", "試験"],
                              capture_output=True, text=True)
    assert declared.returncode == 0, declared.stderr
    server = subprocess.Popen([sys.executable, "-m", "fallback.cli", "serve"], stderr=subprocess.PIPE, text=True, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_answering(base, server)
        _wait_for(lambda: len(_serving_children(server.pid)) == 2, "two serving processes")
        yield server, base
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def test_both_processes_answer(two_processes):
    server, base = two_processes
    children = _serving_children(server.pid)
    before = {pid: _cpu_ticks(pid) for pid in children}
    # Each request on a connection of its own, as through a reverse proxy:
    # whichever process is free first accepts it.
    with ThreadPoolExecutor(8) as browsers:
        answers = list(browsers.map(lambda _: requests.get(f"{base}/login", timeout=30).status_code, range(240)))
    assert answers == [200] * 240
    worked = {pid: _cpu_ticks(pid) - before[pid] for pid in children}
    assert all(ticks >= 3 for ticks in worked.values()), worked


def test_issuing_through_both_at_once_keeps_every_serial_distinct_and_the_audit_chain_whole(two_processes, loaded_env):
    server, base = two_processes

    def clerk_at_work(index: int) -> list[int]:
        serials = []
        for _ in range(3):
            counter = Counter(base, terminal="本庁1")  # a connection of its own each time
            assert counter.search("ヤマダ").status_code == 200
            answer = counter.issue(YAMADA_TARO)
            assert answer.status_code == 201, answer.text
            serials.append(answer.json()["certificates"][0]["serial"])
        return serials

    with ThreadPoolExecutor(6) as clerks:
        serials = [serial for batch in clerks.map(clerk_at_work, range(6)) for serial in batch]
    assert len(serials) == 18 and len(set(serials)) == 18
    conn = open_ops(loaded_env)
    try:
        stored = [serial for (serial,) in conn.execute("SELECT serial FROM certificates WHERE status = 'rendered'")]
    finally:
        conn.close()
    assert sorted(stored) == sorted(serials)
    verified = subprocess.run([sys.executable, "-m", "fallback.cli", "audit", "verify"], capture_output=True, text=True)
    assert verified.returncode == 0 and "intact" in verified.stdout, (verified.stdout, verified.stderr)


def test_a_killed_serving_process_is_replaced_while_the_other_answers(two_processes):
    server, base = two_processes
    killed, survivor = _serving_children(server.pid)
    os.kill(killed, signal.SIGKILL)
    # Every connection from here on is the survivor's or the replacement's.
    for _ in range(20):
        assert requests.get(f"{base}/healthz", timeout=5).status_code == 200
    replaced = _wait_for(lambda: len(now := _serving_children(server.pid)) == 2 and now, "a replacement")
    assert survivor in replaced and killed not in replaced
    server.send_signal(signal.SIGTERM)
    assert server.wait(30) == 0
    said = server.stderr.read()
    assert f"serving process {killed} was killed by SIGKILL; starting another" in said, said
    assert "Traceback" not in said


def test_sigterm_ends_every_serving_process_and_frees_the_port(two_processes):
    server, base = two_processes
    children = _serving_children(server.pid)
    server.send_signal(signal.SIGTERM)
    assert server.wait(30) == 0
    _wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in children), "the serving processes ended")
    port = int(base.rsplit(":", 1)[1])
    with socket.create_server(("127.0.0.1", port)):
        pass  # free again


def test_a_server_killed_outright_takes_its_serving_processes_with_it(two_processes):
    server, base = two_processes
    children = _serving_children(server.pid)
    server.kill()
    server.wait()
    _wait_for(lambda: not any(Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1][:3]
                                 for pid in children), "the serving processes ended", timeout=10)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{base}/healthz", timeout=5)


def test_serving_processes_that_die_as_they_start_end_the_server_saying_so(loaded_env, tmp_path):
    # Each serving process exits as it starts (a fault no restart mends):
    # a sitecustomize on PYTHONPATH that only they run into.
    (tmp_path / "sitecustomize.py").write_text('import os, sys\nif "--listen-fd" in sys.argv:\n    os._exit(3)\n')
    port = free_port()
    write_config(web={"processes": 2, "port": port})
    server = subprocess.run([sys.executable, "-m", "fallback.cli", "serve"], env={**os.environ, "PYTHONPATH": str(tmp_path)},
                            capture_output=True, text=True, timeout=60)
    assert server.returncode == 1
    assert server.stderr.strip().splitlines()[-1] == ("Error: serving processes keep ending as they start: see the log above, "
                                                       "mend the cause, then start `sonae serve` again")
    assert "ended with exit code 3; starting another" in server.stderr and "Traceback" not in server.stderr


@pytest.mark.parametrize("processes", [-1, 65])
def test_web_processes_out_of_range_is_refused_naming_the_setting(sonae_env, processes):
    write_config(web={"processes": processes})
    with pytest.raises(ConfigError) as refused:
        load_config()
    assert "web.processes" in str(refused.value)
    assert f"{processes}: 0 (one process per usable core), 1 (the server process alone) or up to 64 processes" in str(refused.value)


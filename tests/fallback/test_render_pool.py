"""Certificates rendered in a pool of processes (web.render_processes,
fallback.counter.rendering.render_pool): the same certificate as one
rendered in the server, the serial still allocated in the server, and a
render process killed mid-certificate costs no serial twice and stops
nothing else."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from fallback.config import ConfigError, load_config
from fallback.counter.rendering import render_pool, render_processes
from fallback.ops import open_ops
from fallback.serve import render_processes_each
from tests.conftest import write_config
from tests.fallback.test_counter import YAMADA_TARO, issue
from tests.pair.boxes import free_port
from tests.support import pdf_text

YAMADA_HANAKO = "10000000029"


def _pool_config(processes: int = 2):
    write_config(web={"render_processes": processes})
    return load_config()


def _rows(config) -> list[tuple[int, str]]:
    conn = open_ops(config)
    try:
        return conn.execute("SELECT serial, status FROM certificates ORDER BY serial").fetchall()
    finally:
        conn.close()


def _issued_text(clerk, response, tmp_path, name: str) -> tuple[int, str]:
    assert response.status_code == 201, response.get_json()
    certificate = response.get_json()["certificates"][0]
    return certificate["serial"], pdf_text(clerk.get(certificate["pdf"]).data, tmp_path, name)


def test_a_certificate_from_the_pool_reads_as_one_rendered_in_the_server(appliance, login, downtime, tmp_path):
    clerk = login("clerk1")
    in_server, in_server_text = _issued_text(clerk, issue(clerk, YAMADA_TARO, whole_household=True), tmp_path, "server.pdf")
    with render_pool(_pool_config()) as pool:
        assert pool is not None and pool.processes == 2
        in_pool, in_pool_text = _issued_text(clerk, issue(clerk, YAMADA_TARO, whole_household=True), tmp_path, "pool.pdf")
    assert in_pool == in_server + 1
    # Everything printed is the same but the serial (issued within the same
    # minute; the footer's serial line carries the page too).
    assert "山田" in in_pool_text and f"{in_pool:06d}" in in_pool_text
    assert in_pool_text.replace(f"{in_pool:06d}", "SERIAL") == in_server_text.replace(f"{in_server:06d}", "SERIAL")


def _issue_in_background(clerk, results: list) -> threading.Thread:
    thread = threading.Thread(target=lambda: results.append(issue(clerk, YAMADA_TARO)))
    thread.start()
    return thread


def _wait_for_allocated(config, serial: int, deadline_s: float = 30.0) -> None:
    """Until `serial` is committed 'allocated' (its render starts next)."""
    deadline = time.monotonic() + deadline_s
    while (serial, "allocated") not in _rows(config):
        assert time.monotonic() < deadline, "the issuance never committed its serial"
        time.sleep(0.005)


def test_a_render_process_killed_mid_certificate_costs_nothing(appliance, login, downtime, tmp_path):
    clerk = login("clerk1")
    config = _pool_config()
    with render_pool(config) as pool:
        first, _ = _issued_text(clerk, issue(clerk, YAMADA_TARO), tmp_path, "first.pdf")  # the processes are warm
        results: list = []
        thread = _issue_in_background(clerk, results)
        _wait_for_allocated(config, first + 1)
        victim = multiprocessing.active_children()[0].pid
        os.kill(victim, signal.SIGKILL)
        thread.join(60)
        # The certificate was rendered again in fresh processes, under the
        # serial committed for it.
        serial, text = _issued_text(clerk, results[0], tmp_path, "retried.pdf")
        assert serial == first + 1 and f"{serial:06d}" in text
        assert pool.restarts == 1 and victim not in [child.pid for child in multiprocessing.active_children()]
        after, _ = _issued_text(clerk, issue(clerk, YAMADA_TARO), tmp_path, "after.pdf")
    assert after == first + 2
    assert _rows(config) == [(first, "rendered"), (first + 1, "rendered"), (first + 2, "rendered")]


def _keep_killing(stop: threading.Event, swept: threading.Event) -> None:
    """Kill every render process as soon as it exists: none lives long
    enough to warm up, let alone render. `swept`: set once the processes
    that were there at the start are killed."""
    while not stop.is_set():
        children = multiprocessing.active_children()
        for child in children:
            with contextlib.suppress(ProcessLookupError):  # it died between the listing and here
                os.kill(child.pid, signal.SIGKILL)
        if children:
            swept.set()
        time.sleep(0.01)


def test_a_certificate_whose_render_processes_keep_dying_is_refused_and_its_serial_voided(appliance, login, downtime, tmp_path):
    clerk = login("clerk1")
    config = _pool_config()
    with render_pool(config) as pool:
        first, _ = _issued_text(clerk, issue(clerk, YAMADA_TARO), tmp_path, "first.pdf")
        stop, swept = threading.Event(), threading.Event()
        killer = threading.Thread(target=_keep_killing, args=(stop, swept))
        killer.start()
        try:
            # The warm processes die first: on a busy machine a render could
            # otherwise finish in one before the killer's first sweep.
            assert swept.wait(30)
            refused = issue(clerk, YAMADA_HANAKO, confirm_repeat=False)
        finally:
            stop.set()
            killer.join()
        body = refused.get_json()
        assert refused.status_code == 503 and body["error"] == "render_failed"  # the server's failure, not the form's
        assert f"発行番号 {first + 1:06d} " in body["message"] and "無効にしました" in body["message"] and "もう一度交付" in body["message"]
        assert body["voided_serials"] == [first + 1]
        assert pool.restarts == 2
        assert _rows(config)[-1] == (first + 1, "void")  # voided at once: not handed out, never reused
        # Issued again straight away: what was never made is not "already issued today".
        after, _ = _issued_text(clerk, issue(clerk, YAMADA_HANAKO, confirm_repeat=False), tmp_path, "after.pdf")
    assert after == first + 2
    assert _rows(config) == [(first, "rendered"), (first + 1, "void"), (first + 2, "rendered")]


def test_one_render_process_is_the_server_itself(loaded_env):
    with render_pool(_pool_config(1)) as pool:
        assert pool is None
    assert not multiprocessing.active_children()


def test_the_default_is_one_render_process_per_usable_core(loaded_env):
    config = _pool_config(0)
    assert render_processes(config) == len(os.sched_getaffinity(0))
    assert render_processes(_pool_config(3)) == 3


@pytest.mark.parametrize(("render", "serving", "each"), [(2, 2, 2), (1, 2, 1), (3, 2, 3), (16, 4, 8), (16, 16, 2), (64, 64, 2), (8, 3, 6)])
def test_each_serving_process_renders_in_twice_its_share_of_the_render_processes(sonae_env, render, serving, each):
    """The kernel leaves counters' connections unevenly spread over the
    serving processes: twice its share, at most all of them (1: its threads)."""
    assert render_processes_each(_pool_config(render), serving) == each


@pytest.mark.parametrize("processes", [0, 1, 2, 64])
def test_render_processes_within_bounds_are_allowed(sonae_env, processes):
    write_config(web={"render_processes": processes})
    assert load_config()["web"]["render_processes"] == processes


@pytest.mark.parametrize("processes, problem", [
    (-1, "-1: 0 (one process per usable core), 1 (render in the server process) or up to 64 processes"),
    (65, "65: 0 (one process per usable core)"),
    (True, "must be a whole number, not True"),
    (2.0, "must be a whole number, not 2.0"),
    ("auto", "must be a whole number, not 'auto'"),
])
def test_render_processes_out_of_bounds_are_refused(sonae_env, processes, problem):
    write_config(web={"render_processes": processes})
    with pytest.raises(ConfigError) as refused:
        load_config()
    assert "web.render_processes" in str(refused.value) and problem in str(refused.value)


def _session(leader: int) -> list[int]:
    """The processes of `leader`'s session (itself left out)."""
    members = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int(entry.name) != leader and os.getsid(int(entry.name)) == leader:
                members.append(int(entry.name))
        except ProcessLookupError:
            pass  # ended meanwhile
    return members


@pytest.mark.parametrize("stop", ["once warm", "while warming"])
def test_sonae_serve_warms_its_render_pool_while_it_listens_and_stops_it_with_itself(loaded_env, stop):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    write_config(web={"render_processes": 2, "port": port})
    serve = subprocess.Popen([sys.executable, "-m", "fallback.cli", "serve"], stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not _answers(f"http://127.0.0.1:{port}/healthz"):
            assert serve.poll() is None and time.monotonic() < deadline, "sonae serve did not come up"
            time.sleep(0.2)
        if stop == "once warm":
            # The fork server and the two render processes start with no
            # certificate asked for.
            while len(_session(serve.pid)) < 3:
                assert time.monotonic() < deadline, f"the render processes did not start: {_session(serve.pid)}"
                time.sleep(0.2)
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(30) == 0
    finally:
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGKILL)
    stderr = serve.stderr.read()
    assert "rendering certificates in 2 processes" in stderr
    assert "Traceback" not in stderr
    deadline = time.monotonic() + 10
    while _session(serve.pid):
        assert time.monotonic() < deadline, f"processes left behind: {_session(serve.pid)}"
        time.sleep(0.1)


def test_a_server_killed_outright_leaves_no_render_process_or_fork_server_behind(loaded_env):
    """kill -9: the render processes end with it, and so then does the fork
    server (it used to outlive the server with them, each holding the
    other alive)."""
    port = free_port()
    write_config(web={"render_processes": 2, "port": port})
    serve = subprocess.Popen([sys.executable, "-m", "fallback.cli", "serve"], stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while len(_session(serve.pid)) < 3:  # the fork server and its two render processes
            assert serve.poll() is None and time.monotonic() < deadline, f"the render processes did not start: {_session(serve.pid)}"
            time.sleep(0.2)
        serve.kill()
        serve.wait()
        deadline = time.monotonic() + 10
        while _session(serve.pid):
            assert time.monotonic() < deadline, f"processes left behind: {_session(serve.pid)}"
            time.sleep(0.1)
    finally:
        for left in _session(serve.pid):
            os.kill(left, signal.SIGKILL)


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.ConnectionError:
        return False

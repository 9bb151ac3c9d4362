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
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from fallback.config import ConfigError, load_config
from fallback.ops import open_ops
from fallback.serve import SWITCH_INTERVAL_S, ServingProcesses, connection_limit_each, share_the_interpreter_between_threads
from tests.conftest import write_config
from tests.fallback.test_counter import YAMADA_TARO
from tests.fallback.test_counter_stress import _statuses
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


def _start_serving(processes: int, **web) -> tuple[subprocess.Popen, str]:
    """`sonae serve` with `processes` serving processes over the loaded
    appliance, in downtime, in a session of its own: (the server, its base
    URL) once it answers."""
    port = free_port()
    write_config(web={"processes": processes, "render_processes": 2, "port": port, **web}, counter={"daily_cap_per_requester": 0})
    declared = subprocess.run([sys.executable, "-m", "fallback.cli", "mode", "set", "downtime", "--reason", "試験"],
                              capture_output=True, text=True)
    assert declared.returncode == 0, declared.stderr
    server = subprocess.Popen([sys.executable, "-m", "fallback.cli", "serve"], stderr=subprocess.PIPE, text=True, start_new_session=True)
    server.said = Said(server)  # type: ignore[attr-defined]  (what the test reads of it)
    base = f"http://127.0.0.1:{port}"
    wait_until_answering(base, server)
    if processes > 1:
        _wait_for(lambda: len(_serving_children(server.pid)) == processes, f"{processes} serving processes")
        server.said.wait_for(lambda text: text.count(" ready\n") == processes, f"{processes} serving processes ready")
    return server, base


class Said:
    """A server's standard error, read as it comes (a pipe left unread
    would stop the server once full)."""

    def __init__(self, server: subprocess.Popen):
        self.lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(server.stderr), daemon=True)
        self.reader.start()

    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, condition, what: str, timeout: float = 60) -> None:
        _wait_for(lambda: condition(self.text()), what, timeout)

    def all(self) -> str:
        """Everything, once the server has ended."""
        self.reader.join(30)
        return self.text()


def _end(server: subprocess.Popen) -> None:
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


@pytest.fixture
def two_processes(loaded_env):
    """`sonae serve` with two serving processes: (the server, its base URL)."""
    server, base = _start_serving(2)
    try:
        yield server, base
    finally:
        _end(server)


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


def _connections_per_process(port: int, clients: list[socket.socket], server: int) -> list[int]:
    """How many of `clients`' connections each serving process holds, from
    /proc (the server side of each is a socket with the client's port as
    its peer)."""
    peers = {client.getsockname()[1] for client in clients}
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port, remote_port = (int(address.split(":")[1], 16) for address in fields[1:3])
        if local_port == port and remote_port in peers and fields[3] == "01":  # ESTABLISHED
            inodes.add(fields[9])
    return [sum(_socket_inode(fd) in inodes for fd in Path(f"/proc/{pid}/fd").iterdir()) for pid in _serving_children(server)]


def _socket_inode(fd: Path) -> str | None:
    try:
        return os.readlink(fd).removeprefix("socket:[").removesuffix("]")
    except FileNotFoundError:
        return None  # closed since the listing (the render pool starting beside)


def _open_connections(port: int) -> int:
    return sum(1 for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
               if int(line.split()[1].split(":")[1], 16) == port and line.split()[3] == "01")


def _ask_on(client: socket.socket) -> bytes:
    client.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    return client.recv(65536)


def test_a_burst_of_connections_is_shared_evenly(two_processes):
    """Eight keep-alive connections at once, as wrk or eight counters'
    browsers opening at nine: four each, not whichever process woke first
    taking most and keeping them."""
    server, base = two_processes
    port = int(base.rsplit(":", 1)[1])
    _wait_for(lambda: _open_connections(port) == 0, "the start's connections closed")
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(8)]
    try:
        assert all(_ask_on(client).startswith(b"HTTP/1.1 200") for client in clients)
        assert sorted(_connections_per_process(port, clients, server.pid)) == [4, 4]
    finally:
        for client in clients:
            client.close()


def _answered(clients: list[socket.socket]) -> None:
    for client in clients:
        client.settimeout(60)
        assert _ask_on(client).startswith(b"HTTP/1.1 200")


def test_connections_made_while_the_serving_processes_start_are_shared_evenly(loaded_env):
    """The first process ready does not take every connection queued while
    the other starts (a restart with the counters' browsers open)."""
    port = free_port()
    write_config(web={"processes": 2, "render_processes": 2, "port": port}, counter={"daily_cap_per_requester": 0})
    server = subprocess.Popen([sys.executable, "-m", "fallback.cli", "serve"], stderr=subprocess.DEVNULL, start_new_session=True)
    clients = []
    try:
        clients = [_wait_for(lambda: _connect(port), "the port listening")]
        clients += [socket.create_connection(("127.0.0.1", port)) for _ in range(7)]
        for client in clients:
            client.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")  # queued before any process is ready
        for client in clients:
            client.settimeout(60)
            assert client.recv(65536).startswith(b"HTTP/1.1 200")
        assert sorted(_connections_per_process(port, clients, server.pid)) == [4, 4]
    finally:
        for client in clients:
            client.close()
        _end(server)


def _connect(port: int) -> socket.socket | None:
    try:
        return socket.create_connection(("127.0.0.1", port), timeout=1)
    except OSError:
        return None


def test_a_replacement_takes_its_share_of_the_connections_made_while_it_starts(two_processes):
    server, base = two_processes
    port = int(base.rsplit(":", 1)[1])
    _wait_for(lambda: _open_connections(port) == 0, "the start's connections closed")
    held: list[socket.socket] = []
    arrived: list[socket.socket] = []
    try:
        held += [socket.create_connection(("127.0.0.1", port)) for _ in range(8)]
        _answered(held)
        killed = _serving_children(server.pid)[0]
        os.kill(killed, signal.SIGKILL)
        _wait_for(lambda: killed not in _serving_children(server.pid), "the killed process gone")
        kept = [client for client in held if _connections_per_process(port, [client], server.pid) != [0]]
        arrived += [socket.create_connection(("127.0.0.1", port)) for _ in range(8)]  # while its replacement starts
        _answered(arrived)
        assert sorted(_connections_per_process(port, kept + arrived, server.pid)) == [6, 6]
    finally:
        for client in held + arrived:
            client.close()


def test_a_replacement_that_keeps_failing_leaves_the_others_serving(two_processes, loaded_env):
    """The configuration file edited wrongly since the start, then a serving
    process killed: its replacements cannot start, and the server says so
    and goes on answering with the other instead of stopping it too."""
    server, base = two_processes
    port = int(base.rsplit(":", 1)[1])
    write_config(web={"processes": 2, "render_processes": 2, "port": port, "threads": "sixteen"})
    killed, survivor = _serving_children(server.pid)
    os.kill(killed, signal.SIGKILL)
    server.said.wait_for(lambda text: "1 other(s) serving and 0 starting go on, and another is tried in 60 s" in text,
                         "giving up for a minute")
    assert server.poll() is None
    assert _serving_children(server.pid) == [survivor]
    assert all(requests.get(f"{base}/healthz", timeout=10).status_code == 200 for _ in range(5))
    assert "web.threads" in server.said.text()


def test_a_stopped_serving_process_does_not_stop_the_other_taking_connections(two_processes):
    """Stopped (SIGSTOP, or wedged) with as few connections as the other,
    it would be the one whose turn it is: the other takes every connection
    once it sees the stopped one no longer looks."""
    server, base = two_processes
    port = int(base.rsplit(":", 1)[1])
    _wait_for(lambda: _open_connections(port) == 0, "the start's connections closed")
    stopped, _ = _serving_children(server.pid)
    os.kill(stopped, signal.SIGSTOP)
    clients = []
    try:
        for _ in range(3):
            clients.append(socket.create_connection(("127.0.0.1", port), timeout=20))
            assert _ask_on(clients[-1]).startswith(b"HTTP/1.1 200")
        assert _connections_per_process(port, clients, server.pid)[_serving_children(server.pid).index(stopped)] == 0
    finally:
        os.kill(stopped, signal.SIGCONT)
        for client in clients:
            client.close()


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
    said = server.said.all()
    assert f"serving process {killed} was killed by SIGKILL; starting another" in said, said
    assert "Traceback" not in said
    assert "Warning" not in said, said  # nothing raw from what the killed process left behind


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


@pytest.mark.parametrize("stop_timeout_s", [0, -1, 601])
def test_web_stop_timeout_out_of_range_is_refused_naming_the_setting(sonae_env, stop_timeout_s):
    write_config(web={"stop_timeout_s": stop_timeout_s})
    with pytest.raises(ConfigError) as refused:
        load_config()
    assert "web.stop_timeout_s" in str(refused.value) and "above 0 and at most 600" in str(refused.value)


@pytest.mark.parametrize("processes", [-1, 65])
def test_web_processes_out_of_range_is_refused_naming_the_setting(sonae_env, processes):
    write_config(web={"processes": processes})
    with pytest.raises(ConfigError) as refused:
        load_config()
    assert "web.processes" in str(refused.value)
    assert f"{processes}: 0 (one process per usable core), 1 (the server process alone) or up to 64 processes" in str(refused.value)



@pytest.mark.parametrize("processes", [1, 2])
def test_a_second_server_refused_for_the_port_voids_nothing_the_running_one_renders(loaded_env, processes):
    """A second `sonae serve` on the port is refused before it touches the
    box: the serials the running server has committed and not yet rendered
    are not voided under it (each start voids what a dead server left)."""
    server, base = _start_serving(processes)
    try:
        counter = Counter(base)
        answer: list[requests.Response] = []
        sending = threading.Thread(target=lambda: answer.append(counter.http.post(
            f"{base}/api/v1/residents/{YAMADA_TARO}/certificates", timeout=120,
            json={"kind": "juminhyo", "requester_type": "self", "identity_document": "運転免許証", "members": [YAMADA_TARO],
                  "copies": 10, "confirm_repeat": True})))
        sending.start()
        _wait_for(lambda: "allocated" in _statuses(loaded_env).values(), "serials committed", timeout=60)
        os.killpg(server.pid, signal.SIGSTOP)  # its renders held where they are while the second starts
        try:
            second = subprocess.run([sys.executable, "-m", "fallback.cli", "serve"], capture_output=True, text=True, timeout=120)
        finally:
            os.killpg(server.pid, signal.SIGCONT)
        port = base.rsplit(":", 1)[1]
        assert second.returncode == 1 and second.stderr.strip() == (
            f"Error: port {port} (web.port) on 127.0.0.1 is already in use by another program (another `sonae serve`?): "
            "stop that program, or set web.port to a free port"), second.stderr
        sending.join(120)
        assert answer and answer[0].status_code == 201, answer and answer[0].text
        assert set(_statuses(loaded_env).values()) == {"rendered"}
    finally:
        _end(server)


def test_sigterm_while_serving_processes_start_stops_them_all(loaded_env):
    port = free_port()
    write_config(web={"processes": 4, "port": port})
    server = subprocess.Popen([sys.executable, "-m", "fallback.cli", "serve"], stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _wait_for(lambda: _serving_children(server.pid), "the first serving process")
        server.send_signal(signal.SIGTERM)  # before they are all up
        assert server.wait(30) == 0
        _wait_for(lambda: not _session_members(server.pid), "every serving process ended", timeout=30)
        assert "SIGTERM: stopping" in server.stderr.read()
    finally:
        _end(server)


def test_a_serving_process_that_does_not_stop_is_killed_after_the_stop_timeout(loaded_env):
    server, _ = _start_serving(2, stop_timeout_s=3)
    try:
        frozen, _other = _serving_children(server.pid)
        os.kill(frozen, signal.SIGSTOP)
        started = time.monotonic()
        server.send_signal(signal.SIGTERM)
        assert server.wait(60) == 0
        assert time.monotonic() - started >= 2.9  # it waited web.stop_timeout_s for the frozen one
        assert f"serving process {frozen} did not stop within 3 s of SIGTERM: killed" in server.said.all()
        _wait_for(lambda: not _session_members(server.pid), "every serving process ended")
    finally:
        _end(server)


def _session_members(leader: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int(entry.name) != leader and os.getsid(int(entry.name)) == leader:
                if "Z" not in (entry / "stat").read_text().rsplit(")", 1)[1][:3]:
                    members.append(int(entry.name))
        except (OSError, ValueError):
            pass  # ended meanwhile
    return members


def _processes_in_session(session: int) -> dict[int, list[bytes]]:
    """Live processes of the session `session` leads, by pid, with their
    command lines: a server started in its own session and every process it
    forked, wherever they were re-parented, even one forked but not yet
    running its own program (which holds the listening socket too)."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            state, _ppid, _pgrp, its_session = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:4]
            if entry.name.isdigit() and int(its_session) == session and state != "Z":
                found[int(entry.name)] = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            pass
    return found


def test_a_server_killed_while_its_serving_processes_start_leaves_none_behind(loaded_env):
    """Killed before a serving process has asked Linux to end it with the
    server: that process sees it was orphaned and does not serve."""
    port = free_port()
    write_config(web={"processes": 2, "port": port})
    server = subprocess.Popen([sys.executable, "-m", "fallback.cli", "serve"], stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_for(lambda: any(b"--server-pid" in command for command in _processes_in_session(server.pid).values()),
                  "the serving processes started", timeout=60)
        server.kill()  # they are still importing Sonae
        server.wait()
        _wait_for(lambda: not _processes_in_session(server.pid), "no process of the server left", timeout=30)
        with socket.create_server(("127.0.0.1", port)):
            pass  # nobody kept the port
    finally:
        for orphan in _processes_in_session(server.pid):
            os.kill(orphan, signal.SIGKILL)


def test_a_serving_process_started_by_hand_is_refused_in_one_line(sonae_env):
    started = subprocess.run([sys.executable, "-m", "fallback.cli", "serve", "--listen-fd", "3"], capture_output=True, text=True, timeout=60)
    assert started.returncode == 2
    assert "--listen-fd is for the serving processes `sonae serve` starts itself" in started.stderr
    assert "Traceback" not in started.stderr


@pytest.fixture
def supervisor():
    """The server's bookkeeping of its serving processes, with one real
    process standing in for a healthy serving process in slot 1."""
    with socket.socket() as sock:
        serving = ServingProcesses(sock, 2, None, stop_timeout_s=5)
        healthy = subprocess.Popen(["sleep", "60"])
        serving.running[healthy.pid] = (healthy, 1)
        try:
            yield serving
        finally:
            healthy.kill()
            healthy.wait()


def test_failed_starts_a_minute_old_do_not_count_against_a_later_death(supervisor):
    now = time.monotonic()
    for _ in range(3):
        supervisor._replace(1, 1, 0, was_serving=False)  # three starts failed: given up on for a minute
    assert supervisor.starts_due[0] > now + 30
    supervisor.quick_deaths = [at - 61 for at in supervisor.quick_deaths]  # … a minute ago
    supervisor.starts_due.clear()
    supervisor._replace(2, -9, 0, was_serving=True)  # a healthy process killed now
    assert supervisor.starts_due[0] < now + 5  # replaced at once, not given up on
    assert supervisor.quick_deaths == []


def test_the_death_of_a_process_that_had_served_never_counts_as_a_failed_start(supervisor):
    now = time.monotonic()
    supervisor._replace(1, 1, 0, was_serving=False)
    supervisor._replace(2, 1, 0, was_serving=False)
    supervisor._replace(3, -9, 0, was_serving=True)  # the third death, but of a process that had served
    assert supervisor.starts_due[0] < now + 5


def test_only_a_replacement_for_a_process_that_served_holds_connections_back(supervisor):
    """A replacement for one that never got ready does not count as
    starting: a slot whose starts keep failing slowly would otherwise keep
    the others from taking connections."""
    supervisor._replace(1, 1, 0, was_serving=False)
    assert 0 not in supervisor.starting_since and supervisor.shares.counts()[0] is None
    supervisor._replace(2, -9, 0, was_serving=True)
    assert 0 in supervisor.starting_since and supervisor.shares.counts()[0] == 0


def test_a_replacement_has_its_whole_time_to_get_ready_counted_from_its_start(supervisor):
    """The pause before a replacement starts does not eat into the time it
    holds the others back while it gets ready (on a busy box a start took
    most of the time, and the others took every connection made meanwhile)."""
    supervisor._replace(2, -9, 0, was_serving=True)
    supervisor.starting_since[0] -= ServingProcesses.RESTART_PAUSE_S  # the pause has passed
    before = time.monotonic()
    supervisor.start_one(0)
    try:
        assert supervisor.starting_since[0] >= before
    finally:
        for process, slot in list(supervisor.running.values()):
            if slot == 0:
                process.kill()
                process.wait()


@pytest.mark.parametrize(("limit", "processes", "each"), [(1000, 2, 499), (1000, 1, 998), (10, 64, 1), (10, 3, 3)])
def test_each_serving_process_takes_its_share_of_the_connection_limit(limit, processes, each):
    # waitress counts its listening socket, its wake pipe and the eventfd among the connections
    assert connection_limit_each(limit, processes) - 3 == each


def test_the_box_at_its_connection_limit_answers_as_many_as_one_process_would(loaded_env):
    server, base = _start_serving(2, connection_limit=10)
    port = int(base.rsplit(":", 1)[1])
    clients = []
    try:
        _wait_for(lambda: _open_connections(port) == 0, "the start's connections closed")
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(8)]  # one process holds 10 - 2
        for client in clients:
            client.settimeout(20)
        assert all(_ask_on(client).startswith(b"HTTP/1.1 200") for client in clients)
    finally:
        for client in clients:
            client.close()
        _end(server)


@pytest.mark.parametrize("limit", [9, 100_001])
def test_web_connection_limit_out_of_range_is_refused_naming_the_setting(sonae_env, limit):
    write_config(web={"connection_limit": limit})
    with pytest.raises(ConfigError) as refused:
        load_config()
    assert "web.connection_limit" in str(refused.value) and "from 10 to 100000" in str(refused.value)


def test_a_serving_process_hands_the_interpreter_on_sooner_than_python_does():
    """Python's 5 ms would let one busy thread hold back the answers of the
    others (and of waitress's I/O thread) by whole intervals."""
    before = sys.getswitchinterval()
    try:
        share_the_interpreter_between_threads()
        assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL_S)
        assert SWITCH_INTERVAL_S <= 0.001 < before
    finally:
        sys.setswitchinterval(before)

"""`sonae serve`: the counter application under waitress, a production WSGI
server with threads, and beside it a pool of processes that render
certificates (web.render_processes, fallback.counter.rendering.render_pool),
so that rendering uses every core.

With web.processes above 1 the server binds the port itself and starts that
many serving processes which accept on it in turn, each only while it holds
no more connections than the others (fallback.connection_shares), so that
searches too use every core: one interpreter answers about 500 requests a
second whatever the box has. Each serving
process renders in twice its share of the render processes. Serials and the
audit stay single-writer through SQLite's write lock (ops.Transaction), as
they already are between the server and `sonae worker`; what must happen
once per start — claiming this box's serial ranges, voiding serials a
killed server left unrendered — happens in the server before any serving
process starts. A serving process that dies is replaced; the server's own
end (SIGTERM, Ctrl-C) ends them all, and a server killed outright takes
them with it (PR_SET_PDEATHSIG).

HTTPS is ended by a reverse proxy in front (README, "Serving over HTTPS");
waitress believes that proxy's X-Forwarded-For and X-Forwarded-Proto only
when it is web.trusted_proxy, and drops those headers from anyone else."""

from __future__ import annotations

import ctypes
import datetime as dt
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import NamedTuple

import click
from waitress.adjustments import Adjustments

from fallback import audit, audit_writer
from fallback.cli_support import configure_logging, listen_problem, service_config, service_running, warn_without_config_file
from fallback.config import Config
from fallback.connection_shares import STARTING_S, ConnectionShares, SharingServer
from fallback.counter import issuance
from fallback.counter.rendering import render_pool, render_processes
from fallback.ops import open_ops
from fallback.staff.security import UPLOAD_LIMIT

log = logging.getLogger(__name__)

# How long a thread holding the interpreter lock keeps it while another
# waits (Python's default is 5 ms). A serving process answers on many
# threads at once, each needing the lock for a fraction of a millisecond
# between SQLite reads and socket writes, and waitress's I/O thread needs
# it to hand every answer out: at 5 ms each wait for the lock could add a
# whole interval to an answer. At 0.5 ms the 4M search bench's p95 fell by
# a sixth to a third on the kinds measured A/B (bench/README.md,
# fourteenth session). The render pool's processes keep Python's default;
# with web.render_processes = 1 certificates render in these threads, at
# this interval too (not measured).
SWITCH_INTERVAL_S = 0.0005


def waitress_options(config: Config) -> dict:
    """How waitress serves this appliance (the tests' live servers too)."""
    web = config["web"]
    options = {"threads": web["threads"], "ident": "sonae", "clear_untrusted_proxy_headers": True,
               # waitress would otherwise buffer up to 1 GB of a body the app refuses anyway
               "max_request_body_size": UPLOAD_LIMIT,
               # Half-open connections (headers trickled or never finished)
               # must not take the counters off the air: room for many more
               # than the counters use, silent ones closed sooner, and poll()
               # rather than select(), which fails past 1024 descriptors.
               "connection_limit": web["connection_limit"], "channel_timeout": web["channel_timeout_s"],
               "cleanup_interval": max(1, min(10, web["channel_timeout_s"])), "asyncore_use_poll": True}
    if web["trusted_proxy"]:
        options.update(trusted_proxy=web["trusted_proxy"], trusted_proxy_count=1,
                       trusted_proxy_headers={"x-forwarded-for", "x-forwarded-proto"})
    return options


def claim_serial_ranges(config: Config) -> None:
    """Before `sonae serve` or `sonae worker` runs: this box's serial ranges
    are its own in ops.db (a pair's boxes never share one), or it does not
    start, saying why in one line."""
    conn = open_ops(config)
    try:
        issuance.claim_serial_ranges(conn, config["counter"])
    finally:
        conn.close()


def void_serials_left_by_a_dead_server(config: Config) -> None:
    """At start no certificate of this box is being rendered (the web server
    is the one process that renders): serials a killed server committed
    without their PDF are voided now, not after the worker's window, so a
    clerk who issues again is not told they were handed out."""
    conn = open_ops(config)
    try:
        voided = issuance.void_unrendered(conn, older_than=dt.timedelta(0))
    finally:
        conn.close()
    if voided:
        log.warning("voided %d serial(s) a stopped server left without their certificate", len(voided))


def serving_processes(config: Config) -> int:
    """How many processes answer requests: web.processes, or one per core
    this process may run on."""
    return config["web"]["processes"] or len(os.sched_getaffinity(0))


class ListenAddress(NamedTuple):
    """Where `sonae serve` listens, and where each part came from (the
    setting, or its option): a refusal names the one to change."""
    host: str
    port: int
    host_from: str
    port_from: str

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def problem(self, exc: OSError) -> str:
        return listen_problem(exc, self.host, self.port, host_from=self.host_from, port_from=self.port_from)


@click.command()
@click.option("--host", help="Address to listen on (default web.host).")
@click.option("--port", type=int, help="Port (default web.port).")
@click.option("--threads", type=int, help="Worker threads of each serving process (default web.threads).")
@click.option("--listen-fd", type=int, hidden=True, help="A serving process: accept on this inherited socket (started by `sonae serve`).")
@click.option("--server-pid", type=int, hidden=True, help="A serving process: the `sonae serve` that started it.")
@click.option("--shares-fd", type=int, hidden=True, help="A serving process: the memory where the serving processes count their connections.")
@click.option("--wake-fds", hidden=True, help="A serving process: each serving process's eventfd, comma-separated.")
@click.option("--slot", type=int, hidden=True, help="A serving process: its place among them.")
@click.option("--lookup-writer", is_flag=True, hidden=True, help="The writer of look-up audit entries (started by `sonae serve`).")
@click.option("--heartbeat-fd", type=int, hidden=True, help="The look-up writer: the pipe it beats on while it runs.")
def serve(host, port, threads, listen_fd, server_pid, shares_fd, wake_fds, slot, lookup_writer, heartbeat_fd):
    """Serve the counter application."""
    config = service_config()
    configure_logging()
    if lookup_writer:
        if server_pid is None:
            raise click.UsageError("--lookup-writer is for the writer process `sonae serve` starts itself")
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() == server_pid:  # else the server ended before prctl took effect
            audit_writer.run(config, server_pid, audit.record_lookups, heartbeat_fd=heartbeat_fd)
        return
    if listen_fd is not None:
        if None in (server_pid, shares_fd, wake_fds, slot):
            raise click.UsageError("--listen-fd is for the serving processes `sonae serve` starts itself")
        shares = ConnectionShares(shares_fd, [int(fd) for fd in wake_fds.split(",")], slot)
        serve_on_inherited_socket(config, listen_fd, server_pid, threads, shares)
        return
    with service_running(config):
        address = ListenAddress(host or config["web"]["host"], port or config["web"]["port"],
                                "--host" if host else "web.host", "--port" if port else "web.port")
        processes = serving_processes(config)
        if processes == 1:
            serve_in_this_process(config, address, threads)
            return
        sock = bind(address)
        take_over_the_box(config)
        warn_without_config_file(config)
        renderers = render_processes_each(config, processes)
        click.echo(f"Sonae counter app on {address.url} in {processes} processes", err=True)
        if renderers > 1:
            click.echo(f"each renders certificates in {renderers} processes", err=True)
        with LookupWriter():
            ServingProcesses(sock, processes, threads, stop_timeout_s=config["web"]["stop_timeout_s"]).run()


class LookupWriter:
    """The writer of look-up audit entries (fallback.audit_writer) for as
    long as the server runs; its serving processes find it by its socket.
    One that ends is started again: meanwhile, and until a thread tries the
    writer again (audit_writer.RETRY_AFTER_S), the serving threads write
    their entries themselves, each waiting for ops.db's writer lock."""

    RESTART_PAUSE_S = 1.0
    # One that ends this soon after its start meets a fault a restart does
    # not mend (ops.db unopenable): tried again this much later, not at once.
    QUICK_END_S = 10.0
    RETRY_AFTER_QUICK_END_S = 30.0
    # The writer beats on a pipe every second (audit_writer.HEARTBEAT_S)
    # while its loop runs. Silent this long — stopped, or stuck far longer
    # than any wait for ops.db's writer lock — it is killed and replaced:
    # each serving thread would otherwise wait REPLY_TIMEOUT_S once per
    # RETRY_AFTER_S, and nothing would say why.
    SILENT_AFTER_S = 15.0

    def __init__(self) -> None:
        self._stopping = threading.Event()
        self._beats: int | None = None
        self._start()
        self._watcher = threading.Thread(target=self._keep_running, name="lookup-writer-watch", daemon=True)
        self._watcher.start()

    def _start(self) -> None:
        if self._beats is not None:
            os.close(self._beats)
        self._beats, beating = os.pipe()
        os.set_blocking(self._beats, False)
        os.set_blocking(beating, False)
        try:
            self.process = subprocess.Popen([sys.executable, "-P", "-m", "fallback.cli", "serve", "--lookup-writer",
                                             "--server-pid", str(os.getpid()), "--heartbeat-fd", str(beating)], pass_fds=(beating,))
        finally:
            os.close(beating)
        self.started = self.last_beat = time.monotonic()

    def _heard(self) -> bool:
        """Whether the writer beat since the last look."""
        try:
            return bool(os.read(self._beats, 4096))
        except BlockingIOError:
            return False

    def _keep_running(self) -> None:
        while not self._stopping.wait(self.RESTART_PAUSE_S):
            returncode = self.process.poll()
            if returncode is None:
                now = time.monotonic()
                if self._heard():
                    self.last_beat = now
                elif now - self.last_beat > self.SILENT_AFTER_S:
                    log.error("look-up audit writer %d has been silent for %.0f s (stopped or stuck): killing it", self.process.pid,
                              now - self.last_beat)
                    self.process.kill()
                    self.process.wait()
                continue
            quick = time.monotonic() - self.started < self.QUICK_END_S
            pause = self.RETRY_AFTER_QUICK_END_S if quick else 0.0
            log.error("look-up audit writer %d %s; another starts in %.0f s (the serving threads write their entries themselves "
                      "meanwhile)", self.process.pid, describe_end(returncode), pause + self.RESTART_PAUSE_S)
            if self._stopping.wait(pause):
                return
            self._start()

    def __enter__(self) -> LookupWriter:
        return self

    def __exit__(self, *exc) -> None:
        self._stopping.set()
        self._watcher.join()
        os.close(self._beats)
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def take_over_the_box(config: Config) -> None:
    """Once the port is this server's — a start refused for the port must
    change nothing, least of all void the serials a running server is
    rendering — and before any request: the box's serial ranges claimed,
    and what a dead server left unrendered voided."""
    claim_serial_ranges(config)
    void_serials_left_by_a_dead_server(config)


def share_the_interpreter_between_threads() -> None:
    sys.setswitchinterval(SWITCH_INTERVAL_S)


def serve_in_this_process(config: Config, address: ListenAddress, threads: int | None) -> None:
    from fallback.app import create_app

    share_the_interpreter_between_threads()
    app = create_app(config)
    options = waitress_options(config)
    if threads:
        options["threads"] = threads
    server = listen(app, address, options)
    take_over_the_box(config)
    warn_without_config_file(config)
    click.echo(f"Sonae counter app on {address.url}", err=True)
    # SIGTERM (systemd, docker stop) ends waitress's loop like Ctrl-C, so the
    # render pool below is closed rather than killed mid-certificate.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    audit_writer.use(audit_writer.socket_path(config.home))
    with render_pool(config) as pool, LookupWriter():
        if pool is not None:
            click.echo(f"rendering certificates in {pool.processes} processes", err=True)
        server.run()


def render_processes_each(config: Config, processes: int) -> int:
    """The render processes of one serving process: twice its share of
    web.render_processes, at most all of them (1: it renders in its own
    threads). A counter's connection stays with the serving process that
    accepted it, and even connections are not even work: before the
    processes shared connections 20 counters came 12 and 8, and a knee that
    left one process most of them issued half as many certificates a second
    as one serving process (bench_counter --compare-processes). With twice
    its share, one whose counters are twice as busy as the others' still
    renders at full speed; the idle render processes of the others cost
    memory, not CPU."""
    total = render_processes(config)
    return min(total, 2 * math.ceil(total / processes))


def connection_limit_each(limit: int, processes: int) -> int:
    """waitress's connection_limit for one serving process, such that the
    box holds as many connections as one process under web.connection_limit
    would (that limit less waitress's listening socket and its wake pipe,
    which it counts too): each process its share, and places for those two
    and its eventfd."""
    return math.ceil((limit - 2) / processes) + 3


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def serve_on_inherited_socket(config: Config, fd: int, server_pid: int | None, threads: int | None,
                              shares: ConnectionShares) -> None:
    """One serving process of a multi-process `sonae serve`: the app under
    waitress, accepting on the socket the server bound in turn with the
    others."""
    from fallback.app import create_app

    # Killed outright, the server cannot end its serving processes: Linux
    # does, so that none keeps the port, even one stopped (SIGSTOP).
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != server_pid:  # the server ended before prctl took effect
        return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    # Ctrl-C reaches the whole process group: the server alone decides when
    # its serving processes stop (it sends them SIGTERM).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    share_the_interpreter_between_threads()
    with service_running(config):
        app = create_app(config)
        options = waitress_options(config)
        if threads:
            options["threads"] = threads
        options["connection_limit"] = connection_limit_each(options["connection_limit"], serving_processes(config))
        server = SharingServer(app, socket.socket(fileno=fd), Adjustments(**options), shares)
        audit_writer.use(audit_writer.socket_path(config.home))
        with render_pool(config, processes=render_processes_each(config, serving_processes(config))):
            log.info("serving process %d ready", os.getpid())
            server.run()


class ServingProcesses:
    """The serving processes of `sonae serve`, kept at `count` until the
    server is told to stop. Processes that keep dying at start (a fault no
    restart mends, such as a configuration file edited wrongly since the
    start, which a replacement reads) end the server once none is left
    serving, so that systemd reports it; while others still serve, the
    server says so and tries again a minute later."""

    RESTART_PAUSE_S = 1.0
    # A process that ends before it got ready died "at start" — however long
    # it took: on a busy box a start takes over 9 s (connection_shares.STARTING_S).
    QUICK_DEATHS_TO_GIVE_UP = 3  # … this many times within
    QUICK_DEATHS_WINDOW_S = 60.0
    RETRY_AFTER_S = 60.0  # after giving up on a slot while others serve

    def __init__(self, sock: socket.socket, count: int, threads: int | None, *, stop_timeout_s: float):
        self.sock, self.count, self.threads = sock, count, threads
        self.shares = ConnectionShares.create(count)
        self.stop_timeout_s = stop_timeout_s  # then SIGKILL: a stopped or stuck process must not hold the port
        self.running: dict[int, tuple[subprocess.Popen, int]] = {}  # pid: (the process, its slot)
        self.starts_due: dict[int, float] = {}  # slot: when its next process starts
        self.starting_since: dict[int, float] = {}  # slot: since when it counts as a process starting (ConnectionShares)
        self.stopping_since: float | None = None
        self.quick_deaths: list[float] = []

    def start_one(self, slot: int) -> None:
        # -P: the working directory is not put on sys.path, so a `fallback`
        # folder wherever the server was started cannot stand in for Sonae.
        command = [sys.executable, "-P", "-m", "fallback.cli", "serve", "--listen-fd", str(self.sock.fileno()),
                   "--server-pid", str(os.getpid()), *self.shares.serving_process_arguments(slot)]
        if self.threads:
            command += ["--threads", str(self.threads)]
        process = subprocess.Popen(command, pass_fds=(self.sock.fileno(), *self.shares.fds()))
        self.running[process.pid] = (process, slot)
        if slot in self.starting_since:  # its time to get ready counts from now, not from the pause before
            self.starting_since[slot] = time.monotonic()
        if self.stopping_since is not None:  # told to stop while this one started
            process.send_signal(signal.SIGTERM)

    def stop(self, signum: int, _frame=None) -> None:
        if self.stopping_since is None:
            log.info("%s: stopping %d serving process(es)", signal.Signals(signum).name, len(self.running))
            self.stopping_since = time.monotonic()
        for process, _ in list(self.running.values()):  # a signal may come while run() changes it
            process.send_signal(signal.SIGTERM)

    def run(self) -> None:
        for stop_signal in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(stop_signal, self.stop)
        for slot in range(self.count):
            if self.stopping_since is None:
                self._count_as_starting(slot)
                self.start_one(slot)
        while self.running or (self.starts_due and self.stopping_since is None):
            now = time.monotonic()
            for pid, (process, slot) in list(self.running.items()):
                if process.poll() is None:
                    continue
                del self.running[pid]
                self.starting_since.pop(slot, None)
                was_serving = self.shares.reported(slot)
                self.shares.clear(slot)
                if self.stopping_since is None:
                    self._replace(pid, process.returncode, slot, was_serving)
            for slot, since in list(self.starting_since.items()):
                if now - since < STARTING_S:
                    self.shares.keep_starting(slot)
                else:
                    del self.starting_since[slot]
            for slot, due in list(self.starts_due.items()):
                if now >= due and self.stopping_since is None:
                    del self.starts_due[slot]
                    self.start_one(slot)
            self._kill_the_ones_that_do_not_stop()
            time.sleep(0.1)

    def _replace(self, pid: int, returncode: int, slot: int, was_serving: bool) -> None:
        ended = describe_end(returncode)
        now = time.monotonic()
        self.quick_deaths = [at for at in self.quick_deaths if now - at < self.QUICK_DEATHS_WINDOW_S]
        died_at_start = not was_serving
        if died_at_start:
            self.quick_deaths.append(now)
        if not died_at_start or len(self.quick_deaths) < self.QUICK_DEATHS_TO_GIVE_UP:
            log.warning("serving process %d %s; starting another", pid, ended)
            self.starts_due[slot] = now + self.RESTART_PAUSE_S
            # The browsers whose connections it held reconnect at once: from
            # now its replacement's turn. Not for one that never got ready —
            # a replacement that keeps failing would hold connections back
            # for good.
            if was_serving:
                self._count_as_starting(slot)
            return
        serving = sum(self.shares.reported(other) for _, other in self.running.values())
        if self.running:
            log.error("serving process %d %s; %d serving processes ended at start within %.0f s: %d other(s) serving and %d "
                      "starting go on, and another is tried in %.0f s (mend the cause: see the lines above)", pid, ended,
                      len(self.quick_deaths), self.QUICK_DEATHS_WINDOW_S, serving, len(self.running) - serving, self.RETRY_AFTER_S)
            self.starts_due[slot] = now + self.RETRY_AFTER_S
            return
        log.error("serving process %d %s; %d serving processes ended at start within %.0f s and none is left: stopping", pid, ended,
                  len(self.quick_deaths), self.QUICK_DEATHS_WINDOW_S)
        self.stopping_since = now
        raise click.ClickException("serving processes keep ending as they start: see the log above, mend the cause, "
                                   "then start `sonae serve` again")

    def _count_as_starting(self, slot: int) -> None:
        self.starting_since[slot] = time.monotonic()
        self.shares.starting(slot)

    def _kill_the_ones_that_do_not_stop(self) -> None:
        if self.stopping_since is None or time.monotonic() - self.stopping_since < self.stop_timeout_s:
            return
        for pid, (process, _) in list(self.running.items()):
            log.warning("serving process %d did not stop within %g s of SIGTERM: killed", pid, self.stop_timeout_s)
            process.send_signal(signal.SIGKILL)
        self.stopping_since = time.monotonic()  # once per timeout, not at every poll


def describe_end(returncode: int) -> str:
    if returncode < 0:
        return f"was killed by {signal.Signals(-returncode).name}"
    return f"ended with exit code {returncode}"


def bind(address: ListenAddress) -> socket.socket:
    """The socket the serving processes share, listening, or a one-line
    refusal as listen() gives. A connection made while they start waits in
    its queue until the first is ready."""
    try:
        family = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address.host, address.port))
        # Listening at once is what makes the port this server's: two
        # sockets with SO_REUSEADDR may both be bound until one listens.
        sock.listen(1024)
    except OSError as exc:
        raise click.ClickException(address.problem(exc)) from None
    sock.set_inheritable(True)
    return sock


def listen(app, address: ListenAddress, options: dict):
    """The waitress server bound to `address`, or a one-line refusal naming
    where the address came from and what to do: nothing says the app is on
    an address before it listens there."""
    import waitress

    try:
        socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM)  # waitress would say only "Invalid host/port specified"
        return waitress.create_server(app, host=address.host, port=address.port, **options)
    except OSError as exc:
        raise click.ClickException(address.problem(exc)) from None

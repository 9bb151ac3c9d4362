"""`sonae serve`: the counter application under waitress, a production WSGI
server with threads in one process — the simple fit for one SQLite writer —
and beside it a pool of processes that render certificates
(web.render_processes, fallback.counter.rendering.render_pool), so that
rendering uses every core while serials, the audit and every database write
stay in this one process.

HTTPS is ended by a reverse proxy in front (README, "Serving over HTTPS");
waitress believes that proxy's X-Forwarded-For and X-Forwarded-Proto only
when it is web.trusted_proxy, and drops those headers from anyone else."""

from __future__ import annotations

import datetime as dt
import logging
import signal
import socket
import sys

import click

from fallback.cli_support import configure_logging, listen_problem, service_config, service_running, warn_without_config_file
from fallback.config import Config
from fallback.counter import issuance
from fallback.counter.rendering import render_pool
from fallback.ops import open_ops
from fallback.staff.security import UPLOAD_LIMIT

log = logging.getLogger(__name__)


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


@click.command()
@click.option("--host", help="Address to listen on (default web.host).")
@click.option("--port", type=int, help="Port (default web.port).")
@click.option("--threads", type=int, help="Worker threads (default web.threads).")
def serve(host, port, threads):
    """Serve the counter application."""
    from fallback.app import create_app

    config = service_config()
    configure_logging()
    with service_running(config):
        claim_serial_ranges(config)
        void_serials_left_by_a_dead_server(config)
        app = create_app(config)
        host = host or config["web"]["host"]
        port = port or config["web"]["port"]
        options = waitress_options(config)
        if threads:
            options["threads"] = threads
        server = listen(app, host, port, options)
        warn_without_config_file(config)
        click.echo(f"Sonae counter app on http://{host}:{port}/", err=True)
        # SIGTERM (systemd, docker stop) ends waitress's loop like Ctrl-C, so the
        # render pool below is closed rather than killed mid-certificate.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        with render_pool(config) as pool:
            if pool is not None:
                click.echo(f"rendering certificates in {pool.processes} processes", err=True)
            server.run()


def listen(app, host: str, port: int, options: dict):
    """The waitress server bound to host:port, or a one-line refusal naming
    web.host / web.port and what to do: nothing says the app is on an
    address before it listens there."""
    import waitress

    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)  # waitress would say only "Invalid host/port specified"
        return waitress.create_server(app, host=host, port=port, **options)
    except OSError as exc:
        raise click.ClickException(listen_problem(exc, host, port)) from None

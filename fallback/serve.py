"""`sonae serve`: the counter application under waitress, a production WSGI
server with threads in one process — the simple fit for one SQLite writer.

HTTPS is ended by a reverse proxy in front (README, "Serving over HTTPS");
waitress believes that proxy's X-Forwarded-For and X-Forwarded-Proto only
when it is web.trusted_proxy, and drops those headers from anyone else."""

from __future__ import annotations

import click

from fallback.cli_support import configure_logging, service_config, service_running
from fallback.config import Config
from fallback.counter import issuance
from fallback.ops import open_ops
from fallback.staff.security import UPLOAD_LIMIT


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


@click.command()
@click.option("--host", help="Address to listen on (default web.host).")
@click.option("--port", type=int, help="Port (default web.port).")
@click.option("--threads", type=int, help="Worker threads (default web.threads).")
def serve(host, port, threads):
    """Serve the counter application."""
    import waitress

    from fallback.app import create_app

    config = service_config()
    configure_logging()
    with service_running(config):
        claim_serial_ranges(config)
        app = create_app(config)
        host = host or config["web"]["host"]
        port = port or config["web"]["port"]
        click.echo(f"Sonae counter app on http://{host}:{port}/", err=True)
        options = waitress_options(config)
        if threads:
            options["threads"] = threads
        waitress.serve(app, host=host, port=port, **options)

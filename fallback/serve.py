"""`sonae serve`: the counter application under waitress, a production WSGI
server with threads in one process — the simple fit for one SQLite writer."""

from __future__ import annotations

import click

from fallback.cli_support import service_config


@click.command()
@click.option("--host", help="Address to listen on (default web.host).")
@click.option("--port", type=int, help="Port (default web.port).")
@click.option("--threads", type=int, help="Worker threads (default web.threads).")
def serve(host, port, threads):
    """Serve the counter application."""
    import waitress

    from fallback.app import create_app

    config = service_config()
    app = create_app(config)
    host = host or config["web"]["host"]
    port = port or config["web"]["port"]
    click.echo(f"Sonae counter app on http://{host}:{port}/", err=True)
    waitress.serve(app, host=host, port=port, threads=threads or config["web"]["threads"], ident="sonae", clear_untrusted_proxy_headers=True)

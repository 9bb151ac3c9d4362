"""Handles on the two databases for request code, flaskr-style in use
(`get_ops()`, `get_register()` anywhere in a request) but kept open per
server thread instead of per request.

Why per thread: opening a SQLCipher connection is cheap, but closing the
last connection to a WAL database checkpoints it, and a fresh connection
starts with a cold (encrypted) page cache. Per request, that was two thirds
of a search's time. waitress serves from a fixed pool of threads, so there
is one ops connection and one snapshot reader per thread; they live on the
app (app.extensions), so a discarded app (tests) takes them with it.
"""

from __future__ import annotations

import threading

from flask import current_app, g

from fallback.ops import open_ops

EXTENSION = "sonae_connections"


def _local() -> threading.local:
    return current_app.extensions[EXTENSION]


def get_ops():
    local = _local()
    conn = getattr(local, "ops", None)
    if conn is None:
        conn = local.ops = open_ops(current_app.config["SONAE"])
    if conn.in_transaction:
        # A request that died mid-transaction must not leave its lock to the next.
        conn.execute("ROLLBACK")
    return conn


def reset_after_request(exc=None) -> None:
    """Nothing is closed: only a transaction a failed request left open is
    rolled back, so the next request on this thread starts clean."""
    g.pop("register_checked", None)
    conn = getattr(current_app.extensions[EXTENSION], "ops", None)
    if conn is not None and conn.in_transaction:
        conn.execute("ROLLBACK")


def init_app(app) -> None:
    app.extensions[EXTENSION] = threading.local()
    app.teardown_appcontext(reset_after_request)

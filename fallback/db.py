"""Per-request handles on the two databases, flaskr-style: opened on first
use within a request, closed at teardown."""

from __future__ import annotations

from flask import current_app, g

from fallback.ops import open_ops


def get_ops():
    if "ops" not in g:
        g.ops = open_ops(current_app.config["SONAE"])
    return g.ops


def close_databases(exc=None) -> None:
    ops = g.pop("ops", None)
    if ops is not None:
        ops.close()
    register = g.pop("register", None)
    if register is not None:
        register.close()


def init_app(app) -> None:
    app.teardown_appcontext(close_databases)

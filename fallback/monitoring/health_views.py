"""/healthz, /readyz and /metrics for load balancers, systemd watchdogs and
Prometheus. All three answer without a staff login (a scraper has no staff
account) and carry no resident data — only states, ages and counts.

What anyone may learn is what the public outage notice says: whether the
appliance is serving, and in which mode. /readyz's status code (200 or
503) and its one-word status are public, for load balancers and the
pair's failover; its reasons and figures, and every metric beyond the mode
and readiness, need alerts.metrics_token ("Authorization: Bearer <token>").
Without a token configured they are not served at all: the IT dashboard
shows them to logged-in staff.
"""

from __future__ import annotations

import hmac

from flask import Blueprint, Response, current_app, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST

from fallback.db import get_ops
from fallback.keys import key_status
from fallback.monitoring import health
from fallback.ops import now
from fallback.staff.security import sessionless
from sync import crypto

bp = Blueprint("health", __name__, template_folder="templates")


def _no_store(response):
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("/healthz")
@sessionless
def healthz():
    """Liveness: the web process answers. Nothing else is checked, so a
    restart is never triggered by a problem a restart cannot fix."""
    return _no_store(jsonify(status="alive", at=now().isoformat(timespec="seconds")))


def _token_sent() -> bool:
    """The request carries the configured alerts.metrics_token (never true
    while none is configured)."""
    token = current_app.config["SONAE"]["alerts"]["metrics_token"]
    sent = request.headers.get("Authorization", "")
    return bool(token) and hmac.compare_digest(sent.encode(), f"Bearer {token}".encode())


@bp.route("/readyz")
@sessionless
def readyz():
    config = current_app.config["SONAE"]
    conn, problem = None, None
    if key_status(config) is None:
        try:
            conn = get_ops()
        except (crypto.DatabaseError, crypto.WrongKeyError, OSError) as exc:  # its disk fails (the key loads)
            problem = exc
    try:
        state = health.readiness(config, conn, now(), ops_problem=problem)
    except PermissionError as exc:  # the state directory was taken from this uid under the running server
        state = health.state_unusable(config, exc, now())
    # Without the token: only which checks fail (their names), never what they found.
    response = jsonify(state.body if _token_sent() else
                       {"status": state.body["status"], **({"failing": state.body["failing"]} if not state.ready else {})})
    response.status_code = 200 if state.ready else 503
    return _no_store(response)


@bp.route("/metrics")
@sessionless
def metrics():
    config = current_app.config["SONAE"]
    if request.headers.get("Authorization") and not _token_sent():
        return Response("wrong token: send Authorization: Bearer <alerts.metrics_token>, or none for the public metrics\n",
                        status=401, mimetype="text/plain", headers={"WWW-Authenticate": "Bearer"})
    conn = get_ops() if key_status(config) is None else None
    text = health.metrics_text(config, conn, now(), public=not _token_sent())
    return _no_store(Response(text, content_type=CONTENT_TYPE_LATEST))

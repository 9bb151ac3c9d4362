"""/healthz, /readyz and /metrics for load balancers, systemd watchdogs and
Prometheus. All three are public (a scraper has no staff account) and carry
no resident data — only states, ages and counts.

/metrics is public by default because it says no more than the outage
notice does (mode, data age, counts of certificates by type); a ward that
wants it closed sets alerts.metrics_token and the scraper sends
"Authorization: Bearer <token>".
"""

from __future__ import annotations

import hmac

from flask import Blueprint, Response, current_app, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST

from fallback.db import get_ops
from fallback.keys import key_status
from fallback.monitoring import health
from fallback.ops import now
from fallback.staff.security import public

bp = Blueprint("health", __name__, template_folder="templates")


def _no_store(response):
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("/healthz")
@public
def healthz():
    """Liveness: the web process answers. Nothing else is checked, so a
    restart is never triggered by a problem a restart cannot fix."""
    return _no_store(jsonify(status="alive", at=now().isoformat(timespec="seconds")))


@bp.route("/readyz")
@public
def readyz():
    state = health.readiness(current_app.config["SONAE"], now())
    response = jsonify(state.body)
    response.status_code = 200 if state.ready else 503
    return _no_store(response)


@bp.route("/metrics")
@public
def metrics():
    config = current_app.config["SONAE"]
    token = config["alerts"]["metrics_token"]
    if token:
        sent = request.headers.get("Authorization", "")
        if not hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
            return Response("metrics need Authorization: Bearer <alerts.metrics_token>\n", status=401,
                            mimetype="text/plain", headers={"WWW-Authenticate": "Bearer"})
    conn = get_ops() if key_status(config) is None else None
    return _no_store(Response(health.metrics_text(config, conn, now()), content_type=CONTENT_TYPE_LATEST))

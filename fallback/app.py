"""The application factory (flaskr-style): config from one place, one
blueprint per area, local state under SONAE_HOME."""

from __future__ import annotations

import datetime as dt
import io

from flask import Flask, Request, current_app, jsonify, render_template, request, url_for
from werkzeug.exceptions import HTTPException, InternalServerError, MethodNotAllowed, NotFound

from fallback import banner, db, disk, filters
from fallback.config import Config, ConfigError, load_config
from fallback.counter.issuance import SUPPORT_MEASURE_APPROVABLE
from fallback.errors import (
    INTERNAL_FAULT_MESSAGE,
    KEY_UNUSABLE_MESSAGE,
    InternalFault,
    KeyUnusable,
    SonaeError,
    permission_fault,
    storage_fault,
)
from fallback.keys import session_secret
from fallback.ops import open_ops
from fallback.staff import security
from sync.crypto import DatabaseError, KeyFileError

BLUEPRINTS = (
    "fallback.staff.auth_views",
    "fallback.monitoring.views",
    "fallback.monitoring.health_views",
    "fallback.counter.views",
    "fallback.modes.views",
    "fallback.counter.api",
    "fallback.verification.views",
    "fallback.staff.auditor_views",
    "fallback.runbooks.views",
    "fallback.drills.views",
    "fallback.recovery.views",
    "fallback.residents.public_views",
    "fallback.residents.notice_views",
    "fallback.residents.form_views",
    "fallback.holds.views",
    "fallback.filings.views",
    "fallback.reentry.views",
    "fallback.maintenance.views",
    "fallback.counter.cancellation_views",
)


class InMemoryUploadsRequest(Request):
    """Uploads stay in memory, never in a temporary file (werkzeug spools
    those over 500 KB to /tmp in clear); MAX_CONTENT_LENGTH bounds them."""

    def _get_file_stream(self, total_content_length, content_type, filename=None, content_length=None):
        return io.BytesIO()


def check_config(config: Config) -> None:
    """Settings that would silently not do what a ward meant."""
    listed = set(config["counter"]["support_measure_approvable"])
    if not listed <= set(SUPPORT_MEASURE_APPROVABLE):
        raise ConfigError(
            f"counter.support_measure_approvable may list only {', '.join(SUPPORT_MEASURE_APPROVABLE)}; "
            f"{', '.join(sorted(listed - set(SUPPORT_MEASURE_APPROVABLE)))} asking for a 支援措置 resident's record are always refused"
        )


def answer(error: SonaeError):
    """The one way a refusal reaches the web: a JSON error under /api/ (or
    when JSON is asked for), else its Japanese page."""
    if security.wants_json():
        body = jsonify(error=error.code, message=error.message, **error.details())
    elif error.chrome:
        links = [(url_for(endpoint, **values), label) for endpoint, values, label in error.links()]
        body = render_template(error.template, title=error.title, message=error.message, links=links)
    else:  # without the context processors that fill in the chrome
        body = current_app.jinja_env.get_template(error.template).render(title=error.title, message=error.message)
    return body, error.status, error.headers()


def storage_or_reraise(exc: Exception):
    """A database or file error that is the disk's doing (full, I/O, held)
    or a state directory this uid may not use answers as a StorageFault;
    any other is a bug, left to Flask's 500."""
    home = current_app.config["SONAE"].home
    fault = storage_fault(exc, home) or permission_fault(exc, home)
    if fault is None:
        raise exc
    current_app.logger.error("%s %s: %s", request.method, request.path, fault.reason)
    return answer(fault)


def key_unusable(exc: KeyFileError):
    """A key file that became unreadable while serving (`sonae serve`
    checks them at start): 503 and the Japanese page, its one line logged."""
    current_app.logger.error("%s %s: %s", request.method, request.path, exc)
    return answer(KeyUnusable(KEY_UNUSABLE_MESSAGE, reason=str(exc)))


# What a URL that matches no page, or not with this method, is told, in
# the staff's language (werkzeug's own words are English).
ROUTE_ERRORS = {
    404: ("ページが見つかりません", "このページはありません。アドレスを確かめるか、メニューから開き直してください。"),
    405: ("この操作は受け付けられません", "このページでは、この操作を受け付けていません。画面を開き直してから操作してください。"),
}


def api_route_error(exc: HTTPException):
    """A URL that matches no route, or not with this method: in JSON under
    /api/, else a page; in Japanese unless the view gave its own words
    (abort(404, "…"))."""
    title, message = ROUTE_ERRORS[exc.code]
    if exc.description != type(exc).description:
        message = exc.description
    allowed = sorted(getattr(exc, "valid_methods", None) or [])  # abort(405) from a view names none
    headers = {"Allow": ", ".join(allowed)} if allowed else {}
    if request.path.startswith("/api/"):
        code = "not_found" if exc.code == 404 else "method_not_allowed"
        return jsonify(error=code, message=message), exc.code, headers
    return render_template("error.html", title=title, message=message), exc.code, headers


def internal_error(exc: InternalServerError):
    """A failure nobody foresaw (Flask has logged it): a JSON error under
    /api/, else a Japanese page that reads no database."""
    return answer(InternalFault(INTERNAL_FAULT_MESSAGE))


def init_errors(app: Flask) -> None:
    app.register_error_handler(SonaeError, answer)
    app.register_error_handler(KeyFileError, key_unusable)
    app.register_error_handler(DatabaseError, storage_or_reraise)
    app.register_error_handler(OSError, storage_or_reraise)
    app.register_error_handler(NotFound, api_route_error)
    app.register_error_handler(MethodNotAllowed, api_route_error)
    app.register_error_handler(InternalServerError, internal_error)


def create_app(config: Config | None = None) -> Flask:
    config = config or load_config()
    check_config(config)
    app = Flask(__name__, instance_path=str(config.home / "instance"))
    app.request_class = InMemoryUploadsRequest
    app.config.update(
        SONAE=config,
        SECRET_KEY=session_secret(config),
        SESSION_COOKIE_NAME="sonae_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        PERMANENT_SESSION_LIFETIME=dt.timedelta(minutes=config["security"]["session_idle_minutes"]),
        MAX_CONTENT_LENGTH=security.UPLOAD_LIMIT,
        # werkzeug checks its multipart buffer against this, file parts included:
        # a lower bound than the upload limit refuses scans (non-multipart bodies
        # are held to FORM_BODY_LIMIT before they are read, in security)
        MAX_FORM_MEMORY_SIZE=security.UPLOAD_LIMIT,
        JSON_AS_ASCII=False,
    )
    app.json.ensure_ascii = False
    # Open the operational database once at start: a wrong key or an
    # unreadable file stops the server here with a clear message.
    open_ops(config).close()
    db.init_app(app)
    disk.init_app(app)
    security.init_app(app)
    init_errors(app)
    from importlib import import_module

    for module_name in BLUEPRINTS:
        app.register_blueprint(import_module(module_name).bp)
    banner.init_app(app)
    filters.init_app(app)
    return app

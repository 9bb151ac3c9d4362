"""Request guards: login by default, roles, CSRF, bounded bodies, HTTPS.

Every endpoint needs a logged-in staff member unless its view is marked
@public (the outage notice, certificate verification, health checks) —
forgetting a decorator therefore fails closed, not open.

A request body is bounded before anything reads it: FORM_BODY_LIMIT for
forms and JSON, the app's MAX_CONTENT_LENGTH for file uploads (multipart).
Served over HTTPS (web.https, or a request that the trusted reverse proxy
says came over HTTPS), the session cookie is Secure and HSTS is sent.
"""

from __future__ import annotations

import functools
import hmac
import secrets

from flask import abort, current_app, g, jsonify, redirect, render_template, request, session, url_for
from flask.sessions import SecureCookieSessionInterface
from werkzeug.exceptions import RequestEntityTooLarge

from fallback import audit
from fallback.db import get_ops
from fallback.errors import Forbidden
from fallback.staff import sessions, terminals
from fallback.staff.users import ROLES

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Every form and JSON body Sonae takes is a few kilobytes; 64 KiB leaves
# room and keeps a flood of megabyte fields out of the parser.
FORM_BODY_LIMIT = 64 * 1024
UPLOAD_LIMIT = 8 * 1024 * 1024  # MAX_CONTENT_LENGTH: a certificate PDF, scan or phone photo to check at /verify
HSTS = "max-age=31536000"
# Sent by a screen's own polling (fallback/static/sonae.js): not the staff
# member's activity, so it does not keep an idle session alive.
POLL_HEADER = "X-Sonae-Poll"


def public(view):
    """Mark a view as reachable without login. Public views must not show
    resident data."""
    view.sonae_public = True
    return view


def sessionless(view):
    """A public view for machines (health checks, scrapers): it starts no
    session, so no cookie is set on every probe."""
    view.sonae_sessionless = True
    return public(view)


def roles(*allowed: str):
    def decorate(view):
        @functools.wraps(view)
        def wrapped(*args, **kwargs):
            if g.staff is None or g.staff.role not in allowed:
                raise Forbidden(f"この画面は次の役割の職員が使います: {'、'.join(ROLES.get(role, role) for role in allowed)}")
            return view(*args, **kwargs)

        wrapped.sonae_roles = allowed
        return wrapped

    return decorate


def wants_json() -> bool:
    return request.path.startswith("/api/") or request.accept_mimetypes.best == "application/json"


def csrf_token() -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


def _csrf_ok() -> bool:
    sent = request.headers.get("X-CSRF-Token") or request.form.get("csrf_token") or ""
    expected = session.get("csrf", "")
    return bool(expected) and hmac.compare_digest(sent, expected)


def served_over_https() -> bool:
    """True when this request came over HTTPS: the whole site is (web.https),
    or the trusted reverse proxy said so (waitress turns its
    X-Forwarded-Proto into the request's scheme, see fallback.serve)."""
    return request.is_secure or bool(current_app.config["SONAE"]["web"]["https"])


class SessionCookies(SecureCookieSessionInterface):
    """Flask's signed cookie, Secure whenever the request came over HTTPS."""

    def get_cookie_secure(self, app) -> bool:
        return served_over_https()


def before_request():
    g.staff = None
    g.session_expired = False
    if request.mimetype != "multipart/form-data":
        request.max_content_length = FORM_BODY_LIMIT
    view = current_app.view_functions.get(request.endpoint) if request.endpoint else None
    if request.endpoint == "static" or getattr(view, "sonae_sessionless", False):
        return None
    # The token is made when a page or the API hands it out (csrf_token), not
    # here: an answer that shows no form (a 404, the favicon) would otherwise
    # set a session cookie of its own, and one arriving late replaced the
    # cookie the form on screen was made with, whose sending was then
    # refused (browser tests in CI, at /login and /terminal).
    if request.method in UNSAFE_METHODS and not _csrf_ok():
        message = "フォームの有効期限が切れたか、不正な送信です。画面を開き直してもう一度操作してください。"
        if wants_json():
            return jsonify(error="csrf", message="missing or wrong X-CSRF-Token header; GET /api/v1/session for the token"), 400
        return render_template("error.html", title="送信を受け付けられません", message=message), 400
    sid = session.get("sid")
    if sid:
        config = current_app.config["SONAE"]
        staff, why = sessions.resume(get_ops(), sid, idle_minutes=config["security"]["session_idle_minutes"],
                                     absolute_hours=config["security"]["session_absolute_hours"],
                                     touch=request.headers.get(POLL_HEADER) != "1")
        g.staff = staff
        if staff is None:
            session.pop("sid", None)
            g.session_expired = why == "expired"
        elif not _on_its_terminal(staff):
            return _opened_elsewhere(staff, public=view is None or getattr(view, "sonae_public", False))
    if view is None or getattr(view, "sonae_public", False):
        return None
    if g.staff is None:
        if wants_json():
            return jsonify(error="unauthenticated", message="log in first: POST /api/v1/session"), 401
        return redirect(url_for("auth.login", next=request.full_path, expired=int(g.session_expired)))
    return None


def _on_its_terminal(staff: sessions.StaffSession) -> bool:
    """A session opened on a registered PC is used from that PC: the one
    whose terminal cookie carries the registration it was opened under.
    (Its session cookie copied to another PC would otherwise issue and
    print as that counter.)"""
    if staff.device is None:
        return True
    return terminals.device_of(current_app.secret_key, request.cookies.get(terminals.COOKIE_NAME)) == staff.device


def _opened_elsewhere(staff: sessions.StaffSession, *, public: bool):
    """Not logged in here; the attempt is audited for the supervisors. The
    session goes on at its own PC."""
    g.staff = None
    session.pop("sid", None)
    audit.record(get_ops(), staff.username, "session.elsewhere", staff.terminal, {"remote": request.remote_addr}, durable=False)
    if public:
        return None
    message = (f"このログインは端末「{staff.terminal}」で開かれたもので、この端末では使えません。"
               "この端末でログインし直してください。")
    if wants_json():
        return jsonify(error="terminal_mismatch", message=message), 403
    return render_template("error.html", title="この端末では使えないログインです", message=message), 403


def after_request(response):
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "object-src 'self'; frame-src 'self'; frame-ancestors 'self'; form-action 'self'; base-uri 'none'",
    )
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    if served_over_https():
        response.headers["Strict-Transport-Security"] = HSTS
    if g.get("staff") is not None:
        # Pages with resident data must not linger in a shared PC's cache.
        response.headers["Cache-Control"] = "no-store"
    return response


def too_large(exc):
    message = "送信された内容が大きすぎます。入力を短くしてください。"
    if wants_json():
        return jsonify(error="too_large", message="the request body is too large"), 413
    return render_template("error.html", title="送信を受け付けられません", message=message), 413


def init_app(app) -> None:
    app.session_interface = SessionCookies()
    app.before_request(before_request)
    app.after_request(after_request)
    app.register_error_handler(RequestEntityTooLarge, too_large)
    app.jinja_env.globals["csrf_token"] = csrf_token


def require_found(value, message="見つかりません。"):
    if value is None:
        abort(404, message)
    return value

"""Request guards: login by default, roles, CSRF.

Every endpoint needs a logged-in staff member unless its view is marked
@public (the outage notice, certificate verification, health checks) —
forgetting a decorator therefore fails closed, not open.
"""

from __future__ import annotations

import functools
import hmac
import secrets

from flask import abort, current_app, g, jsonify, redirect, render_template, request, session, url_for

from fallback.db import get_ops
from fallback.staff import sessions

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def public(view):
    """Mark a view as reachable without login. Public views must not show
    resident data."""
    view.sonae_public = True
    return view


def roles(*allowed: str):
    def decorate(view):
        @functools.wraps(view)
        def wrapped(*args, **kwargs):
            if g.staff is None or g.staff.role not in allowed:
                return forbidden(f"この画面は次の役割の職員が使います: {', '.join(allowed)}")
            return view(*args, **kwargs)

        wrapped.sonae_roles = allowed
        return wrapped

    return decorate


def wants_json() -> bool:
    return request.path.startswith("/api/") or request.accept_mimetypes.best == "application/json"


def forbidden(message: str):
    if wants_json():
        return jsonify(error="forbidden", message=message), 403
    return render_template("error.html", title="権限がありません", message=message), 403


def csrf_token() -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


def _csrf_ok() -> bool:
    sent = request.headers.get("X-CSRF-Token") or request.form.get("csrf_token") or ""
    expected = session.get("csrf", "")
    return bool(expected) and hmac.compare_digest(sent, expected)


def before_request():
    g.staff = None
    g.session_expired = False
    view = current_app.view_functions.get(request.endpoint) if request.endpoint else None
    if request.endpoint == "static":
        return None
    csrf_token()
    if request.method in UNSAFE_METHODS and not _csrf_ok():
        message = "フォームの有効期限が切れたか、不正な送信です。画面を開き直してもう一度操作してください。"
        if wants_json():
            return jsonify(error="csrf", message="missing or wrong X-CSRF-Token header; GET /api/v1/session for the token"), 400
        return render_template("error.html", title="送信を受け付けられません", message=message), 400
    sid = session.get("sid")
    if sid:
        config = current_app.config["SONAE"]
        staff, why = sessions.resume(get_ops(), sid, idle_minutes=config["security"]["session_idle_minutes"])
        g.staff = staff
        if staff is None:
            session.pop("sid", None)
            g.session_expired = why == "expired"
    if view is None or getattr(view, "sonae_public", False):
        return None
    if g.staff is None:
        if wants_json():
            return jsonify(error="unauthenticated", message="log in first: POST /api/v1/session"), 401
        return redirect(url_for("auth.login", next=request.full_path, expired=int(g.session_expired)))
    return None


def after_request(response):
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "object-src 'self'; frame-src 'self'; frame-ancestors 'self'; form-action 'self'; base-uri 'none'",
    )
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    if g.get("staff") is not None:
        # Pages with resident data must not linger in a shared PC's cache.
        response.headers["Cache-Control"] = "no-store"
    return response


def init_app(app) -> None:
    app.before_request(before_request)
    app.after_request(after_request)
    app.jinja_env.globals["csrf_token"] = csrf_token


def require_found(value, message="見つかりません。"):
    if value is None:
        abort(404, message)
    return value

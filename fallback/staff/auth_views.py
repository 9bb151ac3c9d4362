"""Login and logout, and registering a PC as a counter terminal. A PC a
supervisor registered (fallback.staff.terminals) logs everyone in at its
terminal, which fixes the office and printer printed in every 発行番号."""

from __future__ import annotations

import secrets
from urllib.parse import urlsplit

from flask import Blueprint, current_app, flash, g, redirect, render_template, request, session, url_for

from fallback import keys
from fallback.db import get_ops
from fallback.staff import sessions, terminals, users
from fallback.staff.security import public, served_over_https

bp = Blueprint("auth", __name__, template_folder="templates")

HOME_BY_ROLE = {
    "clerk": "counter.search",
    "supervisor": "supervisor.index",
    "drill_coordinator": "drills.index",
    "it": "monitor.dashboard",
    "auditor": "auditor.index",
}


def terminals_list() -> list[dict]:
    return current_app.config["SONAE"]["counter"]["terminals"]


def home_url(role: str) -> str:
    endpoint = HOME_BY_ROLE[role]
    return url_for(endpoint) if endpoint in current_app.view_functions else url_for("auth.home")


def safe_next(target: str | None) -> str | None:
    """`target` if it is a path on this site, else None: never a URL an
    attacker could plant. Browsers read a backslash as a slash and drop
    tabs and line breaks, so "/\\x" and "/<TAB>/x" lead to another host
    just as "//x" does; none of them, nor any control character, passes."""
    if not target or not target.startswith("/") or target.startswith(("//", "/login")):
        return None
    if "\\" in target or any(c.isspace() or not c.isprintable() for c in target):
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return None
    return target.rstrip("?")


def login_throttle() -> users.LoginThrottle:
    return users.LoginThrottle.from_config(current_app.config["SONAE"]["security"])


def login_name_key() -> bytes:
    return keys.login_name_key(current_app.config["SONAE"])


def bound_terminal() -> dict | None:
    """The terminal this PC is registered as (its signed cookie), or None."""
    return terminals.bound(get_ops(), current_app.config["SONAE"], current_app.secret_key, request.cookies.get(terminals.COOKIE_NAME))


def keep_binding(response, cookie: str):
    """Set (or renew) the PC's terminal cookie: HttpOnly, never sent to
    another site, Secure over HTTPS."""
    response.set_cookie(terminals.COOKIE_NAME, cookie, max_age=terminals.COOKIE_MAX_AGE, httponly=True, samesite="Strict",
                        secure=served_over_https())
    return response


def start_session(user, terminal: dict | None):
    """Log `user` in at `terminal` (None: a PC no supervisor registered;
    its counter stays closed)."""
    staff = sessions.start_at(get_ops(), username=user.username, role=user.role, terminal=terminal, remote=request.remote_addr)
    session.clear()
    session["sid"] = staff.id
    session["csrf"] = secrets.token_urlsafe(32)
    session.permanent = False
    return staff


@bp.route("/login", methods=["GET", "POST"])
@public
def login():
    error, status, headers = None, 200, {}
    terminal = bound_terminal()
    if request.method == "POST":
        try:
            user = users.authenticate(get_ops(), request.form.get("username", "").strip(), request.form.get("password", ""),
                                      throttle=login_throttle(), name_key=login_name_key(), remote=request.remote_addr)
        except users.LoginRefused as exc:  # LoginThrottled too: its status and Retry-After come with it
            error, status, headers = exc.message, exc.status, exc.headers()
        else:
            start_session(user, terminal)
            response = redirect(safe_next(request.args.get("next")) or home_url(user.role))
            if terminal is not None:
                keep_binding(response, request.cookies[terminals.COOKIE_NAME])
            return response
    expired = request.args.get("expired") == "1"
    return render_template("login.html", error=error, expired=expired, bound_terminal=terminal), status, headers


@bp.route("/terminal", methods=["GET", "POST"])
@public
def register_terminal():
    """A supervisor registers this PC as one of the counter terminals, with
    their own password (at the clerk's PC, without logging the clerk out)."""
    config = current_app.config["SONAE"]
    error, status = None, 200
    if request.method == "POST":
        terminal = terminals.configured(config, request.form.get("terminal", ""))
        try:
            if terminal is None:
                raise users.LoginRefused("登録する端末を選んでください。")
            user = users.authenticate(get_ops(), request.form.get("username", "").strip(), request.form.get("password", ""),
                                      throttle=login_throttle(), name_key=login_name_key(), remote=request.remote_addr)
            if user.role != "supervisor":
                raise users.LoginRefused("端末を登録できるのは係長です。")
        except users.LoginRefused as exc:
            error, status = exc.message, exc.status
        else:
            cookie = terminals.register(get_ops(), config, current_app.secret_key, terminal["id"], supervisor=user.username,
                                        remote=request.remote_addr, previous_cookie=request.cookies.get(terminals.COOKIE_NAME),
                                        keep_session=g.staff.id if g.staff is not None else None)
            if g.staff is not None:
                sessions.move_to_terminal(get_ops(), g.staff.id, {**terminal, "device": terminals.device_of(current_app.secret_key, cookie)})
            flash(f"この端末を「{terminal['office']} {terminal['id']}」（プリンタ {terminal['printer']}）として登録しました。"
                  "この端末でのログインと発行番号には、この端末が使われます。", "info")
            return keep_binding(redirect(url_for("auth.register_terminal")), cookie)
    return render_template("terminal.html", error=error, terminals=terminals_list(), bound_terminal=bound_terminal()), status


@bp.route("/logout", methods=["POST"])
def logout():
    sessions.end(get_ops(), g.staff.id, "logout")
    session.clear()
    return redirect(url_for("auth.login"))


@bp.route("/")
def home():
    if HOME_BY_ROLE.get(g.staff.role) in current_app.view_functions:
        return redirect(url_for(HOME_BY_ROLE[g.staff.role]))
    return render_template("home.html")

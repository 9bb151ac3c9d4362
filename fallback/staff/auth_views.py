"""Login and logout. A clerk logs in at a named counter terminal; the
terminal fixes the office and printer printed in every 発行番号."""

from __future__ import annotations

import secrets
from urllib.parse import urlsplit

from flask import Blueprint, current_app, g, redirect, render_template, request, session, url_for

from fallback.db import get_ops
from fallback.staff import sessions, users
from fallback.staff.security import public

bp = Blueprint("auth", __name__, template_folder="templates")

HOME_BY_ROLE = {
    "clerk": "counter.search",
    "supervisor": "supervisor.index",
    "drill_coordinator": "drills.index",
    "it": "monitor.dashboard",
    "auditor": "auditor.index",
}


def terminals() -> list[dict]:
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


@bp.route("/login", methods=["GET", "POST"])
@public
def login():
    error, status, headers = None, 200, {}
    if request.method == "POST":
        terminal_id = request.form.get("terminal", "")
        terminal = next((t for t in terminals() if t["id"] == terminal_id), None)
        try:
            if terminal is None:
                raise users.LoginRefused("端末を選んでください。")
            user = users.authenticate(get_ops(), request.form.get("username", "").strip(), request.form.get("password", ""),
                                      throttle=login_throttle(), remote=request.remote_addr)
        except users.LoginRefused as exc:  # LoginThrottled too: its status and Retry-After come with it
            error, status, headers = exc.message, exc.status, exc.headers()
        else:
            staff = sessions.start(
                get_ops(), username=user.username, role=user.role, terminal=terminal["id"],
                office=terminal["office"], printer=terminal["printer"], remote=request.remote_addr,
            )
            session.clear()
            session["sid"] = staff.id
            session["csrf"] = secrets.token_urlsafe(32)
            session.permanent = False
            return redirect(safe_next(request.args.get("next")) or home_url(user.role))
    expired = request.args.get("expired") == "1"
    return render_template("login.html", error=error, expired=expired, terminals=terminals()), status, headers


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

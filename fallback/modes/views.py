"""The supervisor's desk: declare and end downtime, watch what is being
issued, see flagged lookups, hand deferred requests on."""

from __future__ import annotations

import datetime as dt

from flask import Blueprint, current_app, flash, g, redirect, render_template, request, url_for

from fallback import deferred, modes
from fallback.counter import issuance, lookup, service
from fallback.db import get_ops
from fallback.ops import now
from fallback.staff.security import roles

bp = Blueprint("supervisor", __name__, url_prefix="/supervisor", template_folder="templates")


def _today_start() -> str:
    return now().replace(hour=0, minute=0, second=0, microsecond=0).isoformat(timespec="milliseconds")


def issuance_summary(conn, since: str, scope: str = "real") -> dict:
    by_kind = issuance.handed_out_by_kind(conn, scope, since)
    refused = dict(conn.execute(
        "SELECT refusal_rule, count(*) FROM requests WHERE scope = ? AND outcome = 'refused' AND created_at >= ? GROUP BY refusal_rule", (scope, since)
    ).fetchall())
    return {"by_kind": by_kind, "refused": refused, "total": sum(by_kind.values())}


@bp.route("/")
@roles("supervisor")
def index():
    conn = get_ops()
    state = modes.current(conn)
    since = _today_start()
    recent = conn.execute(
        "SELECT r.created_at, r.clerk, r.terminal, r.kind, r.outcome, r.refusal_rule, r.copies, r.approved_by "
        "FROM requests r WHERE r.scope = 'real' AND r.created_at >= ? ORDER BY r.id DESC LIMIT 30", (since,)
    ).fetchall()
    support_attempts = conn.execute(
        "SELECT at, actor, target, detail FROM audit WHERE action = 'support_measure.attempt' AND at >= ? ORDER BY id DESC", (since,)
    ).fetchall()
    try:
        deferred_rows = service.deferred_list(conn, g.staff, current_app.config["SONAE"], real_only=True)
        deferred_locked = None
    except service.CounterLocked as exc:
        deferred_rows, deferred_locked = [], exc.message
    return render_template(
        "supervisor/index.html", state=state, reasons=modes.DOWNTIME_REASONS, labels=modes.LABELS,
        summary=issuance_summary(conn, since), recent=recent, kinds=issuance.KINDS,
        flags=lookup.open_flags(conn, (now() - dt.timedelta(days=1)).isoformat()),
        support_attempts=support_attempts, deferred_rows=deferred_rows, deferred_locked=deferred_locked,
        deferred_kinds=deferred.KINDS, deferred_statuses=deferred.STATUSES, history=modes.history(conn)[-10:],
    )


@bp.route("/mode", methods=["POST"])
@roles("supervisor")
def change_mode():
    target = request.form.get("to_mode", "")
    reason = request.form.get("reason", "").strip()
    detail = request.form.get("reason_detail", "").strip()
    if detail:
        reason = f"{reason}: {detail}" if reason else detail
    try:
        state = modes.change(get_ops(), target, actor=g.staff.username, role=g.staff.role, reason=reason)
    except modes.ModeError as exc:
        flash(str(exc), "error")
    else:
        flash(f"「{state.label}」に切り替えました。", "info")
    return redirect(url_for("supervisor.index"))


@bp.route("/deferred/<int:request_id>", methods=["POST"])
@roles("supervisor")
def deferred_status(request_id):
    try:
        deferred.set_status(get_ops(), request_id, request.form.get("status", ""), actor=g.staff.username)
    except deferred.DeferredError as exc:
        flash(str(exc), "error")
    return redirect(url_for("supervisor.index") + "#deferred")

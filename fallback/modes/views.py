"""The supervisor's desk: declare and end downtime (each confirmed after
saying what changes for the counters), watch what is being issued, see
flagged lookups, hand deferred requests on, and be told when the public
notice still speaks of an outage that is over. The page refreshes itself
when something it shows changes."""

from __future__ import annotations

import datetime as dt

from flask import Blueprint, current_app, flash, g, redirect, render_template, request, url_for

from fallback import deferred, drills, modes
from fallback.counter import issuance, lookup, service
from fallback.counter.rendering import print_settings
from fallback.db import get_ops
from fallback.mirror.registry import snapshot_summary
from fallback.ops import now
from fallback.residents import notice
from fallback.staff.security import roles
from printing.wareki import format_wareki_datetime

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
    # Real work only: a drill's requests and views are the drill report's.
    support_attempts = conn.execute(
        "SELECT at, actor, target, detail FROM audit WHERE action = 'support_measure.attempt' AND NOT drill AND at >= ? "
        "ORDER BY id DESC", (since,)
    ).fetchall()
    # Whose record, and whether a request of that clerk for that person
    # followed an address shown "to the person themself".
    support_views = conn.execute(
        "SELECT a.at, a.actor, a.detail, a.target, EXISTS (SELECT 1 FROM requests r WHERE r.scope = 'real' "
        "AND r.subject_code = a.target AND r.clerk = a.actor AND r.created_at >= a.at) "
        "FROM audit a WHERE a.action = ? AND NOT a.drill AND a.at >= ? ORDER BY a.id DESC",
        (service.SUPPORT_MEASURE_VIEW, since),
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
        support_attempts=support_attempts, support_views=support_views, deferred_rows=deferred_rows, deferred_locked=deferred_locked,
        deferred_kinds=deferred.KINDS, deferred_statuses=deferred.STATUSES, history=modes.history(conn)[-10:],
        outdated_notice=notice.outdated_public_notice(conn),
    )


def _reason_from_form() -> str:
    reason = request.form.get("reason", "").strip()
    detail = request.form.get("reason_detail", "").strip()
    if detail:
        reason = f"{reason}: {detail}" if reason else detail
    return reason


def what_changes(conn, to_mode: str) -> list[str]:
    """What a mode change does to the counters (and what the supervisor
    does next), named before it is confirmed."""
    summary = snapshot_summary(current_app.config["SONAE"])
    as_of = f"（データ時点 {format_wareki_datetime(summary.as_of, print_settings(current_app.config['SONAE']).eras)}）" if summary else ""
    drill = drills.active_drill(conn)
    if to_mode == modes.DOWNTIME:
        changes = [f"すべての窓口の端末で、住民記録の写し{as_of}による検索と証明書の交付が始まります。",
                   "開いている窓口の画面には、数秒のうちに表示が変わります。",
                   "証明書には、データ時点と本装置の発行番号が印字されます。"]
        if drill is not None:
            changes.append(f"実施中の訓練「{drill.title}」は中断されます。")
        return changes + ["このあと、住民向けのお知らせを作って公開してください。"]
    if to_mode == modes.RECOVERY:
        return ["すべての窓口で、検索と証明書の交付が止まります。開いている窓口の画面には数秒のうちに表示され、"
                "このあとの交付の操作には「交付されていません」と答えます。",
                "交付した証明書を、復旧した住民記録システムと照合し始めます。",
                "交付した証明書と後日対応の一覧は、係長が引き続き見られます。",
                "このあと、住民向けのお知らせを「復旧しました」の版に更新してください。"]
    if to_mode == modes.STANDBY:
        return ["通常運用に戻ります。窓口は閉じたままです（この装置は第二の住民記録システムではありません）。",
                "照合と後日対応の記録は残り、障害報告書に使えます。"]
    return []


@bp.route("/mode/confirm", methods=["POST"])
@roles("supervisor")
def confirm_mode():
    """The step before a mode change: what it changes for the counters."""
    conn = get_ops()
    target = request.form.get("to_mode", "")
    return render_template("supervisor/confirm.html", state=modes.current(conn), to_mode=target,
                           to_label=modes.LABELS.get(target, target), reason=_reason_from_form(), changes=what_changes(conn, target))


@bp.route("/mode", methods=["POST"])
@roles("supervisor")
def change_mode():
    target = request.form.get("to_mode", "")
    reason = _reason_from_form()
    try:
        state = modes.change(get_ops(), target, actor=g.staff.username, role=g.staff.role, reason=reason)
    except modes.ModeError as exc:
        flash(str(exc), "error")
    else:
        flash(f"「{state.label}」に切り替えました。窓口の画面には数秒のうちに表示されます。", "info")
    return redirect(url_for("supervisor.index"))


@bp.route("/deferred/<int:request_id>", methods=["POST"])
@roles("supervisor")
def deferred_status(request_id):
    try:
        service.set_deferred_status(get_ops(), g.staff, current_app.config["SONAE"], request_id, request.form.get("status", ""))
    except deferred.DeferredError as exc:
        flash(str(exc), "error")
    return redirect(url_for("supervisor.index") + "#deferred")

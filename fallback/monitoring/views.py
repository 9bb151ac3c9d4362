"""The IT dashboard (情報政策課, also open to 係長), the SLA report for the
vendor and the morning report page."""

from __future__ import annotations

import datetime as dt
import re

from flask import Blueprint, Response, current_app, flash, g, redirect, render_template, request, url_for

from fallback import paper
from fallback.db import get_ops
from fallback.mirror.registry import format_age
from fallback.mirror.syncing import rollback_snapshot
from fallback.monitoring import alerts, mirror, reports, sla
from fallback.monitoring import dashboard as dashboard_data
from fallback.ops import now
from fallback.staff.security import roles, served_over_https
from sync.errors import SyncError

bp = Blueprint("monitor", __name__, url_prefix="/monitor", template_folder="templates")
MONITOR_ROLES = ("it", "supervisor")
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


@bp.app_template_filter("jst_time")
def jst_time(moment) -> str:
    return alerts.format_moment(moment)


@bp.app_template_filter("hours_text")
def hours_text(hours: float | None) -> str:
    return "—" if hours is None else format_age(hours)


@bp.app_template_filter("seconds_text")
def seconds_text(seconds: float | None) -> str:
    return "—" if seconds is None else alerts.format_seconds(seconds)


@bp.route("/")
@roles(*MONITOR_ROLES)
def dashboard():
    context = dashboard_data.dashboard(get_ops(), current_app.config["SONAE"], now())
    return render_template("monitor/dashboard.html", title="監視", https=served_over_https(), **context)


@bp.route("/snapshot/resume", methods=["POST"])
@roles(*MONITOR_ROLES)
def resume_generation():
    """IT's or a supervisor's confirmation after a damaged CURRENT: the
    generation they checked becomes current (after every page is verified;
    the same path as `sonae snapshot rollback`, audited with the reason)."""
    reason = request.form.get("reason", "").strip()[:500]
    try:
        generation = int(request.form.get("generation", ""))
    except ValueError:
        return _error("世代を指定してください", "再開する世代の番号がありません。", 400)
    if not reason:
        return _error("理由を入力してください", "世代を選んだ理由は記録に残ります。入力してから再開してください。", 400)
    try:
        rollback_snapshot(current_app.config["SONAE"], generation, reason, g.staff.username)
    except SyncError as exc:
        return _error("再開できませんでした", f"第{generation}世代に切り替えられません: {exc}", 409)
    flash(f"第{generation}世代で再開しました。", "info")
    return redirect(url_for("monitor.dashboard"))


def _error(title: str, message: str, status: int):
    return render_template("error.html", title=title, message=message), status


def _requested_report() -> tuple[sla.SlaReport | None, str | None]:
    """The SLA report of ?month=YYYY-MM (default: this month), or why not."""
    at = now()
    text = request.args.get("month") or f"{at.year:04d}-{at.month:02d}"
    match = _MONTH.match(text)
    if not match or not 1 <= int(match.group(2)) <= 12:
        return None, "月は 2026-11 の形で指定してください。"
    try:
        return sla.monthly_report(get_ops(), current_app.config["SONAE"], int(match.group(1)), int(match.group(2)), at), None
    except ValueError as exc:
        return None, str(exc)


def _sla_context(report: sla.SlaReport) -> dict:
    first = report.start
    previous = (first - dt.timedelta(days=1)).strftime("%Y-%m")
    following = (first + dt.timedelta(days=32)).strftime("%Y-%m")
    return {
        "report": report, "verdict_labels": sla.VERDICT_LABELS, "month_text": f"{report.year}年{report.month}月",
        "previous_month": previous, "next_month": following if report.complete else None,
        "municipality": current_app.config["SONAE"]["municipality"],
    }


@bp.route("/sla")
@roles(*MONITOR_ROLES)
def sla_page():
    report, problem = _requested_report()
    if report is None:
        return _error("月の指定を確かめてください", problem, 400)
    return render_template("monitor/sla.html", title="上流の稼働率（SLA）", **_sla_context(report))


@bp.route("/sla.pdf")
@roles(*MONITOR_ROLES)
def sla_pdf():
    report, problem = _requested_report()
    if report is None:
        return _error("月の指定を確かめてください", problem, 400)
    context = _sla_context(report)
    html = render_template("monitor/sla_pdf.html", title=f"住民記録システム 稼働率報告書（{context['month_text']}）", **context)
    filename = f"sonae-sla-{report.year:04d}-{report.month:02d}.pdf"
    return Response(paper.html_to_pdf(html), mimetype="application/pdf",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


@bp.route("/morning")
@roles(*MONITOR_ROLES)
def morning():
    """The stored morning report of a day (default: the newest); before the
    first one exists, a preview built now and marked as such."""
    conn = get_ops()
    day = request.args.get("day")
    report = reports.stored_report(conn, day)
    preview = report is None and day is None
    if preview:
        report = reports.build_morning_report(conn, current_app.config["SONAE"], now())
    if report is None:
        return _error("朝の報告がありません", f"{day} の朝の報告はありません。", 404)
    days = [row[0] for row in conn.execute("SELECT day FROM morning_reports ORDER BY day DESC LIMIT 14")]
    return render_template("monitor/morning.html", title="朝の報告", report=report, preview=preview, days=days, verdict=reports.verdict,
                           outage_now=reports.outage_now(conn),
                           outcomes=reports.FULL_LOAD_OUTCOMES, run_kinds=mirror.RUN_KINDS,
                           severity_labels=alerts.SEVERITY_LABELS)

"""After the outage: the reconciliation of issued certificates, the
worklists (at-risk certificates, deferred requests), and the incident
reports."""

from __future__ import annotations

from flask import Blueprint, Response, abort, current_app, flash, g, redirect, render_template, request, url_for
from markupsafe import Markup

from fallback import deferred, documents, recovery, runbooks
from fallback.counter import cancellations, issuance, service
from fallback.db import get_ops
from fallback.recovery import incident
from fallback.staff.security import roles

bp = Blueprint("recovery", __name__, url_prefix="/recovery", template_folder="templates")

WORKERS = ("supervisor", "it")
READERS = ("supervisor", "it", "auditor")


@bp.route("/")
@roles(*WORKERS)
def index():
    conn = get_ops()
    try:  # names and phone numbers: supervisors only, audited
        deferred_rows = service.deferred_list(conn, g.staff, current_app.config["SONAE"], real_only=True)
        deferred_locked = None
    except service.CounterLocked as exc:
        deferred_rows, deferred_locked = [], exc.message
    at_risk = recovery.at_risk(conn)
    return render_template(
        "recovery/index.html", progress=recovery.progress(conn), at_risk=at_risk,
        cancelled=cancellations.cancelled(conn, "real", [serial for certificate in at_risk for serial in certificate.serials]),
        deferred_rows=deferred_rows, deferred_locked=deferred_locked, statuses=recovery.STATUSES, kinds=issuance.KINDS,
        deferred_kinds=deferred.KINDS, delivery=deferred.DELIVERY, requester_types=issuance.REQUESTER_TYPES,
        incidents=incident.incidents(conn)[:5],
    )


@bp.route("/reconcile", methods=["POST"])
@roles(*WORKERS)
def reconcile():
    result = recovery.reconcile_once(current_app.config["SONAE"])
    messages = {
        "done": (f"{result.checked}件を照合しました。", "info"),
        "nothing_to_check": ("照合する証明書はありません。", "info"),
        "waiting_for_downtime_end": ("ダウン対策モード中は照合しません。モードを終了すると照合を始めます。", "warning"),
        "waiting_for_feed": (f"{result.checked}件を照合しました。印鑑登録証明書{result.pending}件は、差分の取り込みが交付時刻を過ぎてから照合します（自動）。", "info"),
        "upstream_unavailable": (f"住民記録システムが応答しません（{result.checked}件照合、残り{result.pending}件）。自動でやり直します。", "warning"),
        "waiting_for_clock": (f"装置の時計が正しくないおそれがあるため、照合を待っています（残り{result.pending}件）。{result.error}", "warning"),
    }
    flash(*messages[result.outcome])
    return redirect(url_for("recovery.index"))


@bp.route("/at-risk/<int:check_id>", methods=["POST"])
@roles(*WORKERS)
def at_risk_status(check_id):
    try:
        recovery.set_status(get_ops(), check_id, request.form.get("status", ""), actor=g.staff.username)
    except ValueError:
        abort(404)
    return redirect(url_for("recovery.index") + f"#check-{check_id}")


@bp.route("/deferred/<int:request_id>", methods=["POST"])
@roles(*WORKERS)
def deferred_status(request_id):
    try:
        service.set_deferred_status(get_ops(), g.staff, current_app.config["SONAE"], request_id, request.form.get("status", ""))
    except deferred.DeferredError as exc:
        flash(str(exc), "error")
    return redirect(url_for("recovery.index") + f"#deferred-{request_id}")


@bp.route("/incidents")
@roles(*READERS)
def incidents():
    return render_template("incident/list.html", incidents=incident.incidents(get_ops()))


def _report_markdown(incident_id: int) -> str:
    conn = get_ops()
    found = incident.get_incident(conn, incident_id)
    if found is None:
        abort(404, "この障害の記録はありません。")
    variant = request.args.get("variant", "internal")
    if variant not in incident.VARIANTS:
        abort(404)
    config = current_app.config["SONAE"]
    facts = incident.gather(conn, found, runbook_list=runbooks.load_all(runbooks.runbook_dir(config)))
    return incident.report_markdown(facts, config, variant)


@bp.route("/incidents/<int:incident_id>")
@roles(*READERS)
def incident_report(incident_id):
    body = documents.markdown_to_html(_report_markdown(incident_id))
    return render_template("incident/show.html", incident_id=incident_id, body=Markup(body), variant=request.args.get("variant", "internal"))


@bp.route("/incidents/<int:incident_id>.pdf")
@roles(*READERS)
def incident_pdf(incident_id):
    pdf = documents.markdown_pdf("障害報告書（案）", _report_markdown(incident_id), drill=False)
    return Response(pdf, mimetype="application/pdf", headers={"Content-Disposition": f'inline; filename="incident-{incident_id}.pdf"'})


@bp.route("/incidents/<int:incident_id>.md")
@roles(*READERS)
def incident_markdown(incident_id):
    return Response(_report_markdown(incident_id), mimetype="text/markdown; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="incident-{incident_id}.md"'})

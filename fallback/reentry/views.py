"""/reentry/: after recovery, the supervisor's page for putting the
outage's 届出 back into the register — the re-entry CSV files, the printed
worklist with its ticks — and the issuance history for 本人通知制度 and
支援措置 follow-up. Supervisors only; every showing and export is
audited. Not in downtime: the counters are still taking 届出, and a file
made now would miss what comes after it."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, flash, g, redirect, render_template, request, url_for

from fallback import audit, documents, filings, modes, reentry
from fallback.db import get_ops
from fallback.errors import NotFound
from fallback.ops import now_iso
from fallback.recovery import incident
from fallback.staff.security import roles

bp = Blueprint("reentry", __name__, url_prefix="/reentry", template_folder="templates")


def _window(conn, incident_id: int | None) -> tuple[incident.Incident, str, str]:
    """The incident whose records are exported (the latest by default) and
    its [since, until]; ReentryError in downtime."""
    if modes.current(conn).mode == modes.DOWNTIME:
        raise reentry.ReentryError("ダウン対策モード中は作れません。窓口が届出を受け付けている間のファイルは、後の届出が抜けてしまいます。"
                                   "ダウン対策モードを終えてから作ってください。")
    found = incident.incidents(conn)
    chosen = next((i for i in found if i.id == incident_id), None) if incident_id is not None else (found[0] if found else None)
    if chosen is None:
        raise NotFound("障害の記録がありません。" if incident_id is None else f"障害 {incident_id} の記録はありません。")
    return chosen, chosen.started_at, chosen.ended_at or now_iso()


@bp.route("/")
@roles("supervisor")
def index():
    conn, config = get_ops(), current_app.config["SONAE"]
    chosen, since, until = _window(conn, request.args.get("incident", type=int))
    files = reentry.export_files(conn, config, since=since, until=until)
    items = reentry.worklist(conn, config, since=since, until=until)
    history = reentry.issuance_history(conn, since=since, until=until)
    audit.record(conn, g.staff.username, "reentry.view", str(chosen.id),
                 {"files": {f.kind: f.rows for f in files}, "worklist": len(items), "history": len(history)})
    return render_template("reentry/index.html", incident=chosen, incidents=incident.incidents(conn), files=files, items=items,
                           history=history, kinds=filings.KINDS, mapping=reentry.load_mapping(config), layout=reentry.LAYOUT_VERSION)


@bp.route("/<int:incident_id>/files/<kind>.csv")
@roles("supervisor")
def file(incident_id, kind):
    conn, config = get_ops(), current_app.config["SONAE"]
    _, since, until = _window(conn, incident_id)
    found = next((f for f in reentry.export_files(conn, config, since=since, until=until) if f.kind == kind), None)
    if found is None:
        raise NotFound(f"{kind} のファイルはありません（取り込めない種類は手入力の一覧に載ります）。")
    reentry.record_export(conn, g.staff.username, "file", {"incident": incident_id, "kind": kind, "rows": found.rows})
    mapping = reentry.load_mapping(config)
    charset = "shift_jis" if mapping.encoding == "cp932" else "utf-8"
    return Response(found.content, content_type=f"text/csv; charset={charset}",
                    headers={"Content-Disposition": f'attachment; filename="{found.name}"', "Cache-Control": "no-store"})


@bp.route("/<int:incident_id>/worklist.pdf")
@roles("supervisor")
def worklist_pdf(incident_id):
    conn, config = get_ops(), current_app.config["SONAE"]
    chosen, since, until = _window(conn, incident_id)
    items = reentry.worklist(conn, config, since=since, until=until)
    pdf = documents.render_pdf("reentry/worklist_pdf.html", title="復旧後の手入力一覧", items=items, kinds=filings.KINDS,
                               items_of=filings.ITEMS, relations=filings.NOTIFIER_RELATIONS, incident=chosen,
                               ward=config["municipality"]["name"], printed_at=now_iso()[:16].replace("T", " "), drill=False)
    reentry.record_export(conn, g.staff.username, "worklist", {"incident": incident_id, "items": len(items)})
    return Response(pdf, mimetype="application/pdf",
                    headers={"Content-Disposition": f'inline; filename="reentry-worklist-{incident_id}.pdf"', "Cache-Control": "no-store"})


@bp.route("/<int:incident_id>/issuance-history.csv")
@roles("supervisor")
def history_csv(incident_id):
    conn = get_ops()
    _, since, until = _window(conn, incident_id)
    rows = reentry.issuance_history(conn, since=since, until=until)
    reentry.record_export(conn, g.staff.username, "history", {"incident": incident_id, "rows": len(rows),
                                                             "for_notice": sum(r.for_notice for r in rows)})
    return Response(reentry.history_csv(rows), content_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="issuance-history-{incident_id}.csv"', "Cache-Control": "no-store"})


@bp.route("/ticks/<int:filing_id>", methods=["POST"])
@roles("supervisor")
def tick(filing_id):
    conn = get_ops()
    reentry.tick(conn, filing_id, done=request.form.get("done") == "1", actor=g.staff.username)
    flash(f"届出 {filing_id} を{'入力済み' if request.form.get('done') == '1' else '未入力'}にしました。", "info")
    return redirect(url_for("reentry.index", incident=request.form.get("incident", type=int)) + f"#work-{filing_id}")

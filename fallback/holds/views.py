"""Holds at the counter: recording one against a person or a seal (from
the resident's page, while the counter is open), and the supervisor's list
of holds with what the register now says of each, to reconcile them.

The list stays open to supervisors in every mode: a hold the register has
not caught up with still changes what the next outage issues, so it must
be reconciled even after the counters went back to standby. Showing it is
audited (`holds.list`), as every showing of residents is."""

from __future__ import annotations

from flask import Blueprint, current_app, flash, g, redirect, render_template, request, url_for

from fallback import audit, holds
from fallback.counter import service
from fallback.counter.certificates import supervisor_approval
from fallback.counter.issuance import REAL, IssueRefused
from fallback.counter.rendering import print_settings
from fallback.counter.state import COUNTER_ROLES, counter_scope
from fallback.db import get_ops
from fallback.errors import SonaeError
from fallback.mirror.registry import register_for
from fallback.staff.security import roles
from printing.wareki import parse_date_input

bp = Blueprint("holds", __name__, url_prefix="/holds", template_folder="templates")

DETAIL_FIELDS = ("occurred_on", "date", "moved_to", "note")


def _open_counter() -> service.Counter:
    return service.open_counter(get_ops(), g.staff, current_app.config["SONAE"])


def confirming_supervisor(conn, config, staff, form, subject: str) -> str | None:
    """A clerk's hold needs a supervisor's confirmation at the clerk's
    terminal (the approval of fallback.counter.certificates: audited,
    throttled, never the clerk); a supervisor needs none."""
    if staff.role == "supervisor":
        return None
    return supervisor_approval(conn, config, str(form.get("approver") or "").strip(), str(form.get("approver_password") or ""),
                               clerk=staff.username, subject=subject)


def _details(form, eras) -> dict:
    details = {key: str(form.get(key) or "").strip() for key in DETAIL_FIELDS}
    for key in holds.DATE_DETAILS:
        if details[key]:
            try:
                details[key] = parse_date_input(details[key], eras).isoformat()
            except ValueError as exc:
                raise holds.HoldError(str(exc)) from None
    return details


@bp.route("/new/<code>", methods=["GET", "POST"])
@roles(*COUNTER_ROLES)
def new(code):
    counter = _open_counter()
    record = service.view_resident(counter, code) if request.method == "GET" else service.record_for_form(counter, code)
    error = None
    if request.method == "POST":
        form = request.form
        try:
            kind = form.get("kind", "")
            details = _details(form, print_settings(counter.config).eras) if kind in holds.KINDS else {}
            seal_number = form.get("seal_number") or None
            if seal_number and seal_number not in {s["seal_number"] for s in record.seals}:
                raise holds.HoldError("この方の印鑑登録から選んでください。")
            holds.checked_details(kind, details)  # before asking the supervisor's password to be checked
            confirmed_by = confirming_supervisor(counter.conn, counter.config, g.staff, form, code)
            hold_id = holds.record(counter.conn, scope=counter.scope.name, drill_id=counter.scope.drill_id, kind=kind,
                                   resident_code=code, seal_number=seal_number, details=details, recorded_by=g.staff.username,
                                   recorder_role=g.staff.role, confirmed_by=confirmed_by)
        except (holds.HoldError, IssueRefused) as exc:
            error = exc.message
        else:
            flash(f"保留 {hold_id} を記録しました。いまから交付に反映されます。", "info")
            return redirect(url_for("counter.resident", code=code))
    return render_template("holds/new.html", person=record.person, seals=record.seals, kinds=holds.KINDS, form=request.form,
                           error=error, scope=counter.scope), (422 if error else 200)


def _list_scope(conn, staff, config):
    """The scope whose holds a supervisor sees: their open counter's (a
    drill's participant sees the drill's), else the real one."""
    scope, _ = counter_scope(conn, staff, config)
    return scope or REAL


@bp.route("/")
@roles("supervisor")
def index():
    conn, config = get_ops(), current_app.config["SONAE"]
    scope = _list_scope(conn, g.staff, config)
    found = holds.listing(conn, scope=scope.name, drill_id=scope.drill_id)
    register = register_for(scope)
    rows = []
    for hold in found:
        record = register.resident(hold.resident_code) if register is not None else None
        seals = register.seals_of(hold.resident_code) if register is not None and record is not None else []
        rows.append({"hold": hold, "name": record["name"] if record else None,
                     "match": holds.upstream_match(hold, record, seals) if hold.active else None})
    audit.record(conn, g.staff.username, "holds.list", None, {"holds": len(found), "residents": sorted({h.resident_code for h in found})},
                 drill=scope.is_drill)
    return render_template("holds/index.html", rows=rows, scope=scope, statuses=holds.STATUSES, registered=register is not None)


@bp.route("/<int:hold_id>/reconcile", methods=["POST"])
@roles("supervisor")
def reconcile(hold_id):
    conn, config = get_ops(), current_app.config["SONAE"]
    scope = _list_scope(conn, g.staff, config)
    try:
        holds.reconcile(conn, hold_id, actor=g.staff.username, note=request.form.get("note", ""), scope=scope.name,
                        drill_id=scope.drill_id)
        flash(f"保留 {hold_id} を照合済みにしました。交付への反映を終えました。", "info")
    except SonaeError as exc:
        flash(exc.message, "error")
    return redirect(url_for("holds.index") + f"#hold-{hold_id}")

"""Printing the 交付申請書: pre-filled for a resident found in the copy
(counter roles, only while the counter is open, audited like a record
view), or blank for paper-only work."""

from __future__ import annotations

from flask import Blueprint, Response, abort, current_app, g, render_template

from fallback import audit
from fallback.counter import lookup
from fallback.counter.state import COUNTER_ROLES, counter_scope
from fallback.db import get_ops
from fallback.mirror.registry import register_for
from fallback.ops import now
from fallback.residents import forms
from fallback.staff.security import roles

bp = Blueprint("forms", __name__, url_prefix="/forms", template_folder="templates")


def _pdf(pdf: bytes, filename: str) -> Response:
    return Response(pdf, mimetype="application/pdf",
                    headers={"Content-Disposition": f'inline; filename="{filename}"', "Cache-Control": "no-store"})


@bp.route("/request/<code>.pdf")
@roles(*COUNTER_ROLES)
def prefilled_request(code):
    conn = get_ops()
    scope, locked = counter_scope(conn, g.staff, current_app.config["SONAE"])
    register = register_for(scope) if scope is not None else None
    if scope is None or register is None:
        reason = locked or "住民記録の写しがまだ読み込まれていません。情報政策課に連絡してください。"
        return render_template("counter/locked.html", reason=reason), 423
    config = current_app.config["SONAE"]
    security = config["security"]
    # Printing the form shows the record on paper: it is audited, and
    # counted towards the bulk-viewing flag, exactly as a record view is.
    resident = lookup.view_resident(conn, register, code, actor=g.staff.username, drill=scope.is_drill,
                                    flag_count=security["view_flag_count"], flag_window_minutes=security["view_flag_window_minutes"])
    if resident is None:
        abort(404, "この住民票コードの方は写しにいません。")
    try:
        pdf = forms.request_form_pdf(config, resident, printed_at=now(), data_as_of=register.meta.as_of, drill=scope.is_drill)
    except forms.FormRefused as exc:
        audit.record(conn, g.staff.username, "support_measure.attempt", code,
                     {"outcome": "refused", "rule": "prefilled_form"}, drill=scope.is_drill)
        return render_template("forms/refused.html", message=str(exc)), 403
    audit.record(conn, g.staff.username, "form.prefilled", code, {"scope": scope.name}, drill=scope.is_drill)
    return _pdf(pdf, "request-form.pdf")


@bp.route("/request-blank.pdf")
@roles("clerk", "supervisor", "drill_coordinator")
def blank_request():
    """No resident data: printable at any time, ahead of a paper-only day."""
    scope, _ = counter_scope(get_ops(), g.staff, current_app.config["SONAE"])
    pdf = forms.request_form_pdf(current_app.config["SONAE"], None, printed_at=now(),
                                 drill=scope is not None and scope.is_drill)
    return _pdf(pdf, "request-form-blank.pdf")

"""Printing the 交付申請書: pre-filled for a resident found in the copy
(counter roles, only while the counter is open, audited like a record
view), or blank for paper-only work."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, g

from fallback import audit
from fallback.counter import service
from fallback.counter.state import COUNTER_ROLES, counter_scope
from fallback.db import get_ops
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
    config = current_app.config["SONAE"]
    counter = service.open_counter(get_ops(), g.staff, config)
    # Printing the form shows the record on paper: it is audited, and
    # counted towards the bulk-viewing flag, exactly as a record view is.
    record = service.view_resident(counter, code)
    try:
        pdf = forms.request_form_pdf(config, record.person, printed_at=now(), data_as_of=counter.data_as_of, drill=counter.scope.is_drill,
                                     household_protected=record.protected)
    except forms.FormRefused:
        audit.record(counter.conn, g.staff.username, "support_measure.attempt", code,
                     {"outcome": "refused", "rule": "prefilled_form"}, drill=counter.scope.is_drill)
        raise
    audit.record(counter.conn, g.staff.username, "form.prefilled", code, {"scope": counter.scope.name}, drill=counter.scope.is_drill)
    return _pdf(pdf, "request-form.pdf")


@bp.route("/request-blank.pdf")
@roles("clerk", "supervisor", "drill_coordinator")
def blank_request():
    """No resident data: printable at any time, ahead of a paper-only day."""
    scope, _ = counter_scope(get_ops(), g.staff, current_app.config["SONAE"])
    pdf = forms.request_form_pdf(current_app.config["SONAE"], None, printed_at=now(),
                                 drill=scope is not None and scope.is_drill)
    return _pdf(pdf, "request-form-blank.pdf")

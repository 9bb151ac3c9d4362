"""The counter: search → select → certificate type → issue → print, all
from the keyboard. Open only in downtime (or for a drill's participants).
The gates are the counter service's (fallback.counter.service); a refusal
this face does not show on its own form reaches the app's error page."""

from __future__ import annotations

import secrets

from flask import Blueprint, Response, current_app, flash, g, redirect, render_template, request, url_for
from werkzeug.datastructures import MultiDict

from fallback import deferred
from fallback.counter import issuance, labels, lookup, service
from fallback.counter.state import COUNTER_ROLES
from fallback.db import get_ops
from fallback.staff.security import roles

bp = Blueprint("counter", __name__, url_prefix="/counter", template_folder="templates")
SEARCH_FIELDS = ("kana", "name", "birth", "address", "code")


def _open_counter() -> service.Counter:
    return service.open_counter(get_ops(), g.staff, current_app.config["SONAE"])


@bp.route("/")
@roles(*COUNTER_ROLES)
def search():
    counter = _open_counter()
    found, error = None, None
    if any(request.args.get(k) for k in SEARCH_FIELDS):
        try:
            found = service.search(counter, request.args)
        except lookup.QueryError as exc:
            error = exc.message
    return render_template(
        "counter/search.html", results=found.summaries() if found else [], searched=found is not None,
        truncated=found is not None and found.truncated, error=error, args=request.args, scope=counter.scope,
    )


def _resident_page(counter: service.Counter, record: service.ResidentRecord, *, form, error=None, refusal_rule=None,
                   idempotency_key: str | None = None, self_error: str | None = None) -> str:
    """The resident and the request form. Each rendered form carries a key
    of its own (a refused form keeps its key): whatever the browser does
    with the page — Back, a second Ctrl+Enter — that form issues once.
    `self_error` is shown in the form that states a 本人 request on a
    withheld record (it is that form's refusal, not the issue form's)."""
    return render_template(
        "counter/resident.html", person=record.person, household=record.household, seals=record.seals, scope=counter.scope,
        withheld=record.withheld, protected=record.protected, form=form, error=error, refusal_rule=refusal_rule, warnings=record.warnings,
        self_error=self_error,
        idempotency_key=idempotency_key or secrets.token_urlsafe(18),
        kinds=issuance.KINDS, requester_types=issuance.REQUESTER_TYPES, documents=issuance.IDENTITY_DOCUMENTS,
        optional_items=issuance.OPTIONAL_ITEMS, layouts=issuance.LAYOUTS,
        support_measure_approvable=counter.config["counter"]["support_measure_approvable"],
    )


@bp.route("/resident/<code>")
@roles(*COUNTER_ROLES)
def resident(code):
    counter = _open_counter()
    return _resident_page(counter, service.view_resident(counter, code), form=MultiDict())


@bp.route("/resident/<code>/self", methods=["POST"])
@roles(*COUNTER_ROLES)
def resident_self(code):
    """The clerk states that the requester is the person themself and picks
    the identity document they showed, in one step: a 支援措置 resident's
    record is shown whole, with the request form set to 本人 and that
    document (the clerk does not pick it twice). Audited as a step of its
    own, with the document. Without a document the record stays withheld
    and the same form asks for one."""
    counter = _open_counter()
    document = request.form.get("identity_document", "")
    try:
        record = service.view_resident(counter, code, self_identity_document=document)
    except issuance.IssueError as exc:
        return _resident_page(counter, service.record_for_form(counter, code), form=MultiDict(),
                              self_error=f"住所と世帯は表示していません。{exc.message}"), exc.status
    return _resident_page(counter, record, form=MultiDict({"requester_type": "self", "identity_document": document}))


@bp.route("/resident/<code>/issue", methods=["POST"])
@roles(*COUNTER_ROLES)
def issue(code):
    counter = service.open_counter(get_ops(), g.staff, current_app.config["SONAE"], issuing=True)
    key = request.form.get("idempotency_key") or None
    try:
        issued = service.issue(counter, code, request.form, idempotency_key=key)
    except service.IdempotencyKeyReused as exc:  # a form that issued, changed and sent again: a fresh form
        return _resident_page(counter, service.record_for_form(counter, code), form=MultiDict(), error=exc.message), 422
    except service.IssueInterrupted as exc:  # the same entries under a fresh key: one more 交付する issues them
        return _resident_page(counter, service.record_for_form(counter, code), form=request.form, error=exc.message), exc.status
    except (issuance.IssueError, issuance.IssueRefused) as exc:
        refused = isinstance(exc, issuance.IssueRefused)
        page = _resident_page(counter, service.record_for_form(counter, code), form=request.form, error=exc.message,
                              refusal_rule=exc.rule if refused else None, idempotency_key=key)
        return page, 422
    if issued.replayed:
        flash("この申請はすでに交付しています。二重には交付していません（下の発行番号が、最初に交付したものです）。", "info")
    return redirect(url_for("counter.issued", request_id=issued.result.request_id))


@bp.route("/issued/<int:request_id>")
@roles(*COUNTER_ROLES)
def issued(request_id):
    config = current_app.config["SONAE"]
    found = service.issued_request(get_ops(), g.staff, config, request_id)
    return render_template("counter/issued.html", req=found, kinds=issuance.KINDS, printer=service.terminal_printer(config, g.staff),
                           print_state_labels=labels.PRINT_STATE_LABELS)


@bp.route("/issued/<int:request_id>/print", methods=["POST"])
@roles(*COUNTER_ROLES)
def print_issued(request_id):
    """P: every copy of the request to this terminal's CUPS queue; the page
    then says where they went and how the printer answered."""
    printed = service.print_issued(get_ops(), g.staff, current_app.config["SONAE"], request_id)
    flash(printed.summary(), "info" if printed.all_printed else "error")
    return redirect(url_for("counter.issued", request_id=request_id))


@bp.route("/certificate/<scope>/<int:serial>.pdf")
@roles(*COUNTER_ROLES)
def certificate_pdf(scope, serial):
    pdf = service.certificate_pdf(get_ops(), g.staff, current_app.config["SONAE"], scope, serial)
    return Response(pdf, mimetype="application/pdf",
                    headers={"Content-Disposition": f'inline; filename="{scope}-{serial:06d}.pdf"', "Cache-Control": "no-store"})


@bp.route("/deferred", methods=["GET", "POST"], endpoint="deferred")
@roles(*COUNTER_ROLES)
def deferred_requests():
    conn, config = get_ops(), current_app.config["SONAE"]
    error, saved = None, None
    if request.method == "POST":
        form = request.form
        try:
            saved = service.record_deferred(
                conn, g.staff, config, kind=form.get("kind", ""), name=form.get("name", ""), contact=form.get("contact", ""),
                delivery=form.get("delivery", ""), consent=form.get("consent") == "1",
                resident_code=form.get("resident_code") or None, note=form.get("note", ""),
            )
        except deferred.DeferredError as exc:
            error = exc.message
    rows = service.deferred_list(conn, g.staff, config)
    return render_template("counter/deferred.html", rows=rows, error=error, saved=saved, form=request.form if error else MultiDict(),
                           kinds=deferred.KINDS, delivery=deferred.DELIVERY, statuses=deferred.STATUSES,
                           prefill_code=request.args.get("resident_code", ""), prefill_name=request.args.get("name", "")), (422 if error else 200)


@bp.route("/deferred.csv")
@roles("supervisor")
def deferred_csv():
    rows = service.deferred_list(get_ops(), g.staff, current_app.config["SONAE"], export=True, real_only=True)
    return Response(deferred.to_csv(rows), content_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": 'attachment; filename="deferred-requests.csv"'})

"""The counter: search → select → certificate type → issue → print, all
from the keyboard. Open only in downtime (or for a drill's participants)."""

from __future__ import annotations

from flask import Blueprint, Response, abort, current_app, g, redirect, render_template, request, url_for
from werkzeug.datastructures import MultiDict

from fallback import deferred
from fallback.counter import access, issuance, lookup
from fallback.counter.certificates import issue_certificate, request_from_form, supervisor_approval
from fallback.counter.rendering import print_settings
from fallback.counter.state import COUNTER_ROLES, counter_scope
from fallback.db import get_ops
from fallback.mirror.registry import get_register
from fallback.ops import now
from fallback.staff.security import forbidden, roles

bp = Blueprint("counter", __name__, url_prefix="/counter", template_folder="templates")


def _locked_page(reason: str):
    return render_template("counter/locked.html", reason=reason), 423


def _flag_settings() -> dict:
    security = current_app.config["SONAE"]["security"]
    return {"flag_count": security["view_flag_count"], "flag_window_minutes": security["view_flag_window_minutes"]}


@bp.route("/")
@roles(*COUNTER_ROLES)
def search():
    scope, locked = counter_scope(get_ops(), g.staff, current_app.config["SONAE"])
    if scope is None:
        return _locked_page(locked)
    register = get_register()
    if register is None:
        return _locked_page("住民記録の写しがまだ読み込まれていません。情報政策課に連絡してください。")
    found, error, query = None, None, None
    if any(request.args.get(k) for k in ("kana", "name", "birth", "address", "code")):
        try:
            query, criteria = lookup.parse_query(request.args, print_settings(current_app.config["SONAE"]).eras)
            found = lookup.search(get_ops(), register, query, criteria, actor=g.staff.username, drill=scope.is_drill, **_flag_settings())
        except lookup.QueryError as exc:
            error = str(exc)
    return render_template(
        "counter/search.html", results=found.summaries() if found else [], searched=found is not None,
        truncated=found is not None and found.truncated, error=error, args=request.args, scope=scope,
    )


@bp.route("/resident/<code>")
@roles(*COUNTER_ROLES)
def resident(code):
    scope, locked = counter_scope(get_ops(), g.staff, current_app.config["SONAE"])
    if scope is None:
        return _locked_page(locked)
    register = get_register()
    person = lookup.view_resident(get_ops(), register, code, actor=g.staff.username, drill=scope.is_drill, **_flag_settings())
    if person is None:
        abort(404, "この住民票コードの方は写しにいません。")
    household = lookup.household_members(register, person)
    seals = register.seals_of(code)
    return render_template("counter/resident.html", person=person, household=household, seals=seals, scope=scope,
                           form=MultiDict(), error=None, warnings=issuance.counter_warnings(register, person, household, now().date()),
                           **_form_choices())


def _form_choices() -> dict:
    return {
        "kinds": issuance.KINDS, "requester_types": issuance.REQUESTER_TYPES, "documents": issuance.IDENTITY_DOCUMENTS,
        "optional_items": issuance.OPTIONAL_ITEMS, "layouts": issuance.LAYOUTS,
        "support_measure_approvable": current_app.config["SONAE"]["counter"]["support_measure_approvable"],
    }


@bp.route("/resident/<code>/issue", methods=["POST"])
@roles(*COUNTER_ROLES)
def issue(code):
    scope, locked = counter_scope(get_ops(), g.staff, current_app.config["SONAE"])
    if scope is None:
        return _locked_page(locked)
    register = get_register()
    conn = get_ops()
    try:
        req = request_from_form(code, request.form)
        approval_user = request.form.get("approver", "").strip()
        if approval_user:
            req.approved_by = supervisor_approval(conn, current_app.config["SONAE"], approval_user,
                                                  request.form.get("approver_password", ""), clerk=g.staff.username, subject=code)
        result = issue_certificate(conn, register, req, g.staff, scope, current_app.config["SONAE"])
    except (issuance.IssueError, issuance.IssueRefused) as exc:
        person = register.resident(code)
        if person is None:
            abort(404)
        refused = isinstance(exc, issuance.IssueRefused)
        household = lookup.household_members(register, person)
        return render_template(
            "counter/resident.html", person=person, household=household,
            seals=register.seals_of(code), scope=scope, form=request.form, error=str(exc),
            refusal_rule=exc.rule if refused else None, warnings=issuance.counter_warnings(register, person, household, now().date()),
            **_form_choices(),
        ), 422
    return redirect(url_for("counter.issued", request_id=result.request_id))


@bp.route("/issued/<int:request_id>")
@roles(*COUNTER_ROLES)
def issued(request_id):
    try:
        found = access.issued_request(get_ops(), g.staff, current_app.config["SONAE"], request_id)
    except access.Locked as exc:
        return _locked_page(str(exc))
    except access.Denied as exc:
        return forbidden(str(exc))
    if found is None:
        abort(404)
    return render_template("counter/issued.html", req=found, kinds=issuance.KINDS)


@bp.route("/certificate/<scope>/<int:serial>.pdf")
@roles(*COUNTER_ROLES)
def certificate_pdf(scope, serial):
    try:
        pdf = access.certificate_pdf(get_ops(), g.staff, current_app.config["SONAE"], scope, serial)
    except access.Locked as exc:
        return _locked_page(str(exc))
    except access.Denied as exc:
        return forbidden(str(exc))
    if pdf is None:
        abort(404)
    return Response(pdf, mimetype="application/pdf",
                    headers={"Content-Disposition": f'inline; filename="{scope}-{serial:06d}.pdf"', "Cache-Control": "no-store"})


@bp.route("/deferred", methods=["GET", "POST"], endpoint="deferred")
@roles(*COUNTER_ROLES)
def deferred_requests():
    conn = get_ops()
    config = current_app.config["SONAE"]
    try:
        scope = access.records_scope(conn, g.staff, config)
    except access.Locked as exc:
        return _locked_page(str(exc))
    error, saved = None, None
    if request.method == "POST":
        form = request.form
        try:
            saved = deferred.record(
                conn, clerk=g.staff.username, office=g.staff.office, kind=form.get("kind", ""), name=form.get("name", ""),
                contact=form.get("contact", ""), delivery=form.get("delivery", ""), consent=form.get("consent") == "1",
                resident_code=form.get("resident_code") or None, note=form.get("note", ""), scope=scope.name, drill_id=scope.drill_id,
            )
        except deferred.DeferredError as exc:
            error = str(exc)
    _, rows = access.deferred_list(conn, g.staff, config)
    return render_template("counter/deferred.html", rows=rows, error=error, saved=saved, form=request.form if error else MultiDict(),
                           kinds=deferred.KINDS, delivery=deferred.DELIVERY, statuses=deferred.STATUSES,
                           prefill_code=request.args.get("resident_code", ""), prefill_name=request.args.get("name", "")), (422 if error else 200)


@bp.route("/deferred.csv")
@roles("supervisor")
def deferred_csv():
    try:
        _, rows = access.deferred_list(get_ops(), g.staff, current_app.config["SONAE"], export=True, real_only=True)
    except access.Locked as exc:
        return _locked_page(str(exc))
    return Response(deferred.to_csv(rows), mimetype="text/csv; charset=utf-8",
                    headers={"Content-Disposition": 'attachment; filename="deferred-requests.csv"'})

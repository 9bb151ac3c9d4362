"""The JSON API under /api/v1: everything the counter screens do, through
the same service functions. Authentication is the same staff session as
the screens (cookie), and unsafe methods need the X-CSRF-Token header."""

from __future__ import annotations

import secrets

from flask import Blueprint, Response, current_app, g, jsonify, request, session, url_for

from fallback import deferred, modes
from fallback.counter import access, issuance, lookup, openapi
from fallback.counter.certificates import issue_certificate, request_from_form, supervisor_approval
from fallback.counter.rendering import print_settings
from fallback.counter.state import COUNTER_ROLES, counter_scope
from fallback.db import get_ops
from fallback.mirror.registry import get_register, snapshot_summary
from fallback.ops import now
from fallback.staff import sessions, users
from fallback.staff.security import csrf_token, public, roles
from sync.schema import resident_summary

bp = Blueprint("api", __name__, url_prefix="/api/v1", template_folder="templates")


def error(status: int, code: str, message: str, **extra):
    return jsonify(error=code, message=message, **extra), status


def _json_body(schema: dict) -> tuple[dict, tuple | None]:
    """The request's JSON body, or the 400 answer naming what is wrong with
    it by the API document's own schema."""
    body = request.get_json(silent=True)
    problem = openapi.body_problem(schema, body)
    return (body, None) if problem is None else ({}, error(400, "bad_request", problem))


def _terminals() -> list[dict]:
    return current_app.config["SONAE"]["counter"]["terminals"]


def _flag_settings() -> dict:
    security = current_app.config["SONAE"]["security"]
    return {"flag_count": security["view_flag_count"], "flag_window_minutes": security["view_flag_window_minutes"]}


def _open_counter():
    scope, locked = counter_scope(get_ops(), g.staff, current_app.config["SONAE"])
    if scope is None:
        return None, error(423, "counter_locked", locked)
    if get_register() is None:
        return None, error(503, "no_snapshot", "no snapshot has been loaded yet")
    return scope, None


@bp.app_errorhandler(404)
@bp.app_errorhandler(405)
def no_such_route(exc):
    """Under /api/ even a URL that matches no route answers in JSON."""
    if not request.path.startswith(bp.url_prefix + "/"):
        return exc
    body, status = error(exc.code, "not_found" if exc.code == 404 else "method_not_allowed", exc.description)
    allowed = sorted(getattr(exc, "valid_methods", None) or [])  # abort(405) from a view names none
    return body, status, ({"Allow": ", ".join(allowed)} if allowed else {})


@bp.route("/openapi.json")
@public
def openapi_document():
    return jsonify(openapi.document(current_app.config["SONAE"]["counter"]))


@bp.route("/session", methods=["GET"])
@public
def session_info():
    staff = g.staff
    body = {"csrf_token": csrf_token(), "authenticated": staff is not None}
    if staff is not None:
        body.update(username=staff.username, role=staff.role, terminal=staff.terminal, office=staff.office, printer=staff.printer)
    return jsonify(body)


@bp.route("/session", methods=["POST"])
@public
def login():
    body, bad = _json_body(openapi.login_body(_terminals()))
    if bad:
        return bad
    terminal = next(t for t in _terminals() if t["id"] == body["terminal"])
    try:
        user = users.authenticate(get_ops(), body["username"], body["password"],
                                  throttle=users.LoginThrottle.from_config(current_app.config["SONAE"]["security"]),
                                  remote=request.remote_addr)
    except users.LoginThrottled as exc:
        body, status = error(429, "login_throttled", str(exc), retry_after=exc.retry_after)
        return body, status, {"Retry-After": str(exc.retry_after)}
    except users.LoginRefused as exc:
        return error(401, "login_refused", str(exc))
    staff = sessions.start(get_ops(), username=user.username, role=user.role, terminal=terminal["id"], office=terminal["office"],
                           printer=terminal["printer"], remote=request.remote_addr)
    session.clear()
    session["sid"] = staff.id
    session["csrf"] = secrets.token_urlsafe(32)
    return jsonify(username=user.username, role=user.role, terminal=staff.terminal, csrf_token=session["csrf"]), 201


@bp.route("/session", methods=["DELETE"])
def logout():
    sessions.end(get_ops(), g.staff.id, "logout")
    session.clear()
    return "", 204


@bp.route("/status")
def status():
    state = modes.current(get_ops())
    summary = snapshot_summary(current_app.config["SONAE"])
    return jsonify(
        mode=state.mode, mode_label=state.label, mode_since=state.since or None,
        snapshot=None if summary is None else {
            "generation": summary.generation, "as_of": summary.as_of.isoformat(),
            "age_hours": round(summary.age_hours, 3), "residents": summary.residents, "seals": summary.seals,
        },
    )


@bp.route("/residents")
@roles(*COUNTER_ROLES)
def search():
    scope, locked = _open_counter()
    if locked:
        return locked
    try:
        query, criteria = lookup.parse_query(request.args, print_settings(current_app.config["SONAE"]).eras)
        found = lookup.search(get_ops(), get_register(), query, criteria, actor=g.staff.username, drill=scope.is_drill, **_flag_settings())
    except lookup.QueryError as exc:
        return error(400, "bad_query", str(exc))
    # The summaries go out as the snapshot stores them: parsing and
    # re-serialising fifty of them would be most of the request's work.
    body = f'{{"results":{found.json_array()},"truncated":{"true" if found.truncated else "false"}}}'
    return Response(body, mimetype="application/json")


@bp.route("/residents/<code>")
@roles(*COUNTER_ROLES)
def resident(code):
    scope, locked = _open_counter()
    if locked:
        return locked
    register = get_register()
    person = lookup.view_resident(get_ops(), register, code, actor=g.staff.username, drill=scope.is_drill, **_flag_settings())
    if person is None:
        return error(404, "not_found", "no resident with this code in the snapshot")
    household = lookup.household_members(register, person)
    return jsonify(
        resident=resident_summary(person),
        household=[resident_summary(m) for m in household],
        seals=[{"seal_number": s["seal_number"], "status": s["status"], "registered_on": s["registered_on"]} for s in register.seals_of(code)],
        warnings=issuance.counter_warnings(register, person, household, now().date()),
    )


@bp.route("/residents/<code>/certificates", methods=["POST"])
@roles(*COUNTER_ROLES)
def issue(code):
    scope, locked = _open_counter()
    if locked:
        return locked
    body, bad = _json_body(openapi.issue_body(current_app.config["SONAE"]["counter"]["max_copies"]))
    if bad:
        return bad
    if get_register().resident(code) is None:
        return error(404, "not_found", "no resident with this code in the snapshot")
    conn = get_ops()
    try:
        req = request_from_form(code, body)
        if body.get("approver"):
            req.approved_by = supervisor_approval(conn, current_app.config["SONAE"], str(body["approver"]),
                                                  str(body.get("approver_password", "")), clerk=g.staff.username, subject=code)
        result = issue_certificate(conn, get_register(), req, g.staff, scope, current_app.config["SONAE"])
    except issuance.IssueRefused as exc:
        return error(422, "refused", exc.message, rule=exc.rule, **exc.detail)
    except issuance.IssueError as exc:
        return error(400, "bad_request", str(exc))
    return jsonify(
        request_id=result.request_id, fee_yen=result.fee_yen, flags=result.flags, omissions=result.omissions,
        certificates=[{"serial": c.serial, "scope": c.scope, "copy": c.copy_number,
                       "pdf": url_for("api.certificate_pdf", scope=c.scope, serial=c.serial)} for c in result.copies],
    ), 201


@bp.route("/certificates/<scope>/<int:serial>.pdf")
@roles(*COUNTER_ROLES)
def certificate_pdf(scope, serial):
    try:
        pdf = access.certificate_pdf(get_ops(), g.staff, current_app.config["SONAE"], scope, serial)
    except access.Locked as exc:
        return error(423, "counter_locked", str(exc))
    except access.Denied as exc:
        return error(403, "forbidden", str(exc))
    if pdf is None:
        return error(404, "not_found", "no rendered certificate with this serial")
    return Response(pdf, mimetype="application/pdf", headers={"Cache-Control": "no-store"})


@bp.route("/deferred", methods=["GET"])
@roles(*COUNTER_ROLES)
def deferred_list():
    try:
        _, rows = access.deferred_list(get_ops(), g.staff, current_app.config["SONAE"])
    except access.Locked as exc:
        return error(423, "counter_locked", str(exc))
    return jsonify(deferred=rows)


@bp.route("/deferred", methods=["POST"])
@roles(*COUNTER_ROLES)
def deferred_create():
    body, bad = _json_body(openapi.DEFERRED_BODY)
    if bad:
        return bad
    try:
        scope = access.records_scope(get_ops(), g.staff, current_app.config["SONAE"])
    except access.Locked as exc:
        return error(423, "counter_locked", str(exc))
    try:
        request_id = deferred.record(
            get_ops(), clerk=g.staff.username, office=g.staff.office, kind=body["kind"], name=body["name"],
            contact=body["contact"], delivery=body["delivery"], consent=body["consent"],
            resident_code=body.get("resident_code") or None, note=body.get("note", ""),
            scope=scope.name, drill_id=scope.drill_id,
        )
    except deferred.DeferredError as exc:
        return error(400, "bad_request", str(exc))
    return jsonify(id=request_id), 201


@bp.route("/mode", methods=["POST"])
@roles("supervisor", "it")
def change_mode():
    body, bad = _json_body(openapi.MODE_BODY)
    if bad:
        return bad
    try:
        state = modes.change(get_ops(), body["to_mode"], actor=g.staff.username, role=g.staff.role, reason=body["reason"])
    except modes.ModeError as exc:
        return error(409, "mode_refused", str(exc))
    return jsonify(mode=state.mode, since=state.since, reason=state.reason)

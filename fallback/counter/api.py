"""The JSON API under /api/v1: everything the counter screens do, through
the counter service (fallback.counter.service); a refusal answers as a
JSON error through the app's one error handler (fallback.app).
Authentication is the same staff session as the screens (cookie), and
unsafe methods need the X-CSRF-Token header."""

from __future__ import annotations

import json
import secrets

from flask import Blueprint, Response, current_app, g, jsonify, request, session, url_for

from fallback import keys, modes
from fallback.counter import cancellations, openapi, screen, service
from fallback.counter.state import COUNTER_ROLES
from fallback.db import get_ops
from fallback.errors import SonaeError
from fallback.mirror.registry import snapshot_summary
from fallback.staff import sessions, terminals, users
from fallback.staff.security import csrf_token, public, roles
from sync.schema import resident_summary

bp = Blueprint("api", __name__, url_prefix="/api/v1", template_folder="templates")


class _AmbiguousBody(ValueError):
    """A body two readers could take two ways."""


def _object_once(pairs: list[tuple[str, object]]) -> dict:
    seen = set()
    for key, _ in pairs:
        if key in seen:
            # Most parsers keep the last, some the first: a proxy or log
            # could then see another request than the one acted on.
            raise _AmbiguousBody(f"the key {key!r} appears twice in one object: send each field once")
        seen.add(key)
    return dict(pairs)


def _no_constant(name: str):
    raise _AmbiguousBody(f"{name} is not a JSON number (RFC 8259): send a number, or leave the field out")


def _json_body(schema: dict) -> dict:
    """The request's JSON body; a 400 names what is wrong with it by the
    API document's own schema. Every endpoint reads its body here."""
    body = None
    if request.is_json:
        try:
            body = json.loads(request.get_data(cache=True), object_pairs_hook=_object_once, parse_constant=_no_constant)
        except _AmbiguousBody as exc:
            raise SonaeError(str(exc)) from None
        except RecursionError:  # the parser's own limit, far past MAX_JSON_DEPTH ("[" × 5000); not a ValueError
            raise SonaeError(f"the body is nested too deeply (at most {openapi.MAX_JSON_DEPTH} levels)") from None
        except ValueError:  # not JSON: the schema check below says a body is needed
            body = None
    problem = openapi.body_problem(schema, body)
    if problem is not None:
        raise SonaeError(problem)
    return body


def _terminals() -> list[dict]:
    return current_app.config["SONAE"]["counter"]["terminals"]


def _open_counter() -> service.Counter:
    return service.open_counter(get_ops(), g.staff, current_app.config["SONAE"])


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
    """Log in, at the terminal this PC (or script) was registered as by a
    supervisor at /terminal (its cookie), as the HTML login does. A client
    names no terminal of its own: the terminal fixes the office and printer
    in every 発行番号, so a `terminal` in the body only confirms the
    registration, and is refused where there is none or it differs."""
    config = current_app.config["SONAE"]
    body = _json_body(openapi.login_body(_terminals()))
    terminal = terminals.bound(get_ops(), config, current_app.secret_key, request.cookies.get(terminals.COOKIE_NAME))
    named = body.get("terminal")
    if terminal is None and named is not None:
        raise terminals.NotRegistered(named)
    if terminal is not None and named not in (None, terminal["id"]):
        raise terminals.RegisteredElsewhere(terminal["id"])
    user = users.authenticate(get_ops(), body["username"], body["password"],
                              throttle=users.LoginThrottle.from_config(config["security"]), name_key=keys.login_name_key(config),
                              remote=request.remote_addr)
    staff = sessions.start_at(get_ops(), username=user.username, role=user.role, terminal=terminal, remote=request.remote_addr)
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
    """The mode, the banner, this staff member's counter and a revision of
    what self-refreshing pages show: every open screen polls it."""
    state = modes.current(get_ops())
    summary = snapshot_summary(current_app.config["SONAE"])
    return jsonify(
        mode_since=state.since or None,
        snapshot=None if summary is None else {
            "generation": summary.generation, "as_of": summary.as_of.isoformat(),
            "age_hours": round(summary.age_hours, 3), "residents": summary.residents, "seals": summary.seals,
        },
        **screen.status(get_ops(), current_app.config["SONAE"], g.staff),
    )


@bp.route("/residents")
@roles(*COUNTER_ROLES)
def search():
    found = service.search(_open_counter(), request.args)
    # The summaries go out as the snapshot stores them: parsing and
    # re-serialising fifty of them would be most of the request's work.
    body = f'{{"results":{found.json_array()},"truncated":{"true" if found.truncated else "false"}}}'
    return Response(body, mimetype="application/json")


@bp.route("/residents/<code>")
@roles(*COUNTER_ROLES)
def resident(code):
    return _resident(service.view_resident(_open_counter(), code))


@bp.route("/residents/<code>/self", methods=["POST"])
@roles(*COUNTER_ROLES)
def resident_self(code):
    """The record with what a 支援措置 withholds, once the clerk states that
    the requester is the person themself and names the identity document
    they showed (audited with it)."""
    body = _json_body(openapi.SELF_BODY)
    return _resident(service.view_resident(_open_counter(), code, self_identity_document=body["identity_document"]))


def _resident(record: service.ResidentRecord):
    return jsonify(
        withheld=record.withheld,
        resident=resident_summary(record.person),
        holds=record.person.get("holds", []),  # the counter's holds on the person and their seals (fallback.holds)
        household=[resident_summary(m) for m in record.household],
        seals=[{"seal_number": s["seal_number"], "status": s["status"], "registered_on": s["registered_on"]} for s in record.seals],
        warnings=record.warnings,
    )


@bp.route("/residents/<code>/certificates", methods=["POST"])
@roles(*COUNTER_ROLES)
def issue(code):
    """Issue; with the IETF draft's Idempotency-Key header a repeat of the
    same request answers the first result (Idempotent-Replayed: true)."""
    counter = service.open_counter(get_ops(), g.staff, current_app.config["SONAE"], issuing=True)
    body = _json_body(openapi.issue_body(counter.config["counter"]["max_copies"]))
    key = service.idempotency_key_from_header(request.headers.get("Idempotency-Key"))
    issued = service.issue(counter, code, body, idempotency_key=key)
    result = issued.result
    # A replay can answer copies cancelled since the first answer (書損・誤交付): said, not left to the PDF's 410.
    cancelled = cancellations.cancelled(counter.conn, counter.scope.name, [c.serial for c in result.copies]) if issued.replayed else {}
    return jsonify(
        request_id=result.request_id, fee_yen=result.fee_yen, flags=result.flags, omissions=result.omissions,
        certificates=[{"serial": c.serial, "scope": c.scope, "copy": c.copy_number, "cancelled": c.serial in cancelled,
                       "pdf": url_for("api.certificate_pdf", scope=c.scope, serial=c.serial)} for c in result.copies],
    ), 201, ({"Idempotent-Replayed": "true"} if issued.replayed else {})


@bp.route("/certificates/<scope>/<int:serial>.pdf")
@roles(*COUNTER_ROLES)
def certificate_pdf(scope, serial):
    pdf = service.certificate_pdf(get_ops(), g.staff, current_app.config["SONAE"], scope, serial)
    return Response(pdf, mimetype="application/pdf", headers={"Cache-Control": "no-store"})


@bp.route("/deferred", methods=["GET"])
@roles(*COUNTER_ROLES)
def deferred_list():
    return jsonify(deferred=service.deferred_list(get_ops(), g.staff, current_app.config["SONAE"]))


@bp.route("/deferred", methods=["POST"])
@roles(*COUNTER_ROLES)
def deferred_create():
    body = _json_body(openapi.DEFERRED_BODY)
    request_id = service.record_deferred(
        get_ops(), g.staff, current_app.config["SONAE"], kind=body["kind"], name=body["name"], contact=body["contact"],
        delivery=body["delivery"], consent=body["consent"], resident_code=body.get("resident_code") or None,
        note=body.get("note", ""),
    )
    return jsonify(id=request_id), 201


@bp.route("/mode", methods=["POST"])
@roles("supervisor", "it")
def change_mode():
    body = _json_body(openapi.MODE_BODY)
    state = modes.change(get_ops(), body["to_mode"], actor=g.staff.username, role=g.staff.role, reason=body["reason"])
    return jsonify(mode=state.mode, since=state.since, reason=state.reason)

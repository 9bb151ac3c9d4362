"""Issuance end to end: form → rules → durable serials → PDF → printer.

The counter screens and the JSON API both call `issue_certificate`; this is
the one place that turns a counter request into printed certificates.
"""

from __future__ import annotations

from fallback import anchor, audit
from fallback.config import Config
from fallback.counter import issuance
from fallback.counter.issuance import Clerk, IssueRefused, IssueRequest, Scope
from fallback.counter.printer import print_certificate
from fallback.counter.rendering import build_certificate, render_issued
from fallback.ops import now
from fallback.staff import users
from printing.model import CertificateError


def _flag(form, name: str) -> bool:
    return str(form.get(name, "")).lower() in ("1", "true", "on", "yes")


def _list(form, name: str) -> list[str]:
    if hasattr(form, "getlist"):
        values = form.getlist(name)
    else:
        values = form.get(name) or []
    if isinstance(values, str):
        values = [values]
    return [v for item in values for v in str(item).split(",") if v]


def request_from_form(subject_code: str, form) -> IssueRequest:
    """Build a request from an HTML form or a JSON body (same field names)."""
    try:
        copies = int(form.get("copies") or 1)
    except (TypeError, ValueError):
        raise issuance.IssueError("通数は数字で入力してください。") from None
    return IssueRequest(
        kind=str(form.get("kind", "")),
        subject_code=subject_code,
        requester_type=str(form.get("requester_type", "")),
        identity_document=str(form.get("identity_document", "")),
        requester_name=str(form.get("requester_name", "")),
        purpose=str(form.get("purpose", "")),
        contact=str(form.get("contact", "")),
        members=_list(form, "members"),
        whole_household=_flag(form, "whole_household"),
        layout=str(form.get("layout") or "renketsu"),
        items=_list(form, "items"),
        omit_katagaki=_flag(form, "omit_katagaki"),
        copies=copies,
        delegation_letter=_flag(form, "delegation_letter"),
        seal_card_number=str(form.get("seal_card_number", "")),
        acknowledge_move_out=_flag(form, "acknowledge_move_out"),
    )


def supervisor_approval(conn, config: Config, username: str, password: str, *, clerk: str, subject: str) -> str:
    """A supervisor approves a restricted request on the spot by entering
    their own credentials at the clerk's terminal. Every attempt is audited."""
    security = config["security"]
    try:
        user = users.authenticate(conn, username, password, max_failures=security["login_max_failures"],
                                  lockout_minutes=security["login_lockout_minutes"], remote="approval")
    except users.LoginRefused as exc:
        audit.record(conn, clerk, "approval.failed", subject, {"approver": username})
        raise IssueRefused("approval_failed", f"係長の承認を確認できません: {exc}") from exc
    if user.role != "supervisor":
        audit.record(conn, clerk, "approval.failed", subject, {"approver": username, "role": user.role})
        raise IssueRefused("approval_failed", "承認できるのは係長の役割の職員だけです。")
    audit.record(conn, user.username, "approval.granted", subject, {"clerk": clerk})
    return user.username


def issue_certificate(conn, register, req: IssueRequest, staff, scope: Scope, config: Config) -> issuance.IssueResult:
    counter = config["counter"]
    issuance.validate_form(req, counter["max_copies"])
    meta = register.meta
    data_as_of = meta.as_of - scope.data_age_offset
    age_hours = (now() - data_as_of).total_seconds() / 3600
    clerk = Clerk(staff.username, staff.office, staff.terminal, staff.printer)
    snapshot = {"snapshot_generation": meta.generation, "data_as_of": data_as_of.isoformat()}
    try:
        plan = issuance.plan_request(
            register, req, counter_config=counter, data_age_hours=age_hours,
            third_party_allowed=counter["third_party_during_downtime"], enforce_data_age_limit=not scope.is_drill,
        )
        try:
            build_certificate(config, req, plan, clerk, scope, serial=0, data_as_of=data_as_of)
        except CertificateError as exc:
            raise issuance.IssueError(str(exc)) from exc
        serial_range = tuple(counter["drill_serial_range"] if scope.is_drill else counter["serial_range"])
        result = issuance.allocate_and_record(conn, req, plan, clerk, scope, serial_range=serial_range,
                                              daily_cap=counter["daily_cap_per_requester"],
                                              serial_floor=anchor.serial_floor(config, scope.name), **snapshot)
    except IssueRefused as refusal:
        if req.kind and any(r.get("support_measure") for r in _touched(register, req)):
            audit.record(conn, clerk.username, "support_measure.attempt", req.subject_code,
                         {"requester_type": req.requester_type, "outcome": "refused", "rule": refusal.rule}, drill=scope.is_drill)
        issuance.record_refusal(conn, req, clerk, scope, refusal, **snapshot)
        raise
    if "support_measure_approved" in plan.flags or "support_measure_self" in plan.flags:
        audit.record(conn, clerk.username, "support_measure.attempt", req.subject_code,
                     {"requester_type": req.requester_type, "outcome": "issued", "approved_by": req.approved_by}, drill=scope.is_drill)
    anchor.write_anchor(config, conn)
    terminal = next((t for t in counter["terminals"] if t["id"] == staff.terminal), {})
    for copy in result.copies:
        rendered = render_issued(config, req, plan, clerk, scope, copy, data_as_of)
        issuance.store_rendered(conn, copy.scope, copy.serial, pdf=rendered.pdf, pages=rendered.pages,
                                content_digest=rendered.content_digest)
        if terminal.get("queue"):
            print_certificate(conn, terminal["queue"], copy, rendered.pdf, actor=clerk.username)
    return result


def _touched(register, req: IssueRequest) -> list[dict]:
    """The residents a request would print, for logging a refused attempt
    on a support-measure record (whichever rule refused it)."""
    subject = register.resident(req.subject_code)
    if subject is None:
        return []
    if req.kind in ("juminhyo", "kisai") and (req.whole_household or req.members):
        return register.household(subject["household_id"]).active
    return [subject]

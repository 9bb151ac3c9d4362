"""Issuance end to end: form → rules → durable serials → PDF (the clerk
prints it with one key: fallback.counter.printer).

The counter screens and the JSON API both call `issue_certificate`; this is
the one place that turns a counter request into printed certificates.
"""

from __future__ import annotations

import datetime as dt
import unicodedata

from fallback import anchor, audit, clock, keys
from fallback.config import Config
from fallback.counter import issuance
from fallback.counter.issuance import Clerk, IssueRefused, IssueRequest, Scope
from fallback.counter.rendering import build_certificate, print_settings, render_issued
from fallback.errors import SonaeError
from fallback.ops import now
from fallback.staff import users
from printing.model import CertificateError
from printing.pool import RenderProcessLost


def form_flag(form, name: str) -> bool:
    """A checkbox of an HTML form, or a boolean of a JSON body."""
    return str(form.get(name, "")).lower() in ("1", "true", "on", "yes")


def _list(form, name: str) -> list[str]:
    if hasattr(form, "getlist"):
        values = form.getlist(name)
    else:
        values = form.get(name) or []
    if isinstance(values, str):
        values = [values]
    return [v for item in values for v in str(item).split(",") if v]


# The longest text each typed field of a request may hold before it is
# stored (the request row, the audit): longer is a mistake or abuse.
MAX_FIELD_LENGTHS = {
    "requester_name": ("請求者の氏名", 100), "purpose": ("使用目的", 200), "contact": ("連絡先", 200),
    "identity_document": ("本人確認書類", 100), "seal_card_number": ("印鑑登録証の番号", 32),
}
MAX_MEMBERS = 100  # a household's members, far above any real household
MAX_APPROVER_LENGTH = 64


def _check_length(field: str, value: str) -> None:
    """Not longer than it may be stored, and no control character (NUL,
    escape) but at either end, where it is whitespace stripped like a space:
    nobody types one at the counter, and stored it would break the request
    record and whatever exports it."""
    label, limit = MAX_FIELD_LENGTHS[field]
    if len(value) > limit:
        raise issuance.IssueError(f"{label}が長すぎます（{limit}文字まで）。")
    if any(unicodedata.category(character) == "Cc" for character in value.strip()):
        raise issuance.IssueError(f"{label}に使えない文字（制御文字）が含まれています。入力し直してください。")


def _check_lengths(req: IssueRequest) -> None:
    for field in MAX_FIELD_LENGTHS:
        _check_length(field, getattr(req, field))
    if len(req.members) > MAX_MEMBERS or any(len(code) > 20 for code in req.members) or len(req.items) > len(issuance.OPTIONAL_ITEMS):
        raise issuance.IssueError("世帯員または記載事項の指定が多すぎます。")


def request_from_form(subject_code: str, form) -> IssueRequest:
    """Build a request from an HTML form or a JSON body (same field names);
    a field longer than it may be stored is refused here."""
    try:
        copies = int(form.get("copies") or 1)
    except (TypeError, ValueError):
        raise issuance.IssueError("通数は数字で入力してください。") from None
    req = IssueRequest(
        kind=str(form.get("kind", "")),
        subject_code=subject_code,
        requester_type=str(form.get("requester_type", "")),
        identity_document=str(form.get("identity_document", "")),
        requester_name=str(form.get("requester_name", "")),
        purpose=str(form.get("purpose", "")),
        contact=str(form.get("contact", "")),
        members=_list(form, "members"),
        whole_household=form_flag(form, "whole_household"),
        layout=str(form.get("layout") or "renketsu"),
        items=_list(form, "items"),
        omit_katagaki=form_flag(form, "omit_katagaki"),
        copies=copies,
        delegation_letter=form_flag(form, "delegation_letter"),
        seal_card_number=str(form.get("seal_card_number", "")),
        acknowledge_move_out=form_flag(form, "acknowledge_move_out"),
        acknowledge_omissions=form_flag(form, "acknowledge_omissions"),
    )
    _check_lengths(req)
    return req


def check_identity_document(document: str) -> None:
    """The identity document (本人確認書類) as a request's is checked, for
    what needs one without issuing: showing the person themself their
    withheld 支援措置 record (it is stored in that view's audit entry)."""
    _check_length("identity_document", document)
    issuance.check_identity_document(document)


def supervisor_approval(conn, config: Config, username: str, password: str, *, clerk: str, subject: str) -> str:
    """A supervisor other than the issuing clerk approves a restricted
    request on the spot by entering their own credentials at the clerk's
    terminal. Every attempt is audited, the approver as users.recorded_name
    keeps it. A failed approval never counts against the supervisor's login
    (it would let a counter lock its own supervisor out); failures slow down
    the clerk's next approvals instead, as failed logins do, so a counter
    cannot guess a password either."""
    throttle = users.LoginThrottle.from_config(config["security"])
    at = now()
    since = (at - throttle.window).isoformat(timespec="milliseconds")
    failures, latest = conn.execute(
        "SELECT count(*), max(at) FROM audit WHERE actor = ? AND action = 'approval.failed' AND at >= ?", (clerk, since)
    ).fetchone()
    wait = throttle.wait_seconds(failures, latest, at)
    if wait > 0:
        raise IssueRefused("approval_failed", f"承認の失敗が続いたため、{max(1, round(wait + 0.5))}秒待ってからやり直してください。")
    approver = users.recorded_name(conn, username, keys.login_name_key(config))  # never a password typed as the name
    if username == clerk:
        audit.record(conn, clerk, "approval.failed", subject, {"approver": approver, "reason": "self"})
        raise IssueRefused("approval_failed", "交付する職員は自分の交付を承認できません。別の係長に承認を依頼してください。")
    user = users.password_matches(conn, username, password)
    if user is None:
        audit.record(conn, clerk, "approval.failed", subject, {"approver": approver})
        raise IssueRefused("approval_failed", "係長の承認を確認できません: ユーザー名またはパスワードが違います。")
    if user.role != "supervisor":
        audit.record(conn, clerk, "approval.failed", subject, {"approver": approver, "role": user.role})
        raise IssueRefused("approval_failed", "承認できるのは係長の役割の職員だけです。")
    audit.record(conn, user.username, "approval.granted", subject, {"clerk": clerk})
    return user.username


class RenderFailed(SonaeError):
    """The render processes died under a certificate twice: the request's
    serials not yet rendered are voided at once (never reused, and not
    counted as issued today), so the clerk can issue again straight away."""

    status = 503
    code = "render_failed"
    title = "証明書を作れませんでした"

    def __init__(self, voided: list[int]):
        numbers = "、".join(f"{serial:06d}" for serial in voided)
        super().__init__(
            f"証明書を作成する処理が止まり、発行番号 {numbers} の証明書はできていません。"
            "この番号は無効にしました（二度と使われません。渡さないでください）。もう一度交付してください。",
            reason=f"render processes lost twice; serials {voided} voided")
        self.voided = voided

    def details(self) -> dict:
        return {"voided_serials": self.voided}


def issue_certificate(conn, register, req: IssueRequest, staff, scope: Scope, config: Config, *,
                      before_recording=None, on_recorded=None) -> issuance.IssueResult:
    """Check, record, render and store a request's certificates. Once every
    rule allows the request, `before_recording(conn)` may still stop it
    inside the recording transaction; an issuance.AwaitsConfirmation it
    raises (the service's same-day repeat, which the clerk confirms) is no
    refusal on record. Both hooks go to issuance.allocate_and_record."""
    counter = config["counter"]
    issuance.validate_form(req, counter["max_copies"])
    meta = register.meta
    data_as_of = meta.as_of
    age_hours = (now() - data_as_of).total_seconds() / 3600
    clerk = Clerk(staff.username, staff.office, staff.terminal, staff.printer)
    snapshot = {"snapshot_generation": meta.generation, "data_as_of": data_as_of.isoformat()}
    try:
        plan = issuance.plan_request(
            register, req, counter_config=counter, data_age_hours=age_hours,
            third_party_allowed=counter["third_party_during_downtime"], eras=print_settings(config).eras,
            enforce_data_age_limit=not scope.is_drill,
            clock_doubts=clock.doubts(conn, data_as_of=meta.as_of),
        )
        try:
            build_certificate(config, req, plan, clerk, scope, serial=0, data_as_of=data_as_of)
        except CertificateError as exc:
            raise issuance.IssueError(str(exc)) from exc
    except IssueRefused as refusal:
        _record_refusal(conn, register, req, clerk, scope, refusal, snapshot)
        raise
    try:
        serial_range = tuple(counter[issuance.SERIAL_RANGE_KEYS[scope.name]])
        result = issuance.allocate_and_record(conn, req, plan, clerk, scope, box_id=counter["box_id"], serial_range=serial_range,
                                              daily_cap=counter["daily_cap_per_requester"],
                                              serial_floor=anchor.serial_floor(config, scope.name),
                                              before_recording=before_recording, on_recorded=on_recorded, **snapshot)
    except issuance.AwaitsConfirmation:
        raise
    except IssueRefused as refusal:
        _record_refusal(conn, register, req, clerk, scope, refusal, snapshot)
        raise
    if "support_measure_approved" in plan.flags or "support_measure_self" in plan.flags:
        audit.record(conn, clerk.username, "support_measure.attempt", req.subject_code,
                     {"requester_type": req.requester_type, "outcome": "issued", "approved_by": req.approved_by}, drill=scope.is_drill)
    anchor.write_anchor(config, conn, result.audit_entry)
    for copy in result.copies:
        try:
            rendered = render_issued(config, req, plan, clerk, scope, copy, data_as_of)
        except RenderProcessLost:
            voided = issuance.void_unrendered(conn, older_than=dt.timedelta(0), request_id=result.request_id)
            raise RenderFailed([serial for _, serial in voided]) from None
        issuance.store_rendered(conn, copy.scope, copy.serial, pdf=rendered.pdf, pages=rendered.pages,
                                content_digest=rendered.content_digest)
    return result


def _record_refusal(conn, register, req: IssueRequest, clerk: Clerk, scope: Scope, refusal: IssueRefused, snapshot: dict) -> None:
    if req.kind and (refusal.rule == "support_measure" or any(r.get("support_measure") for r in _touched(register, req))):
        audit.record(conn, clerk.username, "support_measure.attempt", req.subject_code,
                     {"requester_type": req.requester_type, "outcome": "refused", "rule": refusal.rule}, drill=scope.is_drill)
    issuance.record_refusal(conn, req, clerk, scope, refusal, **snapshot)


def _touched(register, req: IssueRequest) -> list[dict]:
    """The residents a request would print, for logging a refused attempt
    on a support-measure record (whichever rule refused it)."""
    subject = register.resident(req.subject_code)
    if subject is None:
        return []
    if req.kind in ("juminhyo", "kisai") and (req.whole_household or req.members):
        return register.household(subject["household_id"]).active
    return [subject]

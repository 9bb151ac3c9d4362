"""The counter's decisions, for every face that works a counter: the
screens (counter/views.py), /api/v1 (counter/api.py) and the printed
request form (residents/form_views.py). A face parses what it was sent and
shows what comes back; the gates are here, in one order, once.

Opening a counter decides, for one staff member now: is their counter
open (downtime, or a drill they take part in) and in which scope, and
which register that scope reads (`register_for`, the one place it is
chosen). The functions that read residents take the open Counter;
a refusal is a SonaeError (fallback.errors) each face shows its way.

What the counters recorded — issued certificates (their PDFs and issued
pages) and deferred requests (names, phone numbers) — is behind the same
lock: a counter sees records only while it is open, and only in its scope
(real records in downtime, the drill's own records for a drill's
participants). In recovery the counters stay locked, but a supervisor
keeps access to real certificates and deferred requests to hand them on.
A clerk sees what they issued or recorded themself; a supervisor sees
every counter's. Every look is audited, and so is every refusal (someone
walking serial numbers shows up in the log).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fallback import audit, deferred, holds, modes
from fallback.config import Config
from fallback.counter import cancellations, issuance, lookup
from fallback.counter.certificates import check_identity_document, form_flag, issue_certificate, request_from_form, supervisor_approval
from fallback.counter.issuance import REAL, IssueResult, Scope
from fallback.counter.labels import PRINT_STATE_LABELS
from fallback.counter.printer import print_certificate
from fallback.counter.rendering import print_settings
from fallback.counter.state import counter_scope
from fallback.errors import Forbidden, NotFound, SonaeError
from fallback.holds.applied import HeldRegister
from fallback.mirror.availability import unavailable_message
from fallback.mirror.registry import register_for, register_problem, snapshot_store
from fallback.ops import now, now_iso
from fallback.staff import users
from fallback.staff.sessions import StaffSession

NO_REGISTER = "住民記録の写しがまだ読み込まれていません。情報政策課に連絡してください。"
NO_DRILL_REGISTER = "訓練用の住民記録がまだ用意されていません。訓練担当に連絡してください。"
RECOVERY_LOCKED = "復旧確認中は、交付した証明書と後日対応の受付を見られるのは係長だけです。"
DRILL_ONLY = "いまは訓練の窓口だけが開いています。本番の記録は、ダウン対策モードと復旧確認中に見られます。"


SUPPORT_MEASURE_VIEW = "support_measure.view"  # the supervisor's desk lists these

NO_TERMINAL = ("この端末は窓口の端末として登録されていません。係長が「端末の登録」で、この端末を窓口の端末"
               "（発行番号に印字される端末とプリンタ）として登録してから使ってください。")
# An issue attempt on a counter that is not open says first that nothing was
# issued: a clerk whose Ctrl+Enter met a closed counter must not hand anything over.
NOT_ISSUED = "証明書は交付されていません。"
NOT_ISSUED_TITLE = "交付されていません"


class CounterLocked(SonaeError):
    """The counter is not open to this staff member now; the message says
    why (and, for an issue attempt, first that nothing was issued)."""

    status = 423
    code = "counter_locked"
    title = "窓口（検索・交付）"
    template = "counter/locked.html"

    def __init__(self, message: str, *, issuing: bool = False, reason: str | None = None):
        super().__init__(NOT_ISSUED + message if issuing else message, reason=reason)
        if issuing:
            self.title = NOT_ISSUED_TITLE


class NoRegister(CounterLocked):
    """The counter is open, but no copy of the register has been loaded."""

    status = 503
    code = "no_snapshot"

    def __init__(self, *, drill: bool, problem: str | None = None, issuing: bool = False):
        if drill:  # never the real register instead: a drill works on its synthetic one only
            super().__init__(NO_DRILL_REGISTER, issuing=issuing,
                             reason="the drill's synthetic register is not loaded; the coordinator prepares it")
        else:  # `problem`: why the real register cannot be opened (a damaged pointer or generation), as the banner says it
            super().__init__(problem or NO_REGISTER, issuing=issuing, reason="no snapshot can be opened; see `sonae snapshot list`")


class ResidentNotFound(NotFound):
    def __init__(self):
        super().__init__("この住民票コードの方は写しにいません。")


class RecordDenied(Forbidden):
    """Open, but this record is another clerk's or another scope's."""


# --- an open counter -----------------------------------------------------------------


@dataclass(frozen=True)
class Counter:
    """A counter open to one staff member now: the scope they work in and
    the register that scope reads, with the request's ops handle."""

    conn: Any
    staff: StaffSession
    config: Config
    scope: Scope
    register: HeldRegister  # the scope's register, read through its holds

    @property
    def data_as_of(self) -> dt.datetime:
        """The register's as-of as this counter prints it (a long-outage
        drill's register is dated as old as its scenario says)."""
        return self.register.meta.as_of


def open_counter(conn, staff: StaffSession, config: Config, *, issuing: bool = False) -> Counter:
    """The counter of `staff` now, or CounterLocked / NoRegister (`issuing`:
    for an issue attempt, whose refusal says that nothing was issued)."""
    scope, locked = counter_scope(conn, staff, config)
    if scope is None:
        raise CounterLocked(locked, issuing=issuing)
    if not staff.terminal:
        raise CounterLocked(NO_TERMINAL, issuing=issuing)
    register = register_for(scope)
    if register is None:
        problem = None if scope.is_drill else register_problem()
        raise NoRegister(drill=scope.is_drill, issuing=issuing,
                         problem=unavailable_message(problem, snapshot_store(config)) if problem else None)
    # Holds recorded at the counter change what it reads at once (fallback.holds).
    held = HeldRegister(register, holds.ActiveHolds.load(conn, scope=scope.name, drill_id=scope.drill_id))
    return Counter(conn, staff, config, scope, held)


def _flag_settings(config: Config) -> dict:
    security = config["security"]
    return {"flag_count": security["view_flag_count"], "flag_window_minutes": security["view_flag_window_minutes"]}


def search(counter: Counter, args: Mapping) -> lookup.Found:
    """An audited search from form or query arguments; QueryError says
    what the clerk must correct."""
    query, criteria = lookup.parse_query(args, print_settings(counter.config).eras)
    return lookup.search(counter.conn, counter.register, query, criteria, actor=counter.staff.username,
                         drill=counter.scope.is_drill, **_flag_settings(counter.config))


@dataclass(frozen=True)
class ResidentRecord:
    person: dict
    household: list[dict]  # current members in order, then former members (除票)
    seals: list[dict]
    warnings: list[dict]  # what the clerk is told before issuing (issuance.counter_warnings)
    withheld: bool = False  # shown without address and household (lookup.withheld)
    protected: bool = False  # a 支援措置 resident, or one of a household with one: their address is the protected one


def record_of(counter: Counter, code: str, *, requester_is_self: bool = False) -> ResidentRecord:
    """A resident's record as the resident screen shows it, not audited:
    for showing again the record this session viewed (record_for_form).
    A 支援措置 resident's address and household are withheld unless the
    clerk stated that the requester is the person themself: only they may
    be given what the measure protects (DESIGN: on every path that shows
    resident data)."""
    person = counter.register.resident(code)
    if person is None:
        raise ResidentNotFound()
    household = lookup.household_members(counter.register, person)
    # A member's record shows the household's address and lists the
    # protected person in it: withheld as theirs is.
    protected = any(member.get("support_measure") for member in (person, *household))
    withheld = protected and not requester_is_self
    if withheld:
        person = lookup.withheld(person)
        household = [person]
    return ResidentRecord(person, household, counter.register.seals_of(code),
                          issuance.counter_warnings(counter.register, person, household, now().date(),
                                                    print_settings(counter.config).eras), withheld, protected)


def record_for_form(counter: Counter, code: str) -> ResidentRecord:
    """The record a form sent from the resident's page acts on and, when it
    is refused, shows again (an issuance, a hold, a filing). Not audited
    again when this session opened the record, as that page did; a form
    naming a resident the session never opened is a view of its own —
    audited, found or not, and counted towards the bulk-viewing flag — or
    refused forms would read records around the audit."""
    if _opened_in_session(counter, code):
        return record_of(counter, code)
    return view_resident(counter, code)


def _opened_in_session(counter: Counter, code: str) -> bool:
    return lookup.viewed_in_session(counter.conn, counter.staff.id, code, drill=counter.scope.is_drill)


def view_resident(counter: Counter, code: str, *, self_identity_document: str | None = None) -> ResidentRecord:
    """Open a resident's record: audited (found or not) and counted towards
    the bulk-viewing flag. Printing it on a form is a view too. A view of a
    支援措置 resident's record is also put before the supervisors (their
    desk lists it with who, when, where and whose), as is a view of a member
    of such a household, and showing the address is a step of its own in the
    audit. The address is shown only when the clerk states the requester is
    the person themself and names the identity document they showed
    (`self_identity_document`), checked as a certificate request's is: it
    reveals what a certificate would, so a bare statement must not."""
    if self_identity_document is not None:
        check_identity_document(self_identity_document)
    requester_is_self = self_identity_document is not None
    try:
        record = record_of(counter, code, requester_is_self=requester_is_self)
    except ResidentNotFound:
        record = None
    # Audited once what the record shows is known: its household members count as seen.
    person = lookup.view_resident(counter.conn, counter.register, code, actor=counter.staff.username, drill=counter.scope.is_drill,
                                  household=[member["resident_code"] for member in record.household] if record else (),
                                  **_flag_settings(counter.config))
    if person is None or record is None:
        raise ResidentNotFound()
    if record.protected:
        shown = {"identity_document": self_identity_document} if requester_is_self else {}
        audit.record(counter.conn, counter.staff.username, SUPPORT_MEASURE_VIEW, code,
                     {"terminal": counter.staff.terminal, "address_shown": requester_is_self,
                      "household_member": not person.get("support_measure"), **shown}, drill=counter.scope.is_drill)
    return record


# --- issuing once ----------------------------------------------------------------------

MAX_IDEMPOTENCY_KEY_LENGTH = 255
IDEMPOTENCY_KEY_PATTERN = "^[!-~]+$"  # visible ASCII: what an HTTP header carries safely


class IdempotencyKeyReused(SonaeError):
    """A key that already issued, sent with a different request (the IETF
    draft's 422): the first request's certificates are named, nothing more
    is issued."""

    status = 422
    code = "idempotency_key_reused"
    title = "交付できません"

    def __init__(self, request_id: int, serials: list[int]):
        super().__init__(
            f"この画面（申請）からは、すでに交付しています（発行番号 {_serials_text(serials)}）。"
            "同じ方に別の証明書を交付するときは「同じ方に別の証明書」から新しく請求してください。",
            reason=f"Idempotency-Key already used for request {request_id} with a different body")
        self.request_id, self.serials = request_id, serials

    def details(self) -> dict:
        return {"request_id": self.request_id, "serials": self.serials}


RENDERING_RETRY_AFTER_S = 2  # a certificate renders in well under a second; a household's ten copies in a few


class IssueInProgress(SonaeError):
    """The first request under this key is still being rendered (the IETF
    draft's 409): retry in a moment."""

    status = 409
    code = "issue_in_progress"
    title = "交付の処理中です"

    def __init__(self, request_id: int):
        super().__init__(f"この申請は交付の処理中です（二重には交付されません）。数秒待ってから、交付の結果（交付番号 {request_id}）を開いてください。",
                         reason=f"request {request_id} under this Idempotency-Key is still being rendered")
        self.request_id = request_id

    def details(self) -> dict:
        return {"request_id": self.request_id}

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(RENDERING_RETRY_AFTER_S)}

    def links(self) -> list[tuple[str, dict, str]]:
        return [("counter.issued", {"request_id": self.request_id}, "交付の結果を開く")]


class IssueInterrupted(SonaeError):
    """The first request under this key recorded its serials but stopped
    before their certificates were made (the appliance was stopped or
    crashed): those serials are void, never handed out and never used
    again. The clerk issues again from a fresh form."""

    status = 409
    code = "issue_interrupted"
    title = "交付が中断されました"

    def __init__(self, request_id: int, voided: list[int], rendered: list[int]):
        made = (f"発行番号 {_serials_text(rendered)} は作成済みです（交付番号 {request_id} の画面で確かめられます）。"
                if rendered else "")
        super().__init__(
            f"この申請の交付は、証明書を作る途中で中断されました。発行番号 {_serials_text(voided)} は無効にしました"
            f"（証明書は作られていません。この番号の証明書は渡さないでください）。{made}"
            "内容を確かめて、もう一度「交付する」を押してください。",
            reason=f"request {request_id} under this Idempotency-Key stopped before rendering; serials {voided} are void")
        self.request_id, self.voided, self.rendered = request_id, voided, rendered

    def details(self) -> dict:
        return {"request_id": self.request_id, "voided_serials": self.voided, "rendered_serials": self.rendered}

    def links(self) -> list[tuple[str, dict, str]]:
        return [("counter.issued", {"request_id": self.request_id}, f"交付番号 {self.request_id} の画面を開く")] if self.rendered else []


class RepeatToday(issuance.AwaitsConfirmation):
    """The same type for the same person was issued today: issued again
    only when the clerk confirms (`confirm_repeat`). Not a rule's refusal:
    it is not recorded as a refused request."""

    def __init__(self, kind: str, earlier: list[tuple[int, str, str]], first_clerk_name: str):
        serials = [serial for serial, _, _ in earlier]
        super().__init__(
            "same_day_repeat",
            f"本日 {earlier[0][1][11:16]} に、この方の{issuance.KINDS[kind]}をすでに交付しています"
            f"（発行番号 {_serials_text(serials)}、{first_clerk_name}）。"
            "同じものをもう一度交付するときは、住民の方に確かめてから「本日もう一度交付する」にチェックしてください。",
        )
        self.earlier_serials = serials

    def details(self) -> dict:
        return {**super().details(), "earlier_serials": self.earlier_serials}


class _KeyTaken(Exception):
    """Another request under the same key committed first: this one records
    nothing and the first request is answered."""


def _serials_text(serials: list[int]) -> str:
    return "、".join(f"{serial:06d}" for serial in serials)


@dataclass(frozen=True)
class Issuance:
    """What an issue attempt answers: the request issued now, or (replayed)
    the one a repeated idempotency key issued before."""

    result: IssueResult
    replayed: bool


def idempotency_key_from_header(value: str | None) -> str | None:
    """The IETF draft's Idempotency-Key header: a structured-field string
    (quoted); a bare token is taken as well. None without the header."""
    if value is None:
        return None
    key = value.strip()
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = key[1:-1]
    return key


def _check_key(key: str) -> None:
    if not re.fullmatch(IDEMPOTENCY_KEY_PATTERN.strip("^$"), key) or len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
        raise issuance.IssueError(
            f"Idempotency-Key は空白を含まない1〜{MAX_IDEMPOTENCY_KEY_LENGTH}文字の英数字・記号にしてください。")


def _fingerprint(req) -> str:
    return hashlib.sha256(json.dumps(dataclasses.asdict(req), sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _earlier_result(conn, request_id: int, omissions: str) -> IssueResult:
    fee, flags = conn.execute("SELECT fee_yen, flags FROM requests WHERE id = ?", (request_id,)).fetchone()
    copies = [issuance.IssuedCopy(serial, scope, number) for serial, scope, number in conn.execute(
        "SELECT serial, scope, copy_number FROM certificates WHERE request_id = ? ORDER BY copy_number", (request_id,))]
    return IssueResult(request_id, copies, json.loads(flags), fee, json.loads(omissions))


def _replay(counter: Counter, key: str, fingerprint: str) -> Issuance | None:
    """The answer for a key this staff member already issued with, or None
    for a new key."""
    row = counter.conn.execute("SELECT request_id, fingerprint, omissions FROM issue_keys WHERE actor = ? AND key = ?",
                               (counter.staff.username, key)).fetchone()
    if row is None:
        return None
    request_id, first_fingerprint, omissions = row
    result = _earlier_result(counter.conn, request_id, omissions)
    if first_fingerprint != fingerprint:
        raise IdempotencyKeyReused(request_id, [c.serial for c in result.copies])
    _check_rendered(counter, request_id)
    audit.record(counter.conn, counter.staff.username, "issue.replayed", None, {"request": request_id},
                 drill=counter.scope.is_drill)
    return Issuance(result, replayed=True)


def _check_rendered(counter: Counter, request_id: int) -> None:
    """A request under a key sent again is answered once every copy is
    rendered. Still allocated within the time a render takes
    (counter.void_unrendered_after_s): in progress, wait. Longer (a crash
    between commit and render): its serials are voided now, not at the
    worker's next sweep. Void serials (now or by the sweep) were never
    handed out: the clerk is told so and issues again under a fresh key."""
    def statuses() -> list[tuple[int, str]]:
        return counter.conn.execute("SELECT serial, status FROM certificates WHERE request_id = ? ORDER BY copy_number",
                                    (request_id,)).fetchall()

    copies = statuses()
    if any(status == "allocated" for _, status in copies):
        window = dt.timedelta(seconds=counter.config["counter"]["void_unrendered_after_s"])
        if not issuance.void_unrendered(counter.conn, older_than=window, request_id=request_id):
            raise IssueInProgress(request_id)
        copies = statuses()
    voided = [serial for serial, status in copies if status == "void"]
    if voided:
        raise IssueInterrupted(request_id, voided, [serial for serial, status in copies if status == "rendered"])


def _remember_key(counter: Counter, key: str, fingerprint: str):
    def remember(conn, request_id: int, omissions: list[dict]) -> None:
        conn.execute(
            "INSERT INTO issue_keys (actor, key, request_id, fingerprint, omissions, created_at) VALUES (?,?,?,?,?,?)",
            (counter.staff.username, key, request_id, fingerprint, json.dumps(omissions, ensure_ascii=False), now_iso()),
        )
    return remember


def earlier_today(counter: Counter, code: str, kind: str) -> list[tuple[int, str, str]]:
    """(serial, issued at, clerk) of today's certificates of this type for
    this person in the counter's scope that were handed out (rendered) or
    are being rendered now (a request at another counter a moment ago). A
    serial voided after a crash, or still allocated after longer than any
    render takes (a crash not voided yet), gave the resident nothing; a
    certificate cancelled since (書損・誤交付) no longer counts: the
    certificate issued again in its place is the point of cancelling it."""
    start_of_day = now().replace(hour=0, minute=0, second=0, microsecond=0).isoformat(timespec="milliseconds")
    rendering_since = (now() - dt.timedelta(seconds=counter.config["counter"]["void_unrendered_after_s"])).isoformat(
        timespec="milliseconds")
    return counter.conn.execute(
        "SELECT c.serial, r.created_at, r.clerk FROM requests r JOIN certificates c ON c.request_id = r.id "
        "WHERE r.outcome = 'issued' AND r.subject_code = ? AND r.kind = ? AND r.created_at >= ? AND r.scope = ? "
        "AND r.drill_id IS ? AND c.scope = r.scope AND (c.status = 'rendered' OR (c.status = 'allocated' AND c.issued_at >= ?)) "
        "AND NOT EXISTS (SELECT 1 FROM certificate_cancellations x WHERE x.scope = c.scope AND x.serial = c.serial) "
        "ORDER BY r.id, c.copy_number",
        (code, kind, start_of_day, counter.scope.name, counter.scope.drill_id, rendering_since),
    ).fetchall()


def _decide_to_record(counter: Counter, req, form: Mapping, key: str | None):
    """The service's checks inside the transaction that allocates serials
    (issuance.allocate_and_record's `before_recording`): under its write
    lock no other request can record in between, so of simultaneous
    requests under one key only the first issues (_KeyTaken: the others
    answer it), and of simultaneous unconfirmed ones for the same
    certificate only the first issues (RepeatToday: the others are asked
    to confirm)."""
    def decide(conn) -> None:
        if key is not None and conn.execute("SELECT 1 FROM issue_keys WHERE actor = ? AND key = ?",
                                            (counter.staff.username, key)).fetchone():
            raise _KeyTaken()
        if form_flag(form, "confirm_repeat"):
            return
        earlier = earlier_today(counter, req.subject_code, req.kind)
        if earlier:
            raise RepeatToday(req.kind, earlier, users.display_name(conn, earlier[0][2]))
    return decide


def issue(counter: Counter, code: str, form: Mapping, *, idempotency_key: str | None = None) -> Issuance:
    """Issue what a request form (HTML form or JSON body, same names) asks
    for a resident, with a supervisor's on-the-spot approval when one
    entered theirs. IssueError: the form is wrong; IssueRefused: a rule
    (RepeatToday: issued today already, unless confirmed).

    `idempotency_key` (a rendered form's, or the API's header): a key this
    staff member issued with before answers that request again, whatever
    happened since — never a second certificate."""
    if not _opened_in_session(counter, code):
        view_resident(counter, code)  # a request for a resident this session never opened opens it (record_for_form)
    elif counter.register.resident(code) is None:
        raise ResidentNotFound()
    req = request_from_form(code, form)
    fingerprint = _fingerprint(req)
    if idempotency_key is not None:
        _check_key(idempotency_key)
        replay = _replay(counter, idempotency_key, fingerprint)
        if replay is not None:
            return replay
    approver = str(form.get("approver") or "").strip()
    if approver:
        req.approved_by = supervisor_approval(counter.conn, counter.config, approver, str(form.get("approver_password") or ""),
                                              clerk=counter.staff.username, subject=code)
    remember = None if idempotency_key is None else _remember_key(counter, idempotency_key, fingerprint)
    try:
        result = issue_certificate(counter.conn, counter.register, req, counter.staff, counter.scope, counter.config,
                                   before_recording=_decide_to_record(counter, req, form, idempotency_key), on_recorded=remember)
    except _KeyTaken:
        return _replay(counter, idempotency_key, fingerprint)
    except RepeatToday as warned:  # audited once the recording transaction has rolled back
        audit.record(counter.conn, counter.staff.username, "issue.repeat_warned", req.subject_code,
                     {"kind": req.kind, "earlier_serials": warned.earlier_serials}, drill=counter.scope.is_drill)
        raise
    return Issuance(result, replayed=False)


# --- what the counters recorded ------------------------------------------------------


def records_scope(conn, staff: StaffSession, config: Config, *, real_only: bool = False) -> Scope:
    """The scope in which `staff` may see issued certificates and deferred
    requests now, or raise CounterLocked. `real_only`: the real records or
    none (the supervisor's desk and the recovery worklist show no drill)."""
    scope, locked = counter_scope(conn, staff, config)
    if scope is not None and not (real_only and scope.is_drill):
        return scope
    if modes.current(conn).mode == modes.RECOVERY:
        if staff.role == "supervisor":
            return REAL
        raise CounterLocked(RECOVERY_LOCKED)
    raise CounterLocked(locked or DRILL_ONLY)


def _check_owner(conn, staff: StaffSession, scope: Scope, row, what: str) -> None:
    """row: (request id, clerk, scope, drill_id) of the request behind `what`."""
    request_id, clerk, row_scope, drill_id = row
    in_scope = row_scope == scope.name and (not scope.is_drill or drill_id == scope.drill_id)
    if in_scope and (clerk == staff.username or staff.role == "supervisor"):
        return
    audit.record(conn, staff.username, "records.denied", what, {"request": request_id, "clerk": clerk}, drill=scope.is_drill)
    if not in_scope:
        raise RecordDenied("この記録は、いまの窓口の扱う範囲（本番・訓練）のものではありません。")
    raise RecordDenied("ほかの職員が交付・受付した記録は、その職員と係長だけが見られます。")


@dataclass(frozen=True)
class IssuedRequest:
    id: int
    kind: str
    subject_code: str
    copies: int
    fee_yen: int
    flags: str
    clerk: str
    scope: str
    certificates: list[tuple]  # (serial, scope, copy_number, status, pages, print_job, print_state)
    cancelled: dict[int, cancellations.Cancellation]  # by serial: copies cancelled since (書損・誤交付)

    @property
    def live(self) -> list[tuple]:
        """The copies that still hold: not cancelled."""
        return [c for c in self.certificates if c[0] not in self.cancelled]

    @property
    def rendering(self) -> bool:
        """Whether some copy's PDF is still being made (the page was opened
        from a second press's 「交付の結果を開く」 while the first renders)."""
        return any(c[3] == "allocated" for c in self.certificates)


def issued_request(conn, staff: StaffSession, config: Config, request_id: int) -> IssuedRequest:
    """An issued request and its certificates, audited."""
    scope = records_scope(conn, staff, config)
    row = conn.execute(
        "SELECT id, kind, subject_code, copies, fee_yen, flags, clerk, scope, drill_id FROM requests WHERE id = ? AND outcome = 'issued'",
        (request_id,),
    ).fetchone()
    if row is None:
        raise NotFound(f"交付番号 {request_id} の交付はありません。")
    _check_owner(conn, staff, scope, (row[0], row[6], row[7], row[8]), f"request:{request_id}")
    certificates = conn.execute(
        "SELECT serial, scope, copy_number, status, pages, print_job, print_state FROM certificates WHERE request_id = ? ORDER BY copy_number",
        (request_id,),
    ).fetchall()
    audit.record(conn, staff.username, "issued.view", row[2], {"request": request_id}, drill=scope.is_drill)
    return IssuedRequest(*row[:8], certificates, cancellations.cancelled(conn, row[7], [c[0] for c in certificates]))


class CertificateCancelled(SonaeError):
    status = 410
    code = "certificate_cancelled"
    title = "取り消した証明書です"


def _cancelled_message(cancellation: cancellations.Cancellation) -> str:
    return (f"発行番号 {cancellation.serial:06d} の証明書は {cancellation.cancelled_at[:16].replace('T', ' ')} に取り消されています"
            f"（{cancellations.REASON_NAMES[cancellation.reason]}）。印刷も表示もしません。必要なら新しく交付してください。")


def certificate_pdf(conn, staff: StaffSession, config: Config, scope_name: str, serial: int) -> bytes:
    """A rendered certificate's PDF, audited."""
    scope = records_scope(conn, staff, config)
    pdf = issuance.certificate_pdf(conn, scope_name, serial)
    if pdf is None:
        raise _rendering_or_missing(conn, scope_name, serial)
    row = conn.execute(
        "SELECT r.id, r.clerk, r.scope, r.drill_id FROM certificates c JOIN requests r ON r.id = c.request_id "
        "WHERE c.scope = ? AND c.serial = ?", (scope_name, serial),
    ).fetchone()
    target = f"{scope_name}:{serial}"
    _check_owner(conn, staff, scope, row, target)
    cancellation = cancellations.cancellation_of(conn, scope_name, serial)
    if cancellation is not None:  # an attempt to hand it out again: kept, like any refused look
        audit.record(conn, staff.username, "records.denied", target, {"request": row[0], "reason": "cancelled"}, drill=scope.is_drill)
        raise CertificateCancelled(_cancelled_message(cancellation))
    audit.record(conn, staff.username, "certificate.open", target, {"request": row[0]}, drill=scope.is_drill)
    return pdf


def _rendering_or_missing(conn, scope_name: str, serial: int) -> SonaeError:
    """Why a serial has no PDF to serve: still being made (a moment), or none."""
    row = conn.execute("SELECT request_id FROM certificates WHERE scope = ? AND serial = ? AND status = 'allocated'",
                       (scope_name, serial)).fetchone() if 0 <= serial <= issuance.SQLITE_MAX_INTEGER else None
    if row is not None:
        return IssueInProgress(row[0])
    return NotFound(f"発行番号 {serial} の証明書はありません。")


def deferred_list(conn, staff: StaffSession, config: Config, *, export: bool = False, real_only: bool = False) -> list[dict]:
    """The deferred requests `staff` may see now (their own, or every
    counter's for a supervisor), audited as a listing or an export. Each
    row's `support_measure` says whether its person is under a 支援措置
    ('self'), lives with someone who is ('household') — now, or when the
    request was recorded — or cannot be told now ('unknown': no register
    to read), so whoever takes it up follows those rules."""
    scope = records_scope(conn, staff, config, real_only=real_only)
    rows = deferred.worklist(conn, scope=scope.name, drill_id=scope.drill_id,
                             clerk=None if staff.role == "supervisor" else staff.username)
    now = _protection_now(conn, scope, {row["resident_code"] for row in rows if row["resident_code"]})
    for row in rows:
        marks = {row["protected_when_recorded"], None if now is None else now.get(row["resident_code"])}
        row["support_measure"] = next((mark for mark in ("self", "household") if mark in marks),
                                      "unknown" if now is None and row["resident_code"] else None)
    audit.record(conn, staff.username, "deferred.export" if export else "deferred.list", None, {"rows": len(rows)}, drill=scope.is_drill)
    return rows


def _held_register(conn, scope: Scope) -> HeldRegister | None:
    register = register_for(scope)
    return None if register is None else HeldRegister(register, holds.ActiveHolds.load(conn, scope=scope.name, drill_id=scope.drill_id))


def _protection(register: HeldRegister, person: dict) -> str | None:
    """'self' for a person under a 支援措置 (the register's or a 仮支援措置
    hold), 'household' for one living with such a person, else None."""
    if person.get("support_measure"):
        return "self"
    return "household" if register.protected_households([person["household_id"]]) else None


def _protection_now(conn, scope: Scope, codes: set[str]) -> dict[str, str | None] | None:
    """_protection of each of `codes` now (absent codes: None), or None
    when there is no register to read."""
    register = _held_register(conn, scope) if codes else None
    if register is None:
        return None if codes else {}
    return {code: _protection(register, person) for code in codes if (person := register.resident(code)) is not None}


def set_deferred_status(conn, staff: StaffSession, config: Config, request_id: int, status: str) -> None:
    """Change a deferred request's status: only who may see it now
    (deferred_list: its clerk, or a supervisor), in its scope, and while
    the records are open to them; a refusal is audited like a denied look.
    The worklists that change it (supervisor's desk, recovery) show real
    requests only, so a drill's are out of reach here too."""
    scope = records_scope(conn, staff, config, real_only=True)
    row = conn.execute("SELECT id, clerk, scope, drill_id FROM deferred_requests WHERE id = ?", (request_id,)).fetchone()
    if row is None:
        raise NotFound(f"受付番号 {request_id} の後日対応の受付はありません。")
    _check_owner(conn, staff, scope, row, f"deferred:{request_id}")
    deferred.set_status(conn, request_id, status, actor=staff.username)


def record_deferred(conn, staff: StaffSession, config: Config, *, kind: str, name: str, contact: str, delivery: str,
                    consent: bool, resident_code: str | None, note: str) -> int:
    """Record a request that cannot be done now, in the counter's scope;
    DeferredError says what to fix. A 住民票コード must be a resident of
    the register the counter reads, as for a look-up or an issue; with no
    register loaded (a reason to defer) its format is all there is to check."""
    scope = records_scope(conn, staff, config)
    resident_code = deferred.resident_code_of(resident_code)
    register = _held_register(conn, scope) if resident_code else None
    protected = None
    if register is not None:
        # Looking the code up is a view (the request's list then tells whether the person is protected):
        # audited and counted like opening the record, and put before the supervisors when protected.
        person = lookup.view_resident(conn, register, resident_code, actor=staff.username, drill=scope.is_drill, **_flag_settings(config))
        if person is None:
            audit.record(conn, staff.username, "deferred.refused", resident_code, {"reason": "unknown_resident"}, drill=scope.is_drill)
            raise deferred.UnknownResident(f"住民票コード {resident_code} の住民は住民記録にありません。コードを確かめるか、空欄にしてください。")
        protected = _protection(register, person)
        if protected:
            audit.record(conn, staff.username, SUPPORT_MEASURE_VIEW, resident_code,
                         {"terminal": staff.terminal, "address_shown": False, "household_member": protected == "household",
                          "deferred_request": True}, drill=scope.is_drill)
    return deferred.record(conn, clerk=staff.username, office=staff.office, kind=kind, name=name, contact=contact,
                           delivery=delivery, consent=consent, resident_code=resident_code, note=note,
                           scope=scope.name, drill_id=scope.drill_id, protected=protected)


# --- printing ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TerminalPrinter:
    """The printer of the terminal a staff member is logged in at: its name
    (printed in the 発行番号) and its CUPS queue ("": browser printing)."""

    name: str
    queue: str


def terminal_printer(config: Config, staff: StaffSession) -> TerminalPrinter:
    terminal = next((t for t in config["counter"]["terminals"] if t["id"] == staff.terminal), None)
    if terminal is None:
        return TerminalPrinter("", "")
    return TerminalPrinter(terminal["printer"], terminal.get("queue") or "")


class NoPrinter(SonaeError):
    status = 409
    code = "no_printer"
    title = "印刷できません"


@dataclass(frozen=True)
class Printed:
    """Where a request's copies went and what the printer answered per copy."""

    printer: TerminalPrinter
    states: list[tuple[int, str]]  # (serial, completed | processing | stopped | failed)

    @property
    def all_printed(self) -> bool:
        return all(state in ("completed", "processing") for _, state in self.states)

    def summary(self) -> str:
        where = f"{self.printer.name}（印刷キュー {self.printer.queue}）"
        answered = "、".join(f"{serial:06d}: {PRINT_STATE_LABELS.get(state, state)}" for serial, state in self.states)
        if self.all_printed:
            return f"{where}に{len(self.states)}通を送りました（{answered}）。"
        return (f"{where}で印刷できませんでした（{answered}）。プリンタを確かめてもう一度 P を押すか、"
                "PDFを開いてブラウザから印刷してください。証明書は交付済みです。")


def print_issued(conn, staff: StaffSession, config: Config, request_id: int) -> Printed:
    """Send every copy of an issued request to the CUPS queue of the
    terminal `staff` works at (audited per copy, as every print is)."""
    found = issued_request(conn, staff, config, request_id)
    if found.rendering:
        raise IssueInProgress(request_id)
    if not found.live:
        audit.record(conn, staff.username, "records.denied", f"request:{request_id}", {"request": request_id, "reason": "cancelled"},
                     drill=found.scope == "drill")
        raise CertificateCancelled(f"この交付の証明書（発行番号 {_serials_text(sorted(found.cancelled))}）はすべて取り消されています。"
                                   "印刷しません。必要なら新しく交付してください。")
    printer = terminal_printer(config, staff)
    if not printer.queue:
        raise NoPrinter(f"この端末（{staff.terminal or '未登録'}）には印刷キューが設定されていないため、ここからは印刷できません。"
                        "PDFを開いてブラウザから印刷してください。")
    states = []
    for serial, scope, copy_number, status, *_ in found.live:
        pdf = issuance.certificate_pdf(conn, scope, serial) if status == "rendered" else None
        if pdf is None:
            states.append((serial, "failed"))
            continue
        states.append((serial, print_certificate(conn, printer.queue, issuance.IssuedCopy(serial, scope, copy_number), pdf,
                                                 actor=staff.username)))
    return Printed(printer, states)

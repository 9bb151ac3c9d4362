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

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fallback import audit, deferred, holds, modes
from fallback.config import Config
from fallback.counter import issuance, lookup
from fallback.counter.certificates import issue_certificate, request_from_form, supervisor_approval
from fallback.counter.issuance import REAL, IssueResult, Scope
from fallback.counter.rendering import print_settings
from fallback.counter.state import counter_scope
from fallback.errors import Forbidden, NotFound, SonaeError
from fallback.holds.applied import HeldRegister
from fallback.mirror.availability import unavailable_message
from fallback.mirror.registry import register_for, register_problem, snapshot_store
from fallback.ops import now
from fallback.staff.sessions import StaffSession

NO_REGISTER = "住民記録の写しがまだ読み込まれていません。情報政策課に連絡してください。"
NO_DRILL_REGISTER = "訓練用の住民記録がまだ用意されていません。訓練担当に連絡してください。"
RECOVERY_LOCKED = "復旧確認中は、交付した証明書と後日対応の受付を見られるのは係長だけです。"
DRILL_ONLY = "いまは訓練の窓口だけが開いています。本番の記録は、ダウン対策モードと復旧確認中に見られます。"


class CounterLocked(SonaeError):
    """The counter is not open to this staff member now; the message says why."""

    status = 423
    code = "counter_locked"
    title = "窓口"
    template = "counter/locked.html"


class NoRegister(SonaeError):
    """The counter is open, but no copy of the register has been loaded."""

    status = 503
    code = "no_snapshot"
    title = "窓口"
    template = "counter/locked.html"

    def __init__(self, *, drill: bool, problem: str | None = None):
        if drill:  # never the real register instead: a drill works on its synthetic one only
            super().__init__(NO_DRILL_REGISTER, reason="the drill's synthetic register is not loaded; the coordinator prepares it")
        else:  # `problem`: why the real register cannot be opened (a damaged pointer or generation), as the banner says it
            super().__init__(problem or NO_REGISTER, reason="no snapshot can be opened; see `sonae snapshot list`")


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


def open_counter(conn, staff: StaffSession, config: Config) -> Counter:
    """The counter of `staff` now, or CounterLocked / NoRegister."""
    scope, locked = counter_scope(conn, staff, config)
    if scope is None:
        raise CounterLocked(locked)
    register = register_for(scope)
    if register is None:
        problem = None if scope.is_drill else register_problem()
        raise NoRegister(drill=scope.is_drill,
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


def record_of(counter: Counter, code: str) -> ResidentRecord:
    """A resident's record as the resident screen shows it, not audited:
    for showing again the record just viewed (a refused issuance's form)."""
    person = counter.register.resident(code)
    if person is None:
        raise ResidentNotFound()
    household = lookup.household_members(counter.register, person)
    return ResidentRecord(person, household, counter.register.seals_of(code),
                          issuance.counter_warnings(counter.register, person, household, now().date()))


def view_resident(counter: Counter, code: str) -> ResidentRecord:
    """Open a resident's record: audited (found or not) and counted towards
    the bulk-viewing flag. Printing it on a form is a view too."""
    person = lookup.view_resident(counter.conn, counter.register, code, actor=counter.staff.username,
                                  drill=counter.scope.is_drill, **_flag_settings(counter.config))
    if person is None:
        raise ResidentNotFound()
    return record_of(counter, code)


def issue(counter: Counter, code: str, form: Mapping) -> IssueResult:
    """Issue what a request form (HTML form or JSON body, same names) asks
    for a resident, with a supervisor's on-the-spot approval when one
    entered theirs. IssueError: the form is wrong; IssueRefused: a rule."""
    if counter.register.resident(code) is None:
        raise ResidentNotFound()
    req = request_from_form(code, form)
    approver = str(form.get("approver") or "").strip()
    if approver:
        req.approved_by = supervisor_approval(counter.conn, counter.config, approver, str(form.get("approver_password") or ""),
                                              clerk=counter.staff.username, subject=code)
    return issue_certificate(counter.conn, counter.register, req, counter.staff, counter.scope, counter.config)


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
    return IssuedRequest(*row[:8], certificates)


def certificate_pdf(conn, staff: StaffSession, config: Config, scope_name: str, serial: int) -> bytes:
    """A rendered certificate's PDF, audited."""
    scope = records_scope(conn, staff, config)
    pdf = issuance.certificate_pdf(conn, scope_name, serial)
    if pdf is None:
        raise NotFound(f"発行番号 {serial} の証明書はありません。")
    row = conn.execute(
        "SELECT r.id, r.clerk, r.scope, r.drill_id FROM certificates c JOIN requests r ON r.id = c.request_id "
        "WHERE c.scope = ? AND c.serial = ?", (scope_name, serial),
    ).fetchone()
    target = f"{scope_name}:{serial}"
    _check_owner(conn, staff, scope, row, target)
    audit.record(conn, staff.username, "certificate.open", target, {"request": row[0]}, drill=scope.is_drill)
    return pdf


def deferred_list(conn, staff: StaffSession, config: Config, *, export: bool = False, real_only: bool = False) -> list[dict]:
    """The deferred requests `staff` may see now (their own, or every
    counter's for a supervisor), audited as a listing or an export."""
    scope = records_scope(conn, staff, config, real_only=real_only)
    rows = deferred.worklist(conn, scope=scope.name, drill_id=scope.drill_id,
                             clerk=None if staff.role == "supervisor" else staff.username)
    audit.record(conn, staff.username, "deferred.export" if export else "deferred.list", None, {"rows": len(rows)}, drill=scope.is_drill)
    return rows


def record_deferred(conn, staff: StaffSession, config: Config, *, kind: str, name: str, contact: str, delivery: str,
                    consent: bool, resident_code: str | None, note: str) -> int:
    """Record a request that cannot be done now, in the counter's scope;
    DeferredError says what to fix."""
    scope = records_scope(conn, staff, config)
    return deferred.record(conn, clerk=staff.username, office=staff.office, kind=kind, name=name, contact=contact,
                           delivery=delivery, consent=consent, resident_code=resident_code, note=note,
                           scope=scope.name, drill_id=scope.drill_id)

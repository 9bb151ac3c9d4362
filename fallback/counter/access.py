"""Who may see what the counters recorded: issued certificates (their PDFs
and issued pages) and deferred requests (names, phone numbers).

The same lock as search: a counter sees records only while it is open,
and only in its scope (real records in downtime, the drill's own records
for a drill's participants). In recovery the counters stay locked, but a
supervisor keeps access to real certificates and deferred requests to
hand them on. A clerk sees what they issued or recorded themself; a
supervisor sees every counter's. Every look is audited, and so is every
refusal (someone walking serial numbers shows up in the log).
"""

from __future__ import annotations

from dataclasses import dataclass

from fallback import audit, deferred, modes
from fallback.counter import issuance
from fallback.counter.issuance import REAL, Scope
from fallback.counter.state import counter_scope

RECOVERY_LOCKED = "復旧確認中は、交付した証明書と後日対応の受付を見られるのは係長だけです。"
DRILL_ONLY = "いまは訓練の窓口だけが開いています。本番の記録は、ダウン対策モードと復旧確認中に見られます。"


class Locked(Exception):
    """The counter is not open to this staff member now; the message says why."""


class Denied(Exception):
    """Open, but this record is another clerk's or another scope's."""


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


def records_scope(conn, staff, config, *, real_only: bool = False) -> Scope:
    """The scope in which `staff` may see issued certificates and deferred
    requests now, or raise Locked. `real_only`: the real records or none
    (the supervisor's desk and the recovery worklist show no drill)."""
    scope, locked = counter_scope(conn, staff, config)
    if scope is not None and not (real_only and scope.is_drill):
        return scope
    if modes.current(conn).mode == modes.RECOVERY:
        if staff.role == "supervisor":
            return REAL
        raise Locked(RECOVERY_LOCKED)
    raise Locked(locked or DRILL_ONLY)


def _check_owner(conn, staff, scope: Scope, row, what: str, *, drill: bool) -> None:
    """row: (request id, clerk, scope, drill_id) of the request behind `what`."""
    request_id, clerk, row_scope, drill_id = row
    in_scope = row_scope == scope.name and (not scope.is_drill or drill_id == scope.drill_id)
    if in_scope and (clerk == staff.username or staff.role == "supervisor"):
        return
    audit.record(conn, staff.username, "records.denied", what, {"request": request_id, "clerk": clerk}, drill=drill)
    if not in_scope:
        raise Denied("この記録は、いまの窓口の扱う範囲（本番・訓練）のものではありません。")
    raise Denied("ほかの職員が交付・受付した記録は、その職員と係長だけが見られます。")


def issued_request(conn, staff, config, request_id: int) -> IssuedRequest | None:
    """An issued request and its certificates, audited; None if there is none."""
    scope = records_scope(conn, staff, config)
    row = conn.execute(
        "SELECT id, kind, subject_code, copies, fee_yen, flags, clerk, scope, drill_id FROM requests WHERE id = ? AND outcome = 'issued'",
        (request_id,),
    ).fetchone()
    if row is None:
        return None
    _check_owner(conn, staff, scope, (row[0], row[6], row[7], row[8]), f"request:{request_id}", drill=scope.is_drill)
    certificates = conn.execute(
        "SELECT serial, scope, copy_number, status, pages, print_job, print_state FROM certificates WHERE request_id = ? ORDER BY copy_number",
        (request_id,),
    ).fetchall()
    audit.record(conn, staff.username, "issued.view", row[2], {"request": request_id}, drill=scope.is_drill)
    return IssuedRequest(*row[:8], certificates)


def certificate_pdf(conn, staff, config, scope_name: str, serial: int) -> bytes | None:
    """A rendered certificate's PDF, audited; None if there is none."""
    scope = records_scope(conn, staff, config)
    pdf = issuance.certificate_pdf(conn, scope_name, serial)
    if pdf is None:
        return None
    row = conn.execute(
        "SELECT r.id, r.clerk, r.scope, r.drill_id FROM certificates c JOIN requests r ON r.id = c.request_id "
        "WHERE c.scope = ? AND c.serial = ?", (scope_name, serial),
    ).fetchone()
    target = f"{scope_name}:{serial}"
    _check_owner(conn, staff, scope, row, target, drill=scope.is_drill)
    audit.record(conn, staff.username, "certificate.open", target, {"request": row[0]}, drill=scope.is_drill)
    return pdf


def deferred_list(conn, staff, config, *, export: bool = False, real_only: bool = False) -> tuple[Scope, list[dict]]:
    """The deferred requests `staff` may see now (their own, or every
    counter's for a supervisor), audited as a listing or an export."""
    scope = records_scope(conn, staff, config, real_only=real_only)
    rows = deferred.worklist(conn, scope=scope.name, drill_id=scope.drill_id,
                             clerk=None if staff.role == "supervisor" else staff.username)
    audit.record(conn, staff.username, "deferred.export" if export else "deferred.list", None, {"rows": len(rows)}, drill=scope.is_drill)
    return scope, rows

"""Holds: what the counter learns during an outage that the register
cannot record yet, taking effect at once on what the counter issues.

A hold is recorded against a person — for a seal, against one of their
seal registrations — by a supervisor, or by a clerk with a supervisor's
confirmation (never the clerk themself: fallback.counter.certificates.
supervisor_approval checks the credentials), audited with its kind's
details. It lives in the operational database, not in a snapshot
generation, so it stays in force across new full exports and the change
feed until a supervisor marks it reconciled — typically once the upstream
shows the same change (`upstream_match` offers that on the supervisor's
list). A 転出届, 死亡届 or 廃止届 recorded at the counter
(fallback.filings) creates its hold in the same transaction.

What each kind changes at the counter is decided with the other issuance
rules (fallback.counter.issuance). Two kinds say what the register itself
could say, so they are applied to the record the counter reads
(fallback.holds.applied): a 転出届 becomes the record's planned_move_out
and a 仮支援措置 its support_measure, and every rule for those fields —
the certificate's planned-move rule, the 支援措置 rules, the result list
that leaves a protected address out — acts on them unchanged. The others
have rules of their own there (seal_held, death_held, hold_approval).

Holds are kept per scope: a drill's holds act on the drill's synthetic
register only, real holds on the real one.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field

from fallback import audit
from fallback.errors import NotFound, SonaeError
from fallback.ops import Transaction, now_iso

KINDS = {
    "seal_lost": "印鑑登録証の亡失届",
    "seal_abolished": "印鑑登録の廃止届",
    "death": "死亡届の受理",
    "move_out": "転出届の受理",
    "support_measure": "仮支援措置（支援措置の緊急の申出）",
    "court_police": "裁判所・警察からの依頼",
    "note": "その他の保留",
}
SEAL_KINDS = ("seal_lost", "seal_abolished")
# Kinds whose certificates need the approval of a supervisor other than
# the issuing clerk (fallback.counter.issuance.check_holds).
APPROVAL_KINDS = ("court_police", "note")
# The details each kind must carry (key -> label), beside an optional note.
REQUIRED_DETAILS = {
    "seal_lost": {},
    "seal_abolished": {},
    "death": {"occurred_on": "死亡日"},
    "move_out": {"date": "転出予定日", "moved_to": "転出先"},
    "support_measure": {},
    "court_police": {"note": "依頼元と依頼の内容"},
    "note": {"note": "保留の内容"},
}
DATE_DETAILS = ("occurred_on", "date")
MAX_DETAIL_LENGTH = 200
MAX_NOTE_LENGTH = 500
ACTIVE, RECONCILED = "active", "reconciled"
STATUSES = {ACTIVE: "有効", RECONCILED: "照合済み（解除）"}
RECORDERS = ("clerk", "supervisor")


class HoldError(SonaeError):
    """A hold that cannot be recorded or changed; the message says what to fix."""

    status = 422
    code = "hold_refused"
    title = "保留を記録できません"


@dataclass(frozen=True)
class Hold:
    id: int
    scope: str
    drill_id: int | None
    kind: str
    resident_code: str
    seal_number: str | None
    details: dict = field(hash=False)
    filing_id: int | None
    recorded_at: str
    recorded_by: str
    confirmed_by: str
    status: str
    reconciled_at: str | None
    reconciled_by: str | None
    reconcile_note: str | None

    @property
    def label(self) -> str:
        return KINDS[self.kind]

    @property
    def active(self) -> bool:
        return self.status == ACTIVE

    @property
    def text(self) -> str:
        """The hold as one line for staff: its kind and what it says."""
        d = self.details
        parts = {
            "seal_lost": [f"印鑑登録番号 {self.seal_number}"],
            "seal_abolished": [f"印鑑登録番号 {self.seal_number}"],
            "death": [f"死亡日 {d.get('occurred_on')}"],
            "move_out": [f"転出予定日 {d.get('date')}", f"転出先 {d.get('moved_to')}"],
        }.get(self.kind, [])
        if d.get("note"):
            parts.append(d["note"])
        return self.label + (f"（{'、'.join(parts)}）" if parts else "")

    def shown(self) -> dict:
        """What a screen or the API shows of the hold on a record."""
        return {"id": self.id, "kind": self.kind, "label": self.label, "text": self.text, "seal_number": self.seal_number,
                "details": self.details, "recorded_at": self.recorded_at}


_COLUMNS = ("id, scope, drill_id, kind, resident_code, seal_number, details, filing_id, recorded_at, recorded_by, confirmed_by, "
            "status, reconciled_at, reconciled_by, reconcile_note")


def _hold(row) -> Hold:
    values = list(row)
    values[6] = json.loads(values[6])
    return Hold(*values)


def checked_details(kind: str, details: dict) -> dict:
    """The details a hold of `kind` keeps, trimmed; HoldError names what is
    missing or wrong."""
    if kind not in KINDS:
        raise HoldError("保留の種類を選んでください。")
    kept = {}
    for key, value in details.items():
        value = str(value or "").strip()
        limit = MAX_NOTE_LENGTH if key == "note" else MAX_DETAIL_LENGTH
        if len(value) > limit:
            raise HoldError(f"{REQUIRED_DETAILS[kind].get(key, '備考')}が長すぎます（{limit}文字まで）。")
        if value:
            kept[key] = value
    for key, label in REQUIRED_DETAILS[kind].items():
        if key not in kept:
            raise HoldError(f"{label}を入力してください。")
    for key in DATE_DETAILS:
        if key in kept:
            try:
                dt.date.fromisoformat(kept[key])
            except ValueError:
                raise HoldError(f"{REQUIRED_DETAILS[kind].get(key, key)}は年月日で入力してください（{kept[key]!r}）。") from None
    return kept


def record(conn, *, scope: str, drill_id: int | None, kind: str, resident_code: str, seal_number: str | None = None,
           details: dict, recorded_by: str, recorder_role: str, confirmed_by: str | None, filing_id: int | None = None) -> int:
    """Record a hold in its own transaction; see `append`."""
    with Transaction(conn):
        return append(conn, scope=scope, drill_id=drill_id, kind=kind, resident_code=resident_code, seal_number=seal_number,
                      details=details, recorded_by=recorded_by, recorder_role=recorder_role, confirmed_by=confirmed_by,
                      filing_id=filing_id)


def append(conn, *, scope: str, drill_id: int | None, kind: str, resident_code: str, seal_number: str | None,
           details: dict, recorded_by: str, recorder_role: str, confirmed_by: str | None, filing_id: int | None = None) -> int:
    """Record a hold inside the caller's transaction, with its audit entry.
    A supervisor records alone; a clerk's hold carries the supervisor who
    confirmed it (already authenticated by the caller), never the clerk."""
    if recorder_role not in RECORDERS:
        raise HoldError("保留を記録できるのは係長と窓口職員（係長の確認つき）だけです。")
    if recorder_role == "supervisor":
        confirmed_by = recorded_by
    elif not confirmed_by or confirmed_by == recorded_by:
        raise HoldError("窓口職員が保留を記録するには、別の係長の確認（ユーザー名とパスワード）が必要です。")
    details = checked_details(kind, details)
    if kind in SEAL_KINDS and not seal_number:
        raise HoldError("保留する印鑑登録を選んでください。")
    if kind not in SEAL_KINDS:
        seal_number = None
    cursor = conn.execute(
        "INSERT INTO holds (scope, drill_id, kind, resident_code, seal_number, details, filing_id, recorded_at, recorded_by, confirmed_by) "
        "VALUES (?,?,?,?,?,?,?,?,?,?)",
        (scope, drill_id, kind, resident_code, seal_number, json.dumps(details, ensure_ascii=False), filing_id, now_iso(),
         recorded_by, confirmed_by),
    )
    audit.append(conn, recorded_by, "hold.record", resident_code,
                 {"hold": cursor.lastrowid, "kind": kind, "seal": seal_number, "confirmed_by": confirmed_by, "filing": filing_id},
                 drill=scope == "drill")
    return cursor.lastrowid


def get(conn, hold_id: int) -> Hold | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM holds WHERE id = ?", (hold_id,)).fetchone()
    return _hold(row) if row else None


def listing(conn, *, scope: str, drill_id: int | None, status: str | None = None) -> list[Hold]:
    """The holds of a scope (and drill), active first, newest first."""
    clauses, params = ["scope = ?", "drill_id IS ?"], [scope, drill_id]
    if status:
        clauses.append("status = ?")
        params.append(status)
    rows = conn.execute(f"SELECT {_COLUMNS} FROM holds WHERE {' AND '.join(clauses)} ORDER BY status = 'active' DESC, id DESC", params)
    return [_hold(row) for row in rows]


def reconcile(conn, hold_id: int, *, actor: str, note: str, scope: str, drill_id: int | None) -> Hold:
    """A supervisor lifts a hold because the register now says the same
    (or the hold was a mistake: the note says which); audited."""
    note = note.strip()
    if len(note) > MAX_NOTE_LENGTH:
        raise HoldError(f"照合の備考が長すぎます（{MAX_NOTE_LENGTH}文字まで）。")
    with Transaction(conn):
        hold = get(conn, hold_id)
        if hold is None or hold.scope != scope or hold.drill_id != drill_id:
            raise NotFound(f"保留 {hold_id} はありません。")
        if not hold.active:
            raise HoldError(f"保留 {hold_id} は照合済みです。")
        conn.execute("UPDATE holds SET status = ?, reconciled_at = ?, reconciled_by = ?, reconcile_note = ? WHERE id = ?",
                     (RECONCILED, now_iso(), actor, note, hold_id))
        audit.append(conn, actor, "hold.reconcile", hold.resident_code, {"hold": hold_id, "kind": hold.kind, "note": note},
                     drill=scope == "drill")
    return get(conn, hold_id)


def counts(conn, *, since: str, until: str) -> dict[str, tuple[int, int]]:
    """Real holds recorded within [since, until] by kind: (recorded, reconciled since)."""
    return {kind: (recorded, reconciled) for kind, recorded, reconciled in conn.execute(
        "SELECT kind, count(*), coalesce(sum(status = 'reconciled'), 0) FROM holds WHERE scope = 'real' AND recorded_at BETWEEN ? AND ? "
        "GROUP BY kind", (since, until))}


class ActiveHolds:
    """The active holds of one scope, read once (a request's worth): by
    resident and by seal."""

    def __init__(self, holds: list[Hold]):
        self.by_resident: dict[str, list[Hold]] = {}
        for hold in holds:
            self.by_resident.setdefault(hold.resident_code, []).append(hold)

    @classmethod
    def load(cls, conn, *, scope: str, drill_id: int | None) -> ActiveHolds:
        return cls(listing(conn, scope=scope, drill_id=drill_id, status=ACTIVE))

    def of(self, resident_code: str) -> list[Hold]:
        return self.by_resident.get(resident_code, [])

    def support_measure_codes(self) -> frozenset[str]:
        """The residents under a 仮支援措置 recorded at the counter."""
        return frozenset(code for code, holds in self.by_resident.items() if any(h.kind == "support_measure" for h in holds))

    def of_seal(self, seal_number: str) -> list[Hold]:
        return [h for holds in self.by_resident.values() for h in holds if h.seal_number == seal_number]

    def __bool__(self) -> bool:
        return bool(self.by_resident)


# --- the register catching up --------------------------------------------------------


def upstream_match(hold: Hold, record: dict | None, seals: list[dict]) -> str | None:
    """What the register as mirrored now says that matches the hold (the
    supervisor then marks it reconciled), or None. Court, police and free
    holds are never matched: only a supervisor knows when they end."""
    if record is None:
        return None
    removal = record.get("removal") or {}
    removed = record.get("status") == "removed"
    if hold.kind == "death" and removed and removal.get("reason") == "死亡":
        return f"住民記録に死亡（{removal.get('occurred_on')}）が記録されています。"
    if hold.kind == "move_out":
        if removed and "転出" in (removal.get("reason") or ""):
            return f"住民記録に{removal['reason']}（{removal.get('occurred_on')}）が記録されています。"
        if record.get("planned_move_out"):
            return f"住民記録に転出予定（{record['planned_move_out'].get('date')}）が記録されています。"
    if hold.kind == "support_measure" and record.get("support_measure"):
        return "住民記録で支援措置の対象になっています。"
    if hold.kind in SEAL_KINDS:
        seal = next((s for s in seals if s["seal_number"] == hold.seal_number), None)
        if seal is None or seal["status"] == "revoked":
            return f"住民記録で印鑑登録 {hold.seal_number} が廃止されています。"
    return None

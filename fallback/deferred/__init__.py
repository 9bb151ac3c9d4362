"""Deferred requests: what cannot be done during downtime (moves, seal
registration, certificates to collect or be mailed later) is written down
with contact details and consent, as a worklist for after recovery."""

from __future__ import annotations

import re
import unicodedata

from fallback import audit
from fallback.errors import NotFound, SonaeError
from fallback.ops import Transaction, now_iso
from fallback.staff.spreadsheets import csv_text

KINDS = {
    "tennyu": "転入届",
    "tenshutsu": "転出届",
    "tenkyo": "転居届",
    "inkan_toroku": "印鑑登録",
    "certificate_later": "証明書（後日交付）",
    "certificate_mail": "証明書（郵送）",
    "other": "その他",
}
DELIVERY = {"counter": "窓口で受取り", "mail": "郵送（区負担）", "phone": "電話で連絡"}
STATUSES = {"open": "未対応", "contacted": "連絡済み", "done": "完了"}
# The longest text each typed field may hold (a name with 通称, a phone
# number or an address to mail to, a note): longer is a mistake or abuse.
MAX_LENGTHS = {"name": 100, "contact": 200, "note": 500, "resident_code": 20}


class DeferredError(SonaeError):
    """A deferred request that cannot be recorded; the message says what to fix."""


class UnknownResident(DeferredError, NotFound):
    """A 住民票コード of nobody in the register the counter reads (404 in the
    API, as a look-up of that code is; the form says so like its other refusals)."""


_CODE = re.compile(r"[0-9]{11}")
_FULL_WIDTH_DIGITS = str.maketrans("０１２３４５６７８９", "0123456789")


def resident_code_of(typed: str | None) -> str | None:
    """The 住民票コード as the register keys it (11 digits; typed full-width
    or with hyphens as the counter's search takes it), or None when left
    blank; anything else is refused rather than stored for the worklist."""
    if not typed or not typed.strip():
        return None
    code = typed.strip().translate(_FULL_WIDTH_DIGITS).replace("-", "")
    if not _CODE.fullmatch(code):
        raise DeferredError("住民票コードは11桁の数字です。分からなければ空欄にしてください。")
    return code


def record(conn, *, clerk: str, office: str, kind: str, name: str, contact: str, delivery: str, consent: bool,
           resident_code: str | None = None, note: str = "", scope: str = "real", drill_id: int | None = None,
           protected: str | None = None) -> int:
    """Record a deferred request; `protected`: 'self' or 'household' when
    its person was under a 支援措置 as it was recorded (kept, whatever
    happens to the measure or its hold afterwards)."""
    if kind not in KINDS:
        raise DeferredError("受付の種類を選んでください。")
    if not name.strip():
        raise DeferredError("氏名を入力してください。")
    if not contact.strip():
        raise DeferredError("連絡先（電話番号など）を入力してください。復旧後に連絡するために必要です。")
    if delivery not in DELIVERY:
        raise DeferredError("受取り方法を選んでください。")
    if not consent:
        raise DeferredError("連絡先を復旧後の連絡に使うことについて、住民の方の同意を確認してください。")
    resident_code = resident_code_of(resident_code)
    labels = {"name": "氏名", "contact": "連絡先", "note": "備考"}
    for field, value in (("name", name), ("contact", contact), ("note", note)):
        if len(value.strip()) > MAX_LENGTHS[field]:
            raise DeferredError(f"{labels[field]}が長すぎます（{MAX_LENGTHS[field]}文字まで）。")
        # A control character (NUL, escape, a line break in a one-line field) is never typed at the
        # counter; stored, it would break the worklist, its CSV and whoever reads them. Leading and
        # trailing ones (a tab pasted from a spreadsheet) are stripped like spaces, never stored.
        if any(unicodedata.category(c) == "Cc" for c in value.strip()):
            raise DeferredError(f"{labels[field]}に使えない文字（制御文字）が含まれています。入力し直してください。")
    with Transaction(conn):
        cursor = conn.execute(
            "INSERT INTO deferred_requests (created_at, scope, drill_id, clerk, office, kind, resident_code, name, contact, delivery, consent, note, "
            "protected_when_recorded) VALUES (?,?,?,?,?,?,?,?,?,?,1,?,?)",
            (now_iso(), scope, drill_id, clerk, office, kind, resident_code or None, name.strip(), contact.strip(), delivery, note.strip(),
             protected),
        )
        audit.append(conn, clerk, "deferred.record", resident_code, {"id": cursor.lastrowid, "kind": kind}, drill=scope == "drill")
    return cursor.lastrowid


def set_status(conn, request_id: int, status: str, *, actor: str) -> None:
    if status not in STATUSES:
        raise DeferredError(f"unknown status {status!r}")
    with Transaction(conn):
        changed = conn.execute(
            "UPDATE deferred_requests SET status = ?, status_changed_at = ?, status_changed_by = ? WHERE id = ?",
            (status, now_iso(), actor, request_id),
        ).rowcount
        if not changed:
            raise DeferredError(f"受付番号 {request_id} はありません。")
        audit.append(conn, actor, "deferred.status", str(request_id), {"status": status})


COLUMNS = ("id", "created_at", "office", "clerk", "kind", "resident_code", "name", "contact", "delivery", "note", "status", "status_changed_at", "status_changed_by",
           "protected_when_recorded")
# A request's person and the 支援措置, as fallback.counter.service marks each listed row's `support_measure`.
PROTECTION_CSV = {"self": "対象（本人）", "household": "対象（同じ世帯）", "unknown": "未確認"}


def worklist(conn, *, scope: str = "real", drill_id: int | None = None, status: str | None = None,
             clerk: str | None = None) -> list[dict]:
    """Deferred requests of a scope (and drill), optionally only one
    status's or one clerk's. Callers showing them to staff go through
    fallback.counter.service, which decides who may see which."""
    clauses, params = ["scope = ?"], [scope]
    if drill_id is not None:
        clauses.append("drill_id = ?")
        params.append(drill_id)
    if clerk is not None:
        clauses.append("clerk = ?")
        params.append(clerk)
    if status:
        clauses.append("status = ?")
        params.append(status)
    rows = conn.execute(f"SELECT {', '.join(COLUMNS)} FROM deferred_requests WHERE {' AND '.join(clauses)} ORDER BY id", params)
    return [dict(zip(COLUMNS, row)) for row in rows]


def to_csv(rows: list[dict]) -> str:
    """CSV with Japanese headings for a spreadsheet (typed text that looks
    like a formula stays text: fallback.staff.spreadsheets); 支援措置 as
    the counter service marked the row (its `support_measure`: PROTECTION_CSV)."""
    headings = ["受付番号", "受付日時", "窓口", "受付者", "種類", "住民票コード", "氏名", "連絡先", "受取り方法", "備考", "状況", "状況更新日時", "更新者",
                "支援措置"]
    return csv_text(headings, ([
        row["id"], row["created_at"], row["office"], row["clerk"], KINDS[row["kind"]], row["resident_code"] or "",
        row["name"], row["contact"], DELIVERY[row["delivery"]], row["note"] or "", STATUSES[row["status"]],
        row["status_changed_at"] or "", row["status_changed_by"] or "", PROTECTION_CSV.get(row.get("support_measure"), ""),
    ] for row in rows))

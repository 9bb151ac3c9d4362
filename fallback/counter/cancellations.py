"""Cancelling a certificate already issued (証明書の取消).

A copy spoiled at the counter (書損: misprinted, jammed, torn, or taken back
before it left), or one issued in error (誤交付: to the wrong person, with
the wrong content, or found wrong after the outage when the recovery's
reconciliation compares it with the register). Until it is cancelled the
certificate checks as genuine at /verify for as long as its signature holds,
which is for ever.

Only a 係長 cancels on the web (IT at the console, named with --actor); a
cancellation is final and keeps everything: the serial stays used (never
handed out again), the PDF and the issuance records stay as they were, the
audit says who cancelled what and why. From then on /verify and `sonae
verify` say NOT VALID, naming the day of the cancellation and its kind
(never the note, which may name people), and the counter neither prints nor
opens the certificate again. Drill certificates are the drill's: only real
ones are cancelled here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from fallback import audit
from fallback.counter.issuance import SQLITE_MAX_INTEGER
from fallback.errors import NotFound, SonaeError
from fallback.ops import Transaction, now_iso
from printing.wareki import DEFAULT_ERAS, Era, format_wareki

REASONS = {
    "spoiled": "書損（印刷の失敗・汚損など。用紙は回収済み）",
    "wrongly_issued": "誤交付（誤った内容・誤った相手に交付）",
    "other": "その他",
}
# What the public check names: the kind only.
REASON_NAMES = {"spoiled": "書損", "wrongly_issued": "誤交付", "other": "その他"}
NOTE_MAX_CHARS = 500
SCOPE = "real"


class CancellationRefused(SonaeError):
    status = 409
    code = "cancellation_refused"
    title = "取り消せません"


@dataclass(frozen=True)
class Cancellation:
    serial: int
    request_id: int
    cancelled_at: str
    cancelled_by: str
    reason: str
    note: str

    @property
    def reason_label(self) -> str:
        return REASONS[self.reason]

    def public_statement(self, eras: Sequence[Era] = DEFAULT_ERAS) -> str:
        """What whoever checks the certificate is told: no resident data, no note."""
        day = format_wareki(dt.datetime.fromisoformat(self.cancelled_at).date(), eras)
        kind = "" if self.reason == "other" else f"（{REASON_NAMES[self.reason]}）"
        return (f"この証明書（発行番号 {self.serial:06d}）は、発行した区役所が{day}に取り消しました{kind}。"
                "証明書として受け付けないでください。")


_COLUMNS = "serial, request_id, cancelled_at, cancelled_by, reason, note"


@dataclass(frozen=True)
class Cancellable:
    """A real certificate that may be cancelled, as the 係長 confirms it:
    the issuance, not whose it is (the issued page, audited, says that)."""

    serial: int
    request_id: int
    kind: str
    copy_number: int
    copies: int
    issued_at: str
    clerk: str
    terminal: str


def cancellable(conn, serial: int) -> Cancellable:
    """The certificate issued as `serial`, or raise NotFound (never
    allocated) or CancellationRefused (never handed out, or cancelled
    already)."""
    not_found = NotFound(f"発行番号 {serial:06d} の証明書は、この装置の交付の記録にありません。用紙の発行番号を確かめてください。")
    if not 0 <= serial <= SQLITE_MAX_INTEGER:  # a typed number can be any size; no serial is that large
        raise not_found
    row = conn.execute(
        "SELECT c.serial, c.request_id, r.kind, c.copy_number, r.copies, c.issued_at, r.clerk, r.terminal, c.status "
        "FROM certificates c JOIN requests r ON r.id = c.request_id WHERE c.scope = ? AND c.serial = ?", (SCOPE, serial),
    ).fetchone()
    if row is None:
        if conn.execute("SELECT 1 FROM certificates WHERE scope = 'drill' AND serial = ?", (serial,)).fetchone():
            raise CancellationRefused(f"発行番号 {serial:06d} は訓練の証明書です。訓練の証明書はもともと証明書として有効ではない"
                                      "（証明書の確認でも「訓練用」と表示される）ため、取り消すものはありません。")
        raise not_found
    status = row[-1]
    if status != "rendered":
        raise CancellationRefused(
            f"発行番号 {serial:06d} は証明書を作る前に無効にした番号で、交付されていません。取り消すものはありません。"
            if status == "void" else f"発行番号 {serial:06d} の証明書はまだ作成中です。交付を終えてから取り消してください。")
    earlier = _one(conn, serial)
    if earlier is not None:
        raise CancellationRefused(
            f"発行番号 {serial:06d} の証明書は、{earlier.cancelled_at[:16].replace('T', ' ')} に {earlier.cancelled_by} が"
            f"取り消し済みです（{REASON_NAMES[earlier.reason]}）。")
    return Cancellable(*row[:-1])


def check_reason(reason: str, note: str) -> str:
    """The note as kept (whitespace folded), or raise ValueError saying what to fix."""
    if reason not in REASONS:
        raise ValueError(f"取消の理由は {'・'.join(REASON_NAMES[r] for r in REASONS)} のどれかを選んでください。")
    note = " ".join(note.split())
    if not note:
        raise ValueError("取消の経緯を書いてください（例: 印刷がずれたため回収して廃棄、再交付は発行番号 000124）。")
    if len(note) > NOTE_MAX_CHARS:
        raise ValueError(f"取消の経緯は{NOTE_MAX_CHARS}字までにしてください（いま{len(note)}字）。")
    return note


def cancel(conn, serial: int, *, reason: str, note: str, actor: str) -> Cancellation:
    """Cancel the real certificate issued as `serial`; raises as
    `cancellable` and `check_reason` do."""
    note = check_reason(reason, note)
    with Transaction(conn):
        found = cancellable(conn, serial)
        cancelled_at = now_iso()
        conn.execute(f"INSERT INTO certificate_cancellations (scope, {_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                     (SCOPE, serial, found.request_id, cancelled_at, actor, reason, note))
        audit.append(conn, actor, "certificate.cancel", f"{SCOPE}:{serial}", {"request": found.request_id, "reason": reason})
    return Cancellation(serial, found.request_id, cancelled_at, actor, reason, note)


def cancellation_of(conn, scope: str, serial: int) -> Cancellation | None:
    """The cancellation of a certificate, if it was cancelled (a drill's never is)."""
    return _one(conn, serial) if scope == SCOPE else None


def cancelled(conn, scope: str, serials: Iterable[int]) -> dict[int, Cancellation]:
    """The cancellations among `serials` of `scope`, by serial."""
    wanted = list(serials)
    if scope != SCOPE or not wanted:
        return {}
    rows = conn.execute(f"SELECT {_COLUMNS} FROM certificate_cancellations WHERE scope = ? AND serial IN "
                        f"({', '.join('?' * len(wanted))})", (SCOPE, *wanted)).fetchall()
    return {row[0]: Cancellation(*row) for row in rows}


def recent(conn, limit: int = 200) -> list[Cancellation]:
    """The latest cancellations, newest first."""
    rows = conn.execute(f"SELECT {_COLUMNS} FROM certificate_cancellations WHERE scope = ? ORDER BY cancelled_at DESC LIMIT ?",
                        (SCOPE, limit)).fetchall()
    return [Cancellation(*row) for row in rows]


def _one(conn, serial: int) -> Cancellation | None:
    if not 0 <= serial <= SQLITE_MAX_INTEGER:  # a typed number can be any size; no serial is that large
        return None
    row = conn.execute(f"SELECT {_COLUMNS} FROM certificate_cancellations WHERE scope = ? AND serial = ?", (SCOPE, serial)).fetchone()
    return Cancellation(*row) if row else None

"""The appliance's operating mode: standby, suspect, downtime, recovery.

The mode is the last row of `mode_changes`; each row records who changed it,
when and why, so the history *is* the state and the incident report's
timeline comes for free. Only the transitions in TRANSITIONS exist; anything
else is refused with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from fallback import audit, drills
from fallback.errors import SonaeError
from fallback.ops import Transaction, now_iso

STANDBY, SUSPECT, DOWNTIME, RECOVERY = "standby", "suspect", "downtime", "recovery"

LABELS = {
    STANDBY: "通常（待機中）",
    SUSPECT: "障害の疑い",
    DOWNTIME: "ダウン対策モード",
    RECOVERY: "復旧確認中",
}

SYSTEM_ACTOR = "system"

# (from, to) -> roles allowed to make it; "system" is the worker's probes.
TRANSITIONS: dict[tuple[str, str], frozenset[str]] = {
    (STANDBY, SUSPECT): frozenset({"system", "supervisor", "it"}),
    (SUSPECT, STANDBY): frozenset({"system", "supervisor", "it"}),
    (STANDBY, DOWNTIME): frozenset({"supervisor"}),
    (SUSPECT, DOWNTIME): frozenset({"supervisor", "system"}),
    (DOWNTIME, RECOVERY): frozenset({"supervisor"}),
    (RECOVERY, DOWNTIME): frozenset({"supervisor"}),
    (RECOVERY, STANDBY): frozenset({"supervisor"}),
}

MAX_REASON_LENGTH = 500  # stored in the history, the audit and the incident report

DOWNTIME_REASONS = ("住民記録システム障害", "住基ネット連携障害", "ネットワーク障害", "夜間バッチ処理の遅延", "その他")


class ModeError(SonaeError):
    """A mode change that is not allowed; the message says why in Japanese,
    because it is shown to the supervisor who tried it."""

    status = 409
    code = "mode_refused"
    title = "モードを切り替えられません"


@dataclass(frozen=True)
class ModeState:
    mode: str
    since: str
    actor: str
    reason: str

    @property
    def label(self) -> str:
        return LABELS[self.mode]

    @property
    def counters_open(self) -> bool:
        """Search and issuance for real residents happen only in downtime:
        the box is not a second register."""
        return self.mode == DOWNTIME


def current(conn) -> ModeState:
    row = conn.execute("SELECT to_mode, at, actor, reason FROM mode_changes ORDER BY id DESC LIMIT 1").fetchone()
    if row is None:
        return ModeState(STANDBY, "", SYSTEM_ACTOR, "初期状態")
    return ModeState(*row)


def change(conn, to_mode: str, *, actor: str, role: str, reason: str) -> ModeState:
    """Move to `to_mode`, recording who, when and why, in one transaction
    with its audit entry."""
    if to_mode not in LABELS:
        raise ModeError(f"不明なモード {to_mode!r} です（standby, suspect, downtime, recovery のいずれか）。")
    reason = (reason or "").strip()
    if not reason:
        raise ModeError("理由を入力してください。")
    if len(reason) > MAX_REASON_LENGTH:
        raise ModeError(f"理由が長すぎます（{MAX_REASON_LENGTH}文字まで）。")
    with Transaction(conn):
        state = current(conn)
        if state.mode == to_mode:
            raise ModeError(f"すでに「{LABELS[to_mode]}」です。")
        allowed = TRANSITIONS.get((state.mode, to_mode))
        if allowed is None:
            raise ModeError(f"「{LABELS[state.mode]}」から「{LABELS[to_mode]}」へは切り替えられません。")
        if role not in allowed:
            raise ModeError(f"「{LABELS[to_mode]}」への切替えは係長が行います。")
        stamp = now_iso()
        conn.execute(
            "INSERT INTO mode_changes (at, from_mode, to_mode, actor, reason) VALUES (?,?,?,?,?)",
            (stamp, state.mode, to_mode, actor, reason),
        )
        audit.append(conn, actor, "mode.change", to_mode, {"from": state.mode, "to": to_mode, "reason": reason})
        if to_mode == DOWNTIME:
            # A real outage always wins over a rehearsal.
            drills.suspend_active(conn, actor=actor, reason=f"実際の障害によりダウン対策モードへ切替え: {reason}")
    return ModeState(to_mode, stamp, actor, reason)


def history(conn, since: str | None = None) -> list[dict]:
    rows = conn.execute(
        "SELECT at, from_mode, to_mode, actor, reason FROM mode_changes WHERE at >= ? ORDER BY id", (since or "",)
    ).fetchall()
    return [dict(zip(("at", "from_mode", "to_mode", "actor", "reason"), r)) for r in rows]

"""Whether a staff member's counter is open, and for what.

Real residents can be looked up only in downtime. A drill's participants
work in the drill's scope beside any other mode, on the drill's synthetic
register (fallback.mirror.registry.register_for); a real downtime suspends
the drill (see drills.suspend_active), so the two never mix.
"""

from __future__ import annotations

from fallback import drills, modes
from fallback.counter.issuance import REAL, Scope

# Who works at a counter: the screens, the API and the request forms all use this.
COUNTER_ROLES = ("clerk", "supervisor")

PAPER_ONLY_MESSAGE = (
    "この訓練は「システムが全く使えない」想定です。紙の交付申請書と手書きの交付台帳で対応してください"
    "（手順書「システムが全く使えない場合」）。"
)


def drill_scope(drill) -> Scope:
    """A drill's participants work on the drill's own records and its own
    synthetic register, never the real one (see register_for)."""
    return Scope("drill", drill.id)


def counter_scope(conn, staff, config) -> tuple[Scope | None, str | None]:
    state = modes.current(conn)
    if state.counters_open:
        return REAL, None
    drill = drills.active_drill(conn)
    if drill is not None and drill.includes(staff.username, staff.terminal):
        if drill.scenario == "paper_only":
            return None, PAPER_ONLY_MESSAGE
        return drill_scope(drill), None
    return None, (
        f"現在は「{state.label}」です。住民記録の検索と交付は、係長がダウン対策モードを宣言したときだけ使えます"
        "（この装置は第二の住民記録システムではありません）。"
    )

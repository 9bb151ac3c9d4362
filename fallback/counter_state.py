"""Whether a staff member's counter is open, and for what.

Real residents can be looked up only in downtime. A drill's participants
work in the drill's scope beside any other mode; a real downtime suspends
the drill (see drills.suspend_active), so the two never mix.
"""

from __future__ import annotations

from fallback import drills, modes
from fallback.issuance import REAL, Scope


def counter_scope(conn, staff) -> tuple[Scope | None, str | None]:
    state = modes.current(conn)
    if state.counters_open:
        return REAL, None
    drill = drills.active_drill(conn)
    if drill is not None and drill.includes(staff.username, staff.terminal):
        return Scope("drill", drill.id), None
    return None, (
        f"現在は「{state.label}」です。住民記録の検索と交付は、係長がダウン対策モードを宣言したときだけ使えます"
        "（この装置は第二の住民記録システムではありません）。"
    )

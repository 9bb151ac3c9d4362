"""Drills: the yearly outage rehearsal, run beside the real modes.

A drill has its own records (every request, certificate and deferred
request carries scope 'drill' and the drill id), its own serial range, and
a watermark on everything it prints. A real outage always wins: declaring
downtime suspends any active drill in the same transaction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from fallback import audit
from fallback.ops import Transaction, now_iso

SCENARIOS = {
    "full_outage": "クラウド全面障害（障害対応システムで交付）",
    "juki_net": "住基ネット連携のみの障害",
    "batch_stuck": "朝の夜間バッチ遅延",
    "paper_only": "システムが全く使えない（紙の手順のみ）",
    "long_outage": "長期障害（数日前のデータで交付）",
    "custom": "独自シナリオ",
}
PLANNED, ACTIVE, SUSPENDED, ENDED = "planned", "active", "suspended", "ended"


class DrillError(Exception):
    """A drill operation that cannot be done; the message says why."""


@dataclass(frozen=True)
class Drill:
    id: int
    scenario: str
    title: str
    description: str
    planned_start: str
    planned_end: str
    participants: tuple[str, ...]
    terminals: tuple[str, ...]
    status: str
    created_by: str
    started_at: str | None
    ended_at: str | None

    @property
    def scenario_label(self) -> str:
        return SCENARIOS.get(self.scenario, self.scenario)

    def includes(self, username: str, terminal: str) -> bool:
        return username in self.participants and (not self.terminals or terminal in self.terminals)


_COLUMNS = "id, scenario, title, description, planned_start, planned_end, participants, terminals, status, created_by, started_at, ended_at"


def _drill(row) -> Drill:
    values = list(row)
    values[6] = tuple(json.loads(values[6]))
    values[7] = tuple(json.loads(values[7]))
    return Drill(*values)


def get(conn, drill_id: int) -> Drill | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM drills WHERE id = ?", (drill_id,)).fetchone()
    return _drill(row) if row else None


def all_drills(conn) -> list[Drill]:
    return [_drill(r) for r in conn.execute(f"SELECT {_COLUMNS} FROM drills ORDER BY id DESC")]


def active_drill(conn) -> Drill | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM drills WHERE status = ? ORDER BY id DESC LIMIT 1", (ACTIVE,)).fetchone()
    return _drill(row) if row else None


def create(conn, *, scenario: str, title: str, description: str, planned_start: str, planned_end: str,
           participants: list[str], terminals: list[str], actor: str) -> int:
    if scenario not in SCENARIOS:
        raise DrillError("シナリオを選んでください。")
    if scenario == "custom" and not description.strip():
        raise DrillError("独自シナリオでは内容を記入してください。")
    if not participants:
        raise DrillError("参加する職員を1人以上選んでください。")
    if planned_end <= planned_start:
        raise DrillError("終了予定は開始予定より後にしてください。")
    with Transaction(conn):
        cursor = conn.execute(
            "INSERT INTO drills (scenario, title, description, planned_start, planned_end, participants, terminals, status, created_by, created_at) "
            "VALUES (?,?,?,?,?,?,?,?,?,?)",
            (scenario, title.strip() or SCENARIOS[scenario], description.strip(), planned_start, planned_end,
             json.dumps(sorted(set(participants))), json.dumps(sorted(set(terminals))), PLANNED, actor, now_iso()),
        )
        drill_id = cursor.lastrowid
        _event(conn, drill_id, actor, "created", {"scenario": scenario})
    return drill_id


def start(conn, drill_id: int, *, actor: str, current_mode: str) -> None:
    if current_mode == "downtime":
        raise DrillError("ダウン対策モード中（実際の障害対応中）は訓練を開始できません。")
    with Transaction(conn):
        if conn.execute("SELECT 1 FROM drills WHERE status = ?", (ACTIVE,)).fetchone():
            raise DrillError("ほかの訓練が実施中です。先に終了してください。")
        drill = get(conn, drill_id)
        if drill is None or drill.status not in (PLANNED, SUSPENDED):
            raise DrillError("この訓練は開始できる状態ではありません。")
        conn.execute("UPDATE drills SET status = ?, started_at = coalesce(started_at, ?) WHERE id = ?", (ACTIVE, now_iso(), drill_id))
        _event(conn, drill_id, actor, "resumed" if drill.status == SUSPENDED else "started", {})


def end(conn, drill_id: int, *, actor: str, reason: str = "訓練終了") -> None:
    with Transaction(conn):
        drill = get(conn, drill_id)
        if drill is None or drill.status == ENDED:
            raise DrillError("この訓練はすでに終了しています。")
        conn.execute("UPDATE drills SET status = ?, ended_at = ?, end_reason = ? WHERE id = ?", (ENDED, now_iso(), reason, drill_id))
        _event(conn, drill_id, actor, "ended", {"reason": reason})


def suspend_active(conn, *, actor: str, reason: str) -> int | None:
    """Called inside the transaction that declares a real downtime."""
    drill = active_drill(conn)
    if drill is None:
        return None
    conn.execute("UPDATE drills SET status = ? WHERE id = ?", (SUSPENDED, drill.id))
    _event(conn, drill.id, actor, "suspended", {"reason": reason})
    return drill.id


def record_event(conn, drill_id: int, actor: str, event: str, detail: dict | None = None) -> None:
    with Transaction(conn):
        _event(conn, drill_id, actor, event, detail or {})


def _event(conn, drill_id: int, actor: str, event: str, detail: dict) -> None:
    conn.execute("INSERT INTO drill_events (drill_id, at, actor, event, detail) VALUES (?,?,?,?,?)",
                 (drill_id, now_iso(), actor, event, json.dumps(detail, ensure_ascii=False)))
    audit.append(conn, actor, f"drill.{event}", str(drill_id), detail, drill=True)

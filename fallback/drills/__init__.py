"""Drills: the yearly outage rehearsal, run beside the real modes.

A drill has its own records (every request, certificate and deferred
request carries scope 'drill' and the drill id), its own serial range, a
watermark on everything it prints, and its own synthetic register
(fallback.drills.register): its counters search, view and issue from that
register only, never from the real one. The register is loaded when it is
first needed — when the coordinator prepares the personas or when the drill
starts — and loaded again, with the same people, at the drill's first
start, dated as the scenario says: one change-feed interval old (the
mirror just before an outage), or `drills.long_outage_data_age_hours` old
for the long-outage scenario. A real outage always wins: declaring
downtime suspends any active drill in the same transaction.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from dataclasses import dataclass

from fallback import audit
from fallback.config import Config
from fallback.drills import register as drill_register
from fallback.errors import SonaeError
from fallback.ops import TOKYO, Transaction, now, now_iso
from sync.errors import SyncError

SCENARIOS = {
    "full_outage": "クラウド全面障害（障害対応システムで交付）",
    "juki_net": "住基ネット連携のみの障害",
    "batch_stuck": "朝の夜間バッチ遅延",
    "paper_only": "システムが全く使えない（紙の手順のみ）",
    "long_outage": "長期障害（数日前のデータで交付）",
    "custom": "独自シナリオ",
}
PLANNED, ACTIVE, SUSPENDED, ENDED = "planned", "active", "suspended", "ended"
STATUS_LABELS = {PLANNED: "予定", ACTIVE: "実施中", SUSPENDED: "中断（実際の障害）", ENDED: "終了"}

# What the timeline of a drill shows for each event.
EVENT_LABELS = {
    "created": "訓練を登録",
    "started": "訓練開始（障害発生の想定時刻）",
    "declared": "訓練上の宣言（ダウン対策モード）",
    "suspended": "実際の障害のため中断",
    "resumed": "訓練を再開",
    "ended": "訓練終了",
    "register_loaded": "訓練用の住民記録（架空）を用意",
    "personas_prepared": "住民役を用意",
    "paper_kit_printed": "紙の様式を印刷",
}


class DrillError(SonaeError):
    """A drill operation that cannot be done; the message says why."""

    status = 409
    code = "drill_refused"


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

    @property
    def status_label(self) -> str:
        return STATUS_LABELS[self.status]

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
        append_event(conn, drill_id, actor, "created", {"scenario": scenario})
    return drill_id


def start(conn, config: Config, drill_id: int, *, actor: str, current_mode: str) -> None:
    """Start (or resume) a drill. Its first start loads its register afresh,
    dated as the scenario says; a resumed drill keeps the register it had."""
    if current_mode == "downtime":
        raise DrillError("ダウン対策モード中（実際の障害対応中）は訓練を開始できません。")
    drill = _startable(conn, drill_id)
    if drill.status == PLANNED:
        load_register(conn, config, drill, actor=actor)
    else:
        ensure_register(conn, config, drill, actor=actor)
    with Transaction(conn):
        drill = _startable(conn, drill_id)
        conn.execute("UPDATE drills SET status = ?, started_at = coalesce(started_at, ?) WHERE id = ?", (ACTIVE, now_iso(), drill_id))
        append_event(conn, drill_id, actor, "resumed" if drill.status == SUSPENDED else "started", {})


def _startable(conn, drill_id: int) -> Drill:
    if conn.execute("SELECT 1 FROM drills WHERE status = ?", (ACTIVE,)).fetchone():
        raise DrillError("ほかの訓練が実施中です。先に終了してください。")
    drill = get(conn, drill_id)
    if drill is None or drill.status not in (PLANNED, SUSPENDED):
        raise DrillError("この訓練は開始できる状態ではありません。")
    return drill


# --- the drill's register ---------------------------------------------------------


def data_age(drill: Drill, config: Config) -> dt.timedelta:
    """How old a drill's data is as it starts: one change-feed interval, as
    the mirror's is when an outage begins; the long-outage scenario's days."""
    if drill.scenario == "long_outage":
        return dt.timedelta(hours=config["drills"]["long_outage_data_age_hours"])
    return dt.timedelta(seconds=config["sync"]["changes_interval_s"])


def register_plan(conn, drill_id: int) -> drill_register.DrillRegisterPlan | None:
    """The seed and register date of the drill's register, fixed when it was
    first loaded (None before)."""
    row = conn.execute("SELECT detail FROM drill_events WHERE drill_id = ? AND event = 'register_loaded' ORDER BY id LIMIT 1",
                       (drill_id,)).fetchone()
    if row is None:
        return None
    detail = json.loads(row[0])
    return drill_register.DrillRegisterPlan(detail["seed"], dt.date.fromisoformat(detail["register_date"]))


def load_register(conn, config: Config, drill: Drill, *, actor: str) -> None:
    """Load the drill's synthetic register dated now minus data_age: the
    same people as before if it was loaded before, else a new seed."""
    as_of = now() - data_age(drill, config)
    plan = register_plan(conn, drill.id) or drill_register.DrillRegisterPlan(
        seed=secrets.randbelow(2**31), register_date=as_of.date() - dt.timedelta(days=1))
    try:
        result = drill_register.load(config, drill.id, plan, as_of=as_of)
    except SyncError as exc:
        raise DrillError(f"訓練用の住民記録を用意できませんでした（{exc}）。情報政策課に連絡してください。") from exc
    record_event(conn, drill.id, actor, "register_loaded", {
        "seed": plan.seed, "register_date": plan.register_date.isoformat(), "as_of": result.as_of.isoformat(),
        "generation": result.generation, "residents": result.residents, "seals": result.seals,
    })


def ensure_register(conn, config: Config, drill: Drill, *, actor: str) -> None:
    """Load the drill's register unless it is loaded already."""
    if not drill_register.loaded(config, drill.id):
        load_register(conn, config, drill, actor=actor)


def end(conn, drill_id: int, *, actor: str, reason: str = "訓練終了") -> None:
    with Transaction(conn):
        drill = get(conn, drill_id)
        if drill is None or drill.status == ENDED:
            raise DrillError("この訓練はすでに終了しています。")
        conn.execute("UPDATE drills SET status = ?, ended_at = ?, end_reason = ? WHERE id = ?", (ENDED, now_iso(), reason, drill_id))
        append_event(conn, drill_id, actor, "ended", {"reason": reason})


def suspend_active(conn, *, actor: str, reason: str) -> int | None:
    """Called inside the transaction that declares a real downtime."""
    drill = active_drill(conn)
    if drill is None:
        return None
    conn.execute("UPDATE drills SET status = ? WHERE id = ?", (SUSPENDED, drill.id))
    append_event(conn, drill.id, actor, "suspended", {"reason": reason})
    return drill.id


def record_event(conn, drill_id: int, actor: str, event: str, detail: dict | None = None) -> None:
    with Transaction(conn):
        append_event(conn, drill_id, actor, event, detail or {})


def append_event(conn, drill_id: int, actor: str, event: str, detail: dict) -> None:
    """Record a drill event inside the caller's transaction, with its audit
    entry (marked as drill)."""
    conn.execute("INSERT INTO drill_events (drill_id, at, actor, event, detail) VALUES (?,?,?,?,?)",
                 (drill_id, now_iso(), actor, event, json.dumps(detail, ensure_ascii=False)))
    audit.append(conn, actor, f"drill.{event}", str(drill_id), detail, drill=True)


def declare(conn, drill_id: int, *, actor: str, reason: str) -> None:
    """訓練上の宣言: the drill's stand-in for declaring downtime. It is a
    drill event only; the real mode never changes for a drill."""
    reason = reason.strip()
    if not reason:
        raise DrillError("宣言の理由（想定している障害）を入力してください。")
    with Transaction(conn):
        drill = get(conn, drill_id)
        if drill is None or drill.status != ACTIVE:
            raise DrillError("実施中の訓練でだけ宣言できます。")
        if conn.execute("SELECT 1 FROM drill_events WHERE drill_id = ? AND event = 'declared'", (drill_id,)).fetchone():
            raise DrillError("この訓練ではすでに宣言しています。")
        append_event(conn, drill_id, actor, "declared", {"reason": reason})


@dataclass(frozen=True)
class DrillEvent:
    at: str
    actor: str
    event: str
    detail: dict

    @property
    def label(self) -> str:
        return EVENT_LABELS.get(self.event, self.event)


def events(conn, drill_id: int) -> list[DrillEvent]:
    return [
        DrillEvent(at, actor, event, json.loads(detail))
        for at, actor, event, detail in conn.execute(
            "SELECT at, actor, event, detail FROM drill_events WHERE drill_id = ? ORDER BY id", (drill_id,)
        )
    ]


def active_intervals(drill_events: list[DrillEvent], until: str) -> list[tuple[str, str]]:
    """The spans during which the drill was running: from each start or
    resume to the next suspension or end (or `until` if still running)."""
    spans, opened = [], None
    for event in drill_events:
        if event.event in ("started", "resumed") and opened is None:
            opened = event.at
        elif event.event in ("suspended", "ended") and opened is not None:
            spans.append((opened, event.at))
            opened = None
    if opened is not None:
        spans.append((opened, until))
    return spans


def previous_year_drill(conn, drill: Drill) -> Drill | None:
    """The drill to compare with: the latest finished drill that started in
    an earlier calendar year than this one."""
    if drill.started_at is None:
        return None
    year_start = f"{drill.started_at[:4]}-01-01"
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM drills WHERE status = ? AND started_at < ? ORDER BY started_at DESC LIMIT 1",
        (ENDED, year_start),
    ).fetchone()
    return _drill(row) if row else None


# --- the yearly reminder -------------------------------------------------------


@dataclass(frozen=True)
class Reminder:
    level: str  # "none": nothing to do yet; "plan": no drill planned; "prepare": one is coming
    message: str
    drill: Drill | None
    missing: tuple[str, ...]  # preparations not done yet, for a planned drill


def schedule_reminder(conn, *, yearly_month: int, remind_days_before: int, today: dt.date | None = None) -> Reminder:
    """What `sonae drill schedule` tells the drill coordinator: whether this
    year's drill (in `yearly_month`) is planned, and what is still missing."""
    today = today or now().date()
    year = today.year if today.month <= yearly_month else today.year + 1
    month_start = dt.date(year, yearly_month, 1)
    month_end = dt.date(year + (yearly_month == 12), yearly_month % 12 + 1, 1)
    planned = conn.execute(
        f"SELECT {_COLUMNS} FROM drills WHERE planned_start >= ? AND planned_start < ? AND status != ? ORDER BY planned_start LIMIT 1",
        (month_start.isoformat(), month_end.isoformat(), ENDED),
    ).fetchone()
    held = conn.execute(
        "SELECT 1 FROM drills WHERE status = ? AND started_at >= ? AND started_at < ?",
        (ENDED, month_start.isoformat(), month_end.isoformat()),
    ).fetchone()
    if held:
        return Reminder("none", f"{year}年{yearly_month}月の訓練は実施済みです。", None, ())
    if planned is None:
        days = (month_start - today).days
        if days > remind_days_before:
            return Reminder("none", f"{year}年{yearly_month}月の訓練まで{days}日あります。", None, ())
        when = f"あと{days}日で" if days > 0 else "すでに"
        return Reminder("plan", f"{when}{year}年{yearly_month}月（年次訓練の月）です。訓練がまだ登録されていません。"
                        "手順書「06 年次訓練の進め方」に沿って日時・シナリオ・参加者を決め、Sonae の「訓練」画面で登録してください。", None, ())
    drill = _drill(planned)
    start = dt.datetime.fromisoformat(drill.planned_start).astimezone(TOKYO)
    days = (start.date() - today).days
    done = {e.event for e in events(conn, drill.id)}
    missing = tuple(label for event, label in (("personas_prepared", "住民役の用意"), ("paper_kit_printed", "紙の様式の印刷"))
                    if event not in done and (event != "paper_kit_printed" or drill.scenario == "paper_only"))
    message = f"訓練「{drill.title}」は {start:%Y年%m月%d日 %H:%M} 開始予定です（あと{days}日）。参加者{len(drill.participants)}人。"
    if missing:
        message += f" まだ済んでいない準備: {'、'.join(missing)}。"
    return Reminder("prepare", message, drill, missing)

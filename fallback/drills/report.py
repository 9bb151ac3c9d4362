"""The drill report: measured from what Sonae recorded during the drill,
never typed in.

Every figure comes from drill-scope records of this drill only (requests,
certificates, deferred requests and runbook ticks carrying its id, and its
events), so a drill report can never include real issuance, and real
figures never include a drill's. The report is Markdown, which becomes the
page and the PDF.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from fallback import deferred, documents, drills, runbooks
from fallback.counter.labels import rule_label
from fallback.documents import format_minutes, format_time, minutes_between
from fallback.ops import now_iso
from fallback.staff.users import SYSTEM_DISPLAY_NAME, display_names

# A rate needs enough to mean something: one certificate in a drill of
# a quarter minute is not "262.4枚/時". Below either bound the report
# shows no rate and says why.
MIN_RATE_MINUTES = 30
MIN_RATE_CERTIFICATES = 2
NO_RATE = "—（データ不足）"


def rate_per_hour(certificates: int, minutes: float) -> float | None:
    """Certificates per hour, or None when there is too little to tell."""
    if minutes < MIN_RATE_MINUTES or certificates < MIN_RATE_CERTIFICATES:
        return None
    return round(certificates / (minutes / 60), 1)


def _rate_text(rate: float | None) -> str:
    return NO_RATE if rate is None else f"{rate}枚"


# A clerk who picked the wrong certificate type for the person.
WRONG_TYPE_RULES = ("johyo_for_active", "removed_resident")


@dataclass(frozen=True)
class CounterFigures:
    terminal: str
    office: str
    certificates: int
    first_at: str | None
    minutes_to_first: float | None
    per_hour: float | None  # None: too little data for a rate


@dataclass(frozen=True)
class StepTick:
    tick: runbooks.Tick
    runbook_title: str
    step_number: int | None  # None: the step has since been reworded
    minutes_from_start: float | None


@dataclass(frozen=True)
class DrillFigures:
    drill: drills.Drill
    events: list[drills.DrillEvent]
    active_minutes: float
    minutes_to_declaration: float | None
    counters: list[CounterFigures]
    hourly: dict[str, dict[str, int]]  # terminal -> "09" -> certificates started in that hour
    certificates: int
    refusals: dict[str, int]
    deferred_by_kind: dict[str, int]
    steps_done: list[StepTick]
    steps_total: int

    @property
    def wrong_type_attempts(self) -> int:
        return sum(self.refusals.get(rule, 0) for rule in WRONG_TYPE_RULES)

    @property
    def errors_caught(self) -> int:
        return sum(self.refusals.values())

    @property
    def certificates_per_counter_hour(self) -> float | None:
        rate = rate_per_hour(self.certificates, self.active_minutes)
        return None if rate is None else round(rate / (len(self.counters) or 1), 1)

    @property
    def first_certificate_minutes(self) -> list[float]:
        return [c.minutes_to_first for c in self.counters if c.minutes_to_first is not None]


def figures(conn, drill: drills.Drill, *, terminals: list[dict], runbook_list: list[runbooks.Runbook]) -> DrillFigures:
    """Measure one drill. `terminals` is the [counter] terminals setting (for
    each counter's office); `runbook_list` the loaded runbooks."""
    events = drills.events(conn, drill.id)
    until = drill.ended_at or now_iso()
    active_minutes = sum(minutes_between(a, b) for a, b in drills.active_intervals(events, until))
    start = drill.started_at
    declared = next((e.at for e in events if e.event == "declared"), None)

    rows = conn.execute(
        "SELECT r.terminal, r.office, c.issued_at FROM certificates c JOIN requests r ON r.id = c.request_id "
        "WHERE c.scope = 'drill' AND r.scope = 'drill' AND r.drill_id = ? AND c.status != 'void' ORDER BY c.issued_at",
        (drill.id,),
    ).fetchall()
    offices = {t["id"]: t["office"] for t in terminals}
    by_terminal: dict[str, list[str]] = {terminal: [] for terminal in drill.terminals}
    hourly: dict[str, dict[str, int]] = {}
    for terminal, office, issued_at in rows:
        offices.setdefault(terminal, office)
        by_terminal.setdefault(terminal, []).append(issued_at)
        hour = dt.datetime.fromisoformat(issued_at).strftime("%H")
        hourly.setdefault(terminal, {}).setdefault(hour, 0)
        hourly[terminal][hour] += 1
    counters = [
        CounterFigures(
            terminal, offices.get(terminal, "—"), len(stamps), stamps[0] if stamps else None,
            minutes_between(start, stamps[0]) if stamps and start else None,
            rate_per_hour(len(stamps), active_minutes),
        )
        for terminal, stamps in sorted(by_terminal.items())
    ]
    refusals = dict(conn.execute(
        "SELECT refusal_rule, count(*) FROM requests WHERE scope = 'drill' AND drill_id = ? AND outcome = 'refused' "
        "GROUP BY refusal_rule ORDER BY refusal_rule", (drill.id,)
    ).fetchall())
    deferred_by_kind = dict(conn.execute(
        "SELECT kind, count(*) FROM deferred_requests WHERE scope = 'drill' AND drill_id = ? GROUP BY kind ORDER BY kind", (drill.id,)
    ).fetchall())

    by_slug = {rb.slug: rb for rb in runbook_list}
    scenario_runbooks = [by_slug[slug] for slug in runbooks.FOR_SCENARIO[drill.scenario] if slug in by_slug]
    standing = runbooks.tick_state(runbooks.tick_history(conn, drill_id=drill.id))
    steps_done = []
    for tick in sorted(standing.values(), key=lambda t: t.at):
        book = by_slug.get(tick.runbook)
        step = book.step(tick.step_id) if book else None
        steps_done.append(StepTick(tick, book.title if book else tick.runbook, step.number if step else None,
                                   minutes_between(start, tick.at) if start else None))
    return DrillFigures(
        drill=drill, events=events, active_minutes=active_minutes,
        minutes_to_declaration=minutes_between(start, declared) if start and declared else None,
        counters=counters, hourly=hourly, certificates=len(rows), refusals=refusals,
        deferred_by_kind=deferred_by_kind, steps_done=steps_done,
        steps_total=sum(len(rb.steps) for rb in scenario_runbooks),
    )


def _comparison_rows(current: DrillFigures, previous: DrillFigures | None) -> list[list]:
    def first(f: DrillFigures, pick):
        values = f.first_certificate_minutes
        return pick(values) if values else None

    metrics = [
        ("障害発生から宣言まで", lambda f: f.minutes_to_declaration, format_minutes),
        ("最初の交付まで（最も早い窓口）", lambda f: first(f, min), format_minutes),
        ("最初の交付まで（最も遅い窓口）", lambda f: first(f, max), format_minutes),
        ("交付した証明書", lambda f: f.certificates, lambda v: f"{v}枚"),
        ("1窓口1時間あたりの交付", lambda f: f.certificates_per_counter_hour, _rate_text),
        ("見つけた誤り（お断り）", lambda f: f.errors_caught, lambda v: f"{v}件"),
        ("うち証明書の種類の誤り", lambda f: f.wrong_type_attempts, lambda v: f"{v}件"),
        ("手順書のチェック", lambda f: len(f.steps_done), lambda v: f"{v}件"),
    ]
    rows = []
    for label, measure, show in metrics:
        now_value = measure(current)
        before = measure(previous) if previous else None
        difference = "—"
        if now_value is not None and before is not None:
            delta = now_value - before
            difference = f"{'+' if delta > 0 else ''}{round(delta, 1):g}"
        rows.append([label, show(now_value) if now_value is not None else "—",
                     show(before) if before is not None else "—", difference])
    return rows


def report_markdown(current: DrillFigures, previous: DrillFigures | None, names: dict[str, str] | None = None) -> str:
    """The report as Markdown; `names` (username -> display name) shows
    staff by the names they know each other by."""
    drill = current.drill
    md = documents.md_text
    names = {**(names or {}), "system": SYSTEM_DISPLAY_NAME}

    def name(username: str) -> str:
        return names.get(username, username)

    lines = [
        f"# 訓練報告書：{md(drill.title)}",
        "",
        f"- シナリオ：{md(drill.scenario_label)}" + (f"（{md(drill.description)}）" if drill.description else ""),
        f"- 実施：{format_time(drill.started_at)} 〜 {format_time(drill.ended_at)}（訓練時間 {format_minutes(current.active_minutes)}）",
        f"- 状態：{md(drill.status_label)}",
        f"- 参加者：{len(drill.participants)}人（{md('、'.join(name(p) for p in drill.participants))}）",
        f"- 参加した窓口：{md('、'.join(c.terminal for c in current.counters)) if current.counters else '—'}",
        f"- 作成：{format_time(now_iso())}（Sonae が訓練中の記録から自動で計測しました）",
        "",
        "## 主な計測値と前年との比較",
        "",
    ]
    if previous is not None:
        lines.append(f"前年の訓練：{md(previous.drill.title)}（{format_time(previous.drill.started_at)}）")
    else:
        lines.append("前年の訓練の記録はありません。")
    lines += ["", documents.md_table(["項目", "今回", "前年", "差"], _comparison_rows(current, previous)), ""]

    lines += ["## 窓口ごとの交付", ""]
    lines.append(documents.md_table(
        ["窓口", "庁舎", "最初の交付", "開始から", "交付枚数", "1時間あたり"],
        [[c.terminal, c.office, format_time(c.first_at), format_minutes(c.minutes_to_first), c.certificates,
          NO_RATE if c.per_hour is None else c.per_hour]
         for c in current.counters],
    ) if current.counters else "交付はありませんでした。")
    hours = sorted({hour for counts in current.hourly.values() for hour in counts})
    if hours:
        lines += ["", "### 時間帯ごとの交付枚数", "",
                  documents.md_table(["窓口"] + [f"{h}時台" for h in hours],
                                     [[t] + [current.hourly[t].get(h, 0) for h in hours] for t in sorted(current.hourly)])]
    lines += ["", "## 見つけた誤り（お断りした請求）", ""]
    lines.append(documents.md_table(["内容", "件数"], [[rule_label(rule), n] for rule, n in current.refusals.items()])
                 if current.refusals else "お断りした請求はありませんでした。")
    lines += ["", "## 後日対応の受付", ""]
    lines.append(documents.md_table(["種類", "件数"], [[deferred.KINDS.get(k, k), n] for k, n in current.deferred_by_kind.items()])
                 if current.deferred_by_kind else "後日対応の受付はありませんでした。")
    lines += ["", "## 手順書のチェック", "",
              f"このシナリオの手順書の手順 {current.steps_total}件のうち、{len(current.steps_done)}件にチェックが付きました。", ""]
    if current.steps_done:
        lines.append(documents.md_table(
            ["時刻", "開始から", "手順書", "手順", "役割", "チェックした人"],
            [[format_time(s.tick.at), format_minutes(s.minutes_from_start), s.runbook_title,
              f"{s.step_number}. {s.tick.step_text}" if s.step_number else f"（変更前の手順）{s.tick.step_text}",
              s.tick.role, name(s.tick.actor)] for s in current.steps_done],
        ))
    lines += ["", "## 経過", "",
              documents.md_table(["時刻", "出来事", "操作した人", "内容"],
                                 [[format_time(e.at), e.label, name(e.actor), e.detail.get("reason", "")] for e in current.events]),
              "", "## 反省と改善点（記入欄）", "", "（訓練担当が記入してください）", ""]
    return "\n".join(lines)


def build(conn, drill_id: int, *, terminals: list[dict], runbook_list: list[runbooks.Runbook]) -> str:
    """The report of one drill, compared with last year's, as Markdown."""
    drill = drills.get(conn, drill_id)
    if drill is None:
        raise drills.DrillError(f"訓練 {drill_id} はありません。")
    previous = drills.previous_year_drill(conn, drill)
    return report_markdown(
        figures(conn, drill, terminals=terminals, runbook_list=runbook_list),
        figures(conn, previous, terminals=terminals, runbook_list=runbook_list) if previous else None,
        display_names(conn),
    )

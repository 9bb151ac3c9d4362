"""The morning report and the SLA document.

Every morning (alerts.morning_report, 07:30) IT gets one e-mail that says
whether last night's mirror is complete and trustworthy: did the full load
succeed, how old the data is, how the counts moved, whether anything was
refused, and how available the upstream was yesterday. The same report is
kept in the database and shown as a page.

The SLA report is a page and a PDF for the vendor; the PDF is WeasyPrint
with the IPAex fonts only.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging

from fallback import anchor, modes
from fallback.config import Config
from fallback.mirror.registry import format_age
from fallback.monitoring import alerts, mirror, notify, probes, sla
from fallback.ops import Transaction, now, open_ops
from sync.crypto import DiskError, WrongKeyError
from sync.errors import SyncError

log = logging.getLogger("sonae.monitoring")

FULL_LOAD_OUTCOMES = {"ok": "成功", "failed": "失敗", "refused": "拒否（データの検査に不合格）",
                      "stopped": "中断（停止の操作による。完了していません）", "running": "実行中"}
MAIL_PROBLEM_RUNS = 10  # the newest: the mail is read on a phone; the page shows them all


def _run_dict(run: mirror.SyncRun) -> dict:
    return {"kind": run.kind, "started_at": run.started_at, "finished_at": run.finished_at, "outcome": run.outcome,
            "duration_s": run.duration_s, "generation": run.generation, "records": run.records,
            "error": alerts.mask_record_values(run.error) if run.error else None}


def outage_now(conn) -> list[str]:
    """What is wrong right now whatever last night's load did: an upstream
    component the probes see down, a mode other than standby. While any
    holds, no report says 「異常なし」."""
    problems = [f"上流の{probes.COMPONENT_LABELS.get(component, component)}が停止中（{alerts.format_moment(status.since)}から）"
                for component, status in sorted(probes.component_statuses(conn).items()) if status.status == probes.DOWN]
    state = modes.current(conn)
    if state.mode != modes.STANDBY:
        problems.append(f"運用モードが「{state.label}」です")
    return problems


def build_morning_report(conn, config: Config, at: dt.datetime) -> dict:
    """The report as plain data (stored as JSON, rendered as mail and page)."""
    since = (at - dt.timedelta(hours=24)).isoformat(timespec="milliseconds")
    runs = mirror.runs_since(conn, since)
    full_runs = [r for r in runs if r.kind == mirror.FULL]
    full_load = _run_dict(full_runs[0]) if full_runs else None
    problems = [_run_dict(r) for r in reversed(runs) if r.failed]
    snapshot, snapshot_error = None, None
    try:
        facts = mirror.snapshot_facts(config)
    except (SyncError, WrongKeyError, DiskError) as exc:
        facts, snapshot_error = None, alerts.mask_record_values(str(exc))
    if facts is not None:
        snapshot = {"generation": facts.current.generation, "as_of": facts.current.as_of.isoformat(),
                    "age_hours": round(facts.age_hours(at), 2), "residents": facts.current.residents, "seals": facts.current.seals,
                    "residents_change": facts.change("residents"), "seals_change": facts.change("seals")}
    yesterday = at.date() - dt.timedelta(days=1)
    availability = [
        {"component": a.component, "label": a.label, "measured_percent": a.measured_percent, "down_s": a.down_s,
         "unknown_s": a.unknown_s, "downtime": [{"start": i.start.isoformat(), "end": i.end.isoformat()} for i in a.downtime]}
        for a in sla.day_availability(conn, config, yesterday)
    ]
    open_alerts = [{"severity": a.severity, "title": a.title, "since": a.since} for a in alerts.open_alerts(conn)]
    max_age = config["alerts"]["snapshot_max_age_hours"]
    outage = outage_now(conn)
    healthy = (
        full_load is not None and full_load["outcome"] == "ok" and not problems and snapshot is not None
        and snapshot["age_hours"] <= max_age and not any(a["severity"] == alerts.CRITICAL for a in open_alerts)
        and not outage
    )
    return {
        "day": at.date().isoformat(), "generated_at": at.isoformat(timespec="seconds"), "healthy": healthy,
        "full_load": full_load, "snapshot": snapshot, "snapshot_error": snapshot_error, "problem_runs": problems,
        "yesterday": yesterday.isoformat(), "availability": availability, "threshold_percent": config["sla"]["threshold_percent"],
        "open_alerts": open_alerts, "max_age_hours": max_age, "outage": outage,
        "audit_head": dataclasses.asdict(anchor.head_of(conn)),
    }


def _shortened(text: str, limit: int) -> str:
    """At most `limit` characters, saying so when cut (the page has it whole)."""
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _signed(value: int | None) -> str:
    return "前世代なし" if value is None else f"前世代比 {value:+,}"


def verdict(report: dict, outage_now: list[str] = ()) -> str:
    """The one phrase the subject and the page lead with: 要確認 (something
    failed, is critical or down), 注意 (warnings open, nothing worse), or
    異常なし — never while a warning is open, or someone reading only the
    subject would not look."""
    if not report["healthy"] or outage_now:
        return "要確認"
    warnings = sum(1 for alert in report["open_alerts"] if alert["severity"] == alerts.WARNING)
    return f"注意（警告{warnings}件）" if warnings else "異常なし"


def morning_report_text(config: Config, report: dict) -> tuple[str, str]:
    """(subject, body) of the morning e-mail."""
    municipality = config["municipality"]["name"]
    verdict_text = verdict(report)
    lines = [f"Sonae 朝の報告（{municipality}）　{alerts.format_moment(report['generated_at'])}", "", f"■ 総合判定: {verdict_text}", ""]
    if report.get("outage"):
        lines += [f"■ いまの状態: {'、'.join(report['outage'])}", ""]
    full = report["full_load"]
    if full is None:
        lines.append("■ 昨夜の全件取込: 実行されていません（この24時間に記録がありません）")
    else:
        outcome = FULL_LOAD_OUTCOMES.get(full["outcome"], full["outcome"])
        duration = "—" if full["duration_s"] is None else alerts.format_seconds(full["duration_s"])
        detail = f"{alerts.format_moment(full['started_at'])} 開始、所要 {duration}"
        if full["generation"] is not None:
            detail += f"、第{full['generation']}世代"
        lines.append(f"■ 昨夜の全件取込: {outcome}（{detail}）")
        if full["error"]:
            lines.append(f"　理由: {full['error'][:300]}")
    snapshot = report["snapshot"]
    if snapshot is None:
        lines.append(f"■ データ時点: 写しがありません{('（' + report['snapshot_error'][:200] + '）') if report['snapshot_error'] else ''}")
    else:
        lines.append(f"■ データ時点: {alerts.format_moment(snapshot['as_of'])}（{format_age(snapshot['age_hours'])}前、第{snapshot['generation']}世代）")
        lines.append(f"■ 件数: 住民 {snapshot['residents']:,}人（{_signed(snapshot['residents_change'])}）、"
                     f"印鑑登録 {snapshot['seals']:,}件（{_signed(snapshot['seals_change'])}）")
    if report["problem_runs"]:
        problems = report["problem_runs"]
        left_out = max(0, len(problems) - MAIL_PROBLEM_RUNS)
        lines.append(f"■ 拒否・失敗・中断した取込: {len(problems)}件" + (f"（新しい{MAIL_PROBLEM_RUNS}件。古い{left_out}件は監視画面の取込履歴）" if left_out else ""))
        for run in problems[left_out:]:
            lines.append(f"　- {alerts.format_moment(run['started_at'])} {mirror.RUN_KINDS.get(run['kind'], run['kind'])}: "
                         f"{FULL_LOAD_OUTCOMES.get(run['outcome'], run['outcome'])} {_shortened(run['error'] or '', 200)}")
    else:
        lines.append("■ 拒否・失敗・中断した取込: なし")
    lines.append(f"■ 昨日（{report['yesterday']}）の上流の可用性（契約の基準 {report['threshold_percent']:g}%）:")
    for row in report["availability"]:
        percent = "計測なし" if row["measured_percent"] is None else f"{row['measured_percent']:.3f}%"
        lines.append(f"　- {row['label']}: {percent}（停止 {alerts.format_seconds(row['down_s'])}、不明 {alerts.format_seconds(row['unknown_s'])}）")
    if report["open_alerts"]:
        lines.append(f"■ 対応中の警報: {len(report['open_alerts'])}件")
        for alert in report["open_alerts"]:
            lines.append(f"　- 【{alerts.SEVERITY_LABELS[alert['severity']]}】{alert['title']}（{alerts.format_moment(alert['since'])}から）")
    else:
        lines.append("■ 対応中の警報: なし")
    if report.get("audit_head"):
        lines.append(f"■ 記録の照合用: {anchor.Anchor(**report['audit_head']).line()}")
    lines += ["", f"監視画面: {config['web']['public_base_url'].rstrip('/')}/monitor/morning"]
    subject = f"【朝の報告】{verdict_text}　{report['day']}（Sonae {municipality}）"
    return subject, "\n".join(lines)


def stored_report(conn, day: str | None = None) -> dict | None:
    """A stored morning report (the newest when day is None), with its
    mail outcome."""
    if day is None:
        row = conn.execute("SELECT report, mailed, mail_error FROM morning_reports ORDER BY day DESC LIMIT 1").fetchone()
    else:
        row = conn.execute("SELECT report, mailed, mail_error FROM morning_reports WHERE day = ?", (day,)).fetchone()
    if row is None:
        return None
    return {**json.loads(row[0]), "mailed": bool(row[1]), "mail_error": row[2]}


def run_morning_report(config: Config, *, at: dt.datetime | None = None) -> dict:
    """The scheduled morning report: build it, keep it, mail it."""
    at = at or now()
    conn = open_ops(config)
    try:
        report = build_morning_report(conn, config, at)
        delivery = None
        if notify.mail_configured(config):
            delivery = notify.send_mail(config, *morning_report_text(config, report))
        with Transaction(conn):
            conn.execute(
                "INSERT OR REPLACE INTO morning_reports (day, generated_at, report, mailed, mail_error) VALUES (?,?,?,?,?)",
                (report["day"], report["generated_at"], json.dumps(report, ensure_ascii=False),
                 int(bool(delivery and delivery.ok)), delivery.error if delivery else None),
            )
    finally:
        conn.close()
    log.info("morning report %s: %s", report["day"], "healthy" if report["healthy"] else "needs attention")
    return report

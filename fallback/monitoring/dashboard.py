"""Everything the IT dashboard shows, gathered in one place so that the view
only renders it."""

from __future__ import annotations

import datetime as dt

from fallback import modes
from fallback.config import Config
from fallback.counter.issuance import ANOMALY_LABELS
from fallback.counter.rendering import official_seal_problem, verification_address_problem
from fallback.mirror.registry import snapshot_store
from fallback.mirror.syncing import latest_load_anomalies
from fallback.monitoring import alerts, charts, doctor, mirror, probes
from sync import crypto
from sync.anomalies import FILE_OF
from sync.crypto import WrongKeyError
from sync.errors import SyncError

LATENCY_SERIES = {probes.REGISTER: "ヘルスチェック（/v1/health）", probes.SYNTHETIC: "住民記録の読み出し（/v1/residents）"}
CHART_DAYS = 7
AGE_SAMPLE = dt.timedelta(minutes=30)


def _component_rows(conn, config: Config, statuses: dict, at: dt.datetime) -> list[dict]:
    hour_ago = at - dt.timedelta(hours=1)
    samples: dict[str, list] = {c: [] for c in probes.COMPONENTS}
    for component, stamp, ok in conn.execute(
        "SELECT component, at, ok FROM probes WHERE at >= ? ORDER BY at", (hour_ago.isoformat(timespec="milliseconds"),)
    ):
        samples[component].append((dt.datetime.fromisoformat(stamp), bool(ok)))
    rows = []
    for component in probes.COMPONENTS:
        history = samples[component]
        rows.append({
            "component": component,
            "label": probes.COMPONENT_LABELS[component],
            "status": statuses.get(component),
            "failed_last_hour": sum(1 for _, ok in history if not ok),
            "probes_last_hour": len(history),
            "strip": charts.probe_strip(history, start=hour_ago, end=at, interval_s=config["probes"]["interval_s"],
                                        label=f"{probes.COMPONENT_LABELS[component]}の直近1時間の監視結果"),
        })
    return rows


def latency_chart(conn, at: dt.datetime):
    start = (at - dt.timedelta(days=CHART_DAYS)).replace(minute=0, second=0, microsecond=0)
    hourly: dict[str, dict[str, float]] = {c: {} for c in LATENCY_SERIES}
    for component, hour, average in conn.execute(
        "SELECT component, substr(at, 1, 13), avg(latency_ms) FROM probes WHERE at >= ? AND component IN (?, ?) "
        "GROUP BY component, substr(at, 1, 13)", (start.isoformat(timespec="milliseconds"), *LATENCY_SERIES),
    ):
        hourly[component][hour] = average
    series = []
    for component, label in LATENCY_SERIES.items():
        points, moment = [], start
        while moment <= at:
            points.append((moment + dt.timedelta(minutes=30), hourly[component].get(moment.strftime("%Y-%m-%dT%H"))))
            moment += dt.timedelta(hours=1)
        series.append(charts.Series(label, points))
    return charts.line_chart(series, start=start, end=at, unit="ミリ秒", title="上流の応答時間（1時間ごとの平均、過去7日）")


def age_chart(conn, at: dt.datetime):
    start = at - dt.timedelta(days=CHART_DAYS)
    points = mirror.snapshot_age_series(conn, start, at, AGE_SAMPLE)
    return charts.line_chart([charts.Series("写しのデータの古さ", points)], start=start, end=at, unit="時間",
                             title="住民記録の写しの古さ（過去7日）")


def _candidate(config: Config):
    """The meta of the generation IT may confirm after a damaged pointer
    (None when the pointer is not waiting for a decision)."""
    store = snapshot_store(config)
    pointer = store.pointer()
    if not pointer.undecided or pointer.candidate is None:
        return None
    with store.open_register(pointer.candidate) as register:
        return register.meta


def dashboard(conn, config: Config, at: dt.datetime) -> dict:
    statuses = probes.component_statuses(conn)
    snapshot_error = None
    try:
        facts = mirror.snapshot_facts(config)
    except (SyncError, WrongKeyError, crypto.DatabaseError) as exc:
        facts, snapshot_error = None, str(exc)
    return {
        "pointer": snapshot_store(config).pointer(),
        "candidate": _candidate(config),
        "at": at,
        "state": modes.current(conn),
        "mode_history": modes.history(conn)[-5:],
        "mode_labels": modes.LABELS,
        "outage": alerts.describe_outage(statuses, facts),
        "components": _component_rows(conn, config, statuses, at),
        "facts": facts,
        "snapshot_error": snapshot_error,
        "age_hours": facts.age_hours(at) if facts else None,
        "last_full": mirror.latest_finished(conn, mirror.FULL),
        "last_change": mirror.latest_success(conn, mirror.CHANGES),
        "next_full": mirror.next_full_load(config, at),
        "next_changes": mirror.next_changes_run(conn, config, at),
        "runs": mirror.recent_runs(conn, 30),
        "disk": mirror.disk_usage(config),
        "disk_low_percent": config["alerts"]["disk_low_percent"],
        "open_alerts": alerts.open_alerts(conn),
        "recent_alerts": alerts.recent_alerts(conn, 30),
        "failed_deliveries": conn.execute(
            "SELECT d.at, d.channel, d.error, a.title FROM alert_deliveries d JOIN alerts a ON a.id = d.alert_id "
            "WHERE d.ok = 0 ORDER BY d.id DESC LIMIT 10").fetchall(),
        "latency_chart": latency_chart(conn, at),
        "age_chart": age_chart(conn, at),
        "verification_address_problem": verification_address_problem(config),
        "checkup": doctor.latest_checkup(conn),
        "official_seal_problem": official_seal_problem(config),
        "load_anomalies": latest_load_anomalies(conn),
        "anomaly_labels": ANOMALY_LABELS,
        "file_of": FILE_OF,
    }

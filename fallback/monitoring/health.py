"""Machine-readable health: readiness for the counters and the Prometheus
metrics.

Both are built from the operational database and the snapshot store on
every request — never from in-process counters — so the web server's
threads, the worker and any number of processes agree. Neither carries
anything from a resident record: only counts, ages, states and times.
They run inside a web request and read the snapshot through the server
thread's register reader (fallback.mirror.registry).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily

from fallback import access, clock, disk, modes
from fallback.config import Config
from fallback.counter.issuance import KINDS, handed_out_by_kind
from fallback.counter.rendering import official_seal_problem, verification_address_problem
from fallback.keys import key_status, signing_key_status
from fallback.mirror import availability
from fallback.mirror.registry import SnapshotSummary, register_problem, snapshot_store, snapshot_summary
from fallback.monitoring import doctor, mirror, probes
from sync import crypto


@dataclass(frozen=True)
class Readiness:
    ready: bool
    body: dict  # the /readyz JSON
    key_loaded: bool
    snapshot: SnapshotSummary | None


# The checks that stop the counters, by name; the others are reported only.
BLOCKING_CHECKS = ("state", "key", "signing_key", "snapshot", "data_age", "snapshot_reads", "writes", "disk_space", "clock", "official_seal")


def readiness(config: Config, conn, at: dt.datetime, *, ops_problem: Exception | None = None) -> Readiness:
    """Ready to serve counters: the key loads, a snapshot is present, opens
    and reads without errors, its data is not older than
    counter.data_age_hard_limit_hours, and the operational database can
    commit (a durable write, at most once a second) with room for a
    certificate, the key that signs certificates loads, and a 電子公印 is
    configured (real issuance refuses without one). `conn` is the operational database (None when the key is
    missing, or when it cannot be opened: `ops_problem`)."""
    hard_limit = config["counter"]["data_age_hard_limit_hours"]
    checks: dict[str, dict] = {}
    key_problem = key_status(config)
    checks["key"] = {"ok": key_problem is None, "detail": "暗号鍵を読み込めます" if key_problem is None else "暗号鍵を読み込めません"}
    checks["signing_key"] = signing_key_check(config)
    snapshot = None
    if key_problem is None:
        checks["snapshot"], snapshot = _snapshot_check(config)
        checks.update(_pointer_check(config))
    if snapshot is not None:
        checks["snapshot"].update(generation=snapshot.generation, data_as_of=snapshot.as_of.isoformat())
        checks["data_age"] = {"ok": snapshot.age_hours <= hard_limit, "age_hours": round(snapshot.age_hours, 3), "limit_hours": hard_limit}
        errors = availability.recent(conn, snapshot.generation, at) if conn is not None else None
        checks["snapshot_reads"] = {"ok": errors is None, "detail": "読み出しの失敗はありません" if errors is None else (
            f"住民記録の写しの読み出しが{errors['count']}回失敗しています（最後 {errors['last_at'][:19]}）。"
            f"sonae snapshot verify {snapshot.generation} で検査してください"), **({"errors": errors["count"]} if errors else {})}
    if conn is not None:
        checks.update(_disk_checks(config, conn))
        checks["clock"] = _clock_check(conn, snapshot, at)
    elif ops_problem is not None:
        checks["writes"] = {"ok": False, "detail": f"運用データベースを開けません（{type(ops_problem).__name__}: {ops_problem}）"}
    # Reported, not a reason to stop the counters: certificates still issue,
    # only their printed verification address is of no use outside.
    address_problem = verification_address_problem(config)
    checks["verification_address"] = {"ok": address_problem is None, "detail": address_problem or "確認先が設定されています"}
    checks["official_seal"] = official_seal_check(config)
    if conn is not None and (checkup := doctor.latest_checkup(conn)) is not None:
        # Reported, not a reason to stop: the same findings as `sonae doctor`, from the worker's last run.
        checks["doctor"] = {"ok": not checkup.problems, "checked_at": checkup.at, "problems": [f.line for f in checkup.problems],
                            "detail": "sonae doctor の点検で問題はありません" if not checkup.problems else
                            f"sonae doctor の点検で{len(checkup.problems)}件の問題があります"}
    failing = [name for name in BLOCKING_CHECKS if name in checks and not checks[name]["ok"]]
    ready = not failing
    body = {"status": "ready" if ready else "not_ready", "failing": failing, "checks": checks, "at": at.isoformat(timespec="seconds")}
    return Readiness(ready, body, key_problem is None, snapshot)


def state_unusable(config: Config, exc: PermissionError, at: dt.datetime) -> Readiness:
    """Not ready: the state directory (or a file in it) cannot be read by
    this uid any more, which stops every other check; the reason is the
    one permission line."""
    problem = access.state_problem(config.home) or access.permission_message(exc.filename or config.home)
    checks = {"state": {"ok": False, "detail": "装置の記録（SONAE_HOME）を読み書きする権限がありません", "reason": problem}}
    body = {"status": "not_ready", "failing": ["state"], "checks": checks, "at": at.isoformat(timespec="seconds")}
    return Readiness(False, body, key_status(config) is None, None)


def _disk_checks(config: Config, conn) -> dict[str, dict]:
    """The operational database commits (a small durable write: a failing or
    read-only disk), and the disk has room for one more certificate (a
    small write fits in a WAL that a big one must grow)."""
    problem = disk.write_probe(config, conn)
    free, needed = disk.free_bytes(config), disk.bytes_per_certificate(conn)
    checks = {
        "writes": {"ok": problem is None,
                   "detail": "運用データベースに書き込めます" if problem is None else f"運用データベースに書き込めません（{problem}）"},
        "disk_space": {"ok": free >= needed, "free_bytes": free, "bytes_per_certificate": needed,
                       "detail": f"空きは証明書およそ{free // needed:,}通分です" if free >= needed else "証明書1通分の空きもありません"},
    }
    reserve = disk.reserve_state(config)
    if reserve.size:  # reported, not a reason to stop: the counters work on the released space
        checks["disk_reserve"] = {"ok": reserve.present, "reserve_bytes": reserve.size,
                                  "detail": "予備の領域があります" if reserve.present else "予備の領域はありません（解放済みか、まだ作れていません）"}
    return checks


def _clock_check(conn, snapshot: SnapshotSummary | None, at: dt.datetime) -> dict:
    """Nothing the appliance knows disagrees with its clock (issuance
    refuses otherwise); NTP as the OS reports it, for IT."""
    found = clock.doubts(conn, data_as_of=snapshot.as_of if snapshot else None, at=at)
    ntp, why = clock.ntp_status()
    projected = clock.offset_now(conn, at)
    check = {"ok": not found, "detail": clock.warning_message(found) if found else "時計と食い違う時刻はありません",
             "ntp": ntp or "unknown", "upstream_offset_s": None if projected is None else round(projected[0].total_seconds(), 1)}
    if ntp is None:
        check["ntp_unknown_because"] = why
    return check


def _snapshot_check(config: Config) -> tuple[dict, SnapshotSummary | None]:
    try:
        snapshot = snapshot_summary(config)
    except crypto.DatabaseError as exc:  # it opened, but its meta cannot be read
        return {"ok": False, "detail": "住民記録の写しを読み出せません", "reason": str(exc)}, None
    if snapshot is not None:
        return {"ok": True, "detail": "住民記録の写しがあります"}, snapshot
    problem = register_problem()
    if problem is None:
        return {"ok": False, "detail": "住民記録の写しがまだありません"}, None
    return {"ok": False, "detail": availability.unavailable_message(problem, snapshot_store(config)), "reason": str(problem)}, None


def _pointer_check(config: Config) -> dict[str, dict]:
    """A damaged CURRENT whose copy says what it held: the right generation
    serves, the next sync writes CURRENT again; reported meanwhile."""
    pointer = snapshot_store(config).pointer()
    if pointer.damage is None or pointer.generation is None:
        return {}
    return {"snapshot_pointer": {"ok": False, "reason": pointer.damage,
                                 "detail": "現在の世代を示すファイル（CURRENT）が壊れています。控えが示す世代で動いており、次の取込で直ります"}}


def signing_key_check(config: Config) -> dict:
    """Without the signing key no certificate is issued nor checked: found
    here, not at the first certificate of an outage."""
    problem = signing_key_status(config)
    if problem is None:
        return {"ok": True, "detail": "証明書の署名鍵を読み込めます"}
    return {"ok": False, "detail": "証明書の署名鍵を読み込めません（sonae doctor で原因を確かめてください）", "reason": problem}


def official_seal_check(config: Config) -> dict:
    """/readyz's 電子公印 check: without a usable seal image no real
    certificate is issued (the counters refuse with the same words)."""
    problem = official_seal_problem(config)
    return {"ok": problem is None, "detail": problem or "電子公印の画像が設定されています"}


def _timestamp(iso: str | None) -> float | None:
    return dt.datetime.fromisoformat(iso).timestamp() if iso else None


def metric_families(config: Config, conn, at: dt.datetime, *, public: bool = False) -> list:
    """Every metric, read from the database and the snapshot store now
    (`conn` is None when the key is missing: only the key and readiness
    gauges can be given then). `public`: only what the public notice says
    — whether the counters could be served, and whether they are working
    from the copy because of an outage."""
    families = []
    state = readiness(config, conn, at)
    ready = GaugeMetricFamily("sonae_ready", "1 when the counters could be served (key, snapshot, data age)")
    ready.add_metric([], int(state.ready))
    families.append(ready)
    current = modes.current(conn).mode if conn is not None else None  # without the key the database cannot be opened
    if current is not None:
        downtime = GaugeMetricFamily("sonae_downtime", "1 while the counters issue from the copy (downtime), as the public notice says")
        downtime.add_metric([], int(current == modes.DOWNTIME))
        families.append(downtime)
    if public:
        return families
    key = GaugeMetricFamily("sonae_key_loaded", "1 when the master encryption key loads")
    key.add_metric([], int(state.key_loaded))
    families.append(key)
    if current is None:
        return families
    mode = GaugeMetricFamily("sonae_mode", "1 for the current operating mode", labels=["mode"])
    for name in modes.LABELS:
        mode.add_metric([name], int(name == current))
    families.append(mode)

    snapshot = state.snapshot
    present = GaugeMetricFamily("sonae_snapshot_present", "1 when a snapshot generation is current and opens")
    present.add_metric([], int(snapshot is not None))
    families.append(present)
    if snapshot is not None:
        generation = GaugeMetricFamily("sonae_snapshot_generation", "number of the current snapshot generation")
        generation.add_metric([], snapshot.generation)
        age = GaugeMetricFamily("sonae_snapshot_age_seconds", "now minus the data-as-of time of the current snapshot")
        age.add_metric([], snapshot.age_hours * 3600)
        records = GaugeMetricFamily("sonae_snapshot_records", "records in the current snapshot", labels=["kind"])
        records.add_metric(["residents"], snapshot.residents)
        records.add_metric(["seals"], snapshot.seals)
        families += [generation, age, records]

    runs = CounterMetricFamily("sonae_sync_runs", "finished sync runs by kind and outcome", labels=["kind", "outcome"])
    for kind, outcome, count in conn.execute(
        "SELECT kind, outcome, count(*) FROM sync_runs WHERE finished_at IS NOT NULL GROUP BY kind, outcome ORDER BY kind, outcome"
    ):
        runs.add_metric([kind, outcome], count)
    durations = SummaryMetricFamily("sonae_sync_duration_seconds", "duration of finished sync runs", labels=["kind"])
    last_success = GaugeMetricFamily("sonae_sync_last_success_timestamp_seconds", "end of the last successful sync run", labels=["kind"])
    for kind, count, total, last_ok in conn.execute(
        "SELECT kind, count(*), coalesce(sum((julianday(finished_at) - julianday(started_at)) * 86400.0), 0), "
        "max(CASE WHEN outcome = 'ok' THEN finished_at END) FROM sync_runs WHERE finished_at IS NOT NULL GROUP BY kind ORDER BY kind"
    ):
        durations.add_metric([kind], count_value=count, sum_value=total)
        if last_ok:
            last_success.add_metric([kind], _timestamp(last_ok))
    families += [runs, durations, last_success]

    statuses = probes.component_statuses(conn)
    results = CounterMetricFamily("sonae_probe_results", "probe results per upstream component", labels=["component", "result"])
    latency = GaugeMetricFamily("sonae_probe_latency_seconds", "latency of the last probe per component", labels=["component"])
    last_probe = GaugeMetricFamily("sonae_probe_last_timestamp_seconds", "time of the last probe per component", labels=["component"])
    component_up = GaugeMetricFamily("sonae_upstream_up", "debounced state per component: 1 up, 0 down (absent while unknown)",
                                     labels=["component"])
    for component, status in sorted(statuses.items()):
        results.add_metric([component, "ok"], status.probes_ok)
        results.add_metric([component, "failed"], status.probes_failed)
        if status.last_latency_ms is not None:
            latency.add_metric([component], status.last_latency_ms / 1000)
        last_probe.add_metric([component], _timestamp(status.last_at))
        if status.status != probes.UNKNOWN:
            component_up.add_metric([component], int(status.status == probes.UP))
    families += [results, latency, last_probe, component_up]

    issued = CounterMetricFamily("sonae_certificates_issued", "certificates issued for real residents (drills excluded), by type",
                                 labels=["kind"])
    counts = handed_out_by_kind(conn)
    for kind in KINDS:
        issued.add_metric([kind], counts.get(kind, 0))
    families.append(issued)

    open_alerts = GaugeMetricFamily("sonae_alerts_open", "alerts open now, by severity", labels=["severity"])
    opened = CounterMetricFamily("sonae_alerts", "alerts raised, by severity (mode-change notices are info)", labels=["severity"])
    for severity, total, still_open in conn.execute(
        "SELECT severity, count(*), sum(resolved_at IS NULL) FROM alerts GROUP BY severity ORDER BY severity"
    ):
        open_alerts.add_metric([severity], still_open)
        opened.add_metric([severity], total)
    deliveries = CounterMetricFamily("sonae_alert_deliveries", "alert deliveries by channel and result", labels=["channel", "result"])
    for channel, ok, count in conn.execute("SELECT channel, ok, count(*) FROM alert_deliveries GROUP BY channel, ok ORDER BY channel, ok"):
        deliveries.add_metric([channel, "ok" if ok else "failed"], count)
    families += [open_alerts, opened, deliveries]

    usage = mirror.disk_usage(config)
    disk_free = GaugeMetricFamily("sonae_disk_free_bytes", "free bytes on the filesystem of SONAE_HOME")
    disk_free.add_metric([], usage.free)
    disk_size = GaugeMetricFamily("sonae_disk_size_bytes", "size of the filesystem of SONAE_HOME")
    disk_size.add_metric([], usage.total)
    families += [disk_free, disk_size]
    return families


class _Snapshot:
    """A collector that yields families gathered beforehand (one per request)."""

    def __init__(self, families: list):
        self._families = families

    def collect(self):
        return iter(self._families)


def metrics_text(config: Config, conn, at: dt.datetime, *, public: bool = False) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(metric_families(config, conn, at, public=public)))
    return generate_latest(registry)

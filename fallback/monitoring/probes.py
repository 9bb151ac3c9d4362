"""Probing the upstream register, and deciding from the probes whether each
of its components is up or down.

One probe cycle asks the upstream two things: `/v1/health` (which reports
the register, the 住基ネット link and the overnight batch) and a synthetic
read of one resident (proof that the register really serves records, not
just a health page). Every answer is stored with its latency, one row per
component, in the `probes` table; the SLA report is computed from those rows.

A single failed probe is not an outage: a component turns *down* only after
`probes.down_after` consecutive failures and *up* again only after
`probes.up_after` consecutive successes, so a flaky network does not make
the appliance (or IT's phone) flap. The debounced state lives in
`component_status`.

A timeout, a refused connection, an HTTP error, a 5xx and a malformed body
are all the same thing here: the upstream did not answer. Nothing from a
resident record is stored or logged — only whether the read succeeded.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from dataclasses import dataclass

from fallback import clock, modes
from fallback.config import Config, ConfigError
from fallback.keys import key_status
from fallback.mirror.syncing import upstream_from_config
from fallback.monitoring import mirror
from fallback.ops import Transaction, now, open_ops
from sync.contract import ContractError, parse_timestamp
from sync.crypto import DatabaseError, WrongKeyError
from sync.errors import SyncError, UpstreamUnavailable, UpstreamUntrusted
from sync.upstream import HttpUpstream

log = logging.getLogger("sonae.monitoring")

REGISTER, JUKI_NET, BATCH, SYNTHETIC = "register", "juki_net", "batch", "synthetic"
COMPONENTS = (REGISTER, JUKI_NET, BATCH, SYNTHETIC)
COMPONENT_LABELS = {
    REGISTER: "住民記録システム",
    JUKI_NET: "住基ネット連携",
    BATCH: "夜間バッチ",
    SYNTHETIC: "住民記録の読み出し確認",
}
# Components whose failure means the counters cannot work from the cloud
# register at all; only these can make the ward's policy declare downtime.
REGISTER_UNUSABLE = frozenset({REGISTER, SYNTHETIC})
# Known only from what /v1/health answers: a host that does not answer says
# nothing about them, so they become unknown, never down, until it answers.
REPORTED_BY_THE_UPSTREAM = frozenset({JUKI_NET, BATCH})

HEALTH_VALUES = {
    REGISTER: frozenset({"ok", "down"}),
    JUKI_NET: frozenset({"ok", "down"}),
    BATCH: frozenset({"done", "running", "failed"}),
}
NO_ANSWER = "no_answer"
UP, DOWN, UNKNOWN = "up", "down", "unknown"


@dataclass(frozen=True)
class ProbeResult:
    component: str
    ok: bool
    state: str  # what upstream reported (ok, down, done, running, failed) or "no_answer"
    latency_ms: float | None
    error: str | None  # Japanese, shown to IT; never resident data


@dataclass(frozen=True)
class ComponentStatus:
    component: str
    status: str  # up / down / unknown
    since: str  # start of the streak that made the status
    streak_ok: bool
    streak_count: int
    streak_since: str
    last_at: str
    last_state: str
    last_latency_ms: float | None
    last_error: str | None
    probes_ok: int
    probes_failed: int

    @property
    def label(self) -> str:
        return COMPONENT_LABELS[self.component]


def _clock_in_window(moment: dt.time, start: dt.time, end: dt.time) -> bool:
    if start <= end:
        return start <= moment < end
    return moment >= start or moment < end  # the window crosses midnight


def batch_result(reported: str, at: dt.datetime, probes_config: dict) -> tuple[bool, str | None]:
    """The overnight batch is fine when done, and while running inside its
    window; still running past the deadline is the Shinagawa 20 January case."""
    if reported == "done":
        return True, None
    if reported == "failed":
        return False, "夜間バッチが失敗したと報告されています"
    deadline = dt.time.fromisoformat(probes_config["batch_deadline"])
    start = dt.time.fromisoformat(probes_config["batch_window_start"])
    if _clock_in_window(at.time(), start, deadline):
        return True, None
    return False, f"{probes_config['batch_deadline']}を過ぎても夜間バッチが終わっていません"


@dataclass(frozen=True)
class UpstreamTime:
    """What one answer said the time was, and this clock when it came."""

    at: dt.datetime
    as_of: dt.datetime | None  # /v1/health's as_of
    date: dt.datetime | None  # the HTTP Date header


def probe_health(upstream: HttpUpstream, at: dt.datetime, probes_config: dict) -> tuple[list[ProbeResult], UpstreamTime | None]:
    """The components as /v1/health reports them, and the upstream's time
    as the answer showed it (None: no answer)."""
    started = time.perf_counter()
    try:
        body = upstream.health()
        components = body["components"]
        malformed = [c for c, values in HEALTH_VALUES.items() if components.get(c) not in values]
        if malformed:
            raise UpstreamUnavailable(f"/v1/health: components {', '.join(malformed)} missing or not in the contract")
    except UpstreamUnavailable as exc:
        latency_ms = (time.perf_counter() - started) * 1000
        return [ProbeResult(c, False, NO_ANSWER, latency_ms, f"上流が応答しません（{exc}）") for c in HEALTH_VALUES], None
    latency_ms = (time.perf_counter() - started) * 1000
    seen = UpstreamTime(now(), _as_of(body), upstream.last_date)
    results = [
        ProbeResult(REGISTER, components[REGISTER] == "ok", components[REGISTER], latency_ms,
                    None if components[REGISTER] == "ok" else "上流が住民記録システムの停止を報告しています"),
        ProbeResult(JUKI_NET, components[JUKI_NET] == "ok", components[JUKI_NET], latency_ms,
                    None if components[JUKI_NET] == "ok" else "上流が住基ネット連携の停止を報告しています"),
    ]
    batch_ok, batch_error = batch_result(components[BATCH], at, probes_config)
    results.append(ProbeResult(BATCH, batch_ok, components[BATCH], latency_ms, batch_error))
    return results, seen


def _as_of(body: dict) -> dt.datetime | None:
    try:
        return parse_timestamp(body.get("as_of"), "as_of")
    except (ContractError, TypeError):
        return None


def record_upstream_time(conn, seen: UpstreamTime) -> None:
    """Keep the upstream's clock as this answer showed it (fallback/clock.py)."""
    for source, moment in ((clock.AS_OF, seen.as_of), (clock.DATE, seen.date)):
        if moment is not None:
            clock.record_reading(conn, moment, source, seen.at)


def probe_synthetic(upstream: HttpUpstream, resident_code: str) -> ProbeResult:
    """Read one resident the appliance knows exists. Only the outcome is kept:
    the record itself is looked at no further than its code."""
    started = time.perf_counter()
    try:
        # A verified look-up: signed, and about the resident asked for.
        record = upstream.lookup(resident_code).resident
        error = None if record is not None else "写しにある住民を上流が見つけられません"
    except UpstreamUntrusted as exc:  # it answered: counted as no answer (the contract), but said as what it is
        error = ("上流の答えを検証できません（契約の規則に不合格。署名鍵の変更・改ざん・時計のずれのおそれ: "
                 f"upstream.public_key と装置の時計を確かめ、ベンダーに連絡してください）（{mask_code(str(exc), resident_code)}）")
    except UpstreamUnavailable as exc:
        error = f"上流が応答しません（{mask_code(str(exc), resident_code)}）"
    latency_ms = (time.perf_counter() - started) * 1000
    if error:
        return ProbeResult(SYNTHETIC, False, NO_ANSWER, latency_ms, f"住民記録を読み出せません: {error}")
    return ProbeResult(SYNTHETIC, True, "ok", latency_ms, None)


def mask_code(text: str, resident_code: str) -> str:
    """The upstream client names the URL it failed on; the resident code in it
    stays out of the probe history and the alerts."""
    return text.replace(resident_code, "＊")


def advance(previous: ComponentStatus | None, result: ProbeResult, at: str, *, down_after: int, up_after: int) -> ComponentStatus:
    """The component's debounced status after one more probe result."""
    if previous is None or previous.streak_ok != result.ok:
        streak_count, streak_since = 1, at
    else:
        streak_count, streak_since = previous.streak_count + 1, previous.streak_since
    status, since = (previous.status, previous.since) if previous else (UNKNOWN, at)
    if result.state == NO_ANSWER and result.component in REPORTED_BY_THE_UPSTREAM:
        if status == UP:  # one reported down stays down: nothing has said otherwise since
            status, since = UNKNOWN, at
    elif result.ok and status != UP and streak_count >= up_after:
        status, since = UP, streak_since
    elif not result.ok and status != DOWN and streak_count >= down_after:
        status, since = DOWN, streak_since
    return ComponentStatus(
        component=result.component, status=status, since=since, streak_ok=result.ok, streak_count=streak_count,
        streak_since=streak_since, last_at=at, last_state=result.state, last_latency_ms=result.latency_ms,
        last_error=result.error,
        probes_ok=(previous.probes_ok if previous else 0) + int(result.ok),
        probes_failed=(previous.probes_failed if previous else 0) + int(not result.ok),
    )


_STATUS_COLUMNS = ("component", "status", "since", "streak_ok", "streak_count", "streak_since", "last_at", "last_state",
                   "last_latency_ms", "last_error", "probes_ok", "probes_failed")


def component_statuses(conn) -> dict[str, ComponentStatus]:
    """The debounced status of every component probed at least once."""
    rows = conn.execute(f"SELECT {', '.join(_STATUS_COLUMNS)} FROM component_status").fetchall()
    statuses = {}
    for row in rows:
        values = dict(zip(_STATUS_COLUMNS, row))
        values["streak_ok"] = bool(values["streak_ok"])
        statuses[values["component"]] = ComponentStatus(**values)
    return statuses


def record_results(conn, results: list[ProbeResult], at: dt.datetime, probes_config: dict) -> dict[str, ComponentStatus]:
    """Store the results and advance each component's status, atomically."""
    stamp = at.isoformat(timespec="milliseconds")
    with Transaction(conn):
        statuses = component_statuses(conn)
        for result in results:
            conn.execute(
                "INSERT INTO probes (at, component, ok, state, latency_ms, error) VALUES (?,?,?,?,?,?)",
                (stamp, result.component, int(result.ok), result.state, result.latency_ms, result.error),
            )
            status = advance(statuses.get(result.component), result, stamp,
                             down_after=probes_config["down_after"], up_after=probes_config["up_after"])
            conn.execute(
                f"INSERT OR REPLACE INTO component_status ({', '.join(_STATUS_COLUMNS)}) VALUES ({', '.join('?' * len(_STATUS_COLUMNS))})",
                tuple(int(v) if isinstance(v, bool) else v for v in (getattr(status, c) for c in _STATUS_COLUMNS)),
            )
            statuses[result.component] = status
        cutoff = (at - dt.timedelta(days=probes_config["retention_days"])).isoformat(timespec="milliseconds")
        conn.execute("DELETE FROM probes WHERE at < ?", (cutoff,))
    return statuses


def reconcile_mode(conn, statuses: dict[str, ComponentStatus], at: dt.datetime, probes_config: dict) -> None:
    """standby → suspect when a component is down, back to standby when all
    are up again (only if the probes, not a person, raised the suspicion),
    and suspect → downtime when the ward's policy allows it and the register
    itself has been unusable long enough. A partial outage (住基ネット, the
    batch) never declares downtime: the counters can still use the register."""
    down = [s for s in statuses.values() if s.status == DOWN]
    state = modes.current(conn)
    try:
        if down and state.mode == modes.STANDBY:
            names = "・".join(s.label for s in down)
            state = modes.change(conn, modes.SUSPECT, actor=modes.SYSTEM_ACTOR, role="system",
                                 reason=f"自動検知: {names}の監視で連続して異常を検知しました")
        elif not down and state.mode == modes.SUSPECT and state.actor == modes.SYSTEM_ACTOR:
            modes.change(conn, modes.STANDBY, actor=modes.SYSTEM_ACTOR, role="system", reason="自動検知: 上流が復旧しました")
            return
        minutes = probes_config["auto_downtime_after_minutes"]
        unusable = [s for s in down if s.component in REGISTER_UNUSABLE]
        if minutes > 0 and unusable and state.mode == modes.SUSPECT:
            outage_start = min(dt.datetime.fromisoformat(s.since) for s in unusable)
            if at - outage_start >= dt.timedelta(minutes=minutes):
                modes.change(conn, modes.DOWNTIME, actor=modes.SYSTEM_ACTOR, role="system",
                             reason=f"区の運用方針による自動宣言: 住民記録システムが{minutes}分以上使えません")
    except modes.ModeError as exc:
        # Someone changed the mode between our read and our write; their
        # decision stands and the next cycle looks again.
        log.info("probe mode change not applied: %s", exc)


def synthetic_resident_code(config: Config) -> str | None:
    """The resident the synthetic probe reads: the configured one, else one
    from the current snapshot (None when there is none yet, or it cannot be
    opened — the alert cycle reports that snapshot; the upstream is still probed)."""
    configured = config["probes"]["synthetic_resident"].strip()
    if configured:
        return configured
    try:
        return mirror.any_resident_code(config)
    except (SyncError, WrongKeyError, DatabaseError):
        return None


def probe_upstream(config: Config, at: dt.datetime) -> tuple[list[ProbeResult], UpstreamTime | None]:
    """Ask the upstream through the sync client (same token, same rule that
    anything but a usable answer is "did not answer"), with the probe timeout."""
    upstream = upstream_from_config(config)  # ConfigError: this box's own fault, see run_probe_cycle
    upstream.timeout = config["probes"]["timeout_s"]  # a probe must not wait as long as a download
    try:
        results, seen = probe_health(upstream, at, config["probes"])
        code = synthetic_resident_code(config)
        if code:
            results.append(probe_synthetic(upstream, code))
    finally:
        upstream.close()
    return results, seen


# monitor_state: {"since", "reason"} while a setting of this box keeps the probes from asking the upstream
SETTING_PROBLEM_KEY = "probe.setting_problem"


def setting_problem(conn) -> dict | None:
    """{"since", "reason"} while the probes cannot ask the upstream because
    of this box's own configuration or file permissions; None otherwise."""
    row = conn.execute("SELECT value FROM monitor_state WHERE key = ?", (SETTING_PROBLEM_KEY,)).fetchone()
    return json.loads(row[0]) if row else None


def _note_setting_problem(config: Config, reason: str | None, at: dt.datetime, *, conn=None) -> None:
    """Keep (or, with None, clear) the setting problem; its first time stays.
    Nothing is written while there is none to clear (a probe every 20 s)."""
    own = conn is None
    conn = conn or open_ops(config)
    try:
        noted = setting_problem(conn)
        if reason is None and noted is None:
            return
        with Transaction(conn):
            if reason is None:
                conn.execute("DELETE FROM monitor_state WHERE key = ?", (SETTING_PROBLEM_KEY,))
            else:
                since = noted["since"] if noted else at.isoformat(timespec="milliseconds")
                conn.execute("INSERT OR REPLACE INTO monitor_state (key, value) VALUES (?, ?)",
                             (SETTING_PROBLEM_KEY, json.dumps({"since": since, "reason": reason}, ensure_ascii=False)))
    finally:
        if own:
            conn.close()


def run_probe_cycle(config: Config, *, at: dt.datetime | None = None) -> dict[str, ComponentStatus]:
    """One scheduled probe: ask the upstream, store the answers and the
    upstream's time, advance the debounced statuses, move the mode if
    needed. Returns the statuses."""
    at = at or now()
    if key_status(config) is not None:
        # Nothing can be stored without the key; the alert cycle reports the
        # key itself, and the SLA report shows this time as unknown.
        log.error("probe skipped: the encryption key cannot be loaded")
        return {}
    try:
        results, seen = probe_upstream(config, at)
    except ConfigError as exc:
        # This box's own setting (an unreadable token file, upstream.url,
        # the public key) keeps it from asking: that says nothing about the
        # upstream, so no probe result is recorded and the mode stays; the
        # alert cycle tells IT it is the appliance's problem.
        log.error("probe skipped: %s", exc)
        _note_setting_problem(config, str(exc), at)
        return {}
    conn = open_ops(config)
    try:
        _note_setting_problem(config, None, at, conn=conn)
        statuses = record_results(conn, results, at, config["probes"])
        if seen is not None:
            record_upstream_time(conn, seen)
        reconcile_mode(conn, statuses, at, config["probes"])
    finally:
        conn.close()
    failed = [r.component for r in results if not r.ok]
    if failed:
        log.warning("probe: failed components %s", ", ".join(failed))
    return statuses

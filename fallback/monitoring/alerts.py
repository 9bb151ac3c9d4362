"""Alerts: telling IT first — before the counter phones.

Each alert cycle works out which *conditions* hold now (an upstream
component down, a failed or refused sync, an old snapshot, a stalled change
feed, low disk or the disk reserve spent, a damaged snapshot pointer or
failing snapshot reads, an implausible clock, a missing encryption key, a
broken audit chain) and compares them with the alerts already open:

- a new condition opens an alert and is sent at once;
- a condition that still holds is not sent again (repeats are suppressed),
  except for a reminder every `alerts.repeat_minutes` (0: never);
- an open alert whose condition no longer holds is resolved, and the
  recovery is announced;
- every mode change is announced once, as a notice.

Upstream conditions come from the debounced component states of
probes.py, so a flapping network produces no flapping alerts.

Every message says what happened, since when, what still works and which
runbook to open, in Japanese. Nothing from a resident record goes into an
alert: values quoted in upstream error messages (which may come from a
record) are masked before sending; the dashboard, behind login, keeps the
full text.

The encryption key is special: without it the operational database cannot
be opened, so that one alert's open/reminder state is kept in a small file
under SONAE_HOME until the key is back, and then written to the history.
A database that cannot be written (a full or failing disk) is the other
case where the record cannot come first: what holds is sent anyway, and
recorded by the first cycle that can write again.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import json
import logging
import re
from dataclasses import dataclass

from fallback import anchor, audit, clock, disk, modes
from fallback.config import Config
from fallback.keys import key_status
from fallback.mirror import availability
from fallback.mirror.registry import format_age, snapshot_store
from fallback.monitoring import mirror, notify, probes
from fallback.ops import TOKYO, Transaction, now, open_ops
from sync import crypto
from sync.crypto import WrongKeyError
from sync.errors import SyncError

log = logging.getLogger("sonae.monitoring")

CRITICAL, WARNING, INFO = "critical", "warning", "info"
SEVERITY_LABELS = {CRITICAL: "障害", WARNING: "警告", INFO: "通知"}
OPENED, CHANGED, REMINDER, RESOLVED, NOTICE = "opened", "changed", "reminder", "resolved", "notice"
SUBJECT_PREFIX = {CHANGED: "【状況変化】", REMINDER: "【継続中】", RESOLVED: "【復旧】", NOTICE: "【通知】"}

# The runbooks alerts point to, with their titles (file names are fixed: see
# runbooks/README.md; a test checks both against runbooks/).
RUNBOOKS = {
    "01-shoki-taio": "障害発生時の初動（最初の15分）",
    "02-downtime-madoguchi": "ダウン対策モード中の窓口対応",
    "03-bubun-shogai": "部分障害（住基ネットのみ）",
    "04-paper-only": "システムが全く使えない場合（紙の手順）",
    "05-fukkyu-kakunin": "復旧後の確認",
    "07-kagi-kanri": "鍵の管理と交換",
    "08-snapshot-restore": "スナップショットの復元",
    "09-disk-full": "ディスクが一杯になったとき",
    "10-tokei": "装置の時計が正しくないとき",
}
MODE_RUNBOOK = {
    modes.SUSPECT: "01-shoki-taio",
    modes.DOWNTIME: "02-downtime-madoguchi",
    modes.RECOVERY: "05-fukkyu-kakunin",
    modes.STANDBY: "05-fukkyu-kakunin",
}
KEY_ALERT_FILE = "monitor-key-alert.json"
KEY_MISSING = "key.missing"
MODE_NOTICE_LOOKBACK = dt.timedelta(hours=1)


def runbook_ref(slug: str) -> str:
    return f"runbooks/{slug}.md「{RUNBOOKS[slug]}」"


def format_moment(moment: dt.datetime | str | None) -> str:
    if moment is None:
        return "—"
    if isinstance(moment, str):
        moment = dt.datetime.fromisoformat(moment)
    return moment.astimezone(TOKYO).strftime("%Y-%m-%d %H:%M")


def format_seconds(seconds: float) -> str:
    """A duration as staff read it: 45秒, 12分30秒, 3時間20分, 2日3時間."""
    if seconds < 60:
        return f"{seconds:.0f}秒"
    if seconds < 3600:
        minutes, rest = divmod(int(round(seconds)), 60)
        return f"{minutes}分{rest}秒"
    return format_age(seconds / 3600)


def format_duration(start: dt.datetime | str, end: dt.datetime) -> str:
    if isinstance(start, str):
        start = dt.datetime.fromisoformat(start)
    return format_age((end - start).total_seconds() / 3600)


_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_LONG_NUMBER = re.compile(r"\d{11,}")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def mask_record_values(text: str) -> str:
    """Mask what could be a value from a resident record in an error
    message (quoted values, 住民票コード / 個人番号, dates) — an alert leaves
    the encrypted box in clear text."""
    return _DATE.sub("＊", _LONG_NUMBER.sub("＊", _QUOTED.sub("＊", text)))


@dataclass(frozen=True)
class Condition:
    key: str  # one open alert per key, e.g. "upstream.register", "sync.full"
    severity: str
    title: str
    what: str
    since: str
    still_works: str
    runbook: str  # slug in RUNBOOKS
    # Part of a larger alert that is open (the whole upstream is down): keeps
    # an alert of its own open if it had one, but never opens one.
    subsumed: bool = False


@dataclass(frozen=True)
class Alert:
    id: int | None
    key: str
    severity: str
    title: str
    what: str
    still_works: str
    runbook: str
    since: str
    opened_at: str
    last_notified_at: str
    resolved_at: str | None
    notifications: int

    @property
    def severity_label(self) -> str:
        return SEVERITY_LABELS[self.severity]

    @property
    def runbook_ref(self) -> str:
        return runbook_ref(self.runbook)


@dataclass(frozen=True)
class SentAlert:
    key: str
    event: str
    deliveries: list[notify.Delivery]


# --- what is wrong now ---------------------------------------------------------


@dataclass(frozen=True)
class OutageView:
    level: str  # ok / partial / full
    headline: str
    still_works: str
    runbook: str | None


def describe_outage(statuses: dict[str, probes.ComponentStatus], facts: mirror.SnapshotFacts | None) -> OutageView:
    """The upstream situation in words: a full outage, or a partial one
    (住基ネット, the batch) with what still works."""
    down = {c for c, s in statuses.items() if s.status == probes.DOWN}
    if not down:
        return OutageView("ok", "上流は正常に応答しています。", "すべて通常どおり使えます。", None)
    if down & probes.REGISTER_UNUSABLE:
        if facts is None:
            return OutageView("full", "上流の住民記録システムが使えません。",
                              "この装置にも住民記録の写しがありません。紙による対応に切り替えてください。", "04-paper-only")
        return OutageView(
            "full", "上流の住民記録システムが使えません。",
            f"この装置には住民記録の写し（データ時点 {format_moment(facts.current.as_of)}、"
            f"{facts.current.residents:,}人）があります。係長がダウン対策モードを宣言すれば、窓口で証明書を交付できます。",
            "01-shoki-taio",
        )
    parts = []
    if probes.JUKI_NET in down:
        parts.append("住基ネットとの連携が必要な事務（転入・転出の通知、住基ネットでの照会など）ができません。")
    if probes.BATCH in down:
        parts.append("夜間バッチが終わっていないため、前日の異動が反映されていない場合があります。交付の前に異動の有無を確かめてください。")
    headline = "部分障害: " + "・".join(probes.COMPONENT_LABELS[c] for c in probes.COMPONENTS if c in down) + "が止まっています。"
    return OutageView("partial", headline,
                      "住民記録システムは使えます（証明書の交付・照会は通常どおり）。ダウン対策モードは不要です。" + "".join(parts),
                      "03-bubun-shogai")


def upstream_conditions(statuses: dict[str, probes.ComponentStatus], facts: mirror.SnapshotFacts | None) -> list[Condition]:
    """One condition per component that is down. When the register itself
    is unusable, every other failing component is part of that one outage:
    IT gets one alert for it, not four."""
    outage = describe_outage(statuses, facts)
    titles = {
        probes.REGISTER: "上流の住民記録システムが応答しません",
        probes.SYNTHETIC: "上流から住民記録を読み出せません",
        probes.JUKI_NET: "住基ネット連携が止まっています（部分障害）",
        probes.BATCH: "夜間バッチが終わっていません（部分障害）",
    }
    down = [statuses[c] for c in probes.COMPONENTS if c in statuses and statuses[c].status == probes.DOWN]
    primary = next((s for s in down if s.component in probes.REGISTER_UNUSABLE), None)
    conditions = []
    for status in down:
        what = f"{status.label}の監視で{status.streak_count}回続けて異常を検知しました（最新: {status.last_error or status.last_state}）。"
        if status is primary and len(down) > 1:
            others = "・".join(s.label for s in down if s is not primary)
            what += f"{others}も異常です。"
        critical = status.component in probes.REGISTER_UNUSABLE
        conditions.append(Condition(
            key=f"upstream.{status.component}", severity=CRITICAL if critical else WARNING, title=titles[status.component],
            what=what, since=status.since, still_works=outage.still_works, runbook=outage.runbook,
            subsumed=primary is not None and status is not primary,
        ))
    return conditions


def snapshot_conditions(config: Config, facts: mirror.SnapshotFacts | None, at: dt.datetime) -> list[Condition]:
    stamp = at.isoformat(timespec="milliseconds")
    if facts is None:
        return [Condition("snapshot.missing", CRITICAL, "住民記録の写し（スナップショット）がありません",
                          "まだ一度も全件取込が成功していません。", stamp,
                          "上流が使えるあいだは通常どおりです。上流が止まると、ダウン対策モードで交付できません。", "08-snapshot-restore")]
    age_hours = facts.age_hours(at)
    as_of = facts.current.as_of
    conditions = []
    hard_limit = config["counter"]["data_age_hard_limit_hours"]
    max_age = config["alerts"]["snapshot_max_age_hours"]
    if age_hours > max_age:
        conditions.append(Condition(
            "snapshot.stale", WARNING, "住民記録の写しが古くなっています",
            f"データ時点は {format_moment(as_of)}（{format_age(age_hours)}前）で、基準の{max_age:g}時間を超えました。",
            (as_of + dt.timedelta(hours=max_age)).isoformat(timespec="milliseconds"),
            f"写しは使えますが、ダウン対策モードでは古いデータであることを住民に説明する必要があります。{hard_limit:g}時間を超えると交付できなくなります。",
            "08-snapshot-restore",
        ))
    if age_hours > hard_limit:
        conditions.append(Condition(
            "snapshot.expired", CRITICAL, "住民記録の写しが上限を超えて古く、交付に使えません",
            f"データ時点は {format_moment(as_of)}（{format_age(age_hours)}前）で、上限の{hard_limit:g}時間を超えました。",
            (as_of + dt.timedelta(hours=hard_limit)).isoformat(timespec="milliseconds"),
            "ダウン対策モードでも証明書を交付できません。上流が使えるあいだは通常どおりです。", "08-snapshot-restore",
        ))
    return conditions


# A run stopped by an operator still left the copy as it was: it is alerted
# too, in its own words, until a run succeeds.
SYNC_OUTCOME_SENTENCES = {"refused": "拒否されました（データの検査に不合格）", "stopped": "中断されました（停止の操作による）"}


def sync_conditions(conn, config: Config, facts: mirror.SnapshotFacts | None, at: dt.datetime, register_down: bool) -> list[Condition]:
    """Failed or refused sync runs, and a change feed that stopped moving.
    While the upstream register is down its failed change pulls and the
    stalled feed are the same outage, already alerted: only a *refused*
    run (bad data) is worth its own alert then."""
    keeps_serving = (f"前回の写し（データ時点 {format_moment(facts.current.as_of)}）が引き続き使われます。"
                     if facts else "写しがまだありません。")
    conditions = []
    for kind, label in mirror.RUN_KINDS.items():
        first = mirror.failing_since(conn, kind)
        if first is None:
            continue
        latest = mirror.latest_finished(conn, kind)
        if register_down and latest.outcome != "refused":
            continue
        runs = [r for r in mirror.runs_since(conn, first.started_at) if r.kind == kind and r.finished_at]  # newest first
        streak = len(list(itertools.takewhile(lambda run, same=latest.outcome: run.outcome == same, runs)))  # "3回続けて中断": stops only
        outcome = SYNC_OUTCOME_SENTENCES.get(latest.outcome, "失敗しました")
        conditions.append(Condition(
            f"sync.{kind}", WARNING, f"{label}が{outcome}",
            f"{f'{streak}回続けて' if streak > 1 else ''}{outcome}。理由: {mask_record_values(latest.error or '不明')[:300]}"
            "（全文は監視画面の取込履歴）",
            first.started_at, keeps_serving, "08-snapshot-restore",
        ))
    last_ok = mirror.latest_success(conn)
    stall = dt.timedelta(minutes=config["alerts"]["feed_stall_minutes"])
    if facts is not None and last_ok is not None and last_ok.finished_at and not register_down:
        finished = dt.datetime.fromisoformat(last_ok.finished_at)
        if at - finished > stall:
            conditions.append(Condition(
                "feed.stalled", WARNING, "差分取込が止まっています",
                f"最後に取込が成功したのは {format_moment(finished)}（{format_duration(finished, at)}前）です。",
                last_ok.finished_at, keeps_serving + "新しい異動が反映されないため、写しは古くなっていきます。", "08-snapshot-restore",
            ))
    return conditions


def disk_conditions(conn, config: Config, at: dt.datetime) -> list[Condition]:
    usage = mirror.disk_usage(config)
    conditions = []
    reserve = disk.reserve_state(config)
    per_certificate = disk.bytes_per_certificate(conn)
    room = usage.free >= per_certificate
    if reserve.released is not None and not reserve.present:
        conditions.append(Condition(
            "disk.reserve_released", CRITICAL, "ディスクが一杯になり、予備の領域を使っています",
            f"{usage.path} の空きが{reserve.released['free_before'] / 2**20:.1f} MBまで減ったため、予備の領域"
            f"（{reserve.size / 2**20:.0f} MB）を解放しました（{mask_record_values(reserve.released['why'])}）。",
            reserve.released["at"],
            f"窓口の交付は続けられます。いまの空き {usage.free / 2**20:.0f} MB は、証明書およそ{usage.free // per_certificate:,}通分"
            f"（1通あたり約{per_certificate // 1024} KB）です。それまでにディスクの空きを作ってください。" if room else
            "予備の領域も使い切りました。窓口の交付は止まっています（「ディスクが一杯で、窓口の交付が止まっています」の通知を見てください）。",
            "09-disk-full",
        ))
    if not room:
        conditions.append(Condition(
            "disk.full", CRITICAL, "ディスクが一杯で、窓口の交付が止まっています",
            f"{usage.path} の空きは {usage.free / 2**20:.1f} MB で、証明書1通分（約{per_certificate // 1024} KB）もありません。"
            "窓口は証明書を交付・記録できません。",
            at.isoformat(timespec="milliseconds"),
            "窓口は紙の手順（手順書「システムが全く使えない場合」）に切り替えてください。手順書「ディスクが一杯になったとき」の"
            "とおり空きを作ると、交付を再開できます（次の発行番号から）。",
            "09-disk-full",
        ))
    limit = config["alerts"]["disk_low_percent"]
    if usage.free_percent < limit:
        conditions.append(Condition(
            "disk.low", WARNING, "ディスクの空きが少なくなっています",
            f"{usage.path} の空きは {usage.free / 2**30:.1f} GiB（{usage.free_percent:.1f}%）で、基準の{limit:g}%を下回りました。",
            at.isoformat(timespec="milliseconds"),
            "今は動いていますが、空きがなくなると新しい写しを作れず、交付の記録も残せなくなります。", "09-disk-full",
        ))
    return conditions


def snapshot_store_conditions(conn, config: Config, facts: mirror.SnapshotFacts | None, at: dt.datetime) -> list[Condition]:
    """A damaged pointer that its copy still answers for, and reads of the
    current generation that fail."""
    conditions = []
    pointer = snapshot_store(config).pointer()
    if pointer.damage is not None and pointer.generation is not None:
        conditions.append(Condition(
            "snapshot.pointer", WARNING, "現在の世代を示すファイル（CURRENT）が壊れています",
            f"{pointer.damage}。", at.isoformat(timespec="milliseconds"),
            "控えのファイルが示す同じ世代で、窓口は通常どおり使えます。次の差分取込（1分ごと）で書き直されます。", "08-snapshot-restore",
        ))
    errors = availability.recent(conn, facts.current.generation, at) if facts is not None else None
    if errors is not None:
        conditions.append(Condition(
            "snapshot.read_errors", CRITICAL, "住民記録の写しの読み出しに失敗しています",
            f"世代{errors['generation']}の読み出しが{errors['count']}回失敗しました（{mask_record_values(errors['error'])}）。"
            f"写しが壊れているおそれがあります。sonae snapshot verify {errors['generation']} で検査してください。",
            errors["first_at"],
            "検索や交付が失敗することがあります。検査に通った世代に戻すまで、窓口の準備状態（/readyz）は「準備できていない」になります。",
            "08-snapshot-restore",
        ))
    return conditions


def clock_conditions(conn, facts: mirror.SnapshotFacts | None, at: dt.datetime) -> list[Condition]:
    """A clock that disagrees with what the appliance knows (judged by the
    clock itself: `at` may be a scheduled time), and NTP reported off."""
    conditions = []
    found = clock.doubts(conn, data_as_of=facts.current.as_of if facts else None)
    if found:
        conditions.append(Condition(
            "clock.implausible", CRITICAL, "この装置の時計が正しくないおそれがあります", clock.warning_message(found),
            at.isoformat(timespec="milliseconds"),
            "時計が直るまで、窓口での交付はできません（交付日と発行番号がこの時計で印字されるため）。検索と閲覧はできます。", "10-tokei",
        ))
    ntp, _ = clock.ntp_status()
    if ntp == "no":
        conditions.append(Condition(
            "clock.ntp", WARNING, "装置の時計がNTPで同期されていません",
            "OS（timedatectl）が、時計がNTPで同期されていないと報告しています。", at.isoformat(timespec="milliseconds"),
            "今は使えますが、時計がずれていくと、この装置は交付を止めます。", "10-tokei",
        ))
    return conditions


def audit_conditions(conn, config: Config, at: dt.datetime) -> list[Condition]:
    """Verify the audit chain, and the database against the audit anchor, at
    most every alerts.audit_verify_minutes (it reads the whole log); between
    checks the stored verdict stands."""
    stored = _state(conn, "audit_check")
    due = stored is None or at - dt.datetime.fromisoformat(stored["checked_at"]) >= dt.timedelta(
        minutes=config["alerts"]["audit_verify_minutes"])
    if due:
        report = audit.verify_chain(conn)
        try:
            lost = anchor.problems(conn, anchor.read_anchor(config))
        except anchor.AnchorError as exc:
            lost = [str(exc)]
        ok = report.ok and not lost
        first_bad = stored["first_bad_at"] if stored and not stored["ok"] else at.isoformat(timespec="milliseconds")
        stored = {"checked_at": at.isoformat(timespec="milliseconds"), "ok": ok, "entries": report.entries,
                  "reason": report.reason if not report.ok else "; ".join(lost), "first_bad_at": None if ok else first_bad}
        try:
            with Transaction(conn):
                _set_state(conn, "audit_check", stored)
        except crypto.DatabaseError as exc:
            if not disk.is_write_failure(exc):
                raise  # the verdict holds for this cycle; the next one checks again
    if stored["ok"]:
        return []
    return [Condition(
        "audit.broken", CRITICAL, "監査ログの改ざん・欠落を検知しました",
        f"監査ログの検証に失敗しました: {stored['reason']}（{stored['entries']}件目まで正常）。",
        stored["first_bad_at"],
        "窓口業務は続けられますが、監査ログが信頼できません。装置を調べるまで記録の証拠能力に注意してください。", "07-kagi-kanri",
    )]


def setting_conditions(conn) -> list[Condition]:
    """The probes cannot ask the upstream because of this box's own
    setting (an unreadable token file, upstream.url, the public key): IT's
    problem on the appliance, not an outage of the upstream."""
    problem = probes.setting_problem(conn)
    if problem is None:
        return []
    return [Condition(
        "upstream.setting", CRITICAL, "装置の設定のため上流を監視できません",
        "上流の住民記録システムの障害ではなく、この装置の設定かファイルの権限の問題です: "
        f"{mask_record_values(problem['reason'])[:300]}（sonae doctor で確かめてください）",
        problem["since"], "窓口は通常どおり上流で業務を続けられます。上流の監視と写しの更新は止まっています。", "07-kagi-kanri",
    )]


def evaluate(conn, config: Config, at: dt.datetime) -> list[Condition]:
    """Every condition that holds at `at`."""
    statuses = probes.component_statuses(conn)
    conditions: list[Condition] = []
    try:
        facts = mirror.snapshot_facts(config)
    except (SyncError, WrongKeyError, crypto.DatabaseError) as exc:
        facts = None
        conditions.append(Condition(
            "snapshot.unreadable", CRITICAL, "住民記録の写しを開けません", mask_record_values(str(exc))[:400],
            at.isoformat(timespec="milliseconds"), "ダウン対策モードで交付できません。上流が使えるあいだは通常どおりです。",
            "08-snapshot-restore"))
    else:
        conditions += snapshot_conditions(config, facts, at)
    conditions += snapshot_store_conditions(conn, config, facts, at)
    register_down = any(statuses[c].status == probes.DOWN for c in probes.REGISTER_UNUSABLE if c in statuses)
    conditions += upstream_conditions(statuses, facts)
    conditions += setting_conditions(conn)
    conditions += sync_conditions(conn, config, facts, at, register_down)
    conditions += disk_conditions(conn, config, at)
    conditions += clock_conditions(conn, facts, at)
    conditions += audit_conditions(conn, config, at)
    return conditions


# --- bookkeeping ---------------------------------------------------------------

_ALERT_COLUMNS = ("id", "key", "severity", "title", "what", "still_works", "runbook", "since", "opened_at", "last_notified_at",
                  "resolved_at", "notifications")


def _alerts(conn, where: str, params: tuple = ()) -> list[Alert]:
    rows = conn.execute(f"SELECT {', '.join(_ALERT_COLUMNS)} FROM alerts {where}", params).fetchall()
    return [Alert(*row) for row in rows]


def open_alerts(conn) -> list[Alert]:
    return _alerts(conn, "WHERE resolved_at IS NULL ORDER BY id DESC")


def recent_alerts(conn, limit: int = 30) -> list[Alert]:
    return _alerts(conn, "ORDER BY id DESC LIMIT ?", (limit,))


def _state(conn, key: str):
    row = conn.execute("SELECT value FROM monitor_state WHERE key = ?", (key,)).fetchone()
    return json.loads(row[0]) if row else None


def _set_state(conn, key: str, value) -> None:
    conn.execute("INSERT OR REPLACE INTO monitor_state (key, value) VALUES (?, ?)", (key, json.dumps(value, ensure_ascii=False)))


def _insert(conn, c: Condition, stamp: str, *, resolved_at: str | None = None) -> int:
    return conn.execute(
        "INSERT INTO alerts (key, severity, title, what, still_works, runbook, since, opened_at, last_notified_at, notifications, resolved_at) "
        "VALUES (?,?,?,?,?,?,?,?,?,1,?)",
        (c.key, c.severity, c.title, c.what, c.still_works, c.runbook, c.since, stamp, stamp, resolved_at),
    ).lastrowid


MODE_STILL_WORKS = {
    modes.STANDBY: "通常運用です。窓口は上流の住民記録システムを使います。",
    modes.SUSPECT: "窓口はまだ上流の住民記録システムを使っています。この装置の窓口画面は、ダウン対策モードの宣言まで閉じています。",
    modes.DOWNTIME: "窓口はこの装置の写しから証明書を交付できます。画面と証明書にはデータ時点が表示されます。",
    modes.RECOVERY: "この装置での交付は止まりました。交付した証明書を上流の最新データと照合してください。",
}


def _mode_notices(conn, at: dt.datetime) -> list[tuple[int, str]]:
    """One notice per mode change since the last cycle. On its very first
    cycle the monitor announces only the last hour's changes: older ones are
    history, not news."""
    stamp = at.isoformat(timespec="milliseconds")
    cursor = _state(conn, "mode_cursor")
    if cursor is None:
        row = conn.execute("SELECT max(id) FROM mode_changes WHERE at < ?",
                           ((at - MODE_NOTICE_LOOKBACK).isoformat(timespec="milliseconds"),)).fetchone()
        cursor = row[0] or 0
    rows = conn.execute("SELECT id, at, from_mode, to_mode, actor, reason FROM mode_changes WHERE id > ? ORDER BY id", (cursor,)).fetchall()
    notices = []
    for change_id, changed_at, from_mode, to_mode, actor, reason in rows:
        who = "監視（自動）" if actor == modes.SYSTEM_ACTOR else actor
        condition = Condition(
            f"mode.{change_id}", INFO,
            f"運用モードが「{modes.LABELS.get(from_mode, '—')}」から「{modes.LABELS[to_mode]}」に変わりました",
            f"{who}が切り替えました。理由: {reason}", changed_at, MODE_STILL_WORKS[to_mode], MODE_RUNBOOK[to_mode],
        )
        notices.append((_insert(conn, condition, stamp, resolved_at=stamp), NOTICE))
        cursor = change_id
    _set_state(conn, "mode_cursor", cursor)
    return notices



def reconcile(conn, config: Config, conditions: list[Condition], at: dt.datetime) -> list[tuple[int, str]]:
    """Open, remind, resolve and announce, in one transaction; returns the
    (alert id, event) pairs to send."""
    stamp = at.isoformat(timespec="milliseconds")
    repeat = dt.timedelta(minutes=config["alerts"]["repeat_minutes"])
    events: list[tuple[int, str]] = []
    with Transaction(conn):
        current = {a.key: a for a in open_alerts(conn)}
        for condition in conditions:
            alert = current.pop(condition.key, None)
            if alert is None:
                if not condition.subsumed:
                    events.append((_insert(conn, condition, stamp), OPENED))
                continue
            if condition.title != alert.title:
                # Another situation under the same key (a sync stopped by an
                # operator, then refused for a bad signature): said at once,
                # not left under the first title until it resolves.
                conn.execute("UPDATE alerts SET title = ?, severity = ?, runbook = ?, what = ?, still_works = ?, last_notified_at = ?, "
                             "notifications = notifications + 1 WHERE id = ?",
                             (condition.title, condition.severity, condition.runbook, condition.what, condition.still_works, stamp, alert.id))
                events.append((alert.id, CHANGED))
                continue
            # Keep the text current for the dashboard without sending it again.
            conn.execute("UPDATE alerts SET what = ?, still_works = ? WHERE id = ?", (condition.what, condition.still_works, alert.id))
            if repeat > dt.timedelta(0) and at - dt.datetime.fromisoformat(alert.last_notified_at) >= repeat:
                conn.execute("UPDATE alerts SET last_notified_at = ?, notifications = notifications + 1 WHERE id = ?", (stamp, alert.id))
                events.append((alert.id, REMINDER))
        for alert in current.values():
            conn.execute("UPDATE alerts SET resolved_at = ?, last_notified_at = ? WHERE id = ?", (stamp, stamp, alert.id))
            events.append((alert.id, RESOLVED))
        events += _mode_notices(conn, at)
    return events


# --- messages --------------------------------------------------------------------


def build_message(config: Config, alert: Alert, event: str, mode_label: str, at: dt.datetime,
                  audit_head: anchor.Anchor | None = None) -> notify.Message:
    """The mail and the webhook body. `audit_head` is the audit chain's head
    as the database holds it now: every message IT keeps is one more copy
    outside the box to check a restored database against."""
    municipality = config["municipality"]
    dashboard = config["web"]["public_base_url"].rstrip("/") + "/monitor/"
    runbook = alert.runbook
    if event == RESOLVED and alert.key.startswith("upstream."):
        runbook = "05-fukkyu-kakunin"  # after an outage comes the check of what was issued
    prefix = SUBJECT_PREFIX.get(event, f"【{alert.severity_label}】")
    title = f"{alert.title}（解消）" if event == RESOLVED else alert.title
    lines = [title, "", f"何が起きたか: {alert.what}"]
    if event == RESOLVED:
        lines.append(f"いつから: {format_moment(alert.since)} ／ 解消: {format_moment(at)}（継続 {format_duration(alert.since, at)}）")
        lines.append("いまの状態: この問題は解消しました。")
    else:
        lines.append(f"いつから: {format_moment(alert.since)}（{format_duration(alert.since, at)}前から）")
        lines.append(f"まだ使えるもの: {alert.still_works}")
    lines += [
        f"開く手順書: {runbook_ref(runbook)}",
        f"現在の運用モード: {mode_label}",
        f"監視画面: {dashboard}",
        *([f"記録の照合用: {audit_head.line()}"] if audit_head else []),
        "",
        f"この通知は Sonae（{municipality['prefecture']}{municipality['name']} 障害対応システム）が自動で送信しました。",
    ]
    payload = {
        "source": "sonae", "event": event, "alert_id": alert.id, "key": alert.key, "severity": alert.severity,
        "title": title, "what": alert.what, "since": alert.since, "resolved_at": at.isoformat(timespec="milliseconds") if event == RESOLVED else None,
        "still_works": None if event == RESOLVED else alert.still_works, "runbook": f"runbooks/{runbook}.md",
        "runbook_title": RUNBOOKS[runbook], "mode": mode_label, "dashboard": dashboard,
        "municipality": {"code": municipality["code"], "name": municipality["name"]}, "at": at.isoformat(timespec="milliseconds"),
        "audit_head": {"entries": audit_head.entries, "hash": audit_head.head, "serials": audit_head.serials} if audit_head else None,
    }
    subject = f"{prefix}{title}（Sonae {municipality['name']}）"
    return notify.Message(subject, "\n".join(lines), payload)


def _send(conn, config: Config, events: list[tuple[int, str]], at: dt.datetime) -> list[SentAlert]:
    mode_label = modes.current(conn).label
    sent = []
    for alert_id, event in events:
        alert = _alerts(conn, "WHERE id = ?", (alert_id,))[0]
        deliveries = notify.deliver(config, build_message(config, alert, event, mode_label, at, anchor.head_of(conn)))
        try:
            with Transaction(conn):
                for d in deliveries:
                    conn.execute(
                        "INSERT INTO alert_deliveries (alert_id, at, event, channel, ok, attempts, error) VALUES (?,?,?,?,?,?,?)",
                        (alert_id, at.isoformat(timespec="milliseconds"), event, d.channel, int(d.ok), d.attempts, d.error),
                    )
        except crypto.DatabaseError as exc:
            if not disk.is_write_failure(exc):
                raise
            log.error("alert %s %s sent, but its delivery could not be recorded: %s", alert.key, event, exc)
        log.info("alert %s %s (%s)", alert.key, event, ", ".join(f"{d.channel}:{'ok' if d.ok else 'failed'}" for d in deliveries) or "no channel")
        sent.append(SentAlert(alert.key, event, deliveries))
    return sent


# --- the encryption key ------------------------------------------------------------


def _key_condition(reason: str, since: str) -> Condition:
    return Condition(
        KEY_MISSING, CRITICAL, "暗号鍵を読み込めません",
        f"暗号鍵を読み込めないため、住民記録の写しと運用データベースを開けません（{reason}）。", since,
        "この装置は何も使えません（窓口画面・交付・監視の記録を含む）。上流が使えるあいだは通常どおりです。", "07-kagi-kanri",
    )


def _key_missing_cycle(config: Config, reason: str, at: dt.datetime) -> list[SentAlert]:
    latch = config.home / KEY_ALERT_FILE
    stamp = at.isoformat(timespec="milliseconds")
    state = json.loads(latch.read_text(encoding="utf-8")) if latch.exists() else None
    repeat = dt.timedelta(minutes=config["alerts"]["repeat_minutes"])
    if state is None:
        event, state = OPENED, {"since": stamp, "last_notified_at": stamp, "notifications": 1}
    elif repeat > dt.timedelta(0) and at - dt.datetime.fromisoformat(state["last_notified_at"]) >= repeat:
        event = REMINDER
        state.update(last_notified_at=stamp, notifications=state["notifications"] + 1)
    else:
        return []
    config.home.mkdir(parents=True, exist_ok=True)
    latch.write_text(json.dumps(state), encoding="utf-8")
    c = _key_condition(reason, state["since"])
    alert = Alert(None, c.key, c.severity, c.title, c.what, c.still_works, c.runbook, c.since, state["since"],
                  state["last_notified_at"], None, state["notifications"])
    deliveries = notify.deliver(config, build_message(config, alert, event, "不明（運用データベースを開けません）", at))
    log.error("alert %s %s: the encryption key cannot be loaded", KEY_MISSING, event)
    return [SentAlert(KEY_MISSING, event, deliveries)]


def _key_restored(conn, config: Config, at: dt.datetime) -> list[tuple[int, str]]:
    """The key is back after an outage the database could not record: write
    it to the history now and announce the recovery."""
    latch = config.home / KEY_ALERT_FILE
    if not latch.exists():
        return []
    state = json.loads(latch.read_text(encoding="utf-8"))
    with Transaction(conn):
        alert_id = _insert(conn, _key_condition("鍵ファイルを読めませんでした", state["since"]), state["since"],
                           resolved_at=at.isoformat(timespec="milliseconds"))
        conn.execute("UPDATE alerts SET notifications = ? WHERE id = ?", (state["notifications"], alert_id))
    latch.unlink()
    return [(alert_id, RESOLVED)]


# --- when the operational database cannot record ------------------------------------

UNWRITABLE = "ops.unwritable"
# Alerts sent while the database could not record them, by key: when they
# went out (this process). The next cycle that can write records them.
_unrecorded: dict[str, dt.datetime] = {}


def _unwritable_condition(config: Config, failure: Exception, at: dt.datetime) -> Condition:
    usage = mirror.disk_usage(config)
    return Condition(
        UNWRITABLE, CRITICAL, "運用データベースに書き込めません",
        f"交付・監査・監視の記録を書き込めません（{type(failure).__name__}: {mask_record_values(str(failure))[:200]}）。"
        f"{usage.path} の空きは {usage.free / 2**20:.1f} MB です。",
        at.isoformat(timespec="milliseconds"),
        "窓口での交付と記録ができないおそれがあります。この通知は記録に残せないまま送っています。", "09-disk-full",
    )


def _send_unrecorded(conn, config: Config, conditions: list[Condition], failure: Exception, at: dt.datetime) -> list[SentAlert]:
    """The database cannot record (a full or failing disk; `conn` None: it
    does not even open): send what holds now anyway, for IT must hear of
    exactly this. What is open in the database was sent already; the rest
    is suppressed within this process for alerts.repeat_minutes, as
    recorded alerts are."""
    already_open, mode_label = set(), "不明（運用データベースを読めません）"
    if conn is not None:
        with contextlib.suppress(crypto.DatabaseError):
            already_open = {a.key for a in open_alerts(conn)}
            mode_label = modes.current(conn).label
    repeat = dt.timedelta(minutes=config["alerts"]["repeat_minutes"])
    sent = []
    for c in [_unwritable_condition(config, failure, at), *conditions]:
        last = _unrecorded.get(c.key)
        if c.subsumed or c.key in already_open or (last is not None and (repeat <= dt.timedelta(0) or at - last < repeat)):
            continue
        event = OPENED if last is None else REMINDER
        _unrecorded[c.key] = at
        alert = Alert(None, c.key, c.severity, c.title, c.what, c.still_works, c.runbook, c.since, c.since, at.isoformat(), None, 1)
        deliveries = notify.deliver(config, build_message(config, alert, event, mode_label, at))
        log.error("alert %s %s sent without a record: the operational database cannot be written", c.key, event)
        sent.append(SentAlert(c.key, event, deliveries))
    return sent


def _recorded_again(conn, config: Config, events: list[tuple[int, str]], at: dt.datetime) -> list[tuple[int, str]]:
    """The database writes again: what went out unrecorded joins the
    history. Alerts reconcile just opened were sent already (dropped from
    `events`); the write failure itself is resolved and announced."""
    if not _unrecorded:
        return events
    sent_keys = set(_unrecorded)
    kept = []
    for alert_id, event in events:
        key = _alerts(conn, "WHERE id = ?", (alert_id,))[0].key
        if event == OPENED and key in sent_keys:
            continue
        kept.append((alert_id, event))
    since = _unrecorded.pop(UNWRITABLE, None)
    _unrecorded.clear()
    if since is not None:
        with Transaction(conn):
            condition = _unwritable_condition(config, OSError("書き込めませんでした"), since)
            kept.append((_insert(conn, condition, since.isoformat(timespec="milliseconds"), resolved_at=at.isoformat(timespec="milliseconds")),
                         RESOLVED))
    return kept


def run_alert_cycle(config: Config, *, at: dt.datetime | None = None) -> list[SentAlert]:
    """One scheduled alert evaluation; returns what was sent. The disk's
    reserve is looked after first, so the records below have room."""
    at = at or now()
    disk.keep_reserve(config)
    problem = key_status(config)
    if problem is not None:
        return _key_missing_cycle(config, problem, at)
    try:
        conn = open_ops(config)
    except (crypto.DatabaseError, OSError, WrongKeyError) as exc:  # the key loads (above): the file or its disk fails
        return _send_unrecorded(None, config, [], exc, at)
    try:
        conditions = evaluate(conn, config, at)
        try:
            events = _key_restored(conn, config, at)
            events += reconcile(conn, config, conditions, at)
        except crypto.DatabaseError as exc:
            if not disk.is_write_failure(exc):
                raise
            if disk.is_disk_full(exc) and disk.release_reserve(config, "the alert cycle could not write the operational database"):
                return run_alert_cycle(config, at=at)
            return _send_unrecorded(conn, config, conditions, exc, at)
        return _send(conn, config, _recorded_again(conn, config, events, at), at)
    finally:
        conn.close()

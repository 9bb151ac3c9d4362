"""The maintenance calendar: the vendor's planned windows, and the
preparation the worker runs before each one.

Shinagawa and Shinjuku both failed on the first working day after a
planned migration: a planned window is an outage whose start is known, so
the appliance gets ready for it. A supervisor or IT enters the window; from
`maintenance.prepare_hours_before` before it starts, the worker (or IT's
button) prepares it once:

1. the freshest data: the contract is pull-only, so "force a fresh export"
   means pull the newest export now, verify and load it (the real loader,
   every gate), then catch up the change feed — and report the figures;
2. a short readiness check: a 見本 of every certificate type rendered and
   signed (from a synthetic household, so no resident is looked up), and a
   printer test page on every counter's CUPS queue;
3. the downtime declaration pre-staged (its reason written, declared by a
   supervisor with one press when the window begins) and the residents'
   notice drafted for the window (fallback.residents.notice: a draft, which
   a supervisor edits and approves as any other);
4. IT told the result, by webhook and mail (fallback.monitoring.notify),
   whatever it is.

A step that fails is reported as failed with its one-line reason; the
steps after it still run (a printer out of paper says nothing about the
export). Everything is recorded on the window and audited.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass

from fallback import audit, documents, modes
from fallback.config import Config
from fallback.counter.issuance import KINDS as CERTIFICATE_KINDS
from fallback.counter.rendering import municipality, print_settings
from fallback.errors import SonaeError
from fallback.keys import signing_key
from fallback.mirror.registry import snapshot_store
from fallback.mirror.syncing import EXPECTED_FAILURES, StopRequest, SyncStopped, run_changes, run_full_sync, stopped_reason
from fallback.monitoring import notify
from fallback.monitoring.probes import REGISTER
from fallback.ops import TOKYO, Transaction, now, now_iso, open_ops
from fallback.residents import notice
from printing.cups import PrintError, submit, wait_for_job
from printing.model import Certificate, CertificateError, IssueStamp
from printing.render import render_certificate
from sync.synthetic.synth import RegisterSpec, Synth

log = logging.getLogger("sonae.maintenance")

MAX_TEXT = 200
ACTOR = "worker"
PRINT_WAIT_S = 10.0
SPECIMEN_DRAWS = 1_000  # households drawn at most for the 見本 (a few dozen suffice)
JOB_ID = "maintenance.prepare"


class MaintenanceError(SonaeError):
    """A window that cannot be entered or changed; the message says why."""

    status = 422
    code = "maintenance_refused"
    title = "計画停止を登録できません"


@dataclass(frozen=True)
class Window:
    id: int
    starts_at: str
    ends_at: str
    vendor: str
    description: str
    created_at: str
    created_by: str
    cancelled_at: str | None
    cancelled_by: str | None
    prepared_at: str | None
    preparation: dict | None
    notice_version_id: int | None
    declared_at: str | None

    @property
    def declaration_reason(self) -> str:
        """The pre-staged reason of the downtime declaration."""
        return (f"計画停止（{self.vendor}の保守作業 {self.starts_at[:16].replace('T', ' ')}〜{self.ends_at[:16].replace('T', ' ')}）："
                f"{self.description}")

    @property
    def ready(self) -> bool | None:
        return None if self.preparation is None else all(step["ok"] for step in self.preparation["steps"])


_COLUMNS = ("id, starts_at, ends_at, vendor, description, created_at, created_by, cancelled_at, cancelled_by, prepared_at, "
            "preparation, notice_version_id, declared_at")


def _window(row) -> Window:
    values = list(row)
    values[10] = json.loads(values[10]) if values[10] else None
    return Window(*values)


def get(conn, window_id: int) -> Window | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM maintenance_windows WHERE id = ?", (window_id,)).fetchone()
    return _window(row) if row else None


def windows(conn) -> list[Window]:
    return [_window(row) for row in conn.execute(f"SELECT {_COLUMNS} FROM maintenance_windows ORDER BY starts_at DESC")]


def add(conn, *, starts_at: dt.datetime, ends_at: dt.datetime, vendor: str, description: str, actor: str) -> int:
    vendor, description = vendor.strip(), description.strip()
    if not vendor or not description:
        raise MaintenanceError("ベンダー名と作業の内容を入力してください。")
    if len(vendor) > MAX_TEXT or len(description) > MAX_TEXT:
        raise MaintenanceError(f"ベンダー名と作業の内容は{MAX_TEXT}文字までです。")
    if ends_at <= starts_at:
        raise MaintenanceError("終了は開始より後にしてください。")
    if ends_at <= now():
        raise MaintenanceError("終わった作業は登録できません（開始と終了の日時を確かめてください）。")
    with Transaction(conn):
        cursor = conn.execute(
            "INSERT INTO maintenance_windows (starts_at, ends_at, vendor, description, created_at, created_by) VALUES (?,?,?,?,?,?)",
            (starts_at.isoformat(timespec="minutes"), ends_at.isoformat(timespec="minutes"), vendor, description, now_iso(), actor),
        )
        audit.append(conn, actor, "maintenance.add", str(cursor.lastrowid),
                     {"starts_at": starts_at.isoformat(), "ends_at": ends_at.isoformat(), "vendor": vendor})
    return cursor.lastrowid


def cancel(conn, window_id: int, *, actor: str) -> None:
    with Transaction(conn):
        changed = conn.execute("UPDATE maintenance_windows SET cancelled_at = ?, cancelled_by = ? WHERE id = ? AND cancelled_at IS NULL",
                               (now_iso(), actor, window_id)).rowcount
        if not changed:
            raise MaintenanceError(f"計画停止 {window_id} はないか、取り消し済みです。")
        audit.append(conn, actor, "maintenance.cancel", str(window_id), {})


def due(conn, config: Config, at: dt.datetime | None = None) -> list[Window]:
    """Windows to prepare now: not cancelled, not prepared, starting within
    maintenance.prepare_hours_before and not yet over."""
    at = at or now()
    lead = dt.timedelta(hours=config["maintenance"]["prepare_hours_before"])
    return [w for w in windows(conn) if w.cancelled_at is None and w.prepared_at is None
            and dt.datetime.fromisoformat(w.starts_at) - lead <= at < dt.datetime.fromisoformat(w.ends_at)]


# --- the preparation -------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    name: str
    label: str
    ok: bool
    detail: str


def fresh_data(config: Config, actor: str, stop_if_asked: Callable[[], None]) -> list[Step]:
    """Pull, verify and load the newest export, then catch up the feed.
    `stop_if_asked`: as run_full_sync's (a stopping worker)."""
    try:
        loaded = run_full_sync(config, actor=actor, stop_if_asked=stop_if_asked)
    except EXPECTED_FAILURES as exc:
        return [Step("export", "最新の全件データの取得・検証・読込み", False, str(exc))]
    steps = [Step("export", "最新の全件データの取得・検証・読込み", True,
                  f"世代 {loaded.generation}（export_seq {loaded.export_seq}、{loaded.as_of.isoformat(timespec='minutes')} 時点、"
                  f"住民 {loaded.residents:,}人、印鑑 {loaded.seals:,}件）")]
    try:
        caught = run_changes(config, actor=actor, stop_if_asked=stop_if_asked)
    except EXPECTED_FAILURES as exc:
        return steps + [Step("feed", "差分の取込み（追いつき）", False, str(exc))]
    age_minutes = (now() - caught.as_of).total_seconds() / 60
    return steps + [Step("feed", "差分の取込み（追いつき）", True,
                         f"{caught.applied}件を適用、変更番号 {caught.last_seq} まで、データは{age_minutes:.0f}分前のもの")]


def specimen_household(config: Config) -> tuple[list[dict], dict, dict]:
    """A synthetic household with a seal, and a removed person, drawn by the
    drill register's model: the 見本 show nobody real."""
    municipality_section = config["municipality"]
    spec = RegisterSpec(residents=1, seed=1, register_date=now().date(), municipality_code=municipality_section["code"],
                        prefecture=municipality_section["prefecture"], city=municipality_section["name"])
    synth = Synth(spec, random.Random("maintenance-specimen"), items_rng=random.Random("maintenance-specimen/items"))
    household = seal = removed = None
    ordinal = 9_900_000_000
    for _ in range(SPECIMEN_DRAWS):
        if household is not None and removed is not None:
            return household, seal, removed
        residents, seals = synth.household(ordinal, 4)
        ordinal += len(residents)
        active = [r for r in residents if r["status"] == "active"]
        holder = next((s for s in seals if s["status"] == "active" and any(r["resident_code"] == s["resident_code"] for r in active)), None)
        if household is None and holder is not None:
            household, seal = active, holder
        removed = removed or next((r for r in residents if r["status"] == "removed"), None)
    raise CertificateError(f"the synthetic model drew no household with a seal and a removed person in {SPECIMEN_DRAWS} households")


def specimens(config: Config) -> list[Step]:
    """A 見本 of every certificate type, rendered and signed."""
    try:
        household, seal, removed = specimen_household(config)
    except CertificateError as exc:
        return [Step("specimen", "証明書の見本", False, str(exc))]
    holder = next(r for r in household if r["resident_code"] == seal["resident_code"])
    subjects = {"juminhyo": household, "kisai": household[:1], "johyo": [removed], "inkan": [holder]}
    settings = print_settings(config)
    steps = []
    for kind, label in CERTIFICATE_KINDS.items():
        stamp = IssueStamp(serial=0, issued_at=now(), data_as_of=now(), municipality=municipality(config), terminal="見本",
                           printer_id="見本", specimen=True)
        try:
            certificate = Certificate(kind=kind, residents=subjects[kind], stamp=stamp, settings=settings,
                                      layout="kojin" if kind in ("johyo", "inkan") else "renketsu", seal=seal if kind == "inkan" else None)
            rendered = render_certificate(certificate, signing_key(config))
        except (CertificateError, ValueError, OSError, *EXPECTED_FAILURES) as exc:
            steps.append(Step(f"specimen.{kind}", f"{label}の見本", False, str(exc)))
            continue
        ok = rendered.pdf.startswith(b"%PDF") and rendered.pages >= 1
        steps.append(Step(f"specimen.{kind}", f"{label}の見本", ok, f"{rendered.pages}ページ、{len(rendered.pdf):,}バイト、署名あり"))
    return steps


def printer_tests(config: Config) -> list[Step]:
    """A test page on every counter's CUPS queue (a counter without one
    prints from the browser: nothing to test here)."""
    steps = []
    for terminal in config["counter"]["terminals"]:
        name = f"printer.{terminal['id']}"
        label = f"{terminal['id']}のプリンタ（{terminal['printer']}）"
        if not terminal.get("queue"):
            steps.append(Step(name, label, True, "印刷キューなし（ブラウザから印刷する窓口）"))
            continue
        page = documents.render_pdf("maintenance/printer_test_pdf.html", title="プリンタの試験印刷", terminal=terminal,
                                    printed_at=now_iso()[:16].replace("T", " "), drill=False)
        try:
            job = submit(page, terminal["queue"], f"sonae-test-{terminal['id']}")
            wait_for_job(job, PRINT_WAIT_S)
        except PrintError as exc:
            steps.append(Step(name, label, False, f"キュー {terminal['queue']}: {exc}"))
            continue
        steps.append(Step(name, label, True, f"キュー {terminal['queue']} で試験ページを印刷（ジョブ {job}）"))
    return steps


def notice_draft(conn, config: Config, window: Window, actor: str) -> tuple[Step, int | None]:
    """The residents' notice for the window, drafted for a supervisor to approve."""
    starts = dt.datetime.fromisoformat(window.starts_at)
    try:
        with snapshot_store(config).open_register() as register:
            as_of = register.meta.as_of
    except EXPECTED_FAILURES as exc:
        return Step("notice", "住民向けのお知らせの下書き", False, f"写しを開けません: {exc}"), None
    age = max(0.0, (starts - as_of).total_seconds() / 3600)
    issuable, stopped = notice.issuable_kinds(config, age)
    situation = notice.Situation(at=starts, mode=modes.DOWNTIME, components=(REGISTER,), since=starts, data_as_of=as_of,
                                 certificates_now=issuable, certificates_stopped=stopped,
                                 planned_until=dt.datetime.fromisoformat(window.ends_at))
    version_id = notice.create_draft(conn, config, situation, actor=actor)
    return Step("notice", "住民向けのお知らせの下書き", True, f"下書き {version_id}（係長が確認して公開します）"), version_id


def prepare(config: Config, window_id: int, *, actor: str = ACTOR, stop_if_asked: Callable[[], None] = lambda: None) -> Window:
    """Prepare one window (see the module's docstring) and tell IT.
    `stop_if_asked`: as run_full_sync's; a preparation stopped that way is
    not recorded, so the worker prepares the window again when it next runs."""
    conn = open_ops(config, check_same_thread=False)
    try:
        window = get(conn, window_id)
        if window is None or window.cancelled_at is not None:
            raise MaintenanceError(f"計画停止 {window_id} はないか、取り消し済みです。")
        started = now_iso()
        steps = fresh_data(config, actor, stop_if_asked) + specimens(config) + printer_tests(config)
        notice_step, version_id = notice_draft(conn, config, window, actor)
        steps.append(notice_step)
        steps.append(Step("declaration", "ダウン対策モードの宣言の準備", True, f"理由「{window.declaration_reason}」（開始時に係長が宣言）"))
        preparation = {"started_at": started, "finished_at": now_iso(), "actor": actor, "steps": [asdict(s) for s in steps]}
        with Transaction(conn):
            conn.execute("UPDATE maintenance_windows SET prepared_at = ?, preparation = ?, notice_version_id = ? WHERE id = ?",
                         (now_iso(), json.dumps(preparation, ensure_ascii=False), version_id, window_id))
            audit.append(conn, actor, "maintenance.prepared", str(window_id),
                         {"ok": all(s.ok for s in steps), "failed": [s.name for s in steps if not s.ok]})
        prepared = get(conn, window_id)
    finally:
        conn.close()
    tell_it(config, prepared)
    return prepared


def tell_it(config: Config, window: Window) -> list[notify.Delivery]:
    ward = config["municipality"]
    ready = window.ready
    headline = "計画停止の準備ができました" if ready else "計画停止の準備で問題が見つかりました"
    lines = [headline, "", f"作業：{window.vendor} {window.description}",
             f"期間：{window.starts_at.replace('T', ' ')} 〜 {window.ends_at.replace('T', ' ')}", ""]
    lines += [f"{'OK ' if step['ok'] else 'NG '} {step['label']}：{step['detail']}" for step in window.preparation["steps"]]
    lines += ["", "作業の開始時に、係長が「計画停止」画面からダウン対策モードを宣言してください。",
              f"計画停止の画面: {config['web']['public_base_url'].rstrip('/')}/maintenance/", "",
              f"この通知は Sonae（{ward['prefecture']}{ward['name']} 障害対応システム）が自動で送信しました。"]
    payload = {
        "source": "sonae", "key": "maintenance.prepared", "event": "notice", "severity": "info" if ready else "warning",
        "title": headline, "window": {"id": window.id, "starts_at": window.starts_at, "ends_at": window.ends_at, "vendor": window.vendor},
        "ready": ready, "steps": window.preparation["steps"], "municipality": {"code": ward["code"], "name": ward["name"]},
        "at": now_iso(),
    }
    prefix = "【準備完了】" if ready else "【要対応】"
    return notify.deliver(config, notify.Message(f"{prefix}{headline}（Sonae {ward['name']}）", "\n".join(lines), payload))


def prepare_due(config: Config, stopping: StopRequest) -> list[Window]:
    """The worker's job: prepare every window that is due. A stopping
    worker ends the preparation under way at the next step of its load."""
    conn = open_ops(config, check_same_thread=False)
    try:
        waiting = due(conn, config)
    finally:
        conn.close()
    prepared = []
    for window in waiting:
        try:
            prepared.append(prepare(config, window.id, stop_if_asked=stopping.stop_if_asked))
        except SyncStopped as exc:
            log.warning("planned maintenance %d: preparation %s; it is prepared again when the worker next runs", window.id, stopped_reason(exc))
            break
    return prepared


def declare(conn, window_id: int, *, actor: str, role: str) -> modes.ModeState:
    """Declare downtime with the window's pre-staged reason."""
    window = get(conn, window_id)
    if window is None or window.cancelled_at is not None:
        raise MaintenanceError(f"計画停止 {window_id} はないか、取り消し済みです。")
    state = modes.change(conn, modes.DOWNTIME, actor=actor, role=role, reason=window.declaration_reason)
    with Transaction(conn):
        conn.execute("UPDATE maintenance_windows SET declared_at = ? WHERE id = ?", (state.since, window_id))
    return state


def register_maintenance_jobs(scheduler, config: Config, stopping: StopRequest) -> None:
    """Add the preparation job to the worker's APScheduler scheduler."""
    scheduler.add_job(prepare_due, "interval", seconds=config["maintenance"]["check_interval_s"], args=[config, stopping],
                      id=JOB_ID, replace_existing=True, max_instances=1, coalesce=True, next_run_time=dt.datetime.now(TOKYO))

"""The maintenance calendar: a window entered by a supervisor or IT is
prepared by the worker's job before it begins — the newest export pulled,
verified and loaded, the feed caught up, a 見本 of every type and a printer
test page per counter queue, the declaration and the notice pre-staged —
and IT is told the result, a failure included. Real HTTP upstream, real
CUPS, real webhook and SMTP."""

from __future__ import annotations

import datetime as dt
import json
import signal

import pytest

from fallback import audit, maintenance, modes
from fallback.app import create_app
from fallback.config import load_config
from fallback.mirror.registry import snapshot_store
from fallback.mirror.syncing import StopRequest
from fallback.ops import now, open_ops
from tests.conftest import write_config
from tests.support import Staff, text_of

from .conftest import NEWCOMER


def staff(config, username):
    app = create_app(config)
    app.config["TESTING"] = True
    return Staff(app, username)


def enter_window(who, *, starts_in_hours: float, hours: float = 4):
    starts = (now() + dt.timedelta(hours=starts_in_hours)).replace(second=0, microsecond=0)
    return who.post("/maintenance/", {"starts_at": starts.strftime("%Y-%m-%dT%H:%M"),
                                      "ends_at": (starts + dt.timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M"),
                                      "vendor": "標準準拠システム ベンダー", "description": "年末のデータ移行"})


def steps_of(window) -> dict[str, dict]:
    return {step["name"]: step for step in window.preparation["steps"]}


def test_the_worker_prepares_a_window_before_it_and_tells_it(maintenance_env, upstream, webhook, smtp, cups_server, monkeypatch):
    monkeypatch.setenv("CUPS_SERVER", cups_server.socket)
    write_config(counter={"terminals": [{"id": "本庁1", "office": "本庁", "printer": "プリンタ001", "queue": "SONAE_PDF"},
                                        {"id": "本庁2", "office": "本庁", "printer": "プリンタ002", "queue": ""}]})
    config = load_config()
    assert enter_window(staff(config, "it1"), starts_in_hours=3).status_code == 302
    held = snapshot_store(config).current()
    (window,) = maintenance.prepare_due(config, StopRequest())  # the worker's job
    assert maintenance.prepare_due(config, StopRequest()) == []  # once
    steps = steps_of(window)
    assert window.ready is True, steps
    # the newest export pulled, verified and loaded, and the feed caught up, with the figures
    with snapshot_store(config).open_register() as register:
        assert register.meta.generation == held + 1 and register.resident(NEWCOMER)["name"] == "新井　春"
        assert register.meta.last_seq == 1001
    assert f"世代 {held + 1}" in steps["export"]["detail"] and "住民 13人" in steps["export"]["detail"]
    assert "1件を適用、変更番号 1001 まで" in steps["feed"]["detail"]
    assert {name for name in steps if name.startswith("specimen.")} == {"specimen.juminhyo", "specimen.kisai", "specimen.johyo", "specimen.inkan"}
    assert steps["printer.本庁1"]["ok"] and "SONAE_PDF" in steps["printer.本庁1"]["detail"]
    assert cups_server.pdf_printer_output.read_bytes().startswith(b"%PDF")  # the test page came out of the queue
    assert "印刷キューなし" in steps["printer.本庁2"]["detail"]
    assert "計画停止" in steps["declaration"]["detail"]
    # the notice drafted for the window, as a draft a supervisor approves
    conn = open_ops(config)
    status, texts = conn.execute("SELECT status, texts FROM notice_versions WHERE id = ?", (window.notice_version_id,)).fetchone()
    assert status == "draft" and "計画停止のお知らせ" in json.loads(texts)["ja"]["title"]
    assert "保守作業のため住民記録システムを停止します" in json.loads(texts)["ja"]["body"]
    # IT told, by webhook and mail
    (body,) = [b for b in webhook.bodies if b["key"] == "maintenance.prepared"]
    assert body["ready"] is True and body["window"]["id"] == window.id and len(body["steps"]) == len(steps)
    assert smtp.subjects() == ["【準備完了】計画停止の準備ができました（Sonae 大田区）"]
    assert "OK  最新の全件データの取得・検証・読込み" in smtp.bodies()[0]
    assert [e["detail"]["ok"] for e in audit.entries(conn, action="maintenance.prepared")] == [True]


def test_a_failed_step_is_reported_as_such_and_the_rest_still_run(maintenance_env, upstream, webhook, smtp, monkeypatch):
    upstream.fault = "error5xx"
    write_config(counter={"terminals": [{"id": "本庁1", "office": "本庁", "printer": "プリンタ001", "queue": "NO_SUCH_QUEUE"}]})
    monkeypatch.setenv("CUPS_SERVER", "/nonexistent/cups.sock")
    config = load_config()
    conn = open_ops(config)
    window_id = maintenance.add(conn, starts_at=now() + dt.timedelta(hours=1), ends_at=now() + dt.timedelta(hours=3), vendor="V",
                                description="移行", actor="it1")
    window = maintenance.prepare(config, window_id)
    steps = steps_of(window)
    assert window.ready is False
    assert not steps["export"]["ok"] and "feed" not in steps  # no export, no catching up on it
    assert not steps["printer.本庁1"]["ok"] and "NO_SUCH_QUEUE" in steps["printer.本庁1"]["detail"]
    assert all(steps[f"specimen.{kind}"]["ok"] for kind in ("juminhyo", "kisai", "johyo", "inkan"))
    assert steps["notice"]["ok"]
    assert smtp.subjects() == ["【要対応】計画停止の準備で問題が見つかりました（Sonae 大田区）"]
    assert "NG  最新の全件データの取得・検証・読込み" in smtp.bodies()[0]
    assert [b["ready"] for b in webhook.bodies if b["key"] == "maintenance.prepared"] == [False]


def test_a_preparation_the_worker_stops_is_not_recorded_and_is_done_again(maintenance_env, upstream, caplog):
    # `systemctl stop sonae-worker` while it prepares a window: the load of
    # the newest export stops at its next step, and the window stays due
    # rather than recorded as prepared with a load that never finished.
    config = load_config()
    conn = open_ops(config)
    window_id = maintenance.add(conn, starts_at=now() + dt.timedelta(hours=1), ends_at=now() + dt.timedelta(hours=3), vendor="V",
                                description="移行", actor="it1")
    held = snapshot_store(config).current()
    stopping = StopRequest()
    stopping.request(signal.SIGTERM)
    assert maintenance.prepare_due(config, stopping) == []
    assert snapshot_store(config).current() == held
    assert [w.id for w in maintenance.due(conn, config)] == [window_id]
    assert maintenance.get(conn, window_id).prepared_at is None
    assert f"planned maintenance {window_id}: preparation stopped by SIGTERM before finishing" in caplog.text
    (window,) = maintenance.prepare_due(config, StopRequest())
    assert window.id == window_id and snapshot_store(config).current() == held + 1


def test_a_window_is_due_from_the_configured_lead_until_it_ends(loaded_env):
    config = loaded_env
    conn = open_ops(config)
    starts = now() + dt.timedelta(hours=30)
    window_id = maintenance.add(conn, starts_at=starts, ends_at=starts + dt.timedelta(hours=2), vendor="V", description="d", actor="boss")
    lead = dt.timedelta(hours=config["maintenance"]["prepare_hours_before"])
    assert maintenance.due(conn, config, at=starts - lead - dt.timedelta(minutes=1)) == []
    assert [w.id for w in maintenance.due(conn, config, at=starts - lead)] == [window_id]
    assert maintenance.due(conn, config, at=starts + dt.timedelta(hours=2)) == []
    maintenance.cancel(conn, window_id, actor="boss")
    assert maintenance.due(conn, config, at=starts - lead) == []


def test_the_supervisor_declares_downtime_with_the_prestaged_reason(loaded_env):
    boss, it = staff(loaded_env, "boss"), staff(loaded_env, "it1")
    assert enter_window(it, starts_in_hours=0.5).status_code == 302
    conn = open_ops(loaded_env)
    (window,) = maintenance.windows(conn)
    assert it.post(f"/maintenance/{window.id}/declare").status_code == 403  # IT prepares; a supervisor declares
    assert boss.post(f"/maintenance/{window.id}/declare").status_code == 302
    state = modes.current(conn)
    assert state.mode == modes.DOWNTIME and state.reason == window.declaration_reason and "計画停止" in state.reason
    assert maintenance.get(conn, window.id).declared_at == state.since


@pytest.mark.parametrize("starts_in, hours, problem", [(2, -1, "終了は開始より後"), (-5, 1, "終わった作業は登録できません")])
def test_a_window_that_cannot_be_is_refused(loaded_env, starts_in, hours, problem):
    response = enter_window(staff(loaded_env, "boss"), starts_in_hours=starts_in, hours=hours)
    assert response.status_code == 422 and problem in text_of(response)
    assert maintenance.windows(open_ops(loaded_env)) == []


def test_the_calendar_is_for_supervisors_and_it(loaded_env):
    assert staff(loaded_env, "clerk1").get("/maintenance/").status_code == 403
    assert staff(loaded_env, "aud").get("/maintenance/").status_code == 403
    assert staff(loaded_env, "it1").get("/maintenance/").status_code == 200


def test_the_worker_looks_for_windows_to_prepare_as_configured(loaded_env, monkeypatch):

    from apscheduler.schedulers.background import BackgroundScheduler

    from fallback.worker import build_scheduler

    monkeypatch.setenv("SONAE_MAINTENANCE_CHECK_INTERVAL_S", "120")
    scheduler = build_scheduler(load_config(), StopRequest(), BackgroundScheduler(timezone="Asia/Tokyo"))
    job = scheduler.get_job(maintenance.JOB_ID)
    assert job.func is maintenance.prepare_due and job.trigger.interval.total_seconds() == 120

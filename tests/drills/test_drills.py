"""Drills through the real app: everything a drill does stays out of real
figures, serials and reports; a real outage declared during a drill
suspends it safely; personas come from the drill's synthetic register
(tests/drills/test_drill_register.py: that register and nothing else)."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

from fallback import audit, drills, modes, recovery, runbooks
from fallback.drills import report as drill_report
from fallback.modes.views import issuance_summary
from fallback.ops import now, open_ops
from fallback.recovery import incident
from tests.drills.support import case_codes, drill_register
from tests.support import example_records, pdf_text, text_of

YAMADA_TARO = "10000000011"
SELF_REQUEST = {"kind": "juminhyo", "requester_type": "self", "identity_document": "運転免許証", "copies": "1"}
RUNBOOK_DIR = runbooks.runbook_dir


def start_drill(login, participants=("clerk1",), scenario="full_outage"):
    coordinator = login("coord")
    created = coordinator.post("/drills/new", {
        "scenario": scenario, "title": "令和8年度 ダウン対策訓練", "planned_start": "2026-09-15T09:00",
        "planned_end": "2026-09-15T12:00", "participants": list(participants),
    })
    assert created.status_code == 302, text_of(coordinator.get("/drills/"))
    drill_id = int(created.headers["Location"].rstrip("/").rsplit("/", 1)[1])
    coordinator.post(f"/drills/{drill_id}/start")
    return coordinator, drill_id


def issue(clerk, code, form=SELF_REQUEST):
    return clerk.post(f"/counter/resident/{code}/issue", form)


def test_drill_records_never_reach_real_figures_serials_or_reports(appliance, login, tmp_path):
    config = appliance.config["SONAE"]
    coordinator, drill_id = start_drill(login)
    clerk = login("clerk1")
    assert "訓練中" in text_of(clerk.get("/counter/"))

    drill_people = case_codes(config, drill_id)
    assert issue(clerk, drill_people["ordinary"]).status_code == 302
    refused = issue(clerk, drill_people["removed"])  # a 住民票 for a removed resident: the wrong type
    assert refused.status_code == 422
    coordinator.post(f"/drills/{drill_id}/declare", {"reason": "住民記録システム障害（訓練）"})
    pdf = clerk.get("/counter/certificate/drill/800001.pdf")
    assert pdf.status_code == 200 and "訓練" in "".join(pdf_text(pdf.data, tmp_path).split())
    coordinator.post(f"/drills/{drill_id}/end")

    conn = open_ops(config)
    assert modes.current(conn).mode == modes.STANDBY  # the drill's declaration is not a real one
    assert conn.execute("SELECT scope, serial FROM certificates").fetchall() == [("drill", 800001)]

    # a real outage afterwards: real serials start at the real range's start
    boss = login("boss")
    boss.post("/supervisor/mode", {"to_mode": "downtime", "reason": "住民記録システム障害"})
    assert issue(login("clerk2"), YAMADA_TARO).status_code == 302
    assert conn.execute("SELECT serial FROM certificates WHERE scope = 'real'").fetchall() == [(900001,)]

    since = "2000-01-01"
    assert issuance_summary(conn, since) == {"by_kind": {"juminhyo": 1}, "refused": {}, "total": 1}
    current = incident.incidents(conn)[0]
    facts = incident.gather(conn, current, runbook_list=runbooks.load_all(RUNBOOK_DIR(config)))
    assert facts.issued == {("juminhyo", "本庁"): 1} and facts.refused == 0 and facts.residents_affected == 1
    assert recovery.progress(conn).issued_requests == 1
    assert [p.request_id for p in recovery.pending_checks(conn)] == [3]  # the real request only

    figures = drill_report.figures(conn, drills.get(conn, drill_id), terminals=config["counter"]["terminals"],
                                   runbook_list=runbooks.load_all(RUNBOOK_DIR(config)))
    assert figures.certificates == 1 and figures.refusals == {"removed_resident": 1} and figures.wrong_type_attempts == 1
    assert figures.minutes_to_declaration is not None
    drill_actions = {action for action, flag in conn.execute("SELECT action, drill FROM audit WHERE drill = 1")}
    assert {"issue", "issue.refused", "drill.declared"} <= drill_actions


def test_a_real_outage_declared_during_a_drill_suspends_it(appliance, login):
    conn = open_ops(appliance.config["SONAE"])
    coordinator, drill_id = start_drill(login, participants=("clerk1", "boss"))
    clerk = login("clerk1")
    boss = login("boss")
    assert "訓練中" in text_of(boss.get("/supervisor/"))

    boss.post("/supervisor/mode", {"to_mode": "downtime", "reason": "住民記録システム障害: 11:20 実障害"})
    drill = drills.get(conn, drill_id)
    assert drill.status == drills.SUSPENDED and drills.active_drill(conn) is None
    assert [e.event for e in drills.events(conn, drill_id)][-1] == "suspended"
    page = text_of(clerk.get("/counter/"))
    assert "訓練中" not in page and "ダウン対策モード" in page
    assert issue(clerk, YAMADA_TARO).status_code == 302
    assert conn.execute("SELECT scope, serial FROM certificates").fetchall() == [("real", 900001)]

    # no resuming the drill while the real outage lasts
    coordinator.post(f"/drills/{drill_id}/start")
    assert drills.get(conn, drill_id).status == drills.SUSPENDED
    assert "ダウン対策モード中" in text_of(coordinator.get(f"/drills/{drill_id}"))

    boss.post("/supervisor/mode", {"to_mode": "recovery", "reason": "住民記録システム復旧"})
    coordinator.post(f"/drills/{drill_id}/start")
    assert drills.get(conn, drill_id).status == drills.ACTIVE
    events = drills.events(conn, drill_id)
    assert [e.event for e in events][-3:] == ["started", "suspended", "resumed"]
    # the suspension does not count as drill time
    spans = drills.active_intervals(events, until="2999-01-01T00:00:00+09:00")
    assert spans == [(events[-3].at, events[-2].at), (events[-1].at, "2999-01-01T00:00:00+09:00")]


def test_a_drill_declaration_is_an_event_once_and_never_a_mode_change(appliance, login):
    conn = open_ops(appliance.config["SONAE"])
    coordinator, drill_id = start_drill(login)
    coordinator.post(f"/drills/{drill_id}/declare", {"reason": "住基ネット連携障害（訓練）"})
    coordinator.post(f"/drills/{drill_id}/declare", {"reason": "もう一度"})
    assert "すでに宣言" in text_of(coordinator.get(f"/drills/{drill_id}"))
    assert [e.detail["reason"] for e in drills.events(conn, drill_id) if e.event == "declared"] == ["住基ネット連携障害（訓練）"]
    assert modes.history(conn) == []


def test_runbook_ticks_of_drill_participants_belong_to_the_drill(appliance, login):
    conn = open_ops(appliance.config["SONAE"])
    coordinator, drill_id = start_drill(login, participants=("clerk1", "coord"))
    step = runbooks.load(RUNBOOK_DIR(appliance.config["SONAE"]), "06-nenji-kunren").steps[5]
    coordinator.post(f"/runbooks/06-nenji-kunren/steps/{step.id}", {"done": "1"})
    assert [t.step_id for t in runbooks.tick_history(conn, drill_id=drill_id)] == [step.id]
    assert runbooks.tick_history(conn, drill_id=None) == []
    assert "障害発生時の初動" in text_of(coordinator.get("/runbooks/"))  # the scenario's runbooks come first


def test_personas_are_synthetic_people_of_the_drill_register_and_every_view_is_audited(appliance, login, tmp_path):
    config = appliance.config["SONAE"]
    coordinator = login("coord")
    created = coordinator.post("/drills/new", {
        "scenario": "full_outage", "title": "令和8年度 ダウン対策訓練", "planned_start": "2026-09-15T09:00",
        "planned_end": "2026-09-15T12:00", "participants": ["clerk1"],
    })
    drill_id = int(created.headers["Location"].rstrip("/").rsplit("/", 1)[1])
    # planned, in standby: the personas exist before the drill, because nobody in them is real
    coordinator.post(f"/drills/{drill_id}/personas")
    conn = open_ops(config)
    assert drills.get(conn, drill_id).status == drills.PLANNED
    codes = dict(conn.execute("SELECT case_key, resident_code FROM drill_personas WHERE drill_id = ?", (drill_id,)))
    register_cases = {k: v for k, v in codes.items() if k != "newcomer"}
    assert None not in register_cases.values()  # the drill register holds every case
    assert all(code.startswith("9") for code in register_cases.values())  # the drill register's codes, no real one
    with drill_register(config, drill_id) as register:
        people = {case: register.resident(code) for case, code in register_cases.items()}
        revoked_card = next(s["card_number"] for s in register.seals_of(codes["seal_revoked"]) if s["status"] == "revoked")
        held_card = next(s["card_number"] for s in register.seals_of(codes["seal_holder"]) if s["status"] == "active")
    assert people["support_measure"]["support_measure"] and people["removed"]["status"] == "removed"
    assert people["planned_move_out"]["planned_move_out"] and people["foreign"]["foreign"]

    page = text_of(coordinator.get(f"/drills/{drill_id}"))
    for person in people.values():
        assert person["name"] in page and person["resident_code"] in page
    assert revoked_card in page and held_card in page and "訓練　花子" in page  # and the newcomer, who is in no register
    # Nobody real on the page: no real resident's code, and no persona who is a real
    # resident (a synthetic 中村　翔 may share a common name with a real one).
    real = example_records("residents")
    assert not [r["resident_code"] for r in real if r["resident_code"] in page]
    assert not [p["name"] for p in people.values() if (p["name"], p["birth_date"]) in {(r["name"], r["birth_date"]) for r in real}]
    clerk_view = text_of(login("clerk1").get(f"/drills/{drill_id}"))
    assert people["support_measure"]["name"] not in clerk_view  # the answer sheet is the coordinator's

    cards = "".join(pdf_text(coordinator.get(f"/drills/{drill_id}/personas.pdf").data, tmp_path).split())
    assert "訓練住民役：支援措置" in cards and "".join(people["support_measure"]["name"].split()) in cards and revoked_card in cards
    assert not [r["resident_code"] for r in real if r["resident_code"] in cards]

    views = list(audit.entries(conn, action="drill.personas_view"))
    assert [(e["actor"], e["detail"]["output"], e["drill"]) for e in views] == [("coord", "page", True), ("coord", "pdf", True)]
    assert sorted(views[0]["detail"]["residents"]) == sorted(register_cases.values())


def test_a_drill_never_prepared_shows_no_personas_and_audits_nothing(appliance, login):
    coordinator, drill_id = start_drill(login)
    assert "住民役 " not in text_of(coordinator.get(f"/drills/{drill_id}"))
    assert list(audit.entries(open_ops(appliance.config["SONAE"]), action="drill.personas_view")) == []


def test_the_drill_paper_kit_is_marked_as_training_and_noted(appliance, login, tmp_path):
    conn = open_ops(appliance.config["SONAE"])
    coordinator, drill_id = start_drill(login, scenario="paper_only")
    ledger = pdf_text(coordinator.get(f"/drills/{drill_id}/ledger.pdf").data, tmp_path)
    assert "手書き交付台帳（訓練用）" in ledger and "訓練-本庁-01-01" in ledger
    form = "".join(pdf_text(coordinator.get(f"/drills/{drill_id}/request-form.pdf").data, tmp_path, "form.pdf").split())
    assert "交付申請書" in form and "訓練" in form
    assert [e.detail["paper"] for e in drills.events(conn, drill_id) if e.event == "paper_kit_printed"] == ["ledger", "request_form"]


def test_sonae_drill_paper_kit_writes_both_papers(sonae_env, tmp_path):
    result = subprocess.run([sys.executable, "-m", "fallback.cli", "drill", "paper-kit", "--out-dir", str(tmp_path / "kit")],
                            capture_output=True, text=True, env=dict(os.environ))
    assert result.returncode == 0, result.stderr
    assert "交付申請書" in "".join(pdf_text((tmp_path / "kit" / "request-form.pdf").read_bytes(), tmp_path).split())
    assert "本庁-01-01" in pdf_text((tmp_path / "kit" / "ledger.pdf").read_bytes(), tmp_path)


# --- the yearly reminder ----------------------------------------------------------


def _create(conn, start: str) -> int:
    return drills.create(conn, scenario="full_outage", title="年次訓練", description="", planned_start=start,
                         planned_end=start.replace("T09", "T12"), participants=["clerk1"], terminals=[], actor="coord")


def test_the_reminder_asks_for_a_plan_then_for_preparations(sonae_env):
    conn = open_ops(sonae_env)
    remind = lambda today: drills.schedule_reminder(conn, yearly_month=9, remind_days_before=60, today=today)  # noqa: E731
    assert remind(dt.date(2026, 5, 1)).level == "none"
    early = remind(dt.date(2026, 7, 10))
    assert early.level == "plan" and "あと53日" in early.message and "06 年次訓練の進め方" in early.message
    assert remind(dt.date(2026, 9, 20)).level == "plan"  # the month has come and still nothing is planned
    assert remind(dt.date(2026, 10, 1)).level == "none"  # next year's September is far away

    drill_id = _create(conn, "2026-09-15T09:00+09:00")
    planned = remind(dt.date(2026, 9, 1))
    assert planned.level == "prepare" and planned.drill.id == drill_id and "あと14日" in planned.message
    assert planned.missing == ("住民役の用意",)
    drills.record_event(conn, drill_id, "coord", "personas_prepared")
    assert remind(dt.date(2026, 9, 1)).missing == ()


def test_sonae_drill_schedule_prints_the_reminder(sonae_env):
    env = {**os.environ}
    conn = open_ops(sonae_env)
    drill_day = now().date() + dt.timedelta(days=10)  # the appliance counts days in Japan time
    _create(conn, drill_day.isoformat() + "T09:00+09:00")
    env["SONAE_DRILLS_YEARLY_MONTH"] = str(drill_day.month)
    result = subprocess.run([sys.executable, "-m", "fallback.cli", "drill", "schedule"], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert "年次訓練" in result.stdout and "あと10日" in result.stdout and "住民役の用意" in result.stdout

"""A drill beside the real desk: its 支援措置 requests and record views
stay off the real supervisor's desk, and its planned times read in Japan
time like everything else."""

from __future__ import annotations

from fallback import drills
from fallback.ops import open_ops
from tests.drills.test_drills import start_drill
from tests.support import text_of


def drill_support_person(appliance, drill_id) -> str:
    conn = open_ops(appliance.config["SONAE"])
    try:
        return conn.execute("SELECT resident_code FROM drill_personas WHERE drill_id = ? AND case_key = 'support_measure'",
                            (drill_id,)).fetchone()[0]
    finally:
        conn.close()


def test_drill_support_measure_work_stays_off_the_real_desk(appliance, login):
    coordinator, drill_id = start_drill(login)
    coordinator.post(f"/drills/{drill_id}/personas")
    persona = drill_support_person(appliance, drill_id)
    clerk = login("clerk1")
    assert clerk.get(f"/counter/resident/{persona}").status_code == 200
    agent = {"kind": "juminhyo", "requester_type": "agent", "requester_name": "代理　人", "delegation_letter": True,
             "identity_document": "運転免許証", "copies": 1}
    assert clerk.api("POST", f"/api/v1/residents/{persona}/certificates", json=agent).get_json()["rule"] == "support_measure"
    coordinator.post(f"/drills/{drill_id}/end")
    boss = login("boss")
    boss.post("/supervisor/mode", {"to_mode": "downtime", "reason": "住民記録システム障害"})
    desk = text_of(boss.get("/supervisor/"))
    attempts, views = desk.split("支援措置対象者への請求")[1], desk.split("支援措置対象者の記録の閲覧")[1]
    assert "お断り" not in attempts.split("支援措置対象者の記録の閲覧")[0] and "住所を表示せずに閲覧" not in views
    # a real one is listed
    real = login("clerk2")
    real.get("/counter/resident/10000000087")
    assert "住所を表示せずに閲覧" in text_of(boss.get("/supervisor/"))


def test_planned_times_read_in_japan_time_whatever_they_were_stored_with(appliance, login):
    conn = open_ops(appliance.config["SONAE"])
    try:
        drill_id = drills.create(conn, scenario="full_outage", title="訓練", description="", planned_start="2026-09-15T00:00+00:00",
                                 planned_end="2026-09-15T03:00+00:00", participants=["clerk1"], terminals=[], actor="coord")
    finally:
        conn.close()
    coordinator = login("coord")
    assert "2026-09-15 09:00 〜 2026-09-15 12:00" in text_of(coordinator.get(f"/drills/{drill_id}"))
    listing = text_of(coordinator.get("/drills/"))
    assert "2026-09-15 09:00" in listing and "2026-09-15 00:00" not in listing
    form = coordinator.get("/drills/").get_data(as_text=True)
    assert "開始予定（日本時間）" in form and 'id="drill-start" value="20' in form
    created = coordinator.post("/drills/new", {"scenario": "full_outage", "title": "訓練2", "planned_start": "2026-09-16T09:00",
                                               "planned_end": "2026-09-16T12:00", "participants": ["clerk1"]})
    new_id = int(created.headers["Location"].rstrip("/").rsplit("/", 1)[1])
    assert "2026-09-16 09:00 〜 2026-09-16 12:00" in text_of(coordinator.get(f"/drills/{new_id}"))

"""What a drill's scenario changes at the counter: the paper-only drill
keeps Sonae closed, the long-outage drill rehearses with old-looking data."""

from __future__ import annotations

import datetime as dt
import re

from fallback import drills
from fallback.ops import open_ops
from fallback.residents.notice import time_text
from tests.support import pdf_text, squeezed, text_of


def start_drill(appliance, scenario: str) -> int:
    conn = open_ops(appliance.config["SONAE"])
    start = dt.datetime.now(dt.timezone(dt.timedelta(hours=9)))
    drill_id = drills.create(conn, scenario=scenario, title="", description="", planned_start=start.isoformat(),
                             planned_end=(start + dt.timedelta(hours=2)).isoformat(), participants=["clerk1"], terminals=[], actor="coord")
    drills.start(conn, drill_id, actor="coord", current_mode="standby")
    return drill_id


def test_paper_only_drill_keeps_the_counter_closed(appliance, login):
    start_drill(appliance, "paper_only")
    clerk = login("clerk1")
    response = clerk.get("/counter/?kana=ヤマダ")
    assert response.status_code == 423 and "紙の交付申請書" in text_of(response)


def test_long_outage_drill_prints_and_shows_old_data(appliance, login, tmp_path):
    start_drill(appliance, "long_outage")
    clerk = login("clerk1")
    page = text_of(clerk.get("/counter/?kana=ヤマダ"))
    assert "データが3日" in page  # the banner's age warning, as the scenario intends
    issued = clerk.api("POST", "/api/v1/residents/10000000011/certificates",
                       json={"kind": "juminhyo", "requester_type": "self", "identity_document": "運転免許証"})
    assert issued.status_code == 201
    serial = issued.get_json()["certificates"][0]["serial"]
    assert 800001 <= serial <= 899999  # the drill range
    conn = open_ops(appliance.config["SONAE"])
    data_as_of = dt.datetime.fromisoformat(conn.execute("SELECT data_as_of FROM requests").fetchone()[0])
    age = dt.datetime.now(dt.UTC) - data_as_of
    assert dt.timedelta(hours=71) < age < dt.timedelta(hours=73)


def test_participants_only(appliance, login):
    start_drill(appliance, "full_outage")
    other = login("clerk2")
    assert other.get("/counter/").status_code == 423
    participant = login("clerk1")
    page = participant.get("/counter/")
    assert page.status_code == 200 and re.search("訓練", text_of(page))


def test_a_long_outage_drills_request_form_prints_the_data_as_of_its_certificates_do(appliance, login, tmp_path):
    start_drill(appliance, "long_outage")
    clerk = login("clerk1")
    issued = clerk.api("POST", "/api/v1/residents/10000000011/certificates",
                       json={"kind": "juminhyo", "requester_type": "self", "identity_document": "運転免許証"})
    assert issued.status_code == 201
    form = clerk.get("/forms/request/10000000011.pdf")
    assert form.status_code == 200
    conn = open_ops(appliance.config["SONAE"])
    certificate_as_of = dt.datetime.fromisoformat(conn.execute("SELECT data_as_of FROM requests").fetchone()[0])
    printed = squeezed(pdf_text(form.data, tmp_path))
    assert f"{squeezed(time_text(certificate_as_of, 'ja', appliance.config['SONAE']))}時点" in printed

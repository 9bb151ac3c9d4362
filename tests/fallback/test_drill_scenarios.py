"""What a drill's scenario changes at the counter: the paper-only drill
keeps Sonae closed, the long-outage drill rehearses with a drill register
dated days back."""

from __future__ import annotations

import datetime as dt
import re

from fallback.counter.rendering import print_settings
from fallback.ops import open_ops
from fallback.residents.notice import time_text
from printing.wareki import format_wareki_datetime
from tests.drills.support import SELF_REQUEST, case_codes, drill_register, start_drill
from tests.support import pdf_text, squeezed, text_of


def test_paper_only_drill_keeps_the_counter_closed(appliance, login):
    start_drill(appliance.config["SONAE"], "paper_only")
    clerk = login("clerk1")
    response = clerk.get("/counter/?kana=ヤマダ")
    assert response.status_code == 423 and "紙の交付申請書" in text_of(response)


def test_long_outage_drill_prints_and_shows_its_registers_aged_data(appliance, login, tmp_path):
    config = appliance.config["SONAE"]
    drill_id = start_drill(config, "long_outage")
    with drill_register(config, drill_id) as register:
        as_of = register.meta.as_of
    age = dt.datetime.now(dt.UTC) - as_of
    assert dt.timedelta(hours=71, minutes=59) < age < dt.timedelta(hours=72, minutes=5)  # drills.long_outage_data_age_hours
    clerk = login("clerk1")
    page = text_of(clerk.get("/counter/?kana=ア"))
    assert "データが3日" in page  # the banner's age warning, as the scenario intends
    issued = clerk.api("POST", f"/api/v1/residents/{case_codes(config, drill_id)['ordinary']}/certificates", json=SELF_REQUEST)
    assert issued.status_code == 201
    certificate = issued.get_json()["certificates"][0]
    assert 800001 <= certificate["serial"] <= 899999  # the drill range
    conn = open_ops(config)
    assert dt.datetime.fromisoformat(conn.execute("SELECT data_as_of FROM requests").fetchone()[0]) == as_of
    printed = squeezed(pdf_text(clerk.get(certificate["pdf"]).data, tmp_path))
    assert squeezed(format_wareki_datetime(as_of, print_settings(config).eras)) + "時点の住民記録" in printed  # the drill register's as-of


def test_a_normal_drill_starts_with_data_as_fresh_as_the_mirrors(appliance, login):
    config = appliance.config["SONAE"]
    drill_id = start_drill(config, "full_outage")
    with drill_register(config, drill_id) as register:
        age = dt.datetime.now(dt.UTC) - register.meta.as_of
    interval = dt.timedelta(seconds=config["sync"]["changes_interval_s"])
    assert interval <= age < interval + dt.timedelta(minutes=1)
    assert "データが3日" not in text_of(login("clerk1").get("/counter/"))


def test_participants_only(appliance, login):
    start_drill(appliance.config["SONAE"], "full_outage")
    other = login("clerk2")
    assert other.get("/counter/").status_code == 423
    participant = login("clerk1")
    page = participant.get("/counter/")
    assert page.status_code == 200 and re.search("訓練", text_of(page))


def test_a_long_outage_drills_request_form_prints_the_data_as_of_its_certificates_do(appliance, login, tmp_path):
    config = appliance.config["SONAE"]
    drill_id = start_drill(config, "long_outage")
    code = case_codes(config, drill_id)["ordinary"]
    clerk = login("clerk1")
    assert clerk.api("POST", f"/api/v1/residents/{code}/certificates", json=SELF_REQUEST).status_code == 201
    form = clerk.get(f"/forms/request/{code}.pdf")
    assert form.status_code == 200
    certificate_as_of = dt.datetime.fromisoformat(open_ops(config).execute("SELECT data_as_of FROM requests").fetchone()[0])
    printed = squeezed(pdf_text(form.data, tmp_path))
    assert f"{squeezed(time_text(certificate_as_of, 'ja', config))}時点" in printed

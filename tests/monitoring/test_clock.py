"""A clock that disagrees with what the appliance knows: issuance refuses
with a message that says what to check, /readyz is not ready, IT is
alerted, the banner warns. The appliance's clock is moved (tests/clocks.py);
the upstream's stays right."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from fallback import clock
from fallback.app import create_app
from fallback.mirror.syncing import run_full_sync
from fallback.monitoring import run_alert_cycle, run_probe_cycle
from fallback.ops import TOKYO, open_ops
from fallback.staff import users
from tests.clocks import set_clock_off
from tests.monitoring.conftest import ops_rows
from tests.support import ACCOUNTS, PASSWORD, Staff, example_records, text_of, write_export

TOKEN = "scrape-secret"
SCRAPER = {"Authorization": f"Bearer {TOKEN}"}
# The same certificate again and again on purpose: each repeat is confirmed, as a clerk would.
REQUEST = {"kind": "juminhyo", "requester_type": "self", "identity_document": "運転免許証", "copies": 1, "confirm_repeat": True}
YAMADA_TARO = "10000000011"


def true_now() -> dt.datetime:
    return dt.datetime.now(TOKYO)


@pytest.fixture
def appliance_at(configure, tmp_path):
    """A loaded appliance whose data is as of `hours` ago, with accounts,
    a metrics token and its app; downtime declared."""

    def make(hours: float):
        config = configure(ALERTS_METRICS_TOKEN=TOKEN)
        as_of = (true_now() - dt.timedelta(hours=hours)).isoformat(timespec="seconds")
        run_full_sync(config, write_export(tmp_path / f"export-{hours}", example_records("residents"), example_records("seals"), as_of=as_of))
        conn = open_ops(config)
        for username, role in ACCOUNTS.items():
            users.add_user(conn, username, username, role, PASSWORD, actor="test")
        conn.close()
        app = create_app(config)
        app.config["TESTING"] = True
        boss = Staff(app, "boss")
        assert boss.post("/supervisor/mode", {"to_mode": "downtime", "reason": "住民記録システム障害"}).status_code == 302
        return config, app, Staff(app, "clerk1")

    return make


def issue(clerk):
    return clerk.api("POST", f"/api/v1/residents/{YAMADA_TARO}/certificates", json=REQUEST)


def test_two_days_behind_nothing_is_issued_and_everyone_is_told(appliance_at, monkeypatch, webhook):
    """The campaign's case: 「令和8年12月3日」 printed on data as of 12月5日."""
    config, app, clerk = appliance_at(0.1)
    set_clock_off(monkeypatch, -dt.timedelta(days=2))
    refused = issue(clerk)
    assert refused.status_code == 422, refused.get_json()
    body = refused.get_json()
    assert body["rule"] == "clock_implausible"
    # one message naming both causes, and what to check
    assert "装置の時計が遅れているか、写しのデータが表示どおりの時点のものではありません" in body["message"]
    assert "timedatectl" in body["message"] and "後日交付として受け付けてください" in body["message"]
    assert ops_rows(config, "SELECT count(*) FROM certificates") == [(0,)]
    assert ops_rows(config, "SELECT refusal_rule FROM requests") == [("clock_implausible",)]

    assert "この装置の時計が正しくないおそれがあります" in text_of(clerk.get("/counter/"))
    ready = app.test_client().get("/readyz", headers=SCRAPER)
    assert ready.status_code == 503 and ready.get_json()["checks"]["clock"]["ok"] is False
    run_alert_cycle(config)
    alert = next(b for b in webhook.bodies if b["key"] == "clock.implausible")
    assert alert["severity"] == "critical" and alert["runbook"] == "runbooks/10-tokei.md" and "1日23時間先です" in alert["what"]


@pytest.mark.parametrize("ahead_minutes, refused", [(4.5, False), (5.5, True)])
def test_data_ahead_of_the_clock_is_refused_past_five_minutes(appliance_at, monkeypatch, ahead_minutes, refused):
    config, app, clerk = appliance_at(0)
    with snapshot_of(config) as register:
        as_of = register.meta.as_of
    set_clock_off(monkeypatch, (as_of - dt.timedelta(minutes=ahead_minutes)) - true_now())
    response = issue(clerk)
    if refused:
        assert response.status_code == 422 and response.get_json()["rule"] == "clock_implausible"
    else:
        assert response.status_code == 201, response.get_json()


def snapshot_of(config):
    from fallback.mirror.registry import snapshot_store

    return snapshot_store(config).open_register()


def test_the_probes_read_the_upstreams_clock_and_a_clock_moved_since_is_noticed(appliance_at, monkeypatch, webhook):
    config, app, clerk = appliance_at(3)  # data 3 hours old: an hour's error would not show in its age
    run_probe_cycle(config)
    sources = {source for (source,) in ops_rows(config, "SELECT source FROM clock_readings")}
    assert sources == {clock.AS_OF, clock.DATE}
    assert issue(clerk).status_code == 201

    set_clock_off(monkeypatch, -dt.timedelta(hours=1))
    # no probe since: the boot clock says the clock moved after the last reading
    refused = issue(clerk)
    assert refused.status_code == 422
    assert "上流の応答の" in refused.get_json()["message"] and "60分遅れています" in refused.get_json()["message"]
    run_probe_cycle(config)  # and the next reading says so itself
    offsets = [offset for (offset,) in ops_rows(config, "SELECT offset_s FROM clock_readings ORDER BY id DESC LIMIT 2")]
    assert all(3590 < offset < 3610 for offset in offsets), offsets
    run_alert_cycle(config)
    assert ("clock.implausible", "opened") in webhook.events("clock.")

    monkeypatch.undo()  # IT sets the clock right
    run_probe_cycle(config)
    assert issue(clerk).status_code == 201
    run_alert_cycle(config)
    assert ("clock.implausible", "resolved") in webhook.events("clock.")


def test_a_reading_from_before_a_reboot_is_not_projected(appliance_at):
    config, app, clerk = appliance_at(3)
    conn = open_ops(config)
    try:
        conn.execute("INSERT INTO clock_readings (at, offset_s, source, boot_id, boottime_s) VALUES (?, 7200, 'as_of', 'another boot', 1.0)",
                     (true_now().isoformat(),))
        assert clock.doubts(conn, data_as_of=None) == []
    finally:
        conn.close()
    assert issue(clerk).status_code == 201


def test_a_clock_set_back_after_the_last_certificate_is_noticed_until_the_upstream_vouches(appliance_at, monkeypatch):
    config, app, clerk = appliance_at(3)
    set_clock_off(monkeypatch, dt.timedelta(hours=1))  # ahead, unnoticed: no reading yet
    clerk = Staff(app, "clerk1")  # an hour later by this clock: the earlier session has timed out
    assert issue(clerk).status_code == 201
    monkeypatch.undo()  # set right: the certificate just issued is now "an hour ahead"
    refused = issue(clerk)
    assert refused.status_code == 422 and "最後に交付した証明書の交付時刻" in refused.get_json()["message"]
    run_probe_cycle(config)  # the upstream agrees with the clock now: it was the earlier clock that was wrong
    assert issue(clerk).status_code == 201


def test_ntp_reported_off_is_alerted_but_does_not_stop_issuance(appliance_at, monkeypatch, tmp_path, webhook):
    config, app, clerk = appliance_at(3)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "timedatectl"
    fake.write_text("#!/bin/sh\necho no\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    clock._ntp_cache.clear()
    assert issue(clerk).status_code == 201
    ready = app.test_client().get("/readyz", headers=SCRAPER)
    assert ready.status_code == 200 and ready.get_json()["checks"]["clock"]["ntp"] == "no"
    run_alert_cycle(config)
    assert ("clock.ntp", "opened") in webhook.events("clock.")
    clock._ntp_cache.clear()


def test_ntp_that_cannot_be_asked_is_unknown(appliance_at, monkeypatch, tmp_path):
    config, app, clerk = appliance_at(3)
    monkeypatch.setenv("PATH", str(tmp_path))  # no timedatectl at all
    clock._ntp_cache.clear()
    checks = app.test_client().get("/readyz", headers=SCRAPER).get_json()["checks"]["clock"]
    assert checks["ntp"] == "unknown" and checks["ntp_unknown_because"] == "timedatectl is not installed"
    clock._ntp_cache.clear()
    assert json.dumps(checks, ensure_ascii=False)


def test_one_source_alone_does_not_stop_the_counters(appliance_at, upstream):
    """A vendor whose health as_of is its data's time (two hours old here)
    while its Date is right: the clock is doubted only when both disagree."""
    config, app, clerk = appliance_at(3)
    upstream.health_as_of = lambda: true_now() - dt.timedelta(hours=2)
    run_probe_cycle(config)
    offsets = dict(ops_rows(config, "SELECT source, offset_s FROM clock_readings"))
    assert offsets[clock.AS_OF] < -7000 and abs(offsets[clock.DATE]) < 5
    assert issue(clerk).status_code == 201

"""A full disk under SONAE_HOME (a tmpfs): the reserve gives the counters
their room back and IT is told what it is worth; readiness follows whether
the operational database can be written; and an alert goes out even when
the database cannot record it (the campaign's disk went from 32 % to 100 %
between two checks without a word)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from fallback import disk
from fallback.app import create_app
from fallback.config import load_config
from fallback.monitoring import run_alert_cycle
from fallback.ops import open_ops
from tests.conftest import _configure
from tests.mounts import require_tmpfs
from tests.support import Staff, served
from tests.sync.conftest import run_sonae

TOKEN = "scrape-secret"
SCRAPER = {"Authorization": f"Bearer {TOKEN}"}
REQUEST = {"kind": "juminhyo", "requester_type": "self", "identity_document": "運転免許証", "copies": 1}
YAMADA_TARO = "10000000011"


@pytest.fixture
def small_home(tmp_path, monkeypatch, loaded_template, webhook):
    """The loaded appliance with SONAE_HOME on a 48 MB tmpfs, an 8 MB reserve
    released under 2 MB free, and alerts to the webhook receiver."""
    require_tmpfs()
    home = tmp_path / "home"
    home.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(home)], check=True, capture_output=True)
    try:
        shutil.copytree(loaded_template / "home", home, dirs_exist_ok=True)
        _configure(tmp_path, monkeypatch, keys_from=loaded_template / "etc")
        for name, value in {"DISK_RESERVE_MB": "8", "DISK_RELEASE_BELOW_MB": "2", "ALERTS_WEBHOOK_URL": webhook.url,
                            "ALERTS_METRICS_TOKEN": TOKEN}.items():
            monkeypatch.setenv(f"SONAE_{name}", value)
        yield load_config()
    finally:
        subprocess.run(["umount", "-l", str(home)], capture_output=True)


def fill(config, leave: int = 0) -> None:
    """Take the free space (as a copy that stops at a full disk would)."""
    free = shutil.disk_usage(config.home).free
    if free - leave <= 0:
        return
    with open(config.home / f"filler-{len(list(config.home.glob('filler-*')))}", "wb") as handle:
        os.posix_fallocate(handle.fileno(), 0, free - leave)


def counter(config):
    app = create_app(config)
    app.config["TESTING"] = True
    boss = Staff(app, "boss")
    assert boss.post("/supervisor/mode", {"to_mode": "downtime", "reason": "住民記録システム障害"}).status_code == 302
    return app, Staff(app, "clerk1")


def test_after_the_disk_fills_the_reserve_keeps_the_counter_issuing_and_it_is_told(small_home, webhook):
    config = small_home
    run_alert_cycle(config)
    assert disk.reserve_path(config).stat().st_size == 8 << 20
    app, clerk = counter(config)
    fill(config)
    assert shutil.disk_usage(config.home).free < 1 << 20
    issued = clerk.api("POST", f"/api/v1/residents/{YAMADA_TARO}/certificates", json=REQUEST)
    assert issued.status_code == 201, issued.get_data(as_text=True)[:300]
    assert not disk.reserve_path(config).exists()
    ready = app.test_client().get("/readyz", headers=SCRAPER)
    assert ready.status_code == 200, ready.get_json()
    assert ready.get_json()["checks"]["disk_reserve"]["ok"] is False

    run_alert_cycle(config)
    alert = next(b for b in webhook.bodies if b["key"] == "disk.reserve_released")
    assert alert["severity"] == "critical" and alert["runbook"] == "runbooks/09-disk-full.md"
    assert "予備の領域（8 MB）を解放しました" in alert["what"] and "通分" in alert["still_works"]

    # IT frees the disk: the reserve comes back and the alert is resolved
    for filler in config.home.glob("filler-*"):
        filler.unlink()
    run_alert_cycle(config)
    assert disk.reserve_path(config).exists()
    assert ("disk.reserve_released", "resolved") in webhook.events("disk.")


def test_with_no_room_for_a_certificate_the_counters_are_not_ready(small_home):
    config = small_home
    app, _ = counter(config)
    fill(config)  # no reserve was made: the worker has not run yet
    ready = app.test_client().get("/readyz", headers=SCRAPER)
    assert ready.status_code == 503
    space = ready.get_json()["checks"]["disk_space"]
    assert space["ok"] is False and space["detail"] == "証明書1通分の空きもありません"
    for filler in config.home.glob("filler-*"):
        filler.unlink()
    assert app.test_client().get("/readyz").status_code == 200


def truncate_the_wal(config) -> None:
    """An empty WAL: the next commit must grow it, so a full disk refuses it
    (a WAL with room left from earlier commits would take a small write)."""
    conn = open_ops(config)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def test_when_the_database_cannot_commit_readyz_fails_and_it_hears_of_it_anyway(small_home, webhook):
    config = small_home
    app, _ = counter(config)
    web = app.test_client()
    run_alert_cycle(config)  # makes the reserve; no alert
    sent_before = len(webhook.bodies)
    disk.reserve_path(config).unlink()  # a reserve already spent
    disk._last_success.clear()
    truncate_the_wal(config)
    fill(config)

    ready = web.get("/readyz", headers=SCRAPER)
    assert ready.status_code == 503
    writes = ready.get_json()["checks"]["writes"]
    assert writes["ok"] is False and "database or disk is full" in writes["detail"]
    run_alert_cycle(config)
    unrecorded = [b for b in webhook.bodies[sent_before:] if b["key"] == "ops.unwritable"]
    assert unrecorded and unrecorded[0]["event"] == "opened" and unrecorded[0]["severity"] == "critical"
    assert "記録に残せないまま送っています" in unrecorded[0]["still_works"]
    assert any(b["key"] == "disk.low" for b in webhook.bodies[sent_before:]), "what holds goes out with it"
    run_alert_cycle(config)  # repeats are suppressed without the database too
    assert [b["key"] for b in webhook.bodies[sent_before:]].count("ops.unwritable") == 1

    for filler in config.home.glob("filler-*"):
        filler.unlink()
    assert web.get("/readyz").status_code == 200
    run_alert_cycle(config)
    assert ("ops.unwritable", "resolved") in webhook.events("ops.")
    assert [b["key"] for b in webhook.bodies[sent_before:]].count("disk.low") == 1, "sent once, then recorded"
    conn = open_ops(config)
    try:
        assert conn.execute("SELECT count(*) FROM alerts WHERE key = 'ops.unwritable' AND resolved_at IS NOT NULL").fetchone()[0] == 1
    finally:
        conn.close()


def test_with_the_reserve_spent_and_no_room_everyone_is_told_issuing_has_stopped(small_home, webhook, monkeypatch):
    config = small_home
    run_alert_cycle(config)  # makes the reserve
    app, clerk = counter(config)
    fill(config)
    assert clerk.get("/api/v1/status").get_json()["banner"]["level"] == "downtime", "the reserve gives the room back"
    assert not disk.reserve_path(config).exists()
    it = Staff(app, "it1", terminal=None)
    fill(config, leave=20_000)  # the released space taken too: under one certificate

    banner = clerk.get("/api/v1/status").get_json()["banner"]
    assert banner["level"] == "danger" and "ディスクが一杯で、証明書を交付・記録できません" in banner["warning"]
    assert "紙の手順" in clerk.get("/counter/").get_data(as_text=True)
    dashboard = it.get("/monitor/").get_data(as_text=True)
    assert "ディスクが一杯で、証明書を交付・記録できません" in dashboard, "IT's dashboard says so before any alert is recorded"

    run_alert_cycle(config)
    full = next(b for b in webhook.bodies if b["key"] == "disk.full")
    assert full["severity"] == "critical" and full["title"] == "ディスクが一杯で、窓口の交付が止まっています"
    assert "紙の手順" in full["still_works"] and full["runbook"] == "runbooks/09-disk-full.md"
    released = next(b for b in webhook.bodies if b["key"] == "disk.reserve_released")
    assert "続けられます" not in released["still_works"] and "交付は止まっています" in released["still_works"]

    with served(app) as server:
        monkeypatch.setenv("SONAE_WEB_PORT", str(server.effective_port))
        with_token = run_sonae("health", "--ready")
        monkeypatch.delenv("SONAE_ALERTS_METRICS_TOKEN")
        without = run_sonae("health", "--ready")
    url = f"http://127.0.0.1:{server.effective_port}/readyz"
    line = with_token.stderr.strip()
    assert with_token.returncode == 1 and line.startswith(f"Error: {url}: HTTP 503, not ready: ") and "\n" not in line, line
    assert "disk_space (証明書1通分の空きもありません)" in line and "writes (運用データベースに書き込めません" in line
    assert without.stderr.strip() == f"Error: {url}: HTTP 503, not ready: writes, disk_space (what each found: the IT dashboard /monitor/)"

    for filler in config.home.glob("filler-*"):
        filler.unlink()
    assert clerk.get("/api/v1/status").get_json()["banner"]["level"] == "downtime"
    run_alert_cycle(config)
    assert ("disk.full", "resolved") in webhook.events("disk.")

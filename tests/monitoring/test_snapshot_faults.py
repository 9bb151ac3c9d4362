"""The server over a damaged snapshot store: never a 500 for everything,
the counter says why it cannot serve and what to do, readiness follows the
reads, and IT confirms the generation to fall back to."""

from __future__ import annotations

import json

import pytest

from fallback import audit
from fallback.mirror.registry import snapshot_store
from fallback.monitoring import run_alert_cycle
from fallback.ops import open_ops
from sync import crypto
from sync.register import connect_snapshot
from sync.store import POINTER_COPY_FILE
from tests.support import text_of
from tests.sync.conftest import run_sonae

TOKEN = "scrape-secret"
SCRAPER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def scraped(configure_app):
    return configure_app(alerts={"metrics_token": TOKEN})


def damage_both_pointers(config) -> None:
    directory = snapshot_store(config).directory
    (directory / "CURRENT").write_bytes(b"gen-\xff00001\n")
    (directory / POINTER_COPY_FILE).write_bytes(b"")


def test_a_pointer_nobody_can_read_stops_the_counter_with_the_reason_until_it_confirms(scraped, loaded_env, login, downtime):
    damage_both_pointers(loaded_env)
    clerk = login("clerk1")
    page = clerk.get("/counter/")
    assert page.status_code == 503  # unavailable, with the reason: not a 500
    text = text_of(page)
    assert "CURRENT" in text and "係長または情報政策課の確認なしには使いません" in text and "世代1で再開する" in text
    ready = scraped.test_client().get("/readyz", headers=SCRAPER)
    assert ready.status_code == 503
    snapshot = ready.get_json()["checks"]["snapshot"]
    assert snapshot["ok"] is False and "serving it needs a supervisor's or IT's confirmation" in snapshot["reason"]

    # the counter's staff cannot confirm; IT (or a supervisor) can, from the dashboard
    assert clerk.post("/monitor/snapshot/resume", {"generation": "1", "reason": "x"}).status_code == 403
    it = login("it1")
    dashboard = text_of(it.get("/monitor/"))
    assert "第1世代で再開する" in dashboard and "支援措置などの変更が取り消されているおそれ" in dashboard
    assert it.post("/monitor/snapshot/resume", {"generation": "1", "reason": ""}).status_code == 400
    done = it.post("/monitor/snapshot/resume", {"generation": "1", "reason": "CURRENT が壊れた。第1世代を確認した"})
    assert done.status_code == 302
    assert snapshot_store(loaded_env).current() == 1
    conn = open_ops(loaded_env)
    try:
        (entry,) = list(audit.entries(conn, action="snapshot.rollback"))
    finally:
        conn.close()
    assert entry["actor"] == "it1" and entry["detail"]["reason"] == "CURRENT が壊れた。第1世代を確認した"
    assert scraped.test_client().get("/readyz").status_code == 200
    assert "世代1で再開する" not in text_of(clerk.get("/counter/"))


def test_a_damaged_current_pointer_with_its_copy_keeps_serving_and_is_reported(scraped, loaded_env, login, downtime):
    (snapshot_store(loaded_env).directory / "CURRENT").write_bytes(b"\x00\x01garbage")
    ready = scraped.test_client().get("/readyz", headers=SCRAPER)
    assert ready.status_code == 200
    pointer = ready.get_json()["checks"]["snapshot_pointer"]
    assert pointer["ok"] is False and "its copy names gen-000001, which serves" in pointer["reason"]
    assert "ヤマダ" in text_of(login("clerk1").get("/counter/?kana=ヤマダ"))
    run_alert_cycle(loaded_env)
    conn = open_ops(loaded_env)
    try:
        assert conn.execute("SELECT severity FROM alerts WHERE key = 'snapshot.pointer' AND resolved_at IS NULL").fetchone() == ("warning",)
    finally:
        conn.close()


def damage_everything_but_meta(store, generation: int) -> None:
    """A flipped byte in the root page of every table and index but the
    meta table: the generation opens and states its data-as-of, and every
    search fails."""
    path = store.path_of(generation)
    conn = connect_snapshot(path, store.key, readonly=True)
    try:
        roots = [page for (page,) in conn.execute(  # not the statistics either: the planner reads them on opening
            "SELECT rootpage FROM sqlite_master WHERE rootpage > 1 AND tbl_name NOT IN ('meta', 'sqlite_stat1', 'sqlite_stat4')")]
    finally:
        conn.close()
    data = bytearray(path.read_bytes())
    for page in roots:
        data[(page - 1) * 4096 + 200] ^= 0xFF
    path.write_bytes(bytes(data))


def test_readiness_follows_the_reads_of_a_damaged_current_generation(scraped, loaded_env, login, downtime):
    store = snapshot_store(loaded_env)
    web = scraped.test_client()
    assert web.get("/readyz").status_code == 200
    damage_everything_but_meta(store, 1)
    clerk = login("clerk1")
    with pytest.raises(crypto.DatabaseError, match="malformed"):
        clerk.get("/counter/?kana=ヤマダ")
    ready = web.get("/readyz", headers=SCRAPER)
    assert ready.status_code == 503
    reads = ready.get_json()["checks"]["snapshot_reads"]
    assert reads["ok"] is False and reads["errors"] == 1 and "sonae snapshot verify 1" in reads["detail"]
    run_alert_cycle(loaded_env)
    conn = open_ops(loaded_env)
    try:
        what = conn.execute("SELECT what FROM alerts WHERE key = 'snapshot.read_errors' AND resolved_at IS NULL").fetchone()
    finally:
        conn.close()
    assert what and "世代1の読み出しが1回失敗しました" in what[0]
    # IT's listing names the generation's failed reads: it opens, and says nothing else is wrong with it
    listing = run_sonae("snapshot", "list")
    assert listing.returncode == 0, listing.stderr
    assert "reads failed at the counters: 1 since" in listing.stdout and "run `sonae snapshot verify 1`" in listing.stdout
    (listed,) = json.loads(run_sonae("snapshot", "list", "--json").stdout)
    assert listed["state"] == "ok" and listed["read_errors"]["count"] == 1 and "malformed" in listed["read_errors"]["error"]


def test_a_generation_whose_meta_cannot_be_read_does_not_fail_every_page(scraped, loaded_env, login, downtime):
    store = snapshot_store(loaded_env)
    conn = connect_snapshot(store.path_of(1), store.key, readonly=True)
    try:
        (meta_root,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'meta'").fetchone()
    finally:
        conn.close()
    data = bytearray(store.path_of(1).read_bytes())
    data[(meta_root - 1) * 4096 + 200] ^= 0xFF
    store.path_of(1).write_bytes(bytes(data))
    page = login("it1").get("/monitor/")
    assert page.status_code == 200 and "住民記録の写しを開けません" in text_of(page)
    assert login("clerk1").get("/counter/").status_code == 503
    assert scraped.test_client().get("/readyz").status_code == 503

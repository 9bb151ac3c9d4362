"""A drill's register: synthetic residents loaded through the real loader
into the drill's own encrypted store. A drill counter searches, views and
issues from it and from nothing else — a real resident's name or code finds
nobody there — and nothing that reads the real register (snapshot list,
CURRENT, the metrics) sees it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from fallback import drills, modes
from fallback.drills import personas
from fallback.keys import drill_snapshot_key, master_key, snapshot_key
from fallback.mirror.registry import drill_snapshot_store, snapshot_store
from fallback.ops import open_ops
from sync import crypto
from sync.register import connect_snapshot
from tests.drills.support import SELF_REQUEST, case_codes, drill_register, start_drill
from tests.support import example_records, pdf_text, squeezed, text_of

REAL = {r["resident_code"]: r for r in example_records("residents")}
YAMADA_TARO = "10000000011"  # in the example register, the one the appliance loaded
TOKEN = "scrape-secret"


def api_codes(staff, **query) -> list[str]:
    answer = staff.get("/api/v1/residents", query_string=query)
    assert answer.status_code == 200, answer.get_json()
    return [r["resident_code"] for r in answer.get_json()["results"]]


def issued_rows(config) -> list[tuple]:
    conn = open_ops(config)
    try:
        return conn.execute("SELECT scope, subject_code, outcome FROM requests ORDER BY id").fetchall()
    finally:
        conn.close()


def test_a_drill_counter_finds_and_issues_synthetic_residents_and_never_a_real_one(appliance, login, tmp_path):
    config = appliance.config["SONAE"]
    drill_id = start_drill(config, participants=("clerk1",))
    clerk = login("clerk1")

    # the real 山田 太郎: not by kana, name, birth date or code
    for query in ({"kana": "ヤマダ"}, {"name": "山田"}, {"birth": "1975-06-15"}, {"code": YAMADA_TARO}):
        assert not set(api_codes(clerk, **query)) & REAL.keys(), query
    assert YAMADA_TARO not in text_of(clerk.get("/counter/?kana=ヤマダ"))
    for code in REAL:
        assert clerk.api("GET", f"/api/v1/residents/{code}").status_code == 404
    assert clerk.get(f"/counter/resident/{YAMADA_TARO}").status_code == 404
    assert clerk.get(f"/forms/request/{YAMADA_TARO}.pdf").status_code == 404
    # nor can an issuance target a real code, by the API or by the screen
    assert clerk.api("POST", f"/api/v1/residents/{YAMADA_TARO}/certificates", json=SELF_REQUEST).status_code == 404
    assert clerk.post(f"/counter/resident/{YAMADA_TARO}/issue", SELF_REQUEST).status_code == 404
    assert issued_rows(config) == []

    # a synthetic resident is found by their kana and issued, on drill paper
    with drill_register(config, drill_id) as register:
        person = register.resident(case_codes(config, drill_id)["ordinary"])
    assert person["resident_code"] in api_codes(clerk, kana=person["name_kana"], birth=person["birth_date"])
    assert person["name"] in text_of(clerk.get(f"/counter/resident/{person['resident_code']}"))
    issued = clerk.api("POST", f"/api/v1/residents/{person['resident_code']}/certificates", json=SELF_REQUEST)
    assert issued.status_code == 201
    printed = squeezed(pdf_text(clerk.get(issued.get_json()["certificates"][0]["pdf"]).data, tmp_path))
    assert squeezed(person["name"]) in printed and "訓練" in printed
    assert issued_rows(config) == [("drill", person["resident_code"], "issued")]

    # the other side of the boundary: in a real downtime the same clerk finds the real register, and only it
    drills.end(open_ops(config), drill_id, actor="coord")
    assert login("boss").post("/supervisor/mode", {"to_mode": "downtime", "reason": "住民記録システム障害"}).status_code == 302
    assert YAMADA_TARO in api_codes(clerk, kana="ヤマダ")
    assert clerk.api("GET", f"/api/v1/residents/{person['resident_code']}").status_code == 404


def test_an_active_drill_without_its_register_stays_locked_and_never_falls_back_to_the_real_one(appliance, login):
    config = appliance.config["SONAE"]
    conn = open_ops(config)
    drill_id = drills.create(conn, scenario="full_outage", title="", description="", planned_start="2026-09-15T09:00+09:00",
                             planned_end="2026-09-15T12:00+09:00", participants=["clerk1"], terminals=[], actor="coord")
    conn.execute("UPDATE drills SET status = 'active' WHERE id = ?", (drill_id,))  # as a restored backup could hold it
    conn.commit()
    clerk = login("clerk1")
    assert clerk.get("/api/v1/residents", query_string={"kana": "ヤマダ"}).status_code == 503
    assert clerk.api("GET", f"/api/v1/residents/{YAMADA_TARO}").status_code == 503
    page = clerk.get("/counter/?kana=ヤマダ")
    assert page.status_code == 503 and YAMADA_TARO not in text_of(page) and "訓練用の住民記録がまだ用意されていません" in text_of(page)
    assert clerk.get(f"/counter/resident/{YAMADA_TARO}").status_code == 503
    assert clerk.post(f"/counter/resident/{YAMADA_TARO}/issue", SELF_REQUEST).status_code == 503
    assert clerk.get(f"/forms/request/{YAMADA_TARO}.pdf").status_code == 503
    assert "訓練用の住民記録がまだ用意されていません" in text_of(clerk.get("/runbooks/"))  # every screen's banner says why


def test_the_drill_register_is_encrypted_under_its_own_key_and_invisible_to_the_real_register(appliance, login, configure_app):
    config = appliance.config["SONAE"]
    drill_id = start_drill(config)
    store = drill_snapshot_store(config, drill_id)
    path = store.path_of(store.current())
    assert path.is_relative_to(config.home / "drill-snapshots") and not path.is_relative_to(config.snapshot_dir)
    with drill_register(config, drill_id) as register:
        meta = register.meta
        names = [register.resident(code)["name"] for code in case_codes(config, drill_id).values() if code]
    assert meta.residents >= 2000 and meta.municipality_code == config["municipality"]["code"]
    assert "synthetic drill register" in meta.source  # loaded by the real loader, which records where from

    # encrypted: no SQLite header, no name in any file of the store; each key opens only its own store
    stored = b"".join(p.read_bytes() for p in store.directory.rglob("*") if p.is_file())
    assert not stored.startswith(b"SQLite format 3") and not [n for n in names if n.encode("utf-8") in stored]
    with pytest.raises(crypto.WrongKeyError):
        connect_snapshot(path, snapshot_key(config), readonly=True)
    with pytest.raises(crypto.WrongKeyError):
        connect_snapshot(snapshot_store(config).path_of(1), drill_snapshot_key(config), readonly=True)

    # the real register's list, CURRENT, metrics and status do not see it
    env = {**os.environ}
    listing = subprocess.run([sys.executable, "-m", "fallback.cli", "snapshot", "list", "--json"], capture_output=True, text=True, env=env)
    assert listing.returncode == 0, listing.stderr
    assert [(g["generation"], g["residents"]) for g in json.loads(listing.stdout)] == [(1, len(REAL))]
    assert snapshot_store(config).current() == 1
    metrics = configure_app(alerts={"metrics_token": TOKEN}).test_client().get(
        "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).get_data(as_text=True)
    assert f'sonae_snapshot_records{{kind="residents"}} {float(len(REAL))}' in metrics
    assert login("it1").api("GET", "/api/v1/status").get_json()["snapshot"]["residents"] == len(REAL)


def test_personas_prepared_before_the_start_stay_valid_when_the_start_dates_the_register_afresh(appliance, login):
    config = appliance.config["SONAE"]
    conn = open_ops(config)
    drill_id = drills.create(conn, scenario="full_outage", title="", description="", planned_start="2026-09-15T09:00+09:00",
                             planned_end="2026-09-15T12:00+09:00", participants=["clerk1"], terminals=[], actor="coord")
    chosen = {p.case_key: p.resident_code for p in personas.prepare(conn, config, drill_id, actor="coord")}
    with drill_register(config, drill_id) as register:
        before = {case: register.resident(code)["name"] for case, code in chosen.items() if code}

    drills.start(conn, config, drill_id, actor="coord", current_mode=modes.STANDBY)
    loads = [e.detail for e in drills.events(conn, drill_id) if e.event == "register_loaded"]
    assert len(loads) == 2 and loads[0]["seed"] == loads[1]["seed"] and loads[0]["as_of"] <= loads[1]["as_of"]  # dated afresh: the same second when quick
    store = drill_snapshot_store(config, drill_id)
    assert store.generation_numbers() == [2] and store.current() == 2  # the first one is pruned
    with drill_register(config, drill_id) as register:
        assert {case: register.resident(code)["name"] for case, code in chosen.items() if code} == before

    # a real outage suspends the drill; resuming keeps the register it had
    login("boss").post("/supervisor/mode", {"to_mode": "downtime", "reason": "住民記録システム障害"})
    login("boss").post("/supervisor/mode", {"to_mode": "recovery", "reason": "復旧"})
    drills.start(conn, config, drill_id, actor="coord", current_mode=modes.RECOVERY)
    assert drills.get(conn, drill_id).status == drills.ACTIVE
    assert store.current() == 2 and len([e for e in drills.events(conn, drill_id) if e.event == "register_loaded"]) == 2


def test_a_drill_whose_register_cannot_be_loaded_does_not_start_and_says_why(appliance, login):
    config = appliance.config["SONAE"]
    coordinator = login("coord")
    created = coordinator.post("/drills/new", {"scenario": "full_outage", "title": "訓練", "planned_start": "2026-09-15T09:00",
                                               "planned_end": "2026-09-15T12:00", "participants": ["clerk1"]})
    drill_id = int(created.headers["Location"].rstrip("/").rsplit("/", 1)[1])
    with drill_snapshot_store(config, drill_id).write_lock():  # another writer holds the drill's store
        coordinator.post(f"/drills/{drill_id}/start")
    page = text_of(coordinator.get(f"/drills/{drill_id}"))
    assert "訓練用の住民記録を用意できませんでした" in page and "another sync is running" in page
    assert drills.get(open_ops(config), drill_id).status == drills.PLANNED
    coordinator.post(f"/drills/{drill_id}/start")  # once the store is free, it starts
    assert drills.get(open_ops(config), drill_id).status == drills.ACTIVE


def test_key_rotation_reencrypts_the_drill_registers_too(loaded_env, tmp_path, monkeypatch):
    drill_id = start_drill(loaded_env)
    new_key_file = tmp_path / "etc" / "master-2027.key"
    sonae = [sys.executable, "-m", "fallback.cli"]
    assert subprocess.run([*sonae, "key", "init", str(new_key_file)], capture_output=True).returncode == 0
    old_key = drill_snapshot_key(loaded_env)
    rotated = subprocess.run([*sonae, "key", "rotate", "--new-key-file", str(new_key_file)], capture_output=True, text=True)
    assert rotated.returncode == 0, rotated.stderr
    path = drill_snapshot_store(loaded_env, drill_id).path_of(1)
    with pytest.raises(crypto.WrongKeyError):
        connect_snapshot(path, old_key, readonly=True)
    new_key = crypto.derive_key(crypto.read_key_file(new_key_file), "drill-snapshot")
    assert new_key != old_key and master_key(loaded_env) != crypto.read_key_file(new_key_file)
    connect_snapshot(path, new_key, readonly=True).close()

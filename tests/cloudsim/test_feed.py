"""The change feed: what happens in the ward, as gapless versioned changes,
and full exports consistent with it."""

from __future__ import annotations

import time

import pytest
import requests

from tests.cloudsim.client import read_export, read_feed
from tests.cloudsim.conftest import TOKEN, serve_copy

ADMIN = {"Authorization": f"Bearer {TOKEN}"}
EVENTS = 400
SPACE = "\u3000"


@pytest.fixture(scope="module")
def history(sim):
    """The initial export, then EVENTS events, then the whole feed."""
    _, before = read_export(sim.url, TOKEN, sim.public_key)
    response = requests.post(sim.admin_url + "/admin/changes", json={"events": EVENTS}, headers=ADMIN, timeout=300)
    assert response.status_code == 200
    changes = read_feed(sim.url, TOKEN, sim.public_key, after=0, limit=137)  # pages of odd size
    return before, changes


def upserts(changes, kind):
    return [c["record"] for c in changes if c["kind"] == kind and c["op"] == "upsert"]


def test_seq_is_gapless_and_every_change_is_valid(history):
    _, changes = history
    assert len(changes) >= EVENTS  # every event changes at least one record
    assert [c["seq"] for c in changes] == list(range(1, len(changes) + 1))


def test_versions_increase_and_updated_at_is_the_change_time(history):
    before, changes = history
    version = {r["resident_code"]: r["version"] for r in before["residents"]}
    version.update({s["seal_number"]: s["version"] for s in before["seals"]})
    for change in changes:
        if change["op"] == "upsert":
            record = change["record"]
            assert record["version"] > version.get(change["key"], 0), change
            assert record["updated_at"] == change["at"]
            version[change["key"]] = record["version"]


def test_all_kinds_of_events_happen(history):
    before, changes = history
    known = {r["resident_code"]: r for r in before["residents"]}
    residents = upserts(changes, "residents")
    new = [r for r in residents if r["resident_code"] not in known]
    moved_in = [r for r in new if r["previous_address"]]
    born = [r for r in new if r["resident_since"] == r["birth_date"] and r["relationship"] in ("子", "孫")]
    reasons = {r["removal"]["reason"] for r in residents if r["status"] == "removed"}
    moved_within = [r for r in residents if r["resident_code"] in known and r["address"] != known[r["resident_code"]]["address"]
                    and r["status"] == "active" and r["address_since"]]
    seals = upserts(changes, "seals")
    assert moved_in and born and moved_within
    assert {"国内転出", "死亡"} <= reasons
    assert any(r["planned_move_out"] for r in residents)
    assert any(s["status"] == "active" and s["version"] == 1 for s in seals)  # registered
    assert any(s["status"] == "revoked" for s in seals)
    assert any(r["foreign"] and r["foreign"]["period_expiry"] for r in residents if r["resident_code"] in known
               and r["foreign"] != known[r["resident_code"]]["foreign"])  # 在留期間更新
    assert {c["op"] for c in changes} == {"upsert", "delete"}


def test_a_marriage_changes_the_surname(history):
    before, changes = history
    known = {r["resident_code"]: r for r in before["residents"]}
    married = [r for r in upserts(changes, "residents") if r["resident_code"] in known and r["relationship"] == "妻"
               and known[r["resident_code"]]["relationship"] == "世帯主"]
    assert married
    for wife in married:
        old = known[wife["resident_code"]]
        assert wife["name"].split(SPACE)[0] != old["name"].split(SPACE)[0]
        assert wife["name"].split(SPACE)[1] == old["name"].split(SPACE)[1]  # same given name
        assert wife["name_kana"].split(SPACE)[1] == old["name_kana"].split(SPACE)[1]
        assert wife["household_id"] != old["household_id"] and wife["hitto"] == wife["head_name"]


def test_a_published_export_is_consistent_with_the_feed(sim, history):
    _, changes = history
    manifest = requests.post(sim.admin_url + "/admin/exports", headers=ADMIN, timeout=300).json()
    latest, records = read_export(sim.url, TOKEN, sim.public_key)
    assert latest == manifest
    assert manifest["last_seq"] == changes[-1]["seq"]
    exported = {r["resident_code"]: r for r in records["residents"]} | {s["seal_number"]: s for s in records["seals"]}
    final = {}
    for change in changes:
        final[change["key"]] = change["record"]
    for key, record in final.items():
        assert exported.get(key) == record


def test_changes_come_at_the_configured_rate_and_exports_on_schedule(generated_state, tmp_path):
    sim = serve_copy(generated_state, tmp_path / "state", change_rate=600, export_every=1)
    try:
        first_export = sim.export_id
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (read_feed(sim.url, TOKEN, sim.public_key, after=0) and sim.export_id != first_export):
            time.sleep(0.2)
        assert len(read_feed(sim.url, TOKEN, sim.public_key, after=0)) >= 2
        assert sim.export_id != first_export
    finally:
        sim.stop()


def test_changed_records_have_every_key_in_the_contract_order(history):
    from tests.conftest import example_records

    resident_keys, seal_keys = list(example_records("residents")[0]), list(example_records("seals")[0])
    _, changes = history
    for change in changes:
        if change["op"] == "upsert":
            assert list(change["record"]) == (resident_keys if change["kind"] == "residents" else seal_keys)


def test_the_contract_2_items_follow_the_events(history):
    """A move-out's destination is 予定 until a later change confirms it; a
    birth brings its 振り仮名; every change says what was notified."""
    before, changes = history
    residents = upserts(changes, "residents")
    unconfirmed = {r["resident_code"]: r for r in residents if r["removal"] and r["removal"]["reason"] == "国内転出"
                   and not r["removal"]["moved_to_confirmed"]}
    confirmed = [r for r in residents if r["resident_code"] in unconfirmed and r["removal"] and r["removal"]["moved_to_confirmed"]]
    assert confirmed
    for record in confirmed:
        moved_out = unconfirmed[record["resident_code"]]
        assert record["removal"]["moved_to"] == moved_out["removal"]["moved_to"] and record["removal"]["confirmed_on"]
        assert record["version"] == moved_out["version"] + 1
    known = {r["resident_code"] for r in before["residents"]}
    born = [r for r in residents if r["resident_code"] not in known and not r["previous_address"]]
    assert born and all(r["notified_reason"] == "出生" and r["furigana"] for r in born)
    moved = [r for r in residents if r["status"] == "active" and r["address_since"] and r["notified_reason"] == "転居"]
    assert moved
    assert {r["notified_reason"] for r in residents} >= {"転入", "転居", "出生", "転出"}

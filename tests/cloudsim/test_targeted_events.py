"""Targeted events on the admin port: an operator makes a move, a death, a
surname change or a seal revocation happen to one given resident, and the
change feed, the resident endpoint and the next export all show it."""

from __future__ import annotations

from collections import defaultdict

import pytest
import requests

from sync.contract import validate_change
from tests.cloudsim.client import read_export, read_feed, read_resident
from tests.cloudsim.conftest import TOKEN

ADMIN = {"Authorization": f"Bearer {TOKEN}"}
SPACE = "\u3000"


@pytest.fixture(scope="module")
def register(sim):
    """The register as exported before any targeted event: residents by code,
    households, and active seals by resident."""
    _, records = read_export(sim.url, TOKEN, sim.public_key)
    residents = {r["resident_code"]: r for r in records["residents"]}
    households = defaultdict(list)
    for record in residents.values():
        if record["status"] == "active":
            households[record["household_id"]].append(record)
    seals = defaultdict(list)
    for seal in records["seals"]:
        if seal["status"] == "active":
            seals[seal["resident_code"]].append(seal)
    return residents, households, seals


def event(sim, code: str, name: str) -> requests.Response:
    return requests.post(f"{sim.admin_url}/admin/residents/{code}/events", json={"event": name}, headers=ADMIN, timeout=30)


def current(sim, code: str) -> dict:
    record = read_resident(sim.url, TOKEN, sim.public_key, code)
    assert record is not None
    return record


def pick(sim, register, wanted):
    """An active resident for whom `wanted(record, household, seals)` holds and
    whom no earlier test of this module has changed."""
    residents, households, seals = register
    return next(r for r in residents.values() if r["status"] == "active" and wanted(r, households[r["household_id"]], seals)
                and all(current(sim, m["resident_code"]) == m for m in households[r["household_id"]]))


def test_a_move_changes_the_address_of_the_whole_household(sim, register):
    person = pick(sim, register, lambda r, household, seals: r["relationship"] != "世帯主" and len(household) >= 2)
    household = register[1][person["household_id"]]
    before = read_feed(sim.url, TOKEN, sim.public_key, after=0)
    response = event(sim, person["resident_code"], "move")
    assert response.status_code == 200
    changes = response.json()["changes"]
    assert {c["key"] for c in changes} == {m["resident_code"] for m in household}
    assert [c["seq"] for c in changes] == list(range(len(before) + 1, len(before) + 1 + len(changes)))
    assert response.json()["last_seq"] == changes[-1]["seq"]
    for change in changes:
        validate_change(change)
        old = register[0][change["key"]]
        assert change["record"]["address"] != old["address"]
        assert change["record"]["version"] == old["version"] + 1 and change["record"]["updated_at"] == change["at"]
    # what the feed serves is what the admin port answered, and the resident endpoint agrees
    assert read_feed(sim.url, TOKEN, sim.public_key, after=len(before)) == changes
    assert current(sim, person["resident_code"]) == next(c["record"] for c in changes if c["key"] == person["resident_code"])


def test_a_death_removes_the_resident_and_revokes_their_seal(sim, register):
    person = pick(sim, register, lambda r, household, seals: len(household) == 1 and seals[r["resident_code"]])
    response = event(sim, person["resident_code"], "death")
    assert response.status_code == 200
    changes = response.json()["changes"]
    removed = current(sim, person["resident_code"])
    assert removed["status"] == "removed" and removed["removal"]["reason"] == "死亡"
    assert removed["version"] == person["version"] + 1
    revoked = [c["record"] for c in changes if c["kind"] == "seals"]
    assert {s["seal_number"] for s in revoked} == {s["seal_number"] for s in register[2][person["resident_code"]]}
    assert all(s["status"] == "revoked" for s in revoked)
    # a removed resident cannot die again
    assert event(sim, person["resident_code"], "death").status_code == 409


def test_a_surname_change_renames_the_head_on_every_record_of_the_household(sim, register):
    head = pick(sim, register, lambda r, household, seals: r["relationship"] == "世帯主" and r["foreign"] is None
                and len(household) >= 2 and seals[r["resident_code"]])
    response = event(sim, head["resident_code"], "name_change")
    assert response.status_code == 200
    renamed = current(sim, head["resident_code"])
    assert renamed["name"].split(SPACE)[1] == head["name"].split(SPACE)[1]
    assert renamed["name_kana"].split(SPACE)[1] == head["name_kana"].split(SPACE)[1]
    assert renamed["name"] != head["name"] and renamed["head_name"] == renamed["name"]
    for member in register[1][head["household_id"]]:
        assert current(sim, member["resident_code"])["head_name"] == renamed["name"]
    seals = [c["record"] for c in response.json()["changes"] if c["kind"] == "seals"]
    assert seals and all(s["status"] == "revoked" for s in seals)


def test_a_surname_change_is_refused_for_a_foreign_resident(sim, register):
    person = pick(sim, register, lambda r, household, seals: r["foreign"] is not None)
    response = event(sim, person["resident_code"], "name_change")
    assert response.status_code == 409 and response.json()["error"] == "event_refused"
    assert current(sim, person["resident_code"]) == register[0][person["resident_code"]]


def test_a_seal_revocation_revokes_only_the_seal(sim, register):
    person = pick(sim, register, lambda r, household, seals: seals[r["resident_code"]])
    response = event(sim, person["resident_code"], "seal_revoked")
    assert response.status_code == 200
    changes = response.json()["changes"]
    assert {c["kind"] for c in changes} == {"seals"}
    before = {s["seal_number"]: s for s in register[2][person["resident_code"]]}
    assert {c["key"] for c in changes} == set(before)
    for change in changes:
        assert change["record"]["status"] == "revoked" and change["record"]["version"] == before[change["key"]]["version"] + 1
    assert current(sim, person["resident_code"]) == register[0][person["resident_code"]]  # the resident's record is untouched


def test_a_seal_revocation_is_refused_without_a_registered_seal(sim, register):
    person = pick(sim, register, lambda r, household, seals: not seals[r["resident_code"]])
    response = event(sim, person["resident_code"], "seal_revoked")
    assert response.status_code == 409 and "no registered seal" in response.json()["message"]


def test_unknown_residents_events_and_callers_are_refused(sim, register):
    person = pick(sim, register, lambda r, household, seals: True)
    assert event(sim, "99999999999", "move").status_code == 404
    assert event(sim, "not-a-code", "move").status_code == 404
    assert event(sim, person["resident_code"], "emigrate").status_code == 409
    anonymous = requests.post(f"{sim.admin_url}/admin/residents/{person['resident_code']}/events", json={"event": "move"}, timeout=30)
    assert anonymous.status_code == 401
    assert current(sim, person["resident_code"]) == register[0][person["resident_code"]]

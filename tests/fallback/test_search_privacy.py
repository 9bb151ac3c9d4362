"""What a result list gives away: a 支援措置 resident appears without an
address (screen and API), and what searches reveal counts toward the
flag for a clerk collecting residents, within the flag's window."""

from __future__ import annotations

import datetime as dt
import json

from fallback import audit
from fallback.counter import lookup
from fallback.ops import open_ops
from tests.clocks import set_clock_off
from tests.support import Staff, example_records, text_of

SATO_SUPPORT = "10000000087"
KANA = "アイウエオカキクケコサシスセソタチツテトナニヌネノハヒフヘホマミムメモヤユヨラリルレロワン"


def sato() -> dict:
    return next(r for r in example_records("residents") if r["resident_code"] == SATO_SUPPORT)


def test_a_support_measure_resident_is_listed_without_an_address(login, downtime):
    clerk = login("clerk1")
    results = clerk.api("GET", "/api/v1/residents?kana=サ").get_json()["results"]
    (listed,) = [r for r in results if r["resident_code"] == SATO_SUPPORT]
    assert listed["address"] is None and listed["support_measure"] is True and listed["name"] == sato()["name"]
    others = clerk.api("GET", "/api/v1/residents?kana=ヤマダ").get_json()["results"]
    assert others and all(r["address"]["town"] == "西蒲田七丁目" for r in others)  # everyone else keeps theirs
    page = text_of(clerk.get("/counter/?kana=サトウ"))
    assert sato()["name"] in page and "支援措置のため表示しません" in page
    assert sato()["address"]["town"] not in page and sato()["address"]["banchi"] not in page


def one_character_searches(clerk) -> set[str]:
    """The attack of the issue: every one-character kana, collecting the
    residents each result list shows."""
    seen = set()
    for kana in KANA:
        answer = clerk.api("GET", f"/api/v1/residents?kana={kana}")
        seen |= {r["resident_code"] for r in answer.get_json()["results"]}
    return seen


def flags(appliance, actor="clerk1") -> list[dict]:
    conn = open_ops(appliance.config["SONAE"])
    try:
        return [f for f in lookup.open_flags(conn, "") if f["clerk"] == actor]
    finally:
        conn.close()


def test_residents_collected_by_searching_are_flagged(appliance, login, downtime, configure_app):
    clerk = login("clerk1")
    seen = one_character_searches(clerk)
    assert len(seen) >= 10  # most of the example register, without opening one record
    assert flags(appliance) == []  # the default threshold (30) is above the example register's size
    other = Staff(configure_app(security={"view_flag_count": len(seen) - 1}), "clerk2")
    assert one_character_searches(other) == seen
    (flag,) = flags(appliance, "clerk2")
    assert flag["distinct_residents"] == len(seen)


def test_searches_and_views_count_together_and_only_above_the_threshold(appliance, downtime, configure_app):
    clerk = Staff(configure_app(security={"view_flag_count": 4}), "clerk1")
    clerk.api("GET", "/api/v1/residents?kana=ヤマダ")  # three residents shown
    clerk.get(f"/counter/resident/{SATO_SUPPORT}")  # a fourth opened: 4 is not above 4
    clerk.get("/counter/resident/10000000011")  # one already seen: still 4
    assert flags(appliance) == []
    clerk.api("GET", "/api/v1/residents?kana=タカハシ")  # a fifth
    (flag,) = flags(appliance)
    assert flag["distinct_residents"] == 5
    clerk.api("GET", "/api/v1/residents?kana=カツラギ")
    assert len(flags(appliance)) == 1  # once per window


def test_a_record_opened_counts_the_household_members_it_shows(appliance, downtime, configure_app):
    """A record shows each member of the household (name, birth date,
    address): an outside tester read 59 residents through 30 household
    heads' records, each counted as one, and was not flagged."""
    clerk = Staff(configure_app(security={"view_flag_count": 2}), "clerk1")
    clerk.get("/counter/resident/10000000011")  # 山田 太郎, with 花子 and 一郎 beside him
    (flag,) = flags(appliance)
    assert flag["distinct_residents"] == 3
    conn = open_ops(appliance.config["SONAE"])
    try:
        (detail,) = [json.loads(text) for (text,) in conn.execute("SELECT detail FROM audit WHERE action = 'view'")]
    finally:
        conn.close()
    assert detail == {"found": True, "household": ["10000000029", "10000000037"]}
    assert "3人を閲覧" in text_of(downtime.get("/supervisor/"))


def test_a_clerk_looking_up_more_often_than_anyone_at_a_counter_is_flagged_for_it(appliance, downtime, configure_app, monkeypatch):
    monkeypatch.setattr(lookup, "LOOK_UPS_READ", 2)
    clerk = Staff(configure_app(security={"view_flag_count": 30}), "clerk1")
    for _ in range(3):  # the same person again and again: never over 30 residents
        clerk.api("GET", "/api/v1/residents?code=10000000011")
    (flag,) = flags(appliance)
    assert (flag["distinct_residents"], flag["at_least"], flag["look_ups_over"]) == (1, True, 2)
    assert "10分間に1人以上を閲覧（検索・閲覧が2回を超えました）" in text_of(downtime.get("/supervisor/"))


# The appliance's clock is moved on between views rather than slept past a
# window of a second: a busy machine could take that second over two views.
MINUTE = dt.timedelta(minutes=1)


def test_what_was_seen_before_the_window_does_not_count(appliance, login, downtime, monkeypatch):
    clerk = login("clerk1")
    clerk.api("GET", "/api/v1/residents?kana=ヤマダ")
    clerk.api("GET", "/api/v1/residents?kana=タカハシ")
    set_clock_off(monkeypatch, 2 * MINUTE)
    clerk.api("GET", "/api/v1/residents?kana=カツラギ")
    conn = open_ops(appliance.config["SONAE"])
    assert not lookup.flag_bulk_viewing(conn, "clerk1", flag_count=1, window=MINUTE, drill=False)  # one in the last minute
    assert lookup.flag_bulk_viewing(conn, "clerk1", flag_count=4, window=5 * MINUTE, drill=False)  # five in the five minutes
    assert not lookup.flag_bulk_viewing(conn, "clerk1", flag_count=4, window=5 * MINUTE, drill=False)  # already flagged


def test_counting_stops_past_the_threshold_and_the_flag_records_every_resident_seen(appliance, downtime, configure_app):
    """Every search counts what its clerk saw in the window; the count stops
    as soon as it is past the threshold, and the flag, raised then, records
    the full figure."""
    clerk = Staff(configure_app(security={"view_flag_count": 1}), "clerk1")
    clerk.api("GET", "/api/v1/residents?kana=ヤマダ")  # three residents shown at once
    (flag,) = flags(appliance)
    assert flag["distinct_residents"] == 3
    conn = open_ops(appliance.config["SONAE"])
    try:
        since = "2000-01-01"
        assert lookup.residents_seen(conn, "clerk1", since, stop_after=2) == 2
        assert lookup.residents_seen(conn, "clerk1", since, stop_after=4) == 3
        assert lookup.residents_seen(conn, "clerk1", since) == 3
    finally:
        conn.close()


def test_records_opened_before_the_window_do_not_count_nor_does_an_older_flag(appliance, login, downtime, monkeypatch):
    clerk = login("clerk1")
    for code in ("10000000011", "10000000029", "10000000037"):
        clerk.get(f"/counter/resident/{code}")
    set_clock_off(monkeypatch, 2 * MINUTE)
    clerk.get("/counter/resident/10000000045")
    conn = open_ops(appliance.config["SONAE"])
    assert not lookup.flag_bulk_viewing(conn, "clerk1", flag_count=1, window=MINUTE, drill=False)  # one in the last minute
    assert lookup.flag_bulk_viewing(conn, "clerk1", flag_count=3, window=5 * MINUTE, drill=False)  # four in the five minutes
    set_clock_off(monkeypatch, 4 * MINUTE)
    for code in ("10000000053", "10000000061"):
        clerk.get(f"/counter/resident/{code}")
    # the flag above is older than this window: two opened in the last minute is a new flag
    assert lookup.flag_bulk_viewing(conn, "clerk1", flag_count=1, window=MINUTE, drill=False)


def views(appliance, actor="clerk1") -> list[tuple[str, bool]]:
    conn = open_ops(appliance.config["SONAE"])
    try:
        return [(target, bool(found)) for target, found in conn.execute(
            "SELECT target, json_extract(detail, '$.found') FROM audit WHERE actor = ? AND action = 'view' ORDER BY id", (actor,))]
    finally:
        conn.close()


def test_a_form_sent_for_a_resident_never_opened_is_a_view_audited_and_counted(appliance, downtime, configure_app):
    """A refused form answers with the resident's whole page (name, birth
    date, address, household, seals): sent for residents the clerk never
    opened, each is a view — audited, found or not, and counted towards the
    flag — or refused forms would read the register around the audit. So is
    a request through the API for a resident never opened."""
    clerk = Staff(configure_app(security={"view_flag_count": 3}), "clerk1")
    unopened = ["10000000011", "10000000029", "10000000037", "10000000045"]
    refused = [
        clerk.post(f"/counter/resident/{unopened[0]}/issue", data={"kind": "juminhyo"}),
        clerk.post(f"/holds/new/{unopened[1]}", data={"kind": ""}),
        clerk.post("/filings/new", data={"resident_code": unopened[2], "kind": ""}),
        clerk.api("POST", f"/api/v1/residents/{unopened[3]}/certificates",  # issued: a request by code opens the record too
                  json={"kind": "juminhyo", "requester_type": "self", "identity_document": "運転免許証", "copies": 1}),
        clerk.post("/counter/resident/99999999999/issue", data={"kind": "juminhyo"}),
    ]
    assert [r.status_code for r in refused] == [422, 422, 422, 201, 404]
    assert views(appliance) == [(code, True) for code in unopened] + [("99999999999", False)]
    (flag,) = flags(appliance)  # four residents opened through forms: above 3
    assert flag["distinct_residents"] == 4


def test_a_form_sent_from_the_page_the_clerk_opened_is_not_audited_again(appliance, login, downtime):
    clerk = login("clerk1")
    code = "10000000011"
    clerk.get(f"/counter/resident/{code}")
    for _ in range(2):
        assert clerk.post(f"/counter/resident/{code}/issue", data={"kind": "juminhyo"}).status_code == 422
    assert clerk.post(f"/holds/new/{code}", data={"kind": ""}).status_code == 422
    assert views(appliance) == [(code, True)]


def test_the_desk_says_which_flag_was_raised_in_a_drill(appliance, downtime):
    conn = open_ops(appliance.config["SONAE"])
    try:
        audit.record(conn, "clerk1", "view", "10000000011", {"found": True}, drill=True)
        assert lookup.flag_bulk_viewing(conn, "clerk1", flag_count=0, window=dt.timedelta(minutes=10), drill=True)
    finally:
        conn.close()
    assert "訓練の架空の住民記録で、10分間に1人を閲覧" in text_of(downtime.get("/supervisor/"))

"""Holds recorded at the counter change what it issues at once, by kind,
through the real app and API; each in both directions at its boundary.
Example register: 山田 household (太郎 世帯主 with seal S00000011, 花子,
一郎), 髙橋﨑子, 葛󠄂城辻󠄂, 佐藤美咲 (支援措置), 田中健 (planned move-out),
中村翔."""

from __future__ import annotations

import json

import pytest

from fallback import audit
from fallback.ops import open_ops
from tests.support import PASSWORD, text_of

YAMADA_TARO, YAMADA_HANAKO, YAMADA_ICHIRO = "10000000011", "10000000029", "10000000037"
TAKAHASHI, KATSURAGI, TANAKA_MOVING, NAKAMURA = "10000000045", "10000000053", "10000000100", "10000000126"
# Issued more than once to the same person on purpose: the same-day repeat is confirmed.
SELF_REQUEST = {"kind": "juminhyo", "requester_type": "self", "identity_document": "運転免許証", "copies": 1, "confirm_repeat": True}
AGENT = {"requester_type": "agent", "requester_name": "代理　人", "delegation_letter": True}


def issue(clerk, code, **fields):
    return clerk.api("POST", f"/api/v1/residents/{code}/certificates", json={**SELF_REQUEST, **fields})


def refused_by(response) -> str | None:
    assert response.status_code in (201, 422), response.get_json()
    return None if response.status_code == 201 else response.get_json()["rule"]


def record_hold(staff, code, kind, **fields):
    return staff.post(f"/holds/new/{code}", {"kind": kind, **fields})


def hold_rows(appliance) -> list[dict]:
    conn = open_ops(appliance.config["SONAE"])
    try:
        return [dict(zip(("id", "kind", "resident_code", "seal_number", "recorded_by", "confirmed_by", "status", "details"), row))
                for row in conn.execute("SELECT id, kind, resident_code, seal_number, recorded_by, confirmed_by, status, details FROM holds")]
    finally:
        conn.close()


# --- who records a hold ---------------------------------------------------------------


def test_a_supervisor_records_a_hold_alone_and_it_is_audited(appliance, downtime):
    boss = downtime
    assert record_hold(boss, NAKAMURA, "note", note="本人確認を厳しく（なりすましの相談あり）").status_code == 302
    (row,) = hold_rows(appliance)
    assert (row["kind"], row["resident_code"], row["recorded_by"], row["confirmed_by"], row["status"]) == (
        "note", NAKAMURA, "boss", "boss", "active")
    conn = open_ops(appliance.config["SONAE"])
    entries = [e for e in audit.entries(conn, action="hold.record")]
    assert [(e["actor"], e["target"], e["detail"]["kind"]) for e in entries] == [("boss", NAKAMURA, "note")]


def test_a_clerk_needs_a_supervisors_confirmation_that_is_not_their_own(appliance, login, downtime):
    clerk = login("clerk1")
    hold = {"note": "裁判所からの照会（令和8年（モ）第1号）"}
    alone = record_hold(clerk, NAKAMURA, "court_police", **hold)
    assert alone.status_code == 422 and "係長" in text_of(alone)
    by_another_clerk = record_hold(clerk, NAKAMURA, "court_police", approver="clerk2", approver_password=PASSWORD, **hold)
    assert by_another_clerk.status_code == 422
    self_confirmed = record_hold(clerk, NAKAMURA, "court_police", approver="clerk1", approver_password=PASSWORD, **hold)
    assert self_confirmed.status_code == 422
    assert hold_rows(appliance) == []
    confirmed = record_hold(clerk, NAKAMURA, "court_police", approver="boss", approver_password=PASSWORD, **hold)
    assert confirmed.status_code == 302
    (row,) = hold_rows(appliance)
    assert (row["recorded_by"], row["confirmed_by"]) == ("clerk1", "boss")


def test_a_hold_is_recorded_only_while_the_counter_is_open(login):
    boss = login("boss")  # standby: the box is not a second register
    assert record_hold(boss, NAKAMURA, "note", note="x").status_code == 423


@pytest.mark.parametrize("kind, fields, problem", [
    ("death", {}, "死亡日"),
    ("move_out", {"date": "R8.12.1"}, "転出先"),
    ("move_out", {"date": "R8.2.30", "moved_to": "横浜市"}, "存在しない"),
    ("seal_lost", {}, "印鑑登録"),
    ("note", {}, "保留の内容"),
])
def test_a_hold_missing_what_its_kind_needs_is_refused(appliance, downtime, kind, fields, problem):
    response = record_hold(downtime, YAMADA_TARO, kind, **fields)
    assert response.status_code == 422
    assert problem in text_of(response)
    assert hold_rows(appliance) == []


# --- what each kind changes -------------------------------------------------------------


def test_a_lost_seal_card_stops_that_seals_certificates_only(appliance, login, downtime):
    clerk = login("clerk1")
    seal = {"kind": "inkan", "identity_document": "印鑑登録証", "seal_card_number": "C00000011"}
    assert refused_by(issue(clerk, YAMADA_TARO, **seal)) is None
    assert record_hold(downtime, YAMADA_TARO, "seal_lost", seal_number="S00000011").status_code == 302
    refused = issue(clerk, YAMADA_TARO, **seal)
    assert refused_by(refused) == "seal_held" and "亡失届" in refused.get_json()["message"]
    # a found card tells its finder nothing: the wrong number is refused the same way
    assert refused_by(issue(clerk, YAMADA_TARO, **{**seal, "seal_card_number": "C99999999"})) == "seal_held"
    assert refused_by(issue(clerk, YAMADA_TARO)) is None  # the 住民票 is not the seal's
    assert refused_by(issue(clerk, TAKAHASHI, **{**seal, "seal_card_number": "C00000045"})) is None  # another seal


def test_a_death_stops_the_persons_certificates_and_the_household_without_them_is_issued(appliance, login, downtime):
    clerk = login("clerk1")
    assert record_hold(downtime, YAMADA_HANAKO, "death", occurred_on="R8.11.20").status_code == 302
    own = issue(clerk, YAMADA_HANAKO)
    assert refused_by(own) == "death_held" and "死亡日 令和8年11月20日" in own.get_json()["message"]
    # no 除票 to copy yet: not the active resident's "choose the 住民票" answer
    assert refused_by(issue(clerk, YAMADA_HANAKO, kind="johyo")) == "death_held"
    assert refused_by(issue(clerk, YAMADA_HANAKO, kind="kisai")) == "death_held"
    whole = issue(clerk, YAMADA_TARO, whole_household=True)
    assert refused_by(whole) == "death_held" and "山田　花子" in whole.get_json()["message"]
    assert refused_by(issue(clerk, YAMADA_TARO, members=[YAMADA_TARO, YAMADA_ICHIRO])) is None


def test_a_move_out_received_is_the_planned_move_rule_as_the_upstreams(appliance, login, downtime):
    clerk = login("clerk1")
    assert refused_by(issue(clerk, NAKAMURA)) is None
    assert record_hold(downtime, NAKAMURA, "move_out", date="R8.12.1", moved_to="神奈川県横浜市中区日本大通1番地").status_code == 302
    held, upstream = issue(clerk, NAKAMURA), issue(clerk, TANAKA_MOVING)
    assert refused_by(held) == refused_by(upstream) == "planned_move_out"
    acknowledged = issue(clerk, NAKAMURA, acknowledge_move_out=True)
    assert refused_by(acknowledged) is None and "planned_move_out" in acknowledged.get_json()["flags"]
    # the record the counter reads says it as the upstream says a planned move
    record = clerk.api("GET", f"/api/v1/residents/{NAKAMURA}").get_json()
    assert record["resident"]["planned_move_out"] is True
    assert [h["kind"] for h in record["holds"]] == ["move_out"]
    conn = open_ops(appliance.config["SONAE"])
    printed = json.loads(conn.execute("SELECT printed_records FROM certificates ORDER BY serial DESC LIMIT 1").fetchone()[0])
    assert printed["residents"][0]["record"]["planned_move_out"] == {"date": "2026-12-01", "moved_to": "神奈川県横浜市中区日本大通1番地"}


def test_an_urgent_support_measure_applies_every_support_measure_rule(appliance, login, downtime):
    clerk = login("clerk1")
    assert refused_by(issue(clerk, TAKAHASHI, **AGENT)) is None
    results = clerk.api("GET", f"/api/v1/residents?code={TAKAHASHI}").get_json()["results"]
    assert results[0]["address"] is not None
    assert record_hold(downtime, TAKAHASHI, "support_measure").status_code == 302
    assert refused_by(issue(clerk, TAKAHASHI, **AGENT)) == "support_measure"
    assert refused_by(issue(clerk, TAKAHASHI)) is None  # the resident themself
    (found,) = clerk.api("GET", f"/api/v1/residents?code={TAKAHASHI}").get_json()["results"]
    assert found["address"] is None and found["support_measure"] is True and found["holds"][0]["kind"] == "support_measure"
    page = text_of(clerk.get(f"/counter/?code={TAKAHASHI}"))
    assert "支援措置のため表示しません" in page and "保留：仮支援措置" in page
    # the printed request form is blank for a 支援措置 person, as for the upstream's
    assert "blank-form-link" in clerk.get(f"/counter/resident/{TAKAHASHI}").get_data(as_text=True)


def test_an_urgent_support_measure_protects_the_address_of_the_persons_household_in_result_lists(appliance, login, downtime):
    """The household's address is the protected person's: the members'
    rows in a result list withhold it (as their records do), and a search
    by address finds none of them — a guess of it cannot be tested. Other
    residents of the same town are found as before."""
    clerk = login("clerk1")
    assert record_hold(downtime, YAMADA_HANAKO, "support_measure").status_code == 302
    listed = {r["resident_code"]: r for r in clerk.api("GET", "/api/v1/residents?kana=ヤマダ").get_json()["results"]}
    assert set(listed) == {YAMADA_TARO, YAMADA_HANAKO, YAMADA_ICHIRO}
    assert all(r["address"] is None and r["household_id"] is None and r["head_name"] is None for r in listed.values())
    page = text_of(clerk.get("/counter/?kana=ヤマダ"))
    assert "西蒲田七丁目" not in page and "49番1号" not in page and page.count("支援措置のため表示しません") == 6
    for address in ("西蒲田七丁目49", "西蒲田7-49-1", "東京都大田区西蒲田七丁目"):
        found = clerk.api("GET", f"/api/v1/residents?address={address}").get_json()["results"]
        assert {r["resident_code"] for r in found} <= {NAKAMURA}, address
    assert [r["resident_code"] for r in clerk.api("GET", "/api/v1/residents?address=西蒲田七丁目&kana=ナカムラ").get_json()["results"]] == [NAKAMURA]
    assert clerk.api("GET", "/api/v1/residents?address=西蒲田七丁目&kana=ヤマダ").get_json()["results"] == []


@pytest.mark.parametrize("kind", ["court_police", "note"])
def test_a_court_police_or_free_hold_needs_another_supervisors_approval(appliance, login, downtime, kind):
    clerk = login("clerk1")
    assert record_hold(downtime, KATSURAGI, kind, note="照会あり：交付したら連絡").status_code == 302
    refused = issue(clerk, KATSURAGI)
    assert refused_by(refused) == "hold_approval" and "照会あり" in refused.get_json()["message"]
    assert refused_by(issue(clerk, KATSURAGI, approver="clerk1", approver_password=PASSWORD)) == "approval_failed"
    approved = issue(clerk, KATSURAGI, approver="boss2", approver_password=PASSWORD)
    assert refused_by(approved) is None and "hold_approved" in approved.get_json()["flags"]
    page = clerk.get(f"/counter/resident/{KATSURAGI}").get_data(as_text=True)
    assert 'id="hold-approval"' in page and 'id="hold-notices"' in page


# --- shown wherever the person appears ---------------------------------------------------


def test_a_hold_shows_in_search_results_the_household_and_the_api(appliance, login, downtime):
    clerk = login("clerk1")
    assert record_hold(downtime, YAMADA_ICHIRO, "note", note="窓口で確認").status_code == 302
    search = text_of(clerk.get("/counter/?kana=ヤマダ"))
    assert search.count("保留：その他の保留") == 1
    household = clerk.get(f"/counter/resident/{YAMADA_TARO}").get_data(as_text=True)
    assert "保留：その他の保留" in household and 'id="hold-notices"' not in household  # 太郎 has none; 一郎's tag is on his row
    api = clerk.api("GET", f"/api/v1/residents/{YAMADA_ICHIRO}").get_json()
    assert api["holds"][0]["text"] == "その他の保留（窓口で確認）"
    assert clerk.api("GET", f"/api/v1/residents/{YAMADA_TARO}").get_json()["holds"] == []


# --- until a supervisor reconciles them -----------------------------------------------------


def load_new_export(appliance, change):
    """A newer full export of the example register, changed by `change`
    (residents, seals), loaded through the real sync."""
    from fallback.mirror.syncing import run_full_sync
    from tests.support import example_records, write_export

    residents, seals = example_records("residents"), example_records("seals")
    change(residents, seals)
    config = appliance.config["SONAE"]
    run_full_sync(config, source_dir=write_export(config.home.parent / "export-2", residents, seals), actor="test")


def test_a_hold_survives_a_new_snapshot_and_is_offered_for_reconciling_once_the_register_says_the_same(appliance, login, downtime):
    clerk, boss = login("clerk1"), downtime
    assert record_hold(boss, YAMADA_TARO, "seal_lost", seal_number="S00000011").status_code == 302
    assert record_hold(boss, NAKAMURA, "move_out", date="R8.12.1", moved_to="横浜市").status_code == 302

    def revoke_taros_seal(residents, seals):
        seal = next(s for s in seals if s["seal_number"] == "S00000011")
        seal.update(status="revoked", version=seal["version"] + 1)

    load_new_export(appliance, revoke_taros_seal)
    assert refused_by(issue(clerk, NAKAMURA)) == "planned_move_out"  # the new snapshot has no move: the hold still holds
    listing = boss.get("/holds/")
    page = listing.get_data(as_text=True)
    rows = {row["kind"]: row["id"] for row in hold_rows(appliance)}
    seal_row = page.split(f'id="hold-{rows["seal_lost"]}"')[1].split("</tr>")[0]
    move_row = page.split(f'id="hold-{rows["move_out"]}"')[1].split("</tr>")[0]
    assert "住民記録に反映済み" in seal_row and "住民記録に反映済み" not in move_row
    assert boss.post(f"/holds/{rows['move_out']}/reconcile", {"note": "誤って記録"}).status_code == 302
    assert refused_by(issue(clerk, NAKAMURA)) is None
    assert {row["kind"]: row["status"] for row in hold_rows(appliance)} == {"seal_lost": "active", "move_out": "reconciled"}
    conn = open_ops(appliance.config["SONAE"])
    assert [e["detail"] for e in audit.entries(conn, action="hold.reconcile")] == [{"hold": rows["move_out"], "kind": "move_out", "note": "誤って記録"}]
    assert [e["actor"] for e in audit.entries(conn, action="holds.list")] == ["boss"]


def test_the_hold_list_is_for_supervisors_and_stays_open_after_the_outage(appliance, login, downtime):
    assert record_hold(downtime, NAKAMURA, "note", note="x").status_code == 302
    assert login("clerk1").get("/holds/").status_code == 403
    for to_mode in ("recovery", "standby"):
        downtime.post("/supervisor/mode", {"to_mode": to_mode, "reason": "復旧"})
        assert "中村　翔" in text_of(downtime.get("/holds/"))


def test_a_deferred_request_for_a_protected_person_or_household_is_marked_wherever_it_is_listed(appliance, login, downtime):
    """A request deferred for someone under a 支援措置 — the register's, or
    a 仮支援措置 recorded after the request was taken — or living with
    such a person is marked on every list and in the CSV, saying which, so
    whoever takes it up after the outage follows those rules (no address
    read out on the phone, no posting to whoever asks). The outside
    tester's findings: typing a code there told a clerk whether the person
    was protected with no 支援措置 view on the supervisor's desk, and a
    hold reconciled before the register carried the measure took the mark
    off requests recorded while it held."""
    clerk = login("clerk1")
    for code, name in ((YAMADA_ICHIRO, "山田　一郎"), (TAKAHASHI, "高橋　健"), (NAKAMURA, "中村　一")):
        saved = clerk.post("/counter/deferred", {"kind": "tenkyo", "name": name, "contact": "090-0000-0000", "delivery": "phone",
                                                 "consent": "1", "resident_code": code})
        assert saved.status_code == 200, text_of(saved)
    unmarked = clerk.get("/counter/deferred").get_data(as_text=True)
    assert "tag-support" not in unmarked
    assert record_hold(downtime, YAMADA_HANAKO, "support_measure").status_code == 302  # 一郎's household
    assert record_hold(downtime, TAKAHASHI, "support_measure").status_code == 302  # the person themself

    rows = {r["resident_code"]: r for r in clerk.api("GET", "/api/v1/deferred").get_json()["deferred"]}
    assert {code: r["support_measure"] for code, r in rows.items()} == {YAMADA_ICHIRO: "household", TAKAHASHI: "self", NAKAMURA: None}
    for page in (clerk.get("/counter/deferred"), downtime.get("/supervisor/")):
        html = page.get_data(as_text=True)
        assert page.status_code == 200 and "支援措置（本人）" in html and "支援措置（同じ世帯）" in html, html
    csv_lines = downtime.get("/counter/deferred.csv").get_data(as_text=True).splitlines()
    assert csv_lines[0].endswith(",支援措置")
    marks = {line.split(",")[5]: line.rsplit(",", 1)[1] for line in csv_lines[1:]}
    assert marks == {YAMADA_ICHIRO: "対象（同じ世帯）", TAKAHASHI: "対象（本人）", NAKAMURA: ""}

    # Recorded while the hold holds: a view put before the supervisors, and a mark that outlives the hold.
    later = clerk.post("/counter/deferred", {"kind": "tenkyo", "name": "山田　一郎", "contact": "090-0000-0001", "delivery": "phone",
                                             "consent": "1", "resident_code": YAMADA_ICHIRO})
    assert later.status_code == 200
    conn = open_ops(appliance.config["SONAE"])
    seen = conn.execute("SELECT actor, target, detail FROM audit WHERE action = 'support_measure.view'").fetchall()
    assert [(actor, target) for actor, target, _ in seen] == [("clerk1", YAMADA_ICHIRO)]
    assert json.loads(seen[0][2])["deferred_request"] is True and json.loads(seen[0][2])["household_member"] is True
    assert conn.execute("SELECT count(*) FROM audit WHERE action = 'view' AND target = ?", (YAMADA_ICHIRO,)).fetchone()[0] == 2
    (hold_id,) = [h["id"] for h in hold_rows(appliance) if h["resident_code"] == YAMADA_HANAKO]
    assert downtime.post(f"/holds/{hold_id}/reconcile").status_code == 302
    ichiro = [r for r in clerk.api("GET", "/api/v1/deferred").get_json()["deferred"] if r["resident_code"] == YAMADA_ICHIRO]
    assert [r["support_measure"] for r in ichiro] == [None, "household"]  # the one taken while the hold held keeps its mark


def test_a_deferred_request_is_marked_unknown_while_no_register_can_be_read(appliance, login, downtime):
    clerk = login("clerk1")
    assert clerk.post("/counter/deferred", {"kind": "tenkyo", "name": "高橋　健", "contact": "090-0000-0000", "delivery": "phone",
                                            "consent": "1", "resident_code": TAKAHASHI}).status_code == 200
    config = appliance.config["SONAE"]
    config.snapshot_dir.rename(config.home / "snapshots-away")  # the copy unreadable: lost, or being restored
    (row,) = clerk.api("GET", "/api/v1/deferred").get_json()["deferred"]
    assert row["support_measure"] == "unknown"
    assert "支援措置：未確認" in clerk.get("/counter/deferred").get_data(as_text=True)

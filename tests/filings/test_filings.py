"""届出 received at the counter: recorded as structured data with the
届出日, the clerk, the notifier and the documents seen; a 転出届, a 死亡
and a 廃止届 create their hold in the same transaction; who may record and
see them. Through the real app (example register: 山田 household 太郎 with
seal S00000011, 花子, 一郎; 中村翔)."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest

from fallback import audit
from fallback.ops import now, open_ops
from tests.support import PASSWORD, text_of

YAMADA_TARO, YAMADA_HANAKO, YAMADA_ICHIRO, NAKAMURA = "10000000011", "10000000029", "10000000037", "10000000126"
BASE = {"notified_on": "R8.11.20", "notifier_name": "山田　太郎", "notifier_relation": "self", "documents": "運転免許証"}


def record(staff, code, kind, fields, members=(), **extra):
    data = {**BASE, "resident_code": code, "kind": kind, **{f"{kind}:{key}": value for key, value in fields.items()}, **extra}
    if members:
        data["members"] = list(members)
    return staff.post("/filings/new", data)


def saved_id(response) -> int:
    assert response.status_code == 302, text_of(response)[:600]
    return int(re.search(r"/filings/(\d+)$", response.headers["Location"]).group(1))


def rows(appliance, sql, params=()):
    conn = open_ops(appliance.config["SONAE"])
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def test_a_move_out_records_its_items_and_a_planned_move_hold_for_each_person(appliance, login, downtime):
    filing_id = saved_id(record(downtime, YAMADA_TARO, "tenshutsu", {"planned_move_out.date": "R8.12.1", "planned_move_out.moved_to": "横浜市中区"},
                                members=[YAMADA_TARO, YAMADA_HANAKO]))
    ((kind, notified_on, clerk, office, documents, persons, fields),) = rows(
        appliance, "SELECT kind, notified_on, clerk, office, documents, persons, fields FROM filings")
    assert (kind, notified_on, clerk, office, json.loads(documents)) == ("tenshutsu", "2026-11-20", "boss", "本庁", ["運転免許証"])
    assert [p["resident_code"] for p in json.loads(persons)] == [YAMADA_TARO, YAMADA_HANAKO]
    assert json.loads(persons)[1]["name"] == "山田　花子"
    assert json.loads(fields) == {"planned_move_out.date": "2026-12-01", "planned_move_out.moved_to": "横浜市中区"}
    holds = rows(appliance, "SELECT kind, resident_code, filing_id, details FROM holds ORDER BY id")
    assert [(k, c, f) for k, c, f, _ in holds] == [("move_out", YAMADA_TARO, filing_id), ("move_out", YAMADA_HANAKO, filing_id)]
    assert json.loads(holds[0][3]) == {"date": "2026-12-01", "moved_to": "横浜市中区"}
    clerk = login("clerk1")
    issued = clerk.api("POST", f"/api/v1/residents/{YAMADA_ICHIRO}/certificates",
                       json={"kind": "juminhyo", "requester_type": "self", "identity_document": "運転免許証"})
    assert issued.status_code == 201  # 一郎 stays: not on the 転出届
    refused = clerk.api("POST", f"/api/v1/residents/{YAMADA_HANAKO}/certificates",
                        json={"kind": "juminhyo", "requester_type": "self", "identity_document": "運転免許証"})
    assert refused.status_code == 422 and refused.get_json()["rule"] == "planned_move_out"
    conn = open_ops(appliance.config["SONAE"])
    (entry,) = audit.entries(conn, action="filing.record")
    assert entry["detail"]["persons"] == [YAMADA_TARO, YAMADA_HANAKO] and len(entry["detail"]["holds"]) == 2
    page = text_of(downtime.get(f"/filings/{filing_id}"))
    assert f"受付番号 {filing_id}" in page and "転出届の受理（転出予定日 2026-12-01、転出先 横浜市中区）" in page


def test_a_clerk_records_a_death_only_with_a_supervisors_confirmation(appliance, login, downtime):
    clerk = login("clerk1")
    death = {"removal.occurred_on": "R8.11.19"}
    refused = record(clerk, YAMADA_HANAKO, "shibo", death, notifier_relation="koseki", documents="戸籍の通知")
    assert refused.status_code == 422 and "係長の確認" in text_of(refused)
    assert rows(appliance, "SELECT count(*) FROM filings") == [(0,)] and rows(appliance, "SELECT count(*) FROM holds") == [(0,)]
    saved_id(record(clerk, YAMADA_HANAKO, "shibo", death, notifier_relation="koseki", documents="戸籍の通知",
                    approver="boss", approver_password=PASSWORD))
    assert rows(appliance, "SELECT kind, resident_code, recorded_by, confirmed_by FROM holds") == [("death", YAMADA_HANAKO, "clerk1", "boss")]
    assert rows(appliance, "SELECT confirmed_by FROM filings") == [("boss",)]


def test_a_clerk_records_a_move_within_the_ward_alone(appliance, login, downtime):
    clerk = login("clerk1")
    saved_id(record(clerk, NAKAMURA, "tenkyo", {"address_since": "2026-11-18", "address.town": "西蒲田七丁目", "address.banchi": "49番1号"}))
    assert rows(appliance, "SELECT kind, clerk, confirmed_by FROM filings") == [("tenkyo", "clerk1", None)]
    assert rows(appliance, "SELECT count(*) FROM holds") == [(0,)]


@pytest.mark.parametrize("reason, hold", [("亡失", "seal_lost"), ("廃止", "seal_abolished")])
def test_an_abolition_holds_the_seal_by_its_reason(appliance, downtime, reason, hold):
    saved_id(record(downtime, YAMADA_TARO, "inkan_haishi", {"seal_number": "S00000011", "reason": reason}, documents="印鑑登録証"))
    assert rows(appliance, "SELECT kind, seal_number FROM holds") == [(hold, "S00000011")]


def test_a_move_in_takes_the_people_moving_in_with_dates_in_wareki(appliance, downtime):
    data = {**BASE, "kind": "tennyu", "resident_code": "", "notifier_name": "転入　花子", "documents": ["転出証明書", "マイナンバーカード"],
            "tennyu:resident_since": "R8.11.15", "tennyu:previous_address": "神奈川県横浜市中区日本大通1番地",
            "tennyu:address.town": "西蒲田七丁目", "tennyu:address.banchi": "49番1号", "tennyu:head_name": "転入　花子",
            "p1_name": "転入　花子", "p1_name_kana": "テンニュウ　ハナコ", "p1_birth_date": "S50.6.15", "p1_sex": "女", "p1_relationship": "世帯主"}
    saved_id(downtime.post("/filings/new", data))
    ((persons, fields, documents),) = rows(appliance, "SELECT persons, fields, documents FROM filings")
    assert json.loads(persons) == [{"name": "転入　花子", "name_kana": "テンニュウ　ハナコ", "birth_date": "1975-06-15", "sex": "女",
                                    "relationship": "世帯主"}]
    assert json.loads(fields)["resident_since"] == "2026-11-15" and json.loads(documents) == ["転出証明書", "マイナンバーカード"]


@pytest.mark.parametrize("change, problem", [
    ({"documents": ""}, "確認した書類"),
    ({"notifier_name": ""}, "届出人の氏名"),
    ({"tenkyo:address.town": ""}, "新住所（町名・丁目）"),
    ({"tenkyo:address_since": "R8.2.30"}, "存在しない日付"),
    ({"members": ["10000000045"]}, "同じ世帯の現在の住民でない方"),
])
def test_a_filing_missing_or_wrong_is_refused_naming_the_field(appliance, downtime, change, problem):
    data = {**BASE, "resident_code": NAKAMURA, "kind": "tenkyo", "tenkyo:address_since": "2026-11-18", "tenkyo:address.town": "西蒲田七丁目",
            "tenkyo:address.banchi": "49番1号", **change}
    response = downtime.post("/filings/new", data)
    assert response.status_code == 422 and problem in text_of(response)
    assert rows(appliance, "SELECT count(*) FROM filings") == [(0,)]


def test_a_filing_dated_after_today_is_refused_and_today_is_taken(appliance, downtime):
    items = {"address_since": "2026-11-18", "address.town": "西蒲田七丁目", "address.banchi": "49番1号"}
    late = record(downtime, NAKAMURA, "tenkyo", items, notified_on=(now().date() + dt.timedelta(days=1)).isoformat())
    assert late.status_code == 422 and "届出日が今日より後" in text_of(late)
    saved_id(record(downtime, NAKAMURA, "tenkyo", items, notified_on=now().date().isoformat()))


def test_filings_are_seen_by_their_clerk_and_supervisors_while_the_counter_is_open(appliance, login, downtime):
    clerk1, clerk2 = login("clerk1"), login("clerk2")
    filing_id = saved_id(record(clerk1, NAKAMURA, "tenkyo", {"address_since": "2026-11-18", "address.town": "西蒲田七丁目",
                                                              "address.banchi": "49番1号"}))
    assert clerk1.get(f"/filings/{filing_id}").status_code == 200
    assert clerk2.get(f"/filings/{filing_id}").status_code == 403
    assert "中村　翔" not in text_of(clerk2.get("/filings/"))
    assert downtime.get(f"/filings/{filing_id}").status_code == 200
    downtime.post("/supervisor/mode", {"to_mode": "recovery", "reason": "復旧"})
    assert clerk1.get(f"/filings/{filing_id}").status_code == 423
    assert downtime.get(f"/filings/{filing_id}").status_code == 200
    assert clerk1.post("/filings/new", {**BASE, "kind": "tennyu"}).status_code == 423


def test_a_removed_resident_files_nothing_and_a_move_in_needs_no_resident(appliance, downtime):
    removed = record(downtime, "10000000095", "tenkyo", {"address_since": "2026-11-18", "address.town": "西蒲田七丁目",
                                                          "address.banchi": "49番1号"})
    assert removed.status_code == 422 and "除票の方の届出は受け付けられません" in text_of(removed)
    no_resident = downtime.post("/filings/new", {**BASE, "kind": "tenkyo", "tenkyo:address_since": "2026-11-18"})
    assert no_resident.status_code == 422 and "住民を検索して開いた画面から" in text_of(no_resident)

"""The counter through the real app: locks, search, the issuance rules,
serials, deferred requests. Example register: 山田 household (3), 髙橋﨑子,
葛󠄂城辻󠄂 (IVS), foreign residents, 佐藤美咲 (support measure), 鈴木次郎
(removed), 田中健 (planned move-out)."""

from __future__ import annotations

import datetime as dt

import pytest

from fallback import audit
from fallback.counter import issuance
from fallback.ops import now, open_ops
from tests.support import PASSWORD, Staff, pdf_text, squeezed, text_of

YAMADA_TARO, YAMADA_HANAKO, TAKAHASHI, KATSURAGI = "10000000011", "10000000029", "10000000045", "10000000053"
SATO_SUPPORT, SUZUKI_REMOVED, TANAKA_MOVING = "10000000087", "10000000095", "10000000100"

# Tests issue the same certificate to the same person more than once on
# purpose: they confirm the same-day repeat (tested on its own in tests/browser).
SELF_REQUEST = {"kind": "juminhyo", "requester_type": "self", "identity_document": "運転免許証", "copies": 1, "confirm_repeat": True}


# --- locks and login -----------------------------------------------------------


def test_counter_is_locked_outside_downtime(login):
    clerk = login("clerk1")
    response = clerk.get("/counter/?kana=ヤマダ")
    assert response.status_code == 423
    assert "ダウン対策モード" in text_of(response)
    api = clerk.api("GET", "/api/v1/residents?kana=ヤマダ")
    assert api.status_code == 423 and api.get_json()["error"] == "counter_locked"


def test_every_page_needs_login(appliance):
    client = appliance.test_client()
    for path in ("/counter/", "/supervisor/", f"/counter/resident/{YAMADA_TARO}"):
        response = client.get(path)
        assert response.status_code == 302 and "/login" in response.headers["Location"]
    assert client.get("/api/v1/residents?kana=ヤマダ").status_code == 401


def test_forms_without_csrf_token_are_refused(login, downtime):
    clerk = login("clerk1")
    response = clerk.client.post(f"/counter/resident/{YAMADA_TARO}/issue", data=SELF_REQUEST)
    assert response.status_code == 400
    api = clerk.client.post(f"/api/v1/residents/{YAMADA_TARO}/certificates", json=SELF_REQUEST)
    assert api.status_code == 400 and api.get_json()["error"] == "csrf"


def test_clerk_cannot_declare_downtime(login):
    clerk = login("clerk1")
    assert clerk.post("/supervisor/mode", {"to_mode": "downtime", "reason": "x"}).status_code == 403


def test_declaring_downtime_needs_a_reason(login):
    boss = login("boss")
    boss.post("/supervisor/mode", {"to_mode": "downtime", "reason": ""})
    assert "理由を入力" in text_of(boss.get("/supervisor/"))
    assert boss.api("GET", "/api/v1/status").get_json()["mode"] == "standby"


def test_idle_session_expires(appliance, login, monkeypatch):
    clerk = login("clerk1")
    conn = open_ops(appliance.config["SONAE"])
    stale = (dt.datetime.now(dt.timezone(dt.timedelta(hours=9))) - dt.timedelta(minutes=21)).isoformat()
    conn.execute("UPDATE sessions SET last_seen = ?", (stale,))
    response = clerk.get("/counter/")
    assert response.status_code == 302 and "expired=1" in response.headers["Location"]
    ended = conn.execute("SELECT end_reason FROM sessions").fetchall()
    assert ("idle timeout",) in ended


# --- search ----------------------------------------------------------------------


def search_codes(clerk, **query) -> list[str]:
    response = clerk.api("GET", "/api/v1/residents?" + "&".join(f"{k}={v}" for k, v in query.items()))
    assert response.status_code == 200, response.get_json()
    return [r["resident_code"] for r in response.get_json()["results"]]


def test_search_by_kana_prefix_ignores_spaces_and_small_kana(login, downtime):
    clerk = login("clerk1")
    assert set(search_codes(clerk, kana="ヤマダ")) == {YAMADA_TARO, YAMADA_HANAKO, "10000000037"}
    assert search_codes(clerk, kana="やまだ　たろう") == [YAMADA_TARO]


def test_search_by_common_form_finds_variant_and_ivs_names(login, downtime):
    clerk = login("clerk1")
    assert search_codes(clerk, name="高橋") == [TAKAHASHI]
    assert search_codes(clerk, name="葛城") == [KATSURAGI]


@pytest.mark.parametrize("birth", ["1975-06-15", "S50.6.15", "昭和50年6月15日", "s50/6/15", "昭50.6.15", "昭５０．６．１５"])
def test_search_by_birth_date_in_either_calendar(login, downtime, birth):
    clerk = login("clerk1")
    assert YAMADA_TARO in search_codes(clerk, birth=birth)


def test_search_by_resident_code_and_combined(login, downtime):
    clerk = login("clerk1")
    assert search_codes(clerk, code=YAMADA_TARO) == [YAMADA_TARO]
    assert search_codes(clerk, kana="ヤマダ", birth="1978-11-03") == [YAMADA_HANAKO]


def test_unreadable_birth_date_is_explained(login, downtime):
    clerk = login("clerk1")
    response = clerk.api("GET", "/api/v1/residents?birth=S70.2.30")
    assert response.status_code == 400 and "生年月日" in response.get_json()["message"]


@pytest.mark.parametrize("query, message", [("kana=・", "記号だけ"), ("address=東京都大田区", "記号だけ"), ("name=" + "山" * 101, "長すぎます")])
def test_a_search_with_nothing_to_search_for_is_explained(login, downtime, query, message):
    """Found by schemathesis: punctuation only used to reach the register
    and fail there (HTTP 500); an overlong field was searched anyway."""
    clerk = login("clerk1")
    response = clerk.api("GET", f"/api/v1/residents?{query}")
    assert response.status_code == 400 and message in response.get_json()["message"]
    page = clerk.get(f"/counter/?{query}")
    assert page.status_code == 200 and message in text_of(page)


def test_the_api_refuses_what_its_document_refuses(appliance, login, downtime):
    """Found by schemathesis: bodies of the wrong type were coerced with
    str() and issued; an unknown resident was a 400; a serial beyond
    SQLite's integers was a 500; a URL matching no route answered HTML."""
    clerk = login("clerk1")
    wrong = issue(clerk, YAMADA_TARO, identity_document={"forged": True})
    assert wrong.status_code == 400 and wrong.get_json()["message"].startswith("identity_document:")
    assert issue(clerk, YAMADA_TARO, copies="1").status_code == 400
    assert issue(clerk, "99999999999").status_code == 404
    assert clerk.api("POST", "/api/v1/deferred", json={"kind": "tenkyo", "name": "\u3000", "contact": "0", "delivery": "mail",
                                                      "consent": True}).status_code == 400
    assert clerk.get(f"/api/v1/certificates/real/{2**70}.pdf").status_code == 404
    missing = clerk.get("/api/v1/no-such-thing")
    assert missing.status_code == 404 and missing.get_json()["error"] == "not_found"
    assert missing.get_json()["message"].startswith("このページはありません。")  # for staff, in Japanese (werkzeug's is English)
    not_allowed = clerk.api("PUT", "/api/v1/status")
    assert not_allowed.status_code == 405 and "GET" in not_allowed.headers["Allow"] and not_allowed.is_json
    assert "受け付けていません" in not_allowed.get_json()["message"]
    page = clerk.get("/no-such-page")
    assert page.status_code == 404 and "ページが見つかりません" in text_of(page) and "Not Found" not in text_of(page)
    conn = open_ops(appliance.config["SONAE"])
    assert conn.execute("SELECT count(*) FROM requests").fetchone()[0] == 0  # nothing was recorded, let alone issued


def raw_json(client, path, text: str, csrf: str):
    """POST `text` as it is: JSON escapes such as \\ud800 reach the parser
    unchanged (a JSON encoder in the test would refuse to write them)."""
    return client.open(path, method="POST", data=text.encode("utf-8"), content_type="application/json",
                       headers={"X-CSRF-Token": csrf})


ISSUE_PATH = f"/api/v1/residents/{YAMADA_TARO}/certificates"
LONE_SURROGATE = "\\ud800"  # as JSON spells it


@pytest.mark.parametrize("path, body, field", [
    (ISSUE_PATH, '{"kind":"juminhyo","requester_type":"self","identity_document":"運転免許証%s"}', "identity_document"),
    (ISSUE_PATH, '{"kind":"juminhyo","requester_type":"self","identity_document":"運転免許証","requester_name":"%s"}',
     "requester_name"),
    ("/api/v1/deferred", '{"kind":"tenkyo","name":"山田","contact":"03","delivery":"mail","consent":true,"note":"%s"}', "note"),
    ("/api/v1/deferred", '{"kind":"tenkyo","name":"山田","contact":"03","delivery":"mail","consent":true,"resident_code":"%s"}',
     "resident_code"),
    ("/api/v1/mode", '{"to_mode":"downtime","reason":"障害","%s":1}', "a field"),
])
def test_text_that_is_not_unicode_is_refused_naming_the_field(appliance, login, downtime, path, body, field):
    """A lone surrogate escape decodes to a str that no hash, database or
    page takes: every endpoint refuses it with a 400, before any rule."""
    clerk = login("boss" if path == "/api/v1/mode" else "clerk1")
    answer = raw_json(clerk.client, path, body % LONE_SURROGATE, clerk.csrf)
    assert answer.status_code == 400, answer.get_data(as_text=True)
    assert answer.get_json()["error"] == "bad_request"
    assert answer.get_json()["message"] == f"{field}: text that is not valid Unicode (an unpaired surrogate such as \\ud800)"
    conn = open_ops(appliance.config["SONAE"])
    assert conn.execute("SELECT count(*) FROM requests").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM deferred_requests").fetchone()[0] == 0


def test_a_login_with_text_that_is_not_unicode_is_refused_before_anything_is_counted(appliance):
    client = appliance.test_client()
    csrf = client.get("/api/v1/session").get_json()["csrf_token"]
    for body in ('{"username":"%s","password":"x"}', '{"username":"clerk1","password":"%s"}'):
        answer = raw_json(client, "/api/v1/session", body % LONE_SURROGATE, csrf)
        assert answer.status_code == 400 and "not valid Unicode" in answer.get_json()["message"]
    conn = open_ops(appliance.config["SONAE"])
    assert conn.execute("SELECT count(*) FROM login_failures").fetchone()[0] == 0


@pytest.mark.parametrize("body", ["[" * 5000 + "]" * 5000, '{"a":' * 3000 + "1" + "}" * 3000,
                                  '{"kind":"juminhyo","members":' + "[" * 100 + "]" * 100 + "}"])
def test_a_deeply_nested_body_is_refused(login, downtime, body):
    clerk = login("clerk1")
    answer = raw_json(clerk.client, ISSUE_PATH, body, clerk.csrf)
    assert answer.status_code == 400 and answer.get_json()["message"] == "the body is nested too deeply (at most 16 levels)"


@pytest.mark.parametrize("body, message", [
    ('{"kind":"juminhyo","requester_type":"self","identity_document":"","identity_document":"運転免許証","members":[CODE]}'.replace("CODE", f'"{YAMADA_TARO}"'),
     "the key 'identity_document' appears twice in one object: send each field once"),
    ('{"kind":"juminhyo","requester_type":"self","identity_document":"運転免許証","members":[CODE],"copies":NaN}'.replace("CODE", f'"{YAMADA_TARO}"'),
     "NaN is not a JSON number (RFC 8259): send a number, or leave the field out"),
    ('{"kind":"juminhyo","requester_type":"self","identity_document":"運転免許証","members":[CODE],"x":-Infinity}'.replace("CODE", f'"{YAMADA_TARO}"'),
     "-Infinity is not a JSON number (RFC 8259): send a number, or leave the field out"),
])
def test_a_body_two_readers_could_take_two_ways_is_refused(appliance, login, downtime, body, message):
    """Most parsers keep a repeated key's last value and some its first; NaN
    is no JSON at all: a proxy or a log could see another request than the
    one the counter acts on."""
    clerk = login("clerk1")
    answer = raw_json(clerk.client, ISSUE_PATH, body, clerk.csrf)
    assert answer.status_code == 400 and answer.get_json()["message"] == message
    assert open_ops(appliance.config["SONAE"]).execute("SELECT count(*) FROM requests").fetchone()[0] == 0


@pytest.mark.parametrize("field, value, label", [("requester_name", "山田\u0000太郎", "請求者の氏名"), ("purpose", "\u001b[31m就職", "使用目的"),
                                                ("contact", "03\u0007", "連絡先")])
def test_a_request_with_a_control_character_in_its_text_is_refused(appliance, login, downtime, field, value, label):
    """An outside tester issued with a NUL in the requester's name and an
    escape sequence in the purpose: stored, they break the request record
    and whatever exports it."""
    clerk = login("clerk1")
    body = {**SELF_REQUEST, "members": [YAMADA_TARO], field: value}
    answer = clerk.api("POST", ISSUE_PATH, json=body)
    assert answer.status_code == 400 and answer.get_json()["message"].startswith(f"{field}: must match")
    page = clerk.post(f"/counter/resident/{YAMADA_TARO}/issue", {**body, "members": YAMADA_TARO})
    assert f"{label}に使えない文字（制御文字）が含まれています" in text_of(page)
    assert open_ops(appliance.config["SONAE"]).execute("SELECT count(*) FROM requests WHERE outcome = 'issued'").fetchone()[0] == 0


def test_form_values_that_are_not_utf_8_never_fail_a_page(appliance, login, downtime):
    """A form's bytes are decoded by werkzeug, which keeps a percent escape
    that is not UTF-8 (a surrogate's %ED%A0%80) as the text it is: a login
    is refused and an issue form is answered, never a 500."""
    client = appliance.test_client()
    csrf = client.get("/api/v1/session").get_json()["csrf_token"]
    answer = client.post("/login", data=f"username=%ED%A0%80&password=%ED%A0%80&csrf_token={csrf}",
                         content_type="application/x-www-form-urlencoded")
    assert answer.status_code == 401
    clerk = login("clerk1")
    answer = clerk.client.post(f"/counter/resident/{YAMADA_TARO}/issue", content_type="application/x-www-form-urlencoded",
                               data=f"kind=juminhyo&requester_type=self&identity_document=%ED%A0%80&csrf_token={clerk.csrf}")
    assert answer.status_code < 500, answer.status_code


def test_the_copies_cap_is_the_configured_one_in_the_api_and_its_document(configure_app, downtime):
    clerk = Staff(configure_app(counter={"max_copies": 12, "daily_cap_per_requester": 0}), "clerk1")
    document = clerk.get("/api/v1/openapi.json").get_json()
    body = document["paths"]["/api/v1/residents/{code}/certificates"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["copies"]["maximum"] == 12
    assert issue(clerk, YAMADA_TARO, copies=12).status_code == 201
    too_many = issue(clerk, YAMADA_TARO, copies=13)
    assert too_many.status_code == 400 and "copies" in too_many.get_json()["message"]


def test_searches_and_views_are_audited_with_query(appliance, login, downtime):
    clerk = login("clerk1")
    search_codes(clerk, kana="ヤマダ")
    clerk.get(f"/counter/resident/{YAMADA_TARO}")
    conn = open_ops(appliance.config["SONAE"])
    rows = list(audit.entries(conn, actor="clerk1"))
    searches = [r for r in rows if r["action"] == "search"]
    views = [r for r in rows if r["action"] == "view"]
    assert searches[-1]["detail"]["query"] == {"kana": "ヤマダ"}
    assert views[-1]["target"] == YAMADA_TARO
    assert audit.verify_chain(conn).ok


def test_result_rows_mark_removed_support_and_moving_residents(login, downtime):
    clerk = login("clerk1")
    page = text_of(clerk.get("/counter/?code=" + SUZUKI_REMOVED))
    assert "除票" in page
    assert "支援措置" in text_of(clerk.get("/counter/?code=" + SATO_SUPPORT))
    assert "転出予定" in text_of(clerk.get("/counter/?code=" + TANAKA_MOVING))


def test_paging_through_many_residents_is_flagged(configure_app, login, downtime):
    clerk = Staff(configure_app(security={"view_flag_count": 3}), "clerk1")
    for code in (YAMADA_TARO, YAMADA_HANAKO, TAKAHASHI, KATSURAGI, TANAKA_MOVING):
        clerk.get(f"/counter/resident/{code}")
    boss = login("boss")
    assert "clerk1" in text_of(boss.get("/supervisor/")).split("注意が必要な閲覧")[1][:200]


# --- issuance ----------------------------------------------------------------------


def issue(clerk, code, **fields):
    body = {k: v for k, v in {**SELF_REQUEST, **fields}.items()}
    return clerk.api("POST", f"/api/v1/residents/{code}/certificates", json=body)


def test_issue_returns_a_pdf_with_a_reserved_serial(appliance, login, downtime, tmp_path):
    clerk = login("clerk1")
    response = issue(clerk, YAMADA_TARO, whole_household=True, copies=2)
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    serials = [c["serial"] for c in body["certificates"]]
    assert serials == [900001, 900002] and body["fee_yen"] == 600
    pdf = clerk.get(body["certificates"][0]["pdf"]).data
    text = squeezed(pdf_text(pdf, tmp_path))
    assert "山田" in text and "900001" in text and "住民票の写し" in text
    conn = open_ops(appliance.config["SONAE"])
    assert conn.execute("SELECT count(*) FROM certificates WHERE status = 'rendered'").fetchone()[0] == 2


def test_html_flow_issues_and_shows_the_pdf(login, downtime):
    clerk = login("clerk1")
    response = clerk.post(f"/counter/resident/{YAMADA_TARO}/issue", {**SELF_REQUEST, "members": YAMADA_TARO})
    assert response.status_code == 302
    page = clerk.get(response.headers["Location"])
    assert "交付しました" in text_of(page) and "900001" in text_of(page)


def test_support_measure_record_goes_only_to_the_resident(appliance, login, downtime):
    clerk = login("clerk1")
    refused = issue(clerk, SATO_SUPPORT, requester_type="agent", requester_name="佐藤　一郎", delegation_letter=True)
    assert refused.status_code == 422 and refused.get_json()["rule"] == "support_measure"
    assert issue(clerk, SATO_SUPPORT).status_code == 201  # the resident herself
    conn = open_ops(appliance.config["SONAE"])
    attempts = [e for e in audit.entries(conn, action="support_measure.attempt")]
    assert [a["detail"]["outcome"] for a in attempts] == ["refused", "issued"]


@pytest.mark.parametrize("requester_type", ["agent", "third_party", "household"])
def test_nobody_but_the_resident_gets_a_support_measure_record_by_default(appliance, configure_app, downtime, requester_type):
    """An agent or a third party is refused outright, approval or not; a
    household member too while the ward lists no exception."""
    clerk = Staff(configure_app(counter={"third_party_during_downtime": True}), "clerk1")
    refused = issue(clerk, SATO_SUPPORT, requester_type=requester_type, requester_name="代理　人", delegation_letter=True,
                    approver="boss", approver_password="correct-horse-battery")
    assert refused.status_code == 422 and refused.get_json()["rule"] == "support_measure"
    conn = open_ops(appliance.config["SONAE"])
    assert conn.execute("SELECT count(*) FROM requests WHERE outcome = 'issued'").fetchone()[0] == 0


def household_request(clerk, **approval):
    return issue(clerk, SATO_SUPPORT, requester_type="household", requester_name="佐藤　一郎", **approval)


def test_a_configured_exception_needs_another_supervisors_approval(appliance, configure_app, downtime):
    clerk = Staff(configure_app(counter={"support_measure_approvable": ["household"]}), "clerk1")
    assert household_request(clerk).get_json()["rule"] == "support_measure"  # no approval yet
    wrong = household_request(clerk, approver="clerk2", approver_password="correct-horse-battery")
    assert wrong.status_code == 422 and wrong.get_json()["rule"] == "approval_failed"
    approved = household_request(clerk, approver="boss", approver_password="correct-horse-battery")
    assert approved.status_code == 201
    conn = open_ops(appliance.config["SONAE"])
    assert conn.execute("SELECT approved_by FROM requests WHERE outcome = 'issued'").fetchone() == ("boss",)


def test_a_supervisor_cannot_approve_their_own_issuance(appliance, configure_app, downtime):
    boss = Staff(configure_app(counter={"support_measure_approvable": ["household"]}), "boss")
    own = household_request(boss, approver="boss", approver_password="correct-horse-battery")
    assert own.status_code == 422 and own.get_json()["rule"] == "approval_failed"
    assert "別の係長" in own.get_json()["message"]
    assert household_request(boss, approver="boss2", approver_password="correct-horse-battery").status_code == 201
    conn = open_ops(appliance.config["SONAE"])
    assert conn.execute("SELECT clerk, approved_by FROM requests WHERE outcome = 'issued'").fetchall() == [("boss", "boss2")]
    failed = [e["detail"] for e in audit.entries(conn, action="approval.failed")]
    assert failed == [{"approver": "boss", "reason": "self"}]


def test_an_agent_cannot_be_listed_as_an_exception(configure_app):
    from fallback.config import ConfigError

    with pytest.raises(ConfigError, match="agent"):
        configure_app(counter={"support_measure_approvable": ["household", "agent"]})


def test_third_party_is_refused_during_downtime(login, downtime):
    clerk = login("clerk1")
    response = issue(clerk, YAMADA_TARO, requester_type="third_party", requester_name="債権　者")
    assert response.status_code == 422 and response.get_json()["rule"] == "third_party"


def test_removed_resident_gets_johyo_not_juminhyo(login, downtime):
    clerk = login("clerk1")
    assert issue(clerk, SUZUKI_REMOVED).get_json()["rule"] == "removed_resident"
    assert issue(clerk, SUZUKI_REMOVED, kind="johyo", layout="kojin").status_code == 201
    assert issue(clerk, YAMADA_TARO, kind="johyo", layout="kojin").get_json()["rule"] == "johyo_for_active"


@pytest.mark.parametrize("kind, rule, says", [
    ("juminhyo", "removed_resident", "住民票の写しは交付できません。除票の写しを選んでください。"),
    ("kisai", "removed_resident", "住民票記載事項証明書は交付できません。除票の写しを選んでください。"),
    ("inkan", "seal_revoked", "住民でなくなったときに印鑑登録は廃止されるため、印鑑登録証明書は交付できません。"),
])
def test_a_removed_residents_refusal_names_the_certificate_chosen(login, downtime, kind, rule, says):
    clerk = login("clerk1")
    refused = issue(clerk, SUZUKI_REMOVED, kind=kind, seal_card_number="C00000095")
    assert refused.status_code == 422 and refused.get_json()["rule"] == rule
    assert says in refused.get_json()["message"]
    page = text_of(clerk.post(f"/counter/resident/{SUZUKI_REMOVED}/issue", {
        "kind": kind, "requester_type": "self", "identity_document": "運転免許証", "seal_card_number": "C00000095"}))
    assert says in page
    if kind != "juminhyo":  # the refusal names no certificate the clerk did not choose
        assert "住民票の写し" not in page.split("交付していません")[1].split("除票の写し")[0]


def test_planned_move_out_must_be_acknowledged(login, downtime):
    clerk = login("clerk1")
    assert issue(clerk, TANAKA_MOVING).get_json()["rule"] == "planned_move_out"
    issued = issue(clerk, TANAKA_MOVING, acknowledge_move_out=True)
    assert issued.status_code == 201 and "planned_move_out" in issued.get_json()["flags"]


def test_seal_certificate_needs_matching_card(login, downtime):
    clerk = login("clerk1")
    wrong = issue(clerk, YAMADA_TARO, kind="inkan", seal_card_number="C99999999")
    assert wrong.get_json()["rule"] == "seal_card_mismatch"
    # the screen's registration number is not the card's: the refusal says which number to type
    assert "登録番号 S00000011（登録中）" in text_of(clerk.get(f"/counter/resident/{YAMADA_TARO}"))
    typed_registration = issue(clerk, YAMADA_TARO, kind="inkan", seal_card_number="S00000011")
    assert typed_registration.get_json()["rule"] == "seal_card_mismatch"
    assert "印鑑登録証（カード）に印字されている番号で、画面の印鑑登録の登録番号とは別の番号です" in typed_registration.get_json()["message"]
    assert issue(clerk, YAMADA_TARO, kind="inkan", seal_card_number="C00000011").status_code == 201
    assert issue(clerk, KATSURAGI, kind="inkan", seal_card_number="").status_code == 400


def test_daily_cap_per_requester(configure_app, downtime):
    clerk = Staff(configure_app(counter={"daily_cap_per_requester": 3}), "clerk1")
    assert issue(clerk, YAMADA_TARO, copies=2).status_code == 201
    capped = issue(clerk, YAMADA_TARO, copies=2)
    assert capped.status_code == 422 and capped.get_json()["rule"] == "daily_cap"


def test_kill_switch_stops_a_type_when_data_is_too_old(configure_app, downtime):
    clerk = Staff(configure_app(counter={"kill_switch_hours": {"inkan": 0.0001}}), "clerk1")
    refused = issue(clerk, YAMADA_TARO, kind="inkan", seal_card_number="C00000011")
    assert refused.get_json()["rule"] == "kill_switch"
    assert issue(clerk, YAMADA_TARO).status_code == 201


def _data_age_hours(appliance) -> float:
    from fallback.mirror.registry import snapshot_summary

    with appliance.app_context():
        return snapshot_summary(appliance.config["SONAE"]).age_hours


def test_data_older_than_the_hard_limit_is_never_issued(appliance, configure_app, downtime):
    """Just outside the limit: refused by the API and the screen, nothing
    allocated, a deferred request offered."""
    clerk = Staff(configure_app(counter={"data_age_hard_limit_hours": _data_age_hours(appliance) - 0.001}), "clerk1")
    refused = issue(clerk, YAMADA_TARO)
    assert refused.status_code == 422 and refused.get_json()["rule"] == "data_too_old"
    assert "交付されていません" in refused.get_json()["message"] and "後日交付" in refused.get_json()["message"]
    page = clerk.post(f"/counter/resident/{YAMADA_TARO}/issue", {**SELF_REQUEST, "members": YAMADA_TARO})
    assert "上限" in text_of(page) and "後日対応として受け付ける" in text_of(page)
    conn = open_ops(appliance.config["SONAE"])
    assert conn.execute("SELECT count(*) FROM certificates").fetchone()[0] == 0
    assert {r[0] for r in conn.execute("SELECT refusal_rule FROM requests")} == {"data_too_old"}


def test_data_just_inside_the_hard_limit_is_issued(appliance, configure_app, downtime):
    clerk = Staff(configure_app(counter={"data_age_hard_limit_hours": _data_age_hours(appliance) + 0.05}), "clerk1")
    assert issue(clerk, YAMADA_TARO).status_code == 201


def test_refusals_are_recorded_and_audited(appliance, login, downtime):
    clerk = login("clerk1")
    issue(clerk, YAMADA_TARO, requester_type="third_party", requester_name="債権　者")
    conn = open_ops(appliance.config["SONAE"])
    assert conn.execute("SELECT outcome, refusal_rule FROM requests").fetchall() == [("refused", "third_party")]
    assert [e["detail"]["rule"] for e in audit.entries(conn, action="issue.refused")] == ["third_party"]


def test_serials_are_never_reused_after_a_crash(appliance, login, downtime):
    """A crash after the serial is committed but before the PDF exists: the
    serial is voided by the worker's sweep and the next issue continues after it."""
    config = appliance.config["SONAE"]
    conn = open_ops(config)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO serial_counters (scope, box_id, first_serial, next_serial, last_serial) VALUES ('real', '1', 900001, 900002, 999999)")
    conn.execute("INSERT INTO requests (id, created_at, scope, clerk, office, terminal, printer, kind, subject_code, requester_type, options, copies, fee_yen, outcome) "
                 "VALUES (1, '2026-01-01T00:00:00+09:00', 'real', 'clerk1', '本庁', '本庁1', 'プリンタ001', 'juminhyo', ?, 'self', '{}', 1, 300, 'issued')", (YAMADA_TARO,))
    conn.execute("INSERT INTO certificates (serial, scope, request_id, copy_number, status, issued_at, resident_codes, printed_records) "
                 "VALUES (900001, 'real', 1, 1, 'allocated', '2026-01-01T00:00:00+09:00', '[]', '{}')")
    conn.execute("COMMIT")
    assert issuance.void_unrendered(conn, older_than=dt.timedelta(minutes=2)) == [("real", 900001)]
    clerk = login("clerk1")
    assert issue(clerk, YAMADA_TARO).get_json()["certificates"][0]["serial"] == 900002


def allocate_copies(conn, copies: int, *, allocated_at: str) -> None:
    """A request whose `copies` serials were committed at `allocated_at`,
    none rendered yet (as issuance leaves them before rendering)."""
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO requests (id, created_at, scope, clerk, office, terminal, printer, kind, subject_code, requester_type, options, copies, fee_yen, outcome) "
                 "VALUES (1, ?, 'real', 'clerk1', '本庁', '本庁1', 'プリンタ001', 'juminhyo', ?, 'self', '{}', ?, 300, 'issued')",
                 (allocated_at, YAMADA_TARO, copies))
    for number in range(1, copies + 1):
        conn.execute("INSERT INTO certificates (serial, scope, request_id, copy_number, status, issued_at, resident_codes, printed_records) "
                     "VALUES (?, 'real', 1, ?, 'allocated', ?, '[]', '{}')", (900000 + number, number, allocated_at))
    conn.execute("COMMIT")


def test_copies_still_coming_out_one_by_one_are_not_voided(appliance, login, downtime):
    """Copies render one after another: a request whose first copy was
    rendered just now is still at work, however old its serials are."""
    conn = open_ops(appliance.config["SONAE"])
    allocate_copies(conn, 2, allocated_at=(now() - dt.timedelta(minutes=5)).isoformat(timespec="milliseconds"))
    issuance.store_rendered(conn, "real", 900001, pdf=b"%PDF-1.7", pages=1, content_digest="d")
    assert issuance.void_unrendered(conn, older_than=dt.timedelta(minutes=2)) == []
    assert conn.execute("SELECT status FROM certificates ORDER BY serial").fetchall() == [("rendered",), ("allocated",)]


def test_a_copy_voided_while_it_rendered_is_never_handed_out(appliance, login, downtime):
    conn = open_ops(appliance.config["SONAE"])
    allocate_copies(conn, 1, allocated_at=(now() - dt.timedelta(minutes=5)).isoformat(timespec="milliseconds"))
    assert issuance.void_unrendered(conn, older_than=dt.timedelta(minutes=2)) == [("real", 900001)]
    with pytest.raises(issuance.IssueError, match="900001.*無効"):
        issuance.store_rendered(conn, "real", 900001, pdf=b"%PDF-1.7", pages=1, content_digest="d")
    assert conn.execute("SELECT status, pdf FROM certificates").fetchall() == [("void", None)]


# --- deferred requests ------------------------------------------------------------


def test_deferred_request_needs_contact_and_consent_and_exports_csv(login, downtime):
    clerk = login("clerk1")
    missing = clerk.post("/counter/deferred", {"kind": "tenkyo", "name": "山田　太郎", "contact": "", "delivery": "phone"})
    assert missing.status_code == 422 and "連絡先" in text_of(missing)
    saved = clerk.post("/counter/deferred", {"kind": "tenkyo", "name": "山田　太郎", "contact": "090-0000-0000", "delivery": "phone", "consent": "1"})
    assert saved.status_code == 200 and "受付番号 1" in text_of(saved)
    boss = login("boss")
    csv_text = boss.get("/counter/deferred.csv").get_data(as_text=True)
    assert csv_text.startswith("\ufeff受付番号") and "転居届" in csv_text and "090-0000-0000" in csv_text
    assert clerk.get("/counter/deferred.csv").status_code == 403


def test_an_approvers_name_is_read_alike_from_the_screen_and_the_api(appliance, configure_app, downtime):
    """The screen always trimmed the approver's name; the API now does too."""
    clerk = Staff(configure_app(counter={"support_measure_approvable": ["household"]}), "clerk1")
    assert household_request(clerk, approver=" boss ", approver_password="correct-horse-battery").status_code == 201
    screen = clerk.post(f"/counter/resident/{SATO_SUPPORT}/issue", {
        **SELF_REQUEST, "requester_type": "household", "requester_name": "佐藤　一郎", "members": SATO_SUPPORT,
        "approver": " boss ", "approver_password": "correct-horse-battery"})
    assert screen.status_code == 302
    conn = open_ops(appliance.config["SONAE"])
    assert conn.execute("SELECT approved_by FROM requests WHERE outcome = 'issued'").fetchall() == [("boss",), ("boss",)]


def test_an_open_counter_without_a_register_says_so_on_every_face(sonae_env):
    """Before the first load: the screens, the request form and the API
    answer 503 with the same reason (the screens used to say 423 on the
    search page and fail on the others)."""
    from fallback.app import create_app
    from fallback.staff import users

    conn = open_ops(sonae_env)
    for username, role in (("boss", "supervisor"), ("clerk1", "clerk")):
        users.add_user(conn, username, username, role, PASSWORD, actor="test")
    app = create_app(sonae_env)
    app.config["TESTING"] = True
    assert Staff(app, "boss").post("/supervisor/mode", {"to_mode": "downtime", "reason": "住民記録システム障害"}).status_code == 302
    clerk = Staff(app, "clerk1")
    for path in ("/counter/?kana=ヤマダ", f"/counter/resident/{YAMADA_TARO}", f"/forms/request/{YAMADA_TARO}.pdf"):
        page = clerk.get(path)
        assert page.status_code == 503 and "まだ読み込まれていません" in text_of(page), path
    for method, path, body in (("GET", "/api/v1/residents?kana=ヤマダ", None), ("GET", f"/api/v1/residents/{YAMADA_TARO}", None),
                               ("POST", f"/api/v1/residents/{YAMADA_TARO}/certificates", SELF_REQUEST)):
        answer = clerk.api(method, path, json=body)
        assert answer.status_code == 503 and answer.get_json()["error"] == "no_snapshot", path
        assert "まだ読み込まれていません" in answer.get_json()["message"]

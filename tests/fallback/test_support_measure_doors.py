"""The doors to a 支援措置 (DV等) resident's address besides the result
list, through the real app over the example register: the address search
as an oracle, the record page and API, the household that links them to a
head whose address is shown, and certificates of that household for
someone from outside it. Each in both directions: what is withheld or
refused, and what still works for those the rules allow.
Example register: 佐藤美咲 (支援措置, alone in her household, 池上四丁目2番3号);
山田 household (太郎 世帯主, 花子, 一郎) at 西蒲田七丁目49番1号."""

from __future__ import annotations

import json

import pytest

from fallback.ops import open_ops
from tests.support import text_of

SATO = "10000000087"
YAMADA_TARO, YAMADA_HANAKO, YAMADA_ICHIRO = "10000000011", "10000000029", "10000000037"
NAKAMURA = "10000000126"  # 西蒲田七丁目 1番2号: the 山田 household's town, another household
SELF_REQUEST = {"kind": "juminhyo", "requester_type": "self", "identity_document": "運転免許証", "copies": 1}
SHOWN = {"identity_document": "運転免許証"}  # how the clerk states a 本人 request on a withheld record
OUTSIDE = {
    "agent": {"requester_type": "agent", "requester_name": "代理　人", "delegation_letter": True},
    "third_party": {"requester_type": "third_party", "requester_name": "第三　者", "purpose": "債権回収"},
    "official": {"requester_type": "official", "requester_name": "年金事務所", "identity_document": "職員の身分証明書",
                 "purpose": "国民年金法第108条による調査"},
}


def codes(clerk, query: str) -> list[str]:
    answer = clerk.api("GET", f"/api/v1/residents?{query}")
    assert answer.status_code == 200, answer.get_json()
    return [r["resident_code"] for r in answer.get_json()["results"]]


def issue(clerk, code, **fields):
    return clerk.api("POST", f"/api/v1/residents/{code}/certificates", json={**SELF_REQUEST, **fields})


def refused_by(response) -> str | None:
    assert response.status_code in (201, 422), response.get_json()
    return None if response.status_code == 201 else response.get_json()["rule"]


def hold_support_measure(boss, code):
    assert boss.post(f"/holds/new/{code}", {"kind": "support_measure"}).status_code == 302


# --- the address search is no oracle ----------------------------------------------------


@pytest.mark.parametrize("address", ["池上", "池上四丁目", "池上四丁目2番3号", "池上四丁目2番4号", "大森", "南"])
def test_an_address_never_matches_a_protected_resident_whatever_is_typed(login, downtime, address):
    clerk = login("clerk1")
    assert codes(clerk, f"kana=サトウ&address={address}") == []
    assert SATO not in codes(clerk, f"name=佐藤&address={address}")


def test_a_protected_resident_stays_findable_without_an_address(login, downtime):
    clerk = login("clerk1")
    for query in ("kana=サトウ", "name=佐藤　美咲", "birth=1988-05-05", f"code={SATO}"):
        assert SATO in codes(clerk, query), query


def test_everyone_else_is_still_found_by_address(login, downtime):
    clerk = login("clerk1")
    assert sorted(codes(clerk, "kana=ヤマダ&address=西蒲田七丁目49")) == [YAMADA_TARO, YAMADA_HANAKO, YAMADA_ICHIRO]
    assert codes(clerk, "address=池上四丁目") == []  # the protected resident is the only one there


def test_an_urgent_support_measure_hold_takes_the_persons_household_out_of_address_searches(login, downtime):
    """The household's address is the person's: a member found by it would
    confirm a guess of it."""
    clerk = login("clerk1")
    hold_support_measure(downtime, YAMADA_ICHIRO)
    assert codes(clerk, "kana=ヤマダ&address=西蒲田七丁目49番1号") == []
    assert codes(clerk, "kana=ヤマダ　イチロウ&address=西蒲田") == []
    assert codes(clerk, "address=西蒲田七丁目") == [NAKAMURA]  # the town's other residents are found as before
    assert codes(clerk, "kana=ヤマダ　イチロウ") == [YAMADA_ICHIRO]


# --- no household in the protected person's rows ---------------------------------------------


def test_a_protected_row_carries_no_household(login, downtime):
    """Nor do its household's members' rows, whose address is the same (as
    their records withhold it); residents of other households keep theirs."""
    clerk = login("clerk1")
    hold_support_measure(downtime, YAMADA_ICHIRO)
    rows = {r["resident_code"]: r for r in clerk.api("GET", "/api/v1/residents?kana=ヤマダ").get_json()["results"]}
    for member in (YAMADA_ICHIRO, YAMADA_TARO, YAMADA_HANAKO):
        row = rows[member]
        assert row["address"] is row["household_id"] is row["head_name"] is row["relationship"] is None
    (nakamura,) = clerk.api("GET", f"/api/v1/residents?code={NAKAMURA}").get_json()["results"]
    assert nakamura["household_id"] == "0000100010" and nakamura["address"]["town"] == "西蒲田七丁目"
    page = text_of(clerk.get("/counter/?kana=ヤマダ　イチロウ"))
    assert "山田　太郎（子）" not in page and "支援措置のため表示しません" in page


# --- the record page and API -------------------------------------------------------------------


def desk(downtime) -> str:
    return text_of(downtime.get("/supervisor/"))


def support_measure_views(appliance) -> list[tuple[str, str, dict]]:
    conn = open_ops(appliance.config["SONAE"])
    try:
        rows = conn.execute("SELECT actor, target, detail FROM audit WHERE action = 'support_measure.view' ORDER BY id").fetchall()
    finally:
        conn.close()
    return [(actor, target, json.loads(detail)) for actor, target, detail in rows]


def test_a_protected_record_opens_without_address_or_household(login, downtime):
    clerk = login("clerk1")
    record = clerk.api("GET", f"/api/v1/residents/{SATO}").get_json()
    assert record["withheld"] is True and record["resident"]["address"] is None and record["resident"]["household_id"] is None
    assert [m["resident_code"] for m in record["household"]] == [SATO] and record["household"][0]["address"] is None
    page = clerk.get(f"/counter/resident/{SATO}").get_data(as_text=True)
    assert "池上" not in page and "2番3号" not in page and 'id="self-button"' in page and 'id="issue-form"' in page
    assert desk(downtime).count(f"（本庁1）住民票コード {SATO}：住所を表示せずに閲覧") == 2  # the page and the API


def test_stating_a_self_request_shows_the_address_and_is_put_before_the_supervisor(appliance, login, downtime):
    clerk = login("clerk1", terminal="本庁2")
    assert "本人からの請求として住所を表示" not in desk(downtime)
    record = clerk.api("POST", f"/api/v1/residents/{SATO}/self", json=SHOWN).get_json()
    assert record["withheld"] is False and record["resident"]["address"]["town"] == "池上四丁目"
    page = clerk.post(f"/counter/resident/{SATO}/self", {"identity_document": "マイナンバーカード"}).get_data(as_text=True)
    assert "池上四丁目2番3号" in page and 'id="self-button"' not in page
    # The issue form follows on as 本人 with the document already picked: the clerk does not pick it twice.
    assert '<option value="self" selected>' in page and "<option selected>マイナンバーカード</option>" in page
    listed = desk(downtime)
    assert listed.count(f"（本庁2）住民票コード {SATO}：本人からの請求として住所を表示。その後の請求の記録がありません") == 2
    assert refused_by(issue(clerk, SATO)) is None  # a request follows: no longer marked
    assert "その後の請求の記録がありません" not in desk(downtime)
    entries = support_measure_views(appliance)
    assert [(actor, target) for actor, target, _ in entries] == [("clerk1", SATO)] * 2
    assert [detail["identity_document"] for _, _, detail in entries] == ["運転免許証", "マイナンバーカード"]
    assert all(detail["address_shown"] for _, _, detail in entries)


def test_a_protected_persons_household_opens_withheld_and_is_put_before_the_supervisor(login, downtime):
    """The head's record shows the address the measure protects and lists the
    protected member: withheld the same way, until the requester is the head."""
    clerk = login("clerk1")
    hold_support_measure(downtime, YAMADA_ICHIRO)
    record = clerk.api("GET", f"/api/v1/residents/{YAMADA_TARO}").get_json()
    assert record["withheld"] is True and record["resident"]["address"] is None
    assert [m["resident_code"] for m in record["household"]] == [YAMADA_TARO]
    assert "西蒲田七丁目" not in text_of(clerk.get(f"/counter/resident/{YAMADA_TARO}"))
    assert desk(downtime).count(f"住民票コード {YAMADA_TARO}（支援措置対象者の世帯員）：住所を表示せずに閲覧") == 2
    shown = clerk.api("POST", f"/api/v1/residents/{YAMADA_TARO}/self", json=SHOWN).get_json()
    assert shown["withheld"] is False and len(shown["household"]) == 3


def test_the_self_statement_needs_the_csrf_token(login, downtime):
    clerk = login("clerk1")
    assert clerk.client.post(f"/counter/resident/{SATO}/self", data=SHOWN).status_code == 400
    assert clerk.client.post(f"/api/v1/residents/{SATO}/self", json=SHOWN).status_code in (400, 403)


def nothing_shown(appliance, downtime, *answers) -> None:
    """None of the answers, the audit or the supervisor's desk has the
    protected address or a view that showed it."""
    for answer in answers:
        body = answer.get_data(as_text=True)
        assert "池上" not in body and "2番3号" not in body
    assert not any(detail["address_shown"] for _, _, detail in support_measure_views(appliance))
    assert "本人からの請求として住所を表示" not in desk(downtime)


def test_a_bare_self_statement_shows_nothing(appliance, login, downtime):
    """Showing the person themself their withheld record reveals what a
    certificate to them would: it needs the identity document that
    certificate needs, not a bare statement."""
    clerk = login("clerk1")
    empty = clerk.api("POST", f"/api/v1/residents/{SATO}/self")
    assert empty.status_code == 400 and empty.get_json()["error"] == "bad_request"
    no_document = clerk.api("POST", f"/api/v1/residents/{SATO}/self", json={})
    assert no_document.status_code == 400 and no_document.get_json()["message"] == "missing: identity_document"
    page = clerk.post(f"/counter/resident/{SATO}/self")
    assert page.status_code == 400
    html = page.get_data(as_text=True)
    assert 'id="self-error"' in html and "住所と世帯は表示していません。本人確認書類を選んでください。" in text_of(page)
    assert 'id="self-identity-document" required aria-invalid="true"' in html and 'id="self-button"' in html
    nothing_shown(appliance, downtime, empty, no_document, page)


@pytest.mark.parametrize("document", ["", "　", " \t", "x" * 101, None, 1, {"forged": True}, ["運転免許証"]])
def test_an_invalid_identity_document_shows_nothing_through_the_api(appliance, login, downtime, document):
    clerk = login("clerk1")
    answer = clerk.api("POST", f"/api/v1/residents/{SATO}/self", json={"identity_document": document})
    assert answer.status_code == 400 and answer.get_json()["message"].startswith("identity_document:")
    nothing_shown(appliance, downtime, answer)


@pytest.mark.parametrize("document", ["\u200b", "\u2060", "\u00ad", " \u200b ", "運転\u0000免許証", "運転免許証\u200b", "\u3164", "\ufe0f",
                                      "\U000e0041\U000e0042", "運転免許証\U000e0041", "\u0301", "\ue000", "運転免許証\n", "社員証"])
def test_an_identity_document_not_on_the_counters_list_shows_nothing(appliance, login, downtime, document):
    """Outside testers revealed a protected address with names nobody sees
    (zero-width spaces, then Hangul fillers, variation selectors, tag
    characters), which stood in the audit as blanks: the document is one
    of the counter's list."""
    clerk = login("clerk1")
    answer = clerk.api("POST", f"/api/v1/residents/{SATO}/self", json={"identity_document": document})
    assert answer.status_code == 400 and answer.get_json()["message"].startswith("identity_document: must be one of")
    nothing_shown(appliance, downtime, answer)
    page = clerk.post(f"/counter/resident/{SATO}/self", {"identity_document": document})
    assert page.status_code == 400 and 'id="self-error"' in page.get_data(as_text=True)
    assert "本人確認書類" in text_of(page).split("住所と世帯は表示していません。", 1)[1]
    nothing_shown(appliance, downtime, page)


@pytest.mark.parametrize("document", ["", "　", "x" * 101])
def test_an_invalid_identity_document_shows_nothing_on_the_screen(appliance, login, downtime, document):
    clerk = login("clerk1")
    page = clerk.post(f"/counter/resident/{SATO}/self", {"identity_document": document})
    assert page.status_code == 400 and 'id="self-error"' in page.get_data(as_text=True)
    assert "本人確認書類" in text_of(page).split("住所と世帯は表示していません。", 1)[1]
    nothing_shown(appliance, downtime, page)


def test_the_withheld_record_asks_for_the_document_with_the_self_statement(login, downtime):
    """One step at the counter: the document is picked in the form whose
    button states 本人, and nothing is picked for the clerk."""
    clerk = login("clerk1")
    html = clerk.get(f"/counter/resident/{SATO}").get_data(as_text=True)
    form = html.split('id="self-form"', 1)[1].split("</form>", 1)[0]
    assert 'name="identity_document"' in form and '<option value="">（選んでください）</option>' in form
    assert "<option>運転免許証</option>" in form and 'id="self-button"' in form and " selected" not in form


def test_other_records_open_whole_and_are_not_listed(login, downtime):
    clerk = login("clerk1")
    record = clerk.api("GET", f"/api/v1/residents/{YAMADA_TARO}").get_json()
    assert record["withheld"] is False and record["resident"]["address"]["town"] == "西蒲田七丁目" and len(record["household"]) == 3
    assert "西蒲田七丁目49番1号" in text_of(clerk.get(f"/counter/resident/{YAMADA_TARO}"))
    assert "住所を表示せずに閲覧" not in desk(downtime)


def test_the_person_themself_is_still_issued_from_the_screen_and_the_api(login, downtime):
    clerk = login("clerk1")
    clerk.get(f"/counter/resident/{SATO}")  # address withheld: the form still issues
    form = {key: str(value) for key, value in SELF_REQUEST.items()}
    assert clerk.post(f"/counter/resident/{SATO}/issue", form).status_code == 302
    assert refused_by(issue(clerk, SATO, confirm_repeat=True)) is None
    assert refused_by(issue(clerk, SATO, **OUTSIDE["agent"])) == "support_measure"


def test_a_protected_record_view_counts_toward_the_flag(appliance, downtime, configure_app):
    from tests.support import Staff

    clerk = Staff(configure_app(security={"view_flag_count": 1}), "clerk1")
    clerk.get(f"/counter/resident/{SATO}")
    clerk.api("POST", f"/api/v1/residents/{YAMADA_TARO}/self", json=SHOWN)
    assert "4人を閲覧" in desk(downtime)  # 佐藤, and 山田 太郎 with the two members of his household his record shows


# --- certificates of a protected household ----------------------------------------------------


@pytest.mark.parametrize("requester", sorted(OUTSIDE))
def test_outside_requesters_are_refused_a_protected_households_certificates(configure_app, downtime, requester):
    from tests.support import Staff

    clerk = Staff(configure_app(counter={"third_party_during_downtime": True}), "clerk1")
    assert refused_by(issue(clerk, YAMADA_TARO, **OUTSIDE[requester])) is None  # before the hold: issued
    hold_support_measure(downtime, YAMADA_ICHIRO)
    refused = issue(clerk, YAMADA_TARO, **OUTSIDE[requester], confirm_repeat=True)
    assert refused_by(refused) == "support_measure"
    assert "ご本人が来庁して請求" in refused.get_json()["message"] and "係長" in refused.get_json()["message"]
    assert refused_by(issue(clerk, YAMADA_HANAKO, kind="kisai", **OUTSIDE[requester])) == "support_measure"
    attempts = desk(downtime).split("支援措置対象者への請求")[1].split("支援措置対象者の記録の閲覧")[0]
    assert "お断り" in attempts and f"住民票コード {YAMADA_TARO}" in attempts  # whose record was asked for


@pytest.mark.parametrize("requester", ["third_party", "agent"])
def test_the_support_measure_refusal_comes_before_any_other_about_the_requester(login, downtime, requester):
    """With third parties refused during downtime (the default) and an agent
    without a letter, the 支援措置 refusal still comes first: the others
    tell the clerk to take the request for later (後日交付), which the
    measure refuses at any time."""
    clerk = login("clerk1")
    hold_support_measure(downtime, YAMADA_ICHIRO)
    fields = {**OUTSIDE[requester], "delegation_letter": False} if requester == "agent" else OUTSIDE[requester]
    for code in (SATO, YAMADA_TARO):
        refused = issue(clerk, code, **fields)
        assert refused_by(refused) == "support_measure", (code, refused.get_json())
        assert "後日" not in refused.get_json()["message"]


def test_a_household_member_asking_for_the_protected_person_is_told_what_can_be_issued(login, downtime):
    """本人 (山田太郎) asking for the whole household, 一郎 under a 支援措置:
    refused — but not as 「本人以外からの請求」, which contradicts the form —
    and told that the others' certificate can be issued; it then is."""
    clerk = login("clerk1")
    hold_support_measure(downtime, YAMADA_ICHIRO)
    refused = issue(clerk, YAMADA_TARO, whole_household=True)
    assert refused_by(refused) == "support_measure"
    message = refused.get_json()["message"]
    assert "本人以外からの請求" not in message and "対象者を除いた方" in message, message
    assert refused_by(issue(clerk, YAMADA_TARO, members=[YAMADA_TARO, YAMADA_HANAKO])) is None


def test_the_person_and_their_household_are_still_issued_a_protected_households_certificates(login, downtime):
    clerk = login("clerk1")
    hold_support_measure(downtime, YAMADA_ICHIRO)
    assert refused_by(issue(clerk, YAMADA_TARO)) is None
    household = {"requester_type": "household", "requester_name": "山田　花子", "members": [YAMADA_TARO]}
    assert refused_by(issue(clerk, YAMADA_TARO, **household, confirm_repeat=True)) is None


# --- a member of the protected person's household ----------------------------------------------


def test_a_household_members_record_says_why_its_address_is_withheld_and_how_to_show_it(login, downtime):
    """The member's record withholds the shared address: it says why, offers
    the same 本人 step as the protected person's own record, and prints a
    blank request form — the pre-filled one refused in words, not an error
    that sends the counter to paper."""
    clerk = login("clerk1")
    hold_support_measure(downtime, YAMADA_ICHIRO)
    response = clerk.get(f"/counter/resident/{YAMADA_TARO}")
    page = response.get_data(as_text=True)
    assert 'id="support-household-warning"' in page and "世帯に支援措置（DV等）の対象者がいます" in text_of(response)
    assert 'id="self-form"' in page and 'id="blank-form-link"' in page and 'id="prefilled-form-link"' not in page
    assert "49番1号" not in text_of(response)

    form = clerk.get(f"/forms/request/{YAMADA_TARO}.pdf")
    assert form.status_code == 403 and "世帯に支援措置（DV等）の対象者がいるため" in form.get_data(as_text=True)
    attempts = desk(downtime).split("支援措置対象者への請求")[1].split("支援措置対象者の記録の閲覧")[0]
    assert f"住民票コード {YAMADA_TARO}（お断り：記入済み申請書の印刷（白紙の申請書を案内））" in attempts
    assert clerk.get("/forms/request-blank.pdf").status_code == 200

    shown = clerk.post(f"/counter/resident/{YAMADA_TARO}/self", {"identity_document": "運転免許証"})
    assert shown.status_code == 200 and "49番1号" in text_of(shown)

    other = clerk.get(f"/counter/resident/{NAKAMURA}").get_data(as_text=True)
    assert 'id="support-household-warning"' not in other and 'id="prefilled-form-link"' in other

"""What the counters recorded stays behind the counter lock: a certificate's
PDF and its issued page go to the clerk who issued it and to supervisors,
only while their counter is open and in its scope (real in downtime, the
drill's own for its participants); in recovery to supervisors only. The
same for deferred requests (names, phone numbers). Every look, and every
refusal, is audited."""

from __future__ import annotations

import pytest

from fallback import audit
from fallback.ops import open_ops
from tests.drills.support import case_codes, start_drill
from tests.support import text_of

YAMADA_TARO, SATO_SUPPORT = "10000000011", "10000000087"
SELF_REQUEST = {"kind": "juminhyo", "requester_type": "self", "identity_document": "運転免許証"}


def issue(clerk, code=YAMADA_TARO) -> dict:
    answer = clerk.api("POST", f"/api/v1/residents/{code}/certificates", json=SELF_REQUEST)
    assert answer.status_code == 201, answer.get_json()
    return answer.get_json()


def set_mode(boss, to_mode):
    assert boss.post("/supervisor/mode", {"to_mode": to_mode, "reason": "テスト"}).status_code == 302


def entries(appliance, action):
    conn = open_ops(appliance.config["SONAE"])
    try:
        return list(audit.entries(conn, action=action))
    finally:
        conn.close()


def test_only_the_issuing_clerk_and_supervisors_open_a_certificate(appliance, login, downtime):
    clerk, other, boss = login("clerk1"), login("clerk2"), login("boss")
    issued = issue(clerk, SATO_SUPPORT)  # the resident herself: a 支援措置 certificate
    pdf_url = issued["certificates"][0]["pdf"]
    serial = issued["certificates"][0]["serial"]
    page_url = f"/counter/issued/{issued['request_id']}"
    html_pdf = f"/counter/certificate/real/{serial}.pdf"

    for url in (pdf_url, html_pdf, page_url):
        assert clerk.get(url).status_code == 200, url
        assert boss.get(url).status_code == 200, url
        refused = other.get(url)
        assert refused.status_code == 403, url
    assert other.get(pdf_url).get_json()["error"] == "forbidden"
    assert "ほかの職員" in text_of(other.get(page_url))
    assert other.get(f"/api/v1/certificates/real/{serial + 1}.pdf").status_code == 404  # walking past the last serial

    opened = [(e["actor"], e["target"]) for e in entries(appliance, "certificate.open")]
    assert opened == [("clerk1", f"real:{serial}"), ("boss", f"real:{serial}")] * 2
    denied = [(e["actor"], e["target"]) for e in entries(appliance, "records.denied")]
    certificate, request = ("clerk2", f"real:{serial}"), ("clerk2", f"request:{issued['request_id']}")
    assert denied == [certificate, certificate, request, certificate, request]
    assert [e["actor"] for e in entries(appliance, "issued.view")] == ["clerk1", "boss"]


def test_certificates_stay_locked_outside_downtime_and_open_to_supervisors_in_recovery(appliance, login, downtime):
    clerk, boss, it = login("clerk1"), downtime, login("it1")
    issued = issue(clerk)
    pdf_url = issued["certificates"][0]["pdf"]
    page_url = f"/counter/issued/{issued['request_id']}"

    set_mode(boss, "recovery")
    assert clerk.get(pdf_url).status_code == 423 and clerk.get(pdf_url).get_json()["error"] == "counter_locked"
    assert clerk.get(page_url).status_code == 423
    assert boss.get(pdf_url).status_code == 200 and boss.get(page_url).status_code == 200
    assert it.get(pdf_url).status_code == 403  # not a counter role at all

    set_mode(boss, "standby")
    for staff in (clerk, boss):
        assert staff.get(pdf_url).status_code == 423
        assert staff.get(page_url).status_code == 423
    assert [e["actor"] for e in entries(appliance, "certificate.open")] == ["boss"]


def test_a_drill_opens_its_own_certificates_to_its_participants_only(appliance, login):
    config = appliance.config["SONAE"]
    drill_id = start_drill(config, participants=["clerk1", "boss"])
    clerk, boss, outsider = login("clerk1"), login("boss"), login("boss2")
    issued = issue(clerk, case_codes(config, drill_id)["ordinary"])  # a resident of the drill's own register
    pdf_url = issued["certificates"][0]["pdf"]
    assert "/drill/" in pdf_url
    assert clerk.get(pdf_url).status_code == 200 and boss.get(pdf_url).status_code == 200
    assert outsider.get(pdf_url).status_code == 423  # a supervisor outside the drill: the counter is not open to them
    # a real downtime suspends the drill: its certificates close, and a real counter never opens them
    set_mode(boss, "downtime")
    answer = clerk.get(pdf_url)
    assert answer.status_code == 403 and "本番・訓練" in answer.get_json()["message"]
    drill_opens = [e for e in entries(appliance, "certificate.open")]
    assert {e["actor"] for e in drill_opens} == {"clerk1", "boss"} and all(e["drill"] for e in drill_opens)


def record_deferred(staff, name, contact="090-1111-2222"):
    answer = staff.api("POST", "/api/v1/deferred", json={"kind": "tenkyo", "name": name, "contact": contact, "delivery": "phone",
                                                       "consent": True})
    assert answer.status_code == 201, answer.get_json()
    return answer.get_json()["id"]


def listed_names(staff) -> list[str]:
    answer = staff.api("GET", "/api/v1/deferred")
    assert answer.status_code == 200, answer.get_json()
    return [row["name"] for row in answer.get_json()["deferred"]]


def test_a_clerk_sees_their_own_deferred_requests_and_a_supervisor_every_counters(appliance, login, downtime):
    clerk, other, boss = login("clerk1"), login("clerk2"), downtime
    record_deferred(clerk, "山田　太郎")
    record_deferred(other, "髙橋　﨑子")
    assert listed_names(clerk) == ["山田　太郎"]
    assert listed_names(other) == ["髙橋　﨑子"]
    assert listed_names(boss) == ["山田　太郎", "髙橋　﨑子"]
    page = text_of(clerk.get("/counter/deferred"))
    assert "山田　太郎" in page and "髙橋　﨑子" not in page
    assert "髙橋　﨑子" in boss.get("/counter/deferred.csv").get_data(as_text=True)
    listings = [(e["actor"], e["detail"]["rows"]) for e in entries(appliance, "deferred.list")]
    assert listings == [("clerk1", 1), ("clerk2", 1), ("boss", 2), ("clerk1", 1)]
    assert [e["actor"] for e in entries(appliance, "deferred.export")] == ["boss"]


def test_deferred_requests_are_locked_outside_downtime_and_kept_for_supervisors_in_recovery(appliance, login, downtime):
    clerk, boss, it = login("clerk1"), downtime, login("it1")
    record_deferred(clerk, "山田　太郎", contact="090-9999-0000")
    set_mode(boss, "recovery")
    assert clerk.api("GET", "/api/v1/deferred").status_code == 423
    assert clerk.get("/counter/deferred").status_code == 423
    assert listed_names(boss) == ["山田　太郎"]
    assert "090-9999-0000" in text_of(boss.get("/recovery/"))
    it_page = text_of(it.get("/recovery/"))  # IT runs reconciliation but gets no names or phone numbers
    assert "090-9999-0000" not in it_page and "係長だけ" in it_page
    set_mode(boss, "standby")
    assert boss.api("GET", "/api/v1/deferred").status_code == 423
    assert boss.get("/counter/deferred.csv").status_code == 423
    desk = text_of(boss.get("/supervisor/"))
    assert "090-9999-0000" not in desk and "山田　太郎" not in desk
    assert clerk.api("POST", "/api/v1/deferred", json={"kind": "tenkyo", "name": "鈴木　一", "contact": "0", "delivery": "phone",
                                                      "consent": True}).status_code == 423


@pytest.mark.parametrize("field, value, message", [
    ("name", "山" * 101, "氏名が長すぎます"), ("contact", "0" * 201, "連絡先が長すぎます"), ("note", "x" * 501, "備考が長すぎます"),
])
def test_deferred_fields_are_bounded(appliance, login, downtime, field, value, message):
    clerk = login("clerk1")
    form = {"kind": "tenkyo", "name": "山田　太郎", "contact": "090", "delivery": "phone", "consent": "1", field: value}
    answer = clerk.post("/counter/deferred", form)
    assert answer.status_code == 422 and message in text_of(answer)
    form[field] = value[:-1]
    assert clerk.post("/counter/deferred", form).status_code == 200  # at the bound: recorded


@pytest.mark.parametrize("field, limit", [("requester_name", 100), ("purpose", 200), ("contact", 200)])
def test_request_fields_are_bounded(appliance, login, downtime, field, limit):
    clerk = login("clerk1")
    too_long = clerk.post(f"/counter/resident/{YAMADA_TARO}/issue", {**SELF_REQUEST, field: "あ" * (limit + 1)})
    assert too_long.status_code == 422 and "長すぎます" in text_of(too_long)
    assert clerk.post(f"/counter/resident/{YAMADA_TARO}/issue", {**SELF_REQUEST, field: "あ" * limit}).status_code == 302
    api = clerk.api("POST", f"/api/v1/residents/{YAMADA_TARO}/certificates", json={**SELF_REQUEST, field: "あ" * (limit + 1)})
    assert api.status_code == 400 and field in api.get_json()["message"]


def test_a_mode_reason_is_bounded(appliance, login):
    boss = login("boss")
    boss.post("/supervisor/mode", {"to_mode": "downtime", "reason": "x" * 501})
    assert boss.api("GET", "/api/v1/status").get_json()["mode"] == "standby"
    boss.post("/supervisor/mode", {"to_mode": "downtime", "reason": "x" * 500})
    assert boss.api("GET", "/api/v1/status").get_json()["mode"] == "downtime"


def deferred_status(appliance, request_id) -> tuple[str, str | None]:
    conn = open_ops(appliance.config["SONAE"])
    try:
        return conn.execute("SELECT status, status_changed_by FROM deferred_requests WHERE id = ?", (request_id,)).fetchone()
    finally:
        conn.close()


def test_only_who_may_see_a_deferred_request_changes_its_status(appliance, login, downtime):
    clerk, boss, it = login("clerk1"), downtime, login("it1", terminal=None)
    request_id = record_deferred(clerk, "山田　太郎")
    refused = it.post(f"/recovery/deferred/{request_id}", {"status": "done"})  # IT sees no names on /recovery/: nor changes them
    assert refused.status_code == 403 and "係長だけ" in text_of(refused)
    assert deferred_status(appliance, request_id) == ("open", None)
    assert [e["actor"] for e in entries(appliance, "records.denied")] == ["it1"]
    assert boss.post(f"/supervisor/deferred/{request_id}", {"status": "contacted"}).status_code == 302
    set_mode(boss, "recovery")
    assert it.post(f"/recovery/deferred/{request_id}", {"status": "done"}).status_code == 423
    assert boss.post(f"/recovery/deferred/{request_id}", {"status": "done"}).status_code == 302
    assert deferred_status(appliance, request_id) == ("done", "boss")
    set_mode(boss, "standby")  # the records are closed to everyone: so is changing them
    assert boss.post(f"/supervisor/deferred/{request_id}", {"status": "open"}).status_code == 423
    assert boss.post("/supervisor/deferred/999", {"status": "open"}).status_code == 423
    assert deferred_status(appliance, request_id) == ("done", "boss")


def test_a_drills_deferred_request_is_out_of_reach_of_the_real_worklists(appliance, login):
    start_drill(appliance.config["SONAE"], participants=["clerk1", "boss"])
    clerk, boss = login("clerk1"), login("boss")
    request_id = record_deferred(clerk, "訓練　花子")
    set_mode(boss, "downtime")  # suspends the drill; the desk's worklist is the real one
    for path in (f"/supervisor/deferred/{request_id}", f"/recovery/deferred/{request_id}"):
        refused = boss.post(path, {"status": "done"})
        assert refused.status_code == 403 and "本番・訓練" in text_of(refused)
    assert deferred_status(appliance, request_id) == ("open", None)
    assert boss.post(f"/recovery/deferred/{request_id + 1}", {"status": "done"}).status_code == 404


@pytest.mark.parametrize("field, value, status, message", [
    ("resident_code", "\u0000", 400, "住民票コードは11桁の数字です"), ("resident_code", "<script>", 400, "住民票コードは11桁の数字です"),
    ("resident_code", "99999999999", 404, "住民票コード 99999999999 の住民は住民記録にありません"),
    ("note", "折り返し\u0000希望", 400, "備考に使えない文字（制御文字）"), ("name", "山田\u001b太郎", 400, "氏名に使えない文字（制御文字）"),
])
def test_a_deferred_request_with_a_malformed_code_or_control_characters_is_refused(appliance, login, downtime, field, value, status,
                                                                                    message):
    """The API refuses by its document (whose patterns are the form's
    rules, so that a body it calls valid is never refused for its form),
    an unknown resident as a look-up does (404); the form in words."""
    clerk = login("clerk1")
    body = {"kind": "certificate_later", "name": "山田　太郎", "contact": "090-1111-2222", "delivery": "phone", "consent": True, field: value}
    answer = clerk.api("POST", "/api/v1/deferred", json=body)
    assert answer.status_code == status
    assert (message in answer.get_json()["message"]) if status == 404 else answer.get_json()["message"].startswith(f"{field}: must match")
    form = clerk.post("/counter/deferred", {**body, "consent": "1"})
    assert form.status_code == 422 and message in text_of(form)
    conn = open_ops(appliance.config["SONAE"])
    try:
        assert conn.execute("SELECT count(*) FROM deferred_requests").fetchone()[0] == 0
    finally:
        conn.close()


def test_a_deferred_request_keeps_a_residents_code_as_the_register_keys_it(appliance, login, downtime):
    clerk = login("clerk1")
    answer = clerk.api("POST", "/api/v1/deferred", json={"kind": "certificate_later", "name": "山田　太郎", "contact": "090-1111-2222",
                                                        "delivery": "phone", "consent": True, "resident_code": "１０００-００００-０１１"})
    assert answer.status_code == 201, answer.get_json()
    assert [row["resident_code"] for row in clerk.api("GET", "/api/v1/deferred").get_json()["deferred"]] == [YAMADA_TARO]

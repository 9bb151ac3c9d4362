"""The counter under stress, below the browser: the Idempotency-Key of the
IETF draft on the API (a repeat answers the first result and issues
nothing), an issue attempt on a locked counter answering 「交付されていません」
and why, polling that keeps no idle session alive, and log lines in JST."""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import subprocess
import sys
import threading
import time

import requests

from fallback.ops import open_ops
from tests.clocks import set_clock_off
from tests.pair.boxes import free_port, wait_until_answering
from tests.support import PASSWORD, Staff, certificates, register_terminal_over_http, served

YAMADA_TARO = "10000000011"
BODY = {"kind": "juminhyo", "requester_type": "self", "identity_document": "運転免許証"}


def issue(clerk, body=BODY, key: str | None = None):
    headers = {"X-CSRF-Token": clerk.csrf, **({"Idempotency-Key": key} if key is not None else {})}
    return clerk.client.post(f"/api/v1/residents/{YAMADA_TARO}/certificates", json=body, headers=headers)


def test_a_repeated_idempotency_key_answers_the_first_result_and_issues_nothing(appliance, login, downtime):
    clerk = login("clerk1")
    first = issue(clerk, key='"8e03978e-40d5-43e8-bc93-6894a57f9324"')
    assert first.status_code == 201 and "Idempotent-Replayed" not in first.headers
    again = issue(clerk, key='"8e03978e-40d5-43e8-bc93-6894a57f9324"')
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json() == first.get_json()
    assert certificates(appliance) == 1
    # the same key with another body: refused, naming the first result
    other = issue(clerk, {**BODY, "kind": "kisai"}, key='"8e03978e-40d5-43e8-bc93-6894a57f9324"')
    assert other.status_code == 422 and other.get_json()["error"] == "idempotency_key_reused"
    assert other.get_json()["serials"] == [c["serial"] for c in first.get_json()["certificates"]]
    assert certificates(appliance) == 1


def test_a_key_is_one_staff_members_own(appliance, login, downtime):
    assert issue(login("clerk1"), key="shared-key").status_code == 201
    # another clerk's same key is another request (confirmed: the same certificate again today)
    assert issue(login("clerk2"), {**BODY, "confirm_repeat": True}, key="shared-key").get_json().get("request_id") == 2
    assert certificates(appliance) == 2


def test_a_refused_request_keeps_its_key_free_for_the_corrected_one(appliance, login, downtime):
    clerk = login("clerk1")
    refused = issue(clerk, {**BODY, "requester_type": "agent", "requester_name": "代理　人"}, key="form-1")
    assert refused.status_code == 422 and refused.get_json()["rule"] == "agent_without_letter"
    corrected = issue(clerk, {**BODY, "requester_type": "agent", "requester_name": "代理　人", "delegation_letter": True}, key="form-1")
    assert corrected.status_code == 201 and certificates(appliance) == 1


def test_a_malformed_key_is_refused_and_nothing_issued(appliance, login, downtime):
    clerk = login("clerk1")
    assert issue(clerk, key="has space").status_code == 400
    assert issue(clerk, key="x" * 256).status_code == 400
    assert issue(clerk, key="x" * 255).status_code == 201  # the longest allowed
    assert certificates(appliance) == 1


def test_the_same_day_repeat_names_the_earlier_serial_then_issues_when_confirmed(appliance, login, downtime):
    clerk = login("clerk1")
    serial = issue(clerk).get_json()["certificates"][0]["serial"]
    warned = issue(clerk)
    assert warned.status_code == 422 and warned.get_json()["rule"] == "same_day_repeat"
    assert warned.get_json()["earlier_serials"] == [serial] and f"{serial:06d}" in warned.get_json()["message"]
    assert issue(clerk, {**BODY, "kind": "kisai"}).status_code == 201  # another type is no repeat
    assert issue(clerk, {**BODY, "confirm_repeat": True}).status_code == 201
    conn = open_ops(appliance.config["SONAE"])
    try:  # a warning is not a refusal on record
        assert conn.execute("SELECT count(*) FROM requests WHERE outcome = 'refused'").fetchone()[0] == 0
    finally:
        conn.close()


def _browser_of(clerk) -> requests.Session:
    """An HTTP client holding `clerk`'s session and terminal cookies, as the
    clerk's browser does."""
    http = requests.Session()
    for name in ("sonae_session", "sonae_terminal"):
        http.cookies.set(name, clerk.client.get_cookie(name).value)
    return http


def test_simultaneous_unconfirmed_requests_issue_once_and_ask_the_others_to_confirm(appliance, login, downtime):
    """The same resident open in three tabs (or at two PCs), 交付 pressed in
    the same instant: each form has its own key, so only the same-day
    repeat stands between them. Real threads against the served app."""
    clerks = [login("clerk1"), login("clerk1"), login("clerk2", terminal="本庁2")]
    form = {**BODY, "members": YAMADA_TARO}
    start, answers = threading.Barrier(len(clerks)), []
    with served(appliance) as server:
        url = f"http://127.0.0.1:{server.effective_port}/counter/resident/{YAMADA_TARO}/issue"

        def press(clerk, key: str) -> None:
            browser = _browser_of(clerk)
            start.wait()
            answers.append(browser.post(url, data={**form, "csrf_token": clerk.csrf, "idempotency_key": key},
                                        allow_redirects=False, timeout=60))

        threads = [threading.Thread(target=press, args=(clerk, f"tab-{n}")) for n, clerk in enumerate(clerks)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(90)
    assert sorted(answer.status_code for answer in answers) == [302, 422, 422]
    for answer in answers:
        if answer.status_code == 422:
            assert 'data-rule="same_day_repeat"' in answer.text and "本日もう一度交付する" in answer.text
    assert certificates(appliance) == 1
    conn = open_ops(appliance.config["SONAE"])
    try:  # each warning audited, none recorded as a refusal
        assert conn.execute("SELECT count(*) FROM audit WHERE action = 'issue.repeat_warned'").fetchone()[0] == 2
        assert conn.execute("SELECT count(*) FROM requests").fetchone()[0] == 1
    finally:
        conn.close()
    # confirmed, the next one issues
    confirmed = clerks[0].post(f"/counter/resident/{YAMADA_TARO}/issue", {**form, "confirm_repeat": "1", "idempotency_key": "tab-0b"})
    assert confirmed.status_code == 302 and certificates(appliance) == 2


CUT_REQUEST = {**BODY, "members": [YAMADA_TARO], "copies": 10}  # the same request as the screen's form with this member


def _statuses(config) -> dict[int, str]:
    conn = open_ops(config)
    try:
        return dict(conn.execute("SELECT serial, status FROM certificates"))
    finally:
        conn.close()


def _kill_between_commit_and_render(config, base: str) -> dict[int, str]:
    """`sonae serve` at `base` is asked for ten copies under the key
    "crash-1" and killed (SIGKILL) as soon as their serials are committed,
    before all are rendered: the certificates' statuses as it left them."""
    http = requests.Session()
    register_terminal_over_http(http, base, "本庁1")
    http.headers["X-CSRF-Token"] = http.get(f"{base}/api/v1/session", timeout=10).json()["csrf_token"]
    login = http.post(f"{base}/api/v1/session", json={"username": "clerk1", "password": PASSWORD, "terminal": "本庁1"}, timeout=30)
    http.headers["X-CSRF-Token"] = login.json()["csrf_token"]
    sending = threading.Thread(target=lambda: _send_ignoring_the_crash(
        http, f"{base}/api/v1/residents/{YAMADA_TARO}/certificates", CUT_REQUEST))
    sending.start()
    deadline = time.monotonic() + 60
    while "allocated" not in _statuses(config).values():
        assert time.monotonic() < deadline, "the request never committed its serials"
    return _statuses(config)


def _send_ignoring_the_crash(http, url: str, body: dict) -> None:
    try:
        http.post(url, json=body, headers={"Idempotency-Key": "crash-1"}, timeout=60)
    except requests.ConnectionError:
        pass  # the server was killed under this request


def test_a_request_cut_by_a_crash_is_answered_void_after_the_render_window_and_issued_again(configure_app, downtime, monkeypatch):
    """kill -9 between the commit of the serials and their PDFs; the
    browser's resend under the same key: first 「処理中」 (a render may
    still finish), then, after counter.void_unrendered_after_s, the serials
    are voided and the clerk is told so and issues again from the form
    (no worker running: the counter does not wait for its sweep)."""
    app = configure_app(counter={"void_unrendered_after_s": 60})
    config = app.config["SONAE"]
    base = f"http://127.0.0.1:{free_port()}"
    server = subprocess.Popen([sys.executable, "-m", "fallback.cli", "serve", "--port", base.rsplit(":", 1)[1]], env=os.environ.copy(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_until_answering(base, server)
        left = _kill_between_commit_and_render(config, base)
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait()
    cut = sorted(serial for serial, status in _statuses(config).items() if status == "allocated")
    assert cut and set(cut) <= {serial for serial, status in left.items() if status == "allocated"}

    clerk = Staff(app, "clerk1")
    waiting = issue(clerk, CUT_REQUEST, key="crash-1")
    assert waiting.status_code == 409 and waiting.get_json()["error"] == "issue_in_progress"
    set_clock_off(monkeypatch, dt.timedelta(seconds=61))  # the render window passed (not slept: a busy machine takes seconds to get here)
    interrupted = issue(clerk, CUT_REQUEST, key="crash-1")
    body = interrupted.get_json()
    assert interrupted.status_code == 409 and body["error"] == "issue_interrupted", body
    assert body["voided_serials"] == cut and f"発行番号 {cut[0]:06d}" in body["message"] and "もう一度「交付する」" in body["message"]
    assert {status for serial, status in _statuses(config).items() if serial in cut} == {"void"}

    # The screen's resend of the same request (the browser's "resend"): told the same, on the form with
    # the clerk's entries kept under a fresh key, which issues (confirmed: copies rendered before the cut count today).
    form = {**CUT_REQUEST, "members": YAMADA_TARO, "copies": "10"}
    page = clerk.post(f"/counter/resident/{YAMADA_TARO}/issue", {**form, "idempotency_key": "crash-1"})
    html = page.get_data(as_text=True)
    assert page.status_code == 409 and "途中で中断されました" in html and "処理中" not in html
    fresh_key = re.search(r'name="idempotency_key" value="([^"]+)"', html).group(1)
    assert fresh_key != "crash-1"
    again = clerk.post(f"/counter/resident/{YAMADA_TARO}/issue", {**form, "confirm_repeat": "1", "idempotency_key": fresh_key})
    assert again.status_code == 302
    statuses = _statuses(config)
    new = sorted(serial for serial in statuses if serial not in left)
    assert len(new) == 10 and new[0] > max(left) and {statuses[serial] for serial in new} == {"rendered"}  # no serial reused


def test_a_server_started_after_a_crash_voids_at_once_what_the_dead_one_left_unrendered(configure_app, downtime):
    """The worker's sweep waits counter.void_unrendered_after_s; a server
    starting again knows nothing of the dead one's is still rendering."""
    app = configure_app(counter={"void_unrendered_after_s": 3600})
    config = app.config["SONAE"]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "fallback.cli", "serve", "--port", str(port)]
    server = subprocess.Popen(command, env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_until_answering(base, server)
        _kill_between_commit_and_render(config, base)
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait()
    cut = {serial for serial, status in _statuses(config).items() if status == "allocated"}
    assert cut
    server = subprocess.Popen(command, env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_until_answering(base, server)
    finally:
        server.terminate()
        server.wait()
    assert {status for serial, status in _statuses(config).items() if serial in cut} == {"void"}
    assert "allocated" not in _statuses(config).values()


def test_an_issue_attempt_on_a_locked_counter_says_nothing_was_issued_and_why(appliance, login, downtime):
    clerk = login("clerk1")
    assert downtime.post("/supervisor/mode", {"to_mode": "recovery", "reason": "住民記録システム復旧"}).status_code == 302
    api = issue(clerk)
    assert api.status_code == 423 and api.get_json()["error"] == "counter_locked"
    assert api.get_json()["message"].startswith("証明書は交付されていません。") and "復旧確認中" in api.get_json()["message"]
    page = clerk.post(f"/counter/resident/{YAMADA_TARO}/issue", {**BODY, "idempotency_key": "k1"})
    html = page.get_data(as_text=True)
    assert page.status_code == 423 and "<h1 id=\"locked-title\">交付されていません</h1>" in html and "復旧確認中" in html
    assert certificates(appliance) == 0
    # a look (not an issue) is told only that the counter is closed
    assert "交付されていません" not in clerk.get("/counter/").get_data(as_text=True)


def test_a_screens_own_polling_keeps_no_idle_session_alive(appliance, login):
    clerk = login("clerk1")
    conn = open_ops(appliance.config["SONAE"])
    old = (dt.datetime.now(dt.timezone(dt.timedelta(hours=9))) - dt.timedelta(minutes=5)).isoformat(timespec="milliseconds")
    conn.execute("UPDATE sessions SET last_seen = ? WHERE username = 'clerk1'", (old,))
    polled = clerk.client.get("/api/v1/status", headers={"X-Sonae-Poll": "1"})
    assert polled.status_code == 200 and polled.get_json()["counter"]["open"] is False
    assert conn.execute("SELECT last_seen FROM sessions WHERE username = 'clerk1'").fetchone()[0] == old
    assert clerk.get("/api/v1/status").status_code == 200  # the staff member's own request is activity
    assert conn.execute("SELECT last_seen FROM sessions WHERE username = 'clerk1'").fetchone()[0] > old
    conn.close()


def test_the_status_names_the_banner_the_counter_and_a_revision_that_moves(appliance, login, downtime):
    clerk = login("clerk1")
    before = clerk.get("/api/v1/status").get_json()
    assert before["mode"] == "downtime" and before["counter"]["open"] and before["banner"]["as_of_text"].startswith("令和")
    assert issue(clerk).status_code == 201
    assert clerk.get("/api/v1/status").get_json()["revision"] != before["revision"]


def test_log_lines_carry_japan_time_with_its_offset():
    code = "from fallback.cli_support import configure_logging; import logging; configure_logging(); logging.getLogger('sonae.t').info('x')"
    line = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"TZ": "UTC", "PATH": "/usr/bin"}).stderr
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+09:00 INFO sonae\.t: x$", line.strip()), line


def test_a_second_click_while_the_first_renders_links_to_the_result(appliance, login, downtime):
    """The clerk presses 交付する again while the first press is still
    rendering (same form, same key): the page says it is in progress and
    links to the request's result, instead of leaving the clerk to reload
    a POST."""
    clerk = login("clerk1")
    form = {"kind": "juminhyo", "requester_type": "self", "identity_document": "運転免許証", "members": YAMADA_TARO,
            "copies": "1", "idempotency_key": "double-click-1"}
    first = clerk.post(f"/counter/resident/{YAMADA_TARO}/issue", form)
    assert first.status_code == 302
    request_id = int(first.headers["Location"].rsplit("/", 1)[1])
    # As it stands while the first press renders: its serial committed, its PDF not made yet.
    open_ops(appliance.config["SONAE"]).execute("UPDATE certificates SET status = 'allocated', pdf = NULL WHERE request_id = ?", (request_id,))
    second = clerk.post(f"/counter/resident/{YAMADA_TARO}/issue", form)
    html = second.get_data(as_text=True)
    assert second.status_code == 409 and "この申請は交付の処理中です（二重には交付されません）" in html
    assert f'href="/counter/issued/{request_id}"' in html and "交付の結果を開く" in html
    api = issue(clerk, key="double-click-1", body={**BODY, "members": [YAMADA_TARO], "copies": 1})
    body = api.get_json()
    assert api.status_code == 409 and body["error"] == "issue_in_progress" and body["request_id"] == request_id
    assert second.headers["Retry-After"] == "2"
    assert f"交付の結果（交付番号 {request_id}）を開いてください" in body["message"]  # no button named to an API client
    # The result opened at once (the outside tester): it says the PDFs are being made, offers no PDF and no print,
    # and the PDF's address says "a moment", not "no such certificate".
    page = clerk.get(f"/counter/issued/{request_id}")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and 'id="issued-rendering"' in html and "作成中" in html
    assert 'id="print-form"' not in html and 'id="open-pdf"' not in html and "<iframe" not in html
    serial = open_ops(appliance.config["SONAE"]).execute("SELECT serial FROM certificates WHERE request_id = ?", (request_id,)).fetchone()[0]
    pdf = clerk.get(f"/counter/certificate/real/{serial}.pdf")
    assert pdf.status_code == 409 and "交付の処理中です" in pdf.get_data(as_text=True)
    printed = clerk.post(f"/counter/issued/{request_id}/print")
    assert printed.status_code == 409 and "交付の処理中です" in printed.get_data(as_text=True)

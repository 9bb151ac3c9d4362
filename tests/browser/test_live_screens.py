"""Screens kept current by short polling of /api/v1/status, in Chromium:
an open counter screen learns within seconds that the supervisor ended
downtime, an issue attempt then answers 「交付されていません」 and why,
mode changes are confirmed after naming what changes for the counters,
and the supervisor's desk and the IT dashboard refresh themselves."""

from __future__ import annotations

from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from fallback.ops import open_ops

from .conftest import arrived, focused_id, in_viewport, leave_page, press, ready, wait_for, wait_until
from .conftest import login as sign_in

YAMADA_TARO = "10000000011"
POLL = 15  # seconds: three polls at least


def end_downtime(boss) -> None:
    assert boss.post("/supervisor/mode", {"to_mode": "recovery", "reason": "住民記録システム復旧"}).status_code == 302


def issued_count(appliance) -> int:
    conn = open_ops(appliance.config["SONAE"])
    try:
        return conn.execute("SELECT count(*) FROM requests WHERE outcome = 'issued'").fetchone()[0]
    finally:
        conn.close()


def test_an_open_counter_learns_that_downtime_ended_and_an_issue_then_says_not_issued(appliance, downtime, browser):
    sign_in(browser, "clerk1")
    browser.get(f"{browser.base_url}/counter/resident/{YAMADA_TARO}")
    ready(browser)
    browser.execute_script("window.sonaeStillHere = true")
    end_downtime(downtime)
    wait_until(browser, lambda d: d.find_element(By.ID, "banner-mode").text == "復旧確認中", POLL)
    live = wait_for(browser, "#live-status")
    wait_until(browser, lambda d: live.is_displayed())
    assert "復旧確認中" in live.text and "窓口は閉じています" in live.text
    assert live.get_attribute("role") == "alert" and in_viewport(browser, live) and focused_id(browser) == "live-status"
    assert browser.execute_script("return window.sonaeStillHere === true")  # updated in place, not reloaded
    # The clerk, who had the resident in front of them, presses Ctrl+Enter anyway.
    leave_page(browser)
    press(browser, Keys.CONTROL + Keys.ENTER)
    arrived(browser)
    page = browser.find_element(By.TAG_NAME, "main").text
    assert "交付されていません" in browser.find_element(By.TAG_NAME, "h1").text
    assert "証明書は交付されていません" in page and "復旧確認中" in page
    assert issued_count(appliance) == 0


def test_declaring_and_ending_downtime_ask_first_naming_what_changes_for_the_counters(appliance, browser):
    sign_in(browser, "boss")
    browser.get(browser.base_url + "/supervisor/")
    wait_for(browser, "#declare-detail").send_keys("テスト: クラウド応答なし")
    leave_page(browser)
    browser.find_element(By.ID, "declare-downtime").click()
    arrived(browser)
    changes = wait_for(browser, "#confirm-changes").text
    assert "検索と証明書の交付が始まります" in changes and "データ時点" in changes
    assert "ダウン対策モード" in browser.find_element(By.ID, "confirm-title").text
    assert browser.find_element(By.ID, "banner-mode").text == "通常（待機中）"  # nothing changed yet
    leave_page(browser)
    browser.find_element(By.ID, "cancel-mode-change").click()
    arrived(browser)
    assert browser.find_element(By.ID, "current-mode").text == "通常（待機中）"

    browser.find_element(By.ID, "declare-detail").send_keys("テスト: クラウド応答なし")
    leave_page(browser)
    browser.find_element(By.ID, "declare-downtime").click()
    arrived(browser)
    leave_page(browser)
    browser.find_element(By.ID, "confirm-mode-change").click()
    arrived(browser)
    assert browser.find_element(By.ID, "current-mode").text == "ダウン対策モード"

    leave_page(browser)
    browser.find_element(By.ID, "end-downtime").click()
    arrived(browser)
    changes = wait_for(browser, "#confirm-changes").text
    assert "検索と証明書の交付が止まります" in changes and "交付されていません" in changes and "復旧しました" in changes
    leave_page(browser)
    browser.find_element(By.ID, "confirm-mode-change").click()
    arrived(browser)
    assert browser.find_element(By.ID, "current-mode").text == "復旧確認中"


def test_the_supervisors_desk_refreshes_itself_when_a_counter_issues(appliance, downtime, login, browser):
    sign_in(browser, "boss")
    browser.get(browser.base_url + "/supervisor/")
    ready(browser)
    assert wait_for(browser, "#today-summary .big-number").text == "0通"
    browser.execute_script("window.sonaeStillHere = true")
    clerk = login("clerk1")  # the counter issues through the API beside the browser
    answer = clerk.api("POST", f"/api/v1/residents/{YAMADA_TARO}/certificates",
                       json={"kind": "juminhyo", "requester_type": "self", "identity_document": "運転免許証"})
    assert answer.status_code == 201
    wait_until(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#today-summary .big-number").text == "1通", POLL)
    assert "clerk1" in browser.find_element(By.ID, "recent-requests").text
    assert browser.execute_script("return window.sonaeStillHere === true")  # the content, not the page


def test_the_it_dashboard_refreshes_itself_when_the_mode_changes(appliance, login, browser):
    sign_in(browser, "it1", terminal=None)
    browser.get(browser.base_url + "/monitor/")
    ready(browser)
    assert "通常（待機中）" in wait_for(browser, "#mode-card").text
    boss = login("boss")
    assert boss.post("/supervisor/mode", {"to_mode": "downtime", "reason": "住民記録システム障害"}).status_code == 302
    wait_until(browser, lambda d: "ダウン対策モード" in d.find_element(By.ID, "mode-card").text, POLL)


def test_the_morning_report_never_says_all_clear_during_downtime(appliance, downtime, browser):
    sign_in(browser, "it1", terminal=None)
    browser.get(browser.base_url + "/monitor/morning")
    verdict = wait_for(browser, "#morning-verdict").text
    assert verdict == "要確認" and "異常なし" not in browser.find_element(By.TAG_NAME, "main").text
    assert "ダウン対策モード" in browser.find_element(By.ID, "morning-outage-now").text

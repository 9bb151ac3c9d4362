"""Issuing under stress, in Chromium at a counter PC's 1366×625 viewport:
Back after issuing never issues again and never leaves the button frozen,
a second certificate of the same type for the same person the same day is
warned about by its earlier serial, 「同じ方に別の証明書」 is one key away,
and every outcome — a refusal, an issued certificate — is at the top of the
viewport, focused and announced."""

from __future__ import annotations

from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select

from fallback.ops import open_ops

from .conftest import arrived, focused_id, in_viewport, leave_page, login, press, ready, wait_for, wait_until

YAMADA_TARO, SATO_SUPPORT, SUZUKI_REMOVED = "10000000011", "10000000087", "10000000095"


def issued_requests(appliance, code: str) -> list[tuple[int, int]]:
    """(request id, serial) of every certificate issued to `code`."""
    conn = open_ops(appliance.config["SONAE"])
    try:
        return conn.execute("SELECT r.id, c.serial FROM requests r JOIN certificates c ON c.request_id = r.id "
                            "WHERE r.subject_code = ? AND r.outcome = 'issued' ORDER BY c.serial", (code,)).fetchall()
    finally:
        conn.close()


def open_resident(driver, code: str) -> None:
    driver.get(f"{driver.base_url}/counter/resident/{code}")
    ready(driver)


def issue_by_keyboard(driver) -> None:
    leave_page(driver)
    press(driver, Keys.CONTROL + Keys.ENTER)
    arrived(driver)


def test_back_after_issuing_never_issues_again_nor_freezes_the_button(appliance, downtime, browser):
    login(browser, "clerk1")
    open_resident(browser, YAMADA_TARO)
    issue_by_keyboard(browser)
    first = wait_for(browser, "#issued-serials").text
    assert issued_requests(appliance, YAMADA_TARO) and len(issued_requests(appliance, YAMADA_TARO)) == 1

    browser.back()
    button = wait_for(browser, "#issue-button")
    wait_until(browser, lambda d: d.find_element(By.ID, "issue-button").is_enabled())
    assert "交付する" in button.text and "交付処理中" not in button.text
    issue_by_keyboard(browser)  # the clerk presses Ctrl+Enter again on the restored form
    # Either the first result again, or the warning that names it: never a second certificate.
    outcome = wait_for(browser, "#issued-serials, #issue-error").text
    serial = first.split()[-1]
    assert serial in outcome
    assert len(issued_requests(appliance, YAMADA_TARO)) == 1


def test_the_same_certificate_again_the_same_day_is_warned_by_its_serial_then_issued_when_confirmed(appliance, downtime, browser):
    login(browser, "clerk1")
    open_resident(browser, YAMADA_TARO)
    issue_by_keyboard(browser)
    (_, first_serial), = issued_requests(appliance, YAMADA_TARO)
    # 「同じ方に別の証明書」: one key from the issued page, a fresh form for the same person
    leave_page(browser)
    press(browser, "a")
    arrived(browser)
    assert browser.current_url.endswith(f"/counter/resident/{YAMADA_TARO}")
    issue_by_keyboard(browser)
    warning = wait_for(browser, "#issue-error")
    assert warning.get_attribute("data-rule") == "same_day_repeat"
    assert f"{first_serial:06d}" in warning.text and "すでに交付" in warning.text
    assert len(issued_requests(appliance, YAMADA_TARO)) == 1
    # the warning is at the top and has the focus: Tab reaches the confirmation at once
    assert in_viewport(browser, warning) and focused_id(browser) == "outcome"
    press(browser, Keys.TAB, Keys.SPACE)
    assert browser.find_element(By.ID, "confirm-repeat").is_selected()
    issue_by_keyboard(browser)
    wait_for(browser, "#issued-title")
    assert [serial for _, serial in issued_requests(appliance, YAMADA_TARO)] == [first_serial, first_serial + 1]


def test_another_type_for_the_same_person_is_not_a_repeat(appliance, downtime, browser):
    login(browser, "clerk1")
    open_resident(browser, YAMADA_TARO)
    issue_by_keyboard(browser)
    browser.find_element(By.ID, "same-person").click()
    wait_for(browser, "#issue-form")
    press(browser, "2")  # 記載事項証明書
    issue_by_keyboard(browser)
    assert "住民票記載事項証明書を交付しました" in wait_for(browser, "#issued-title").text


def test_a_refusal_is_at_the_top_of_the_viewport_focused_and_announced(appliance, downtime, browser):
    login(browser, "clerk1")
    open_resident(browser, SATO_SUPPORT)
    Select(browser.find_element(By.ID, "requester-type")).select_by_value("agent")
    browser.find_element(By.ID, "requester-name").send_keys("佐藤　一郎")
    browser.find_element(By.NAME, "delegation_letter").click()
    issue_by_keyboard(browser)
    outcome = wait_for(browser, "#outcome")
    assert outcome.get_attribute("role") == "alert"  # announced (an implicit aria-live="assertive")
    assert focused_id(browser) == "outcome"
    assert in_viewport(browser, outcome)
    error = browser.find_element(By.ID, "issue-error")
    assert error.get_attribute("data-rule") == "support_measure"
    assert "交付していません" in error.text and "本人以外からの請求には交付できません" in error.text
    assert "support_measure" not in outcome.text  # the rule in Japanese, never its code


def test_a_removed_residents_refusal_shows_at_the_top_even_after_a_long_form(appliance, downtime, browser):
    login(browser, "clerk1")
    open_resident(browser, SUZUKI_REMOVED)
    press(browser, "1")  # 住民票の写し for a 除票: refused
    browser.execute_script("window.scrollTo(0, document.body.scrollHeight)")
    issue_by_keyboard(browser)
    error = wait_for(browser, "#issue-error")
    assert error.get_attribute("data-rule") == "removed_resident"
    assert in_viewport(browser, error) and browser.execute_script("return window.scrollY") == 0


def test_the_issued_page_keeps_type_fee_and_serial_in_view(appliance, downtime, browser):
    login(browser, "clerk1")
    open_resident(browser, YAMADA_TARO)
    copies = browser.find_element(By.ID, "copies")
    copies.clear()
    copies.send_keys("2")
    issue_by_keyboard(browser)
    title = wait_for(browser, "#issued-title")
    assert "住民票の写しを交付しました（2通・手数料 600円）" in title.text
    serials = [serial for _, serial in issued_requests(appliance, YAMADA_TARO)]
    summary = browser.find_element(By.ID, "issued-serials")
    assert all(f"{s:06d}" in summary.text for s in serials)
    for element in (title, browser.find_element(By.ID, "issued-fee"), summary, browser.find_element(By.ID, "same-person"),
                    browser.find_element(By.ID, "next-resident")):
        assert in_viewport(browser, element), element.text
    assert focused_id(browser) == "outcome"
    assert browser.find_element(By.ID, "outcome").get_attribute("role") == "status"

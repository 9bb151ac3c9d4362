"""The counter's common path and the DV refusal, keyboard only, in Chromium."""

from __future__ import annotations

from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select

from .conftest import arrived, leave_page, login, press, ready, wait_for, wait_for_focus_on_first_result


def test_banner_shows_mode_data_as_of_and_terminal_on_every_screen(downtime, browser):
    login(browser, "clerk1", terminal="本庁2")
    for path in ("/counter/", "/counter/deferred", "/runbooks/", "/drills/"):
        browser.get(browser.base_url + path)
        banner = wait_for(browser, "#banner")
        assert "データ時点" in banner.text and "令和" in banner.text
        assert wait_for(browser, "#banner-mode").text == "ダウン対策モード"
        assert "本庁2" in browser.find_element(By.ID, "banner-terminal").text


def test_common_path_by_keyboard_only(downtime, browser):
    login(browser, "clerk1")
    browser.get(browser.base_url + "/counter/")
    kana = wait_for(browser, "#q-kana")
    assert browser.switch_to.active_element == kana  # autofocus: the clerk starts typing at once
    kana.send_keys("やまだ たろう", Keys.ENTER)
    # focus lands on the first result: Enter opens it
    wait_for_focus_on_first_result(browser)
    leave_page(browser)
    press(browser, Keys.ENTER)
    arrived(browser)
    assert "山田" in browser.find_element(By.TAG_NAME, "h1").text
    press(browser, "1")
    assert browser.find_element(By.CSS_SELECTOR, 'input[name="kind"][value="juminhyo"]').is_selected()
    leave_page(browser)
    press(browser, Keys.CONTROL + Keys.ENTER)
    arrived(browser)
    assert "住民票の写し" in wait_for(browser, "#issued-title").text
    serial = browser.find_element(By.CSS_SELECTOR, "#issued-copies .serial").text
    assert serial.startswith("900001")
    leave_page(browser)
    press(browser, "n")
    arrived(browser)
    assert browser.current_url.endswith("/counter/")


def test_dv_refusal_in_the_browser(downtime, browser):
    login(browser, "clerk1")
    browser.get(browser.base_url + "/counter/?kana=サトウ")
    wait_for_focus_on_first_result(browser)
    leave_page(browser)
    press(browser, Keys.ENTER)
    arrived(browser)
    wait_for(browser, "#support-warning")
    Select(browser.find_element(By.ID, "requester-type")).select_by_value("agent")
    browser.find_element(By.ID, "requester-name").send_keys("佐藤　一郎")
    browser.find_element(By.NAME, "delegation_letter").click()
    ready(browser)
    leave_page(browser)
    press(browser, Keys.CONTROL + Keys.ENTER)
    arrived(browser)
    error = wait_for(browser, "#issue-error")
    assert error.get_attribute("data-rule") == "support_measure"
    assert "本人以外からの請求には交付できません" in error.text
    assert not browser.find_elements(By.ID, "approver")  # refused outright: no approval is offered

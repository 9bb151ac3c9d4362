"""The counter's common path and the DV refusal, keyboard only, in Chromium."""

from __future__ import annotations

from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

from .conftest import login, wait_for


def declare_downtime(driver, base_url):
    login(driver, base_url, "boss")
    driver.get(base_url + "/supervisor/")
    wait_for(driver, "#declare-detail").send_keys("テスト: クラウド応答なし")
    driver.find_element(By.ID, "declare-downtime").click()
    # The end-downtime form exists only once the new mode is in force.
    wait_for(driver, "#end-downtime")
    assert "ダウン対策モード" in driver.find_element(By.ID, "current-mode").text


def wait_for_focus_on_first_result(driver):
    """The page script moves the focus to the first result once loaded;
    pressing Enter before that would resubmit the search instead. The
    element focused may belong to the page being replaced: look again."""
    WebDriverWait(driver, 10, ignored_exceptions=(StaleElementReferenceException,)).until(
        lambda d: "result-row" in (d.switch_to.active_element.get_attribute("class") or ""))


def press(driver, *keys):
    chain = ActionChains(driver)
    for key in keys:
        chain.send_keys(key)
    chain.perform()


def test_banner_shows_mode_and_data_as_of_on_every_screen(live_url, open_browser):
    driver = open_browser()
    login(driver, live_url, "clerk1")
    for path in ("/counter/", "/counter/deferred"):
        driver.get(live_url + path)
        banner = wait_for(driver, "#banner")
        assert "データ時点" in banner.text and "令和" in banner.text
        assert wait_for(driver, "#banner-mode").text


def test_common_path_by_keyboard_only(live_url, open_browser):
    boss = open_browser()
    declare_downtime(boss, live_url)
    driver = open_browser()
    login(driver, live_url, "clerk1")
    driver.get(live_url + "/counter/")
    kana = wait_for(driver, "#q-kana")
    assert driver.switch_to.active_element == kana  # autofocus: the clerk starts typing at once
    kana.send_keys("やまだ たろう", Keys.ENTER)
    # focus lands on the first result: Enter opens it
    wait_for_focus_on_first_result(driver)
    press(driver, Keys.ENTER)
    wait_for(driver, "#issue-form")
    assert "山田" in driver.find_element(By.TAG_NAME, "h1").text
    press(driver, "1")
    assert driver.find_element(By.CSS_SELECTOR, 'input[name="kind"][value="juminhyo"]').is_selected()
    press(driver, Keys.CONTROL + Keys.ENTER)
    title = wait_for(driver, "#issued-title")
    assert "住民票の写し" in title.text
    serial = driver.find_element(By.CSS_SELECTOR, "#issued-copies .serial").text
    assert serial.startswith("900001")
    press(driver, "n")
    wait_for(driver, "#q-kana")
    assert driver.current_url.endswith("/counter/")


def test_dv_refusal_in_the_browser(live_url, open_browser):
    boss = open_browser()
    declare_downtime(boss, live_url)
    driver = open_browser()
    login(driver, live_url, "clerk1")
    driver.get(live_url + "/counter/?kana=サトウ")
    wait_for_focus_on_first_result(driver)
    press(driver, Keys.ENTER)
    wait_for(driver, "#support-warning")
    Select(driver.find_element(By.ID, "requester-type")).select_by_value("agent")
    driver.find_element(By.ID, "requester-name").send_keys("佐藤　一郎")
    driver.find_element(By.NAME, "delegation_letter").click()
    press(driver, Keys.CONTROL + Keys.ENTER)
    error = wait_for(driver, "#issue-error")
    assert error.get_attribute("data-rule") == "support_measure"
    assert "本人以外からの請求には交付できません" in error.text
    assert not driver.find_elements(By.ID, "approver")  # refused outright: no approval is offered

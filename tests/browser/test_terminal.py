"""A counter PC is bound to its terminal once, by a supervisor, with a
signed HttpOnly cookie: no list at every login, the terminal on every
screen, and the terminal the PC was registered as in every 発行番号."""

from __future__ import annotations

from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from fallback.ops import open_ops
from tests.support import PASSWORD

from .conftest import arrived, leave_page, login, press, ready, register_terminal, submit_terminal_registration, wait_for

YAMADA_TARO = "10000000011"


def request_terminals(appliance) -> list[tuple[str, str, str]]:
    conn = open_ops(appliance.config["SONAE"])
    try:
        return conn.execute("SELECT terminal, office, printer FROM requests WHERE outcome = 'issued'").fetchall()
    finally:
        conn.close()


def test_an_unregistered_pc_offers_no_list_and_keeps_its_counter_closed(downtime, browser):
    browser.get(browser.base_url + "/login")
    assert not browser.find_elements(By.CSS_SELECTOR, "#login-form select")  # no terminal to pick at login
    assert "登録されていません" in wait_for(browser, "#login-terminal").text
    login(browser, "clerk1", terminal=None)
    assert "未登録" in browser.find_element(By.ID, "banner-terminal").text
    browser.get(browser.base_url + "/counter/")
    assert "端末の登録" in wait_for(browser, "#counter-locked").text


def test_only_a_supervisors_password_registers_a_pc(downtime, browser):
    submit_terminal_registration(browser, "本庁2", "boss", "wrong-password-1")
    assert "パスワードが違います" in wait_for(browser, "#terminal-error").text
    submit_terminal_registration(browser, "本庁2", "clerk1", PASSWORD)
    assert "係長" in wait_for(browser, "#terminal-error").text
    assert not [c for c in browser.get_cookies() if c["name"] == "sonae_terminal"]
    submit_terminal_registration(browser, "本庁2", "boss", PASSWORD)
    cookie, = [c for c in browser.get_cookies() if c["name"] == "sonae_terminal"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert "本庁2" in browser.find_element(By.ID, "current-terminal").text


def test_a_registered_pc_logs_in_at_its_terminal_shows_it_and_prints_it_in_the_serial(appliance, downtime, browser):
    register_terminal(browser, "本庁3")
    browser.get(browser.base_url + "/login")
    assert "本庁3" in wait_for(browser, "#login-terminal").text and "プリンタ003" in browser.find_element(By.ID, "login-terminal").text
    assert "本庁3" in browser.find_element(By.ID, "banner-terminal").text
    login(browser, "clerk1", terminal=None)
    for path in ("/counter/", "/counter/deferred", "/runbooks/"):
        browser.get(browser.base_url + path)
        assert "本庁3（本庁・プリンタ003）" in wait_for(browser, "#banner-terminal").text
    browser.get(f"{browser.base_url}/counter/resident/{YAMADA_TARO}")
    ready(browser)
    leave_page(browser)
    press(browser, Keys.CONTROL + Keys.ENTER)
    arrived(browser)
    wait_for(browser, "#issued-title")
    assert request_terminals(appliance) == [("本庁3", "本庁", "プリンタ003")]


def test_an_edited_cookie_is_no_registration(downtime, browser):
    register_terminal(browser, "本庁1")
    cookie, = [c for c in browser.get_cookies() if c["name"] == "sonae_terminal"]
    browser.delete_cookie("sonae_terminal")
    forged = cookie["value"].replace(cookie["value"][5], "A" if cookie["value"][5] != "A" else "B", 1)
    browser.add_cookie({"name": "sonae_terminal", "value": forged, "path": "/"})
    browser.get(browser.base_url + "/login")
    assert "登録されていません" in wait_for(browser, "#login-terminal").text

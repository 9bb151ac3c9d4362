"""The request form from the keyboard, in Chromium at 1366×625: 世帯全員
ticks the members, the seal-card field is one key away, the key hints are
readable (contrast ≥ 4.5:1), and the counter's three most common tasks,
measured key by key (the README quotes these counts)."""

from __future__ import annotations

import json

from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from fallback.ops import open_ops

from .conftest import arrived, focused_id, leave_page, login, press, ready, wait_for, wait_for_focus_on_first_result

YAMADA_TARO = "10000000011"
HOUSEHOLD = {"10000000011", "10000000029", "10000000037"}

# What the README's table says, checked here key by key.
KEYSTROKES = {"household": 18, "self": 17, "seal": 27}


class Keyboard:
    """Presses keys one at a time, counting each press (a character typed
    is one press: the IME in kana mode; Ctrl+Enter is one chord)."""

    def __init__(self, driver):
        self.driver, self.presses = driver, 0

    def type(self, text: str) -> None:
        for character in text:
            ActionChains(self.driver).send_keys(character).perform()
            self.presses += 1

    def press(self, key: str, *, navigates: bool = False) -> None:
        if navigates:
            leave_page(self.driver)
        press(self.driver, key)
        self.presses += 1
        if navigates:
            arrived(self.driver)


def last_request(appliance) -> tuple[str, dict]:
    conn = open_ops(appliance.config["SONAE"])
    try:
        kind, options = conn.execute("SELECT kind, options FROM requests WHERE outcome = 'issued' ORDER BY id DESC LIMIT 1").fetchone()
        codes = conn.execute("SELECT resident_codes FROM certificates ORDER BY rowid DESC LIMIT 1").fetchone()[0]
    finally:
        conn.close()
    return kind, {**json.loads(options), "printed": set(json.loads(codes))}


def find_by_kana_and_birth(driver, keys: Keyboard) -> None:
    """The usual search: kana, Tab, birth date (the 7-digit era code), Enter;
    Enter opens the first result."""
    driver.get(driver.base_url + "/counter/")
    ready(driver)
    assert focused_id(driver) == "q-kana"
    keys.type("ヤマダタロウ")
    keys.press(Keys.TAB)
    assert focused_id(driver) == "q-birth"
    keys.type("3500615")
    keys.press(Keys.ENTER, navigates=True)
    wait_for_focus_on_first_result(driver)
    keys.press(Keys.ENTER, navigates=True)
    assert driver.current_url.endswith(f"/counter/resident/{YAMADA_TARO}")


def test_the_usual_path_household_juminhyo_in_18_keystrokes(appliance, downtime, browser):
    login(browser, "clerk1")
    keys = Keyboard(browser)
    find_by_kana_and_birth(browser, keys)
    keys.press("h")
    keys.press(Keys.CONTROL + Keys.ENTER, navigates=True)
    assert "住民票の写しを交付しました" in wait_for(browser, "#issued-title").text
    kind, options = last_request(appliance)
    assert kind == "juminhyo" and options["whole_household"] and options["printed"] == HOUSEHOLD
    assert keys.presses == KEYSTROKES["household"] < 47  # 47 before: the measurement


def test_a_juminhyo_for_the_resident_alone_in_17_keystrokes(appliance, downtime, browser):
    login(browser, "clerk1")
    keys = Keyboard(browser)
    find_by_kana_and_birth(browser, keys)
    keys.press(Keys.CONTROL + Keys.ENTER, navigates=True)
    kind, options = last_request(appliance)
    assert kind == "juminhyo" and options["printed"] == {YAMADA_TARO}
    assert keys.presses == KEYSTROKES["self"]


def test_a_seal_certificate_in_27_keystrokes_the_card_field_one_key_away(appliance, downtime, browser):
    login(browser, "clerk1")
    keys = Keyboard(browser)
    find_by_kana_and_birth(browser, keys)
    keys.press("4")
    assert focused_id(browser) == "seal-card-number"  # 4 goes straight to the card's number
    keys.type("C00000011")
    keys.press(Keys.CONTROL + Keys.ENTER, navigates=True)
    assert "印鑑登録証明書を交付しました" in wait_for(browser, "#issued-title").text
    assert last_request(appliance)[0] == "inkan"
    assert keys.presses == KEYSTROKES["seal"]


def test_the_seal_card_field_is_one_tab_after_the_type(downtime, browser):
    login(browser, "clerk1")
    browser.get(f"{browser.base_url}/counter/resident/{YAMADA_TARO}")
    ready(browser)
    browser.find_element(By.CSS_SELECTOR, 'input[name="kind"][value="inkan"]').click()
    press(browser, Keys.TAB)
    assert focused_id(browser) == "seal-card-number"


def test_ticking_the_whole_household_ticks_every_member(downtime, browser):
    login(browser, "clerk1")
    browser.get(f"{browser.base_url}/counter/resident/{YAMADA_TARO}")
    ready(browser)
    members = browser.find_elements(By.CSS_SELECTOR, "input.member")
    assert [m.is_selected() for m in members] == [True, False, False]
    browser.find_element(By.ID, "whole-household").click()
    assert all(m.is_selected() for m in members)
    members[1].click()  # one member off: no longer the whole household
    assert not browser.find_element(By.ID, "whole-household").is_selected()
    press(browser, "h")
    assert browser.find_element(By.ID, "whole-household").is_selected() and all(m.is_selected() for m in members)
    # every checkbox says whose it is
    assert [m.get_attribute("aria-label") for m in members][0].startswith("山田　太郎")


CONTRAST = """
function luminance(rgb) {
  const [r, g, b] = rgb.map(v => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
}
function parse(color) { return color.match(/[\\d.]+/g).map(Number); }
function background(element) {
  for (let e = element; e; e = e.parentElement) {
    const c = parse(getComputedStyle(e).backgroundColor);
    if (c.length < 4 || c[3] > 0) return c.slice(0, 3);
  }
  return [255, 255, 255];
}
return Array.from(document.querySelectorAll(arguments[0])).map(e => {
  const fg = luminance(parse(getComputedStyle(e).color).slice(0, 3)), bg = luminance(background(e));
  return [e.textContent, (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05)];
});
"""


def test_every_key_hint_is_readable(downtime, browser):
    login(browser, "clerk1")
    for path in ("/counter/", f"/counter/resident/{YAMADA_TARO}"):
        browser.get(browser.base_url + path)
        ready(browser)
        hints = browser.execute_script(CONTRAST, ".kbd")
        assert hints
        for text, ratio in hints:
            assert ratio >= 4.5, f"{text!r} on {path}: contrast {ratio:.2f}:1"

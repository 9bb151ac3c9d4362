"""The 届出 form from the keyboard alone, in Chromium: the kind by its
number key, Enter from field to field, Ctrl+Enter to record — and the
hold a 転出届 creates is on the resident's page at once."""

from __future__ import annotations

from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from .conftest import login, press, ready, wait_for

NAKAMURA = "10000000126"


def test_a_move_out_by_keyboard_only_holds_the_resident_at_once(downtime, browser):
    boss = browser
    login(boss, "boss2")
    boss.get(f"{boss.base_url}/filings/new?resident_code={NAKAMURA}")
    wait_for(boss, "#filing-form")
    ready(boss)
    assert boss.switch_to.active_element.get_attribute("name") == "kind"
    press(boss, "2")  # 転出届: the cursor goes to the 届出日
    assert boss.switch_to.active_element.get_attribute("id") == "notified-on"
    assert not boss.find_element(By.ID, "items-tenshutsu").get_attribute("hidden")
    assert boss.find_element(By.ID, "items-tenkyo").get_attribute("hidden")
    active = boss.switch_to.active_element
    active.send_keys(Keys.CONTROL, "a")
    press(boss, "R8.11.20", Keys.ENTER)  # 届出日 → 届出人 (filled with the resident's name)
    assert boss.switch_to.active_element.get_attribute("id") == "notifier-name"
    press(boss, Keys.ENTER, Keys.ENTER, " ")  # → 区分 → the first document (マイナンバーカード), ticked with the space bar
    assert boss.find_element(By.CSS_SELECTOR, 'input[name="documents"][value="マイナンバーカード"]').is_selected()
    boss.find_element(By.NAME, "tenshutsu:planned_move_out.date").send_keys("R8.12.1", Keys.ENTER)
    assert boss.switch_to.active_element.get_attribute("name") == "tenshutsu:planned_move_out.moved_to"
    press(boss, "横浜市中区日本大通1番地")
    press(boss, Keys.CONTROL + Keys.ENTER)  # Control held
    saved = wait_for(boss, "#filing-saved")
    assert "転出届" in saved.text
    assert "転出予定日 2026-12-01" in boss.find_element(By.ID, "filing-holds").text
    boss.get(f"{boss.base_url}/counter/resident/{NAKAMURA}")
    assert "転出届の受理" in wait_for(boss, "#hold-notices").text
    assert wait_for(boss, "#moveout-warning")

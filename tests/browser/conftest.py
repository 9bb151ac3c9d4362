"""A real browser (Debian's headless Chromium through ChromeDriver) against
the counter app served by waitress, as on a counter PC."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from fallback.demo.outage_day import start_chromium
from tests.support import PASSWORD, served


@pytest.fixture
def live_url(appliance):  # noqa: F811
    with served(appliance) as server:
        yield f"http://127.0.0.1:{server.effective_port}"


@pytest.fixture
def open_browser():
    drivers = []

    def start():
        drivers.append(start_chromium())
        return drivers[-1]

    yield start
    for driver in drivers:
        driver.quit()


def wait_for(driver, css: str, timeout: float = 10):
    return WebDriverWait(driver, timeout).until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, css)))


def login(driver, base_url: str, username: str, terminal: str = "本庁1") -> None:
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    driver.get(base_url + "/login")
    wait_for(driver, "#username").send_keys(username)
    Select(driver.find_element(By.ID, "terminal")).select_by_value(terminal)
    password = driver.find_element(By.ID, "password")
    password.send_keys(PASSWORD)
    password.send_keys(Keys.ENTER)
    WebDriverWait(driver, 10).until(lambda d: "/login" not in d.current_url)

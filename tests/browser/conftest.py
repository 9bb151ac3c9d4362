"""A real browser (Debian's headless Chromium through ChromeDriver) against
the counter app served by waitress, as on a counter PC: a 1366×768 screen,
which leaves a 1366×625 viewport once the browser's own bars are counted,
or a 390×844 phone for the residents' pages.

One Chromium per test module (starting one is most of a small test's
time); each test gets it with no cookies, on its own appliance and server.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import Select, WebDriverWait

from fallback.demo.outage_day import start_chromium
from tests.support import PASSWORD, served

COUNTER_PC = (1366, 625)
PHONE = (390, 844)
AXE = Path(__file__).parent / "node_modules" / "axe-core" / "axe.min.js"


@pytest.fixture
def live_url(appliance):  # noqa: F811
    with served(appliance) as server:
        yield f"http://127.0.0.1:{server.effective_port}"


@pytest.fixture(scope="module")
def chromium():
    driver = start_chromium()
    yield driver
    driver.quit()


def set_viewport(driver, size: tuple[int, int], *, mobile: bool = False) -> None:
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": size[0], "height": size[1], "deviceScaleFactor": 1, "mobile": mobile})


@pytest.fixture
def browser(chromium, live_url):
    """The module's Chromium as a counter PC, on this test's server, with
    no cookies (each test's appliance is another)."""
    chromium.get(live_url + "/healthz")
    chromium.delete_all_cookies()
    set_viewport(chromium, COUNTER_PC)
    chromium.base_url = live_url
    yield chromium
    chromium.execute_script("window.onbeforeunload = null")


def wait_for(driver, css: str, timeout: float = 10):
    return WebDriverWait(driver, timeout).until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, css)))


def wait_until(driver, predicate, timeout: float = 10):
    """Wait for `predicate(driver)`; an element of the page being replaced
    may go stale meanwhile: look again."""
    try:
        return WebDriverWait(driver, timeout, ignored_exceptions=(StaleElementReferenceException,)).until(predicate)
    except TimeoutException:  # say what the browser showed instead: a CI run timed out here with nothing to go on
        raise TimeoutException(f"waited {timeout:g} s at {driver.current_url}; the page said: "
                               f"{driver.find_element(By.TAG_NAME, 'body').text[:1500]!r}") from None


MODIFIERS = (Keys.CONTROL, Keys.SHIFT, Keys.ALT)


def press(driver, *keys):
    """Press keys one after the other; Keys.CONTROL + Keys.ENTER is one
    chord (Control held while Enter is pressed), as a person presses it."""
    chain = ActionChains(driver)
    for key in keys:
        if len(key) == 2 and key[0] in MODIFIERS:
            chain.key_down(key[0]).send_keys(key[1]).key_up(key[0])
        else:
            chain.send_keys(key)
    chain.perform()


def leave_page(driver) -> None:
    """Mark the current page so that `arrived` can tell the next one apart
    (pages share element ids)."""
    driver.execute_script("window.sonaeLeaving = true")


def arrived(driver, timeout: float = 15) -> None:
    """The next page has loaded and its script set up its keys."""
    wait_until(driver, lambda d: d.execute_script(
        "return document.readyState === 'complete' && !window.sonaeLeaving && document.documentElement.dataset.ready === '1'"), timeout)


def ready(driver, timeout: float = 15) -> None:
    """The page's script has set up its keys (a key pressed before would be lost)."""
    wait_until(driver, lambda d: d.execute_script("return document.documentElement.dataset.ready === '1'"), timeout)


def submit_terminal_registration(driver, terminal: str, username: str, password: str) -> None:
    """Fill in and send /terminal's form, whatever the answer."""
    driver.get(driver.base_url + "/terminal")
    Select(wait_for(driver, "#terminal")).select_by_value(terminal)
    driver.find_element(By.ID, "terminal-username").send_keys(username)
    driver.find_element(By.ID, "terminal-password").send_keys(password)
    leave_page(driver)
    driver.find_element(By.ID, "register-terminal").click()
    arrived(driver)


def register_terminal(driver, terminal: str = "本庁1", supervisor: str = "boss") -> None:
    """A supervisor registers this PC as `terminal` at /terminal."""
    submit_terminal_registration(driver, terminal, supervisor, PASSWORD)
    # Waited for, as every page here is: a CI run found the page without it an instant after it arrived.
    wait_until(driver, lambda d: d.find_elements(By.ID, "current-terminal"), timeout=30)
    assert terminal in driver.find_element(By.ID, "current-terminal").text, driver.find_element(By.TAG_NAME, "body").text


def login(driver, username: str, *, terminal: str | None = "本庁1") -> None:
    """Log in on this PC, registered as `terminal` first unless None."""
    if terminal is not None:
        register_terminal(driver, terminal)
    driver.get(driver.base_url + "/login")
    wait_for(driver, "#username").send_keys(username)
    password = driver.find_element(By.ID, "password")
    password.send_keys(PASSWORD)
    password.send_keys(Keys.ENTER)
    wait_until(driver, lambda d: "/login" not in d.current_url)
    arrived(driver)


def logout(driver) -> None:
    leave_page(driver)
    driver.find_element(By.CSS_SELECTOR, ".banner-user button").click()
    arrived(driver)


def wait_for_focus_on_first_result(driver):
    """The page script moves the focus to the first result once loaded;
    pressing Enter before that would resubmit the search instead."""
    wait_until(driver, lambda d: "result-row" in (d.switch_to.active_element.get_attribute("class") or ""))


def in_viewport(driver, element) -> bool:
    """The whole of `element` is inside the viewport, as it is shown now."""
    return driver.execute_script(
        "const r = arguments[0].getBoundingClientRect();"
        "return r.top >= 0 && r.left >= 0 && r.bottom <= window.innerHeight && r.right <= window.innerWidth && r.height > 0;",
        element)


def focused_id(driver) -> str:
    try:
        return driver.switch_to.active_element.get_attribute("id") or ""
    except StaleElementReferenceException:
        return ""


def axe_violations(driver, *, impacts=("critical", "serious")) -> list[dict]:
    """axe-core (installed from the npm registry by `make test`, never a CDN)
    run over the page as it is now; the violations of these impacts."""
    assert AXE.exists(), f"{AXE} is missing: run `make test` (npm ci --prefix tests/browser)"
    driver.execute_script(AXE.read_text(encoding="utf-8"))
    result = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']}).then(r => done(JSON.stringify(r.violations)), e => done(JSON.stringify({error: String(e)})));")
    violations = json.loads(result)
    assert not isinstance(violations, dict), violations
    return [v for v in violations if v["impact"] in impacts]


def describe(violations: list[dict]) -> str:
    return "; ".join(f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes'][:3]]}" for v in violations)

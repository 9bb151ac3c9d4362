"""One key prints: P sends the issued certificates to the terminal's CUPS
queue (a private cupsd, tests/printing/cups_server.py) and the page says
where they went; the PDF stays available to print from the browser. A
terminal without a queue: P opens the PDF."""

from __future__ import annotations

import subprocess

import pytest
import requests
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from fallback.config import DEFAULTS
from tests.printing.cups_server import cups_server  # noqa: F401  (fixture)
from tests.support import served

from .conftest import arrived, leave_page, login, press, ready, wait_for, wait_until

YAMADA_TARO = "10000000011"


@pytest.fixture
def live_url(configure_app, cups_server, monkeypatch):  # noqa: F811
    """The app with the first terminal printing to the private cupsd's PDF printer."""
    monkeypatch.setenv("CUPS_SERVER", cups_server.socket)
    terminals = [dict(t) for t in DEFAULTS["counter"]["terminals"]]
    terminals[0]["queue"] = "SONAE_PDF"
    with served(configure_app(counter={"terminals": terminals})) as server:
        yield f"http://127.0.0.1:{server.effective_port}"


def issue_yamada(driver) -> None:
    driver.get(f"{driver.base_url}/counter/resident/{YAMADA_TARO}")
    ready(driver)
    leave_page(driver)
    press(driver, Keys.CONTROL + Keys.ENTER)
    arrived(driver)
    wait_for(driver, "#issued-title")


def test_p_prints_to_the_terminals_queue_and_says_where(downtime, browser, cups_server):  # noqa: F811
    login(browser, "clerk1", terminal="本庁1")
    issue_yamada(browser)
    assert "プリンタ001に印刷" in browser.find_element(By.ID, "print-button").text
    assert browser.find_element(By.CSS_SELECTOR, "#issued-copies .print-state").text == "未印刷"
    leave_page(browser)
    press(browser, "p")
    arrived(browser)
    said = wait_for(browser, "#flash-outcome").text
    assert "プリンタ001（印刷キュー SONAE_PDF）に1通を送りました" in said and "900001: 印刷済み" in said
    assert browser.find_element(By.CSS_SELECTOR, "#issued-copies .print-state").text == "印刷済み"
    wait_until(browser, lambda d: cups_server.pdf_printer_output.exists(), 30)
    printed = subprocess.run(["pdftotext", str(cups_server.pdf_printer_output), "-"], capture_output=True, text=True).stdout
    assert "900001" in printed.replace(" ", "")
    # the browser's PDF is still there
    cookies = {c["name"]: c["value"] for c in browser.get_cookies()}
    pdf = requests.get(browser.find_element(By.ID, "open-pdf").get_attribute("href"), cookies=cookies, timeout=30)
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")


def test_a_stopped_printer_is_said_and_the_certificate_stays_issued(downtime, browser, cups_server):  # noqa: F811
    login(browser, "clerk1", terminal="本庁1")
    issue_yamada(browser)
    subprocess.run(["cupsdisable", "-h", cups_server.socket, "-r", "用紙切れ", "SONAE_PDF"], check=True)
    try:
        leave_page(browser)
        press(browser, "p")
        arrived(browser, timeout=30)
        said = wait_for(browser, "#flash-outcome").text
        assert "印刷できませんでした" in said and "プリンタ停止" in said and "交付済み" in said
    finally:
        subprocess.run(["cupsenable", "-h", cups_server.socket, "SONAE_PDF"], check=True)


def test_without_a_queue_p_opens_the_pdf(downtime, browser):
    login(browser, "clerk1", terminal="本庁2")  # no queue configured for 本庁2
    issue_yamada(browser)
    assert not browser.find_elements(By.ID, "print-button")
    assert "印刷キューが設定されていないため" in browser.find_element(By.ID, "printer-info").text
    windows = len(browser.window_handles)
    press(browser, "p")
    wait_until(browser, lambda d: len(d.window_handles) == windows + 1)
    browser.switch_to.window(browser.window_handles[-1])
    browser.close()
    browser.switch_to.window(browser.window_handles[0])

"""The supervisor and the residents, in Chromium: at recovery the
supervisor is prompted to publish the 「復旧しました」 notice, an edit is
never dropped on approval, no English code reaches a Japanese screen (staff
by display name), and /verify works on a 390×844 phone in both languages."""

from __future__ import annotations

import re
import subprocess

from selenium.webdriver.common.by import By

from fallback.ops import open_ops

from .conftest import PHONE, arrived, focused_id, in_viewport, leave_page, set_viewport, wait_for
from .conftest import login as sign_in

YAMADA_TARO, SATO_SUPPORT, SUZUKI_REMOVED = "10000000011", "10000000087", "10000000095"
ISSUE = {"requester_type": "self", "identity_document": "運転免許証"}


def click_and_arrive(driver, css: str) -> None:
    leave_page(driver)
    driver.find_element(By.CSS_SELECTOR, css).click()
    arrived(driver)


def publish_outage_notice(boss) -> None:
    drafted = boss.post("/supervisor/notice/draft")
    version_url = drafted.headers["Location"]
    assert boss.post(f"{version_url}/approve").status_code == 302


def test_at_recovery_the_supervisor_is_prompted_to_publish_the_recovered_notice(appliance, downtime, login, browser):
    publish_outage_notice(downtime)
    public = appliance.test_client()
    assert "障害" in public.get("/notice").get_data(as_text=True)
    assert downtime.post("/supervisor/mode", {"to_mode": "recovery", "reason": "住民記録システム復旧"}).status_code == 302
    sign_in(browser, "boss")
    browser.get(browser.base_url + "/supervisor/")
    prompt = wait_for(browser, "#notice-recovery-prompt")
    assert "まだ障害中のお知らせ" in prompt.text
    click_and_arrive(browser, "#draft-recovered-notice")
    assert "復旧" in browser.find_element(By.ID, "ja-title").get_attribute("value")
    click_and_arrive(browser, "#approve-button")
    assert "公開ページに掲載しました" in wait_for(browser, "#flash-outcome").text
    assert "住民記録システムは復旧しました" in public.get("/notice").get_data(as_text=True)
    browser.get(browser.base_url + "/supervisor/")
    wait_for(browser, "#mode-panel")
    assert not browser.find_elements(By.ID, "notice-recovery-prompt")


def test_an_unsaved_edit_is_approved_never_dropped(appliance, downtime, browser):
    drafted = downtime.post("/supervisor/notice/draft")
    sign_in(browser, "boss")
    browser.get(browser.base_url + drafted.headers["Location"])
    title = wait_for(browser, "#ja-title")
    title.clear()
    title.send_keys("【大田区】窓口の証明書交付についてのお知らせ（編集済み）")
    click_and_arrive(browser, "#approve-button")  # without pressing 下書きを保存 first
    assert "公開ページに掲載しました" in wait_for(browser, "#flash-outcome").text
    assert "（編集済み）" in appliance.test_client().get("/notice").get_data(as_text=True)


SNAKE_CODE = re.compile(r"\b[a-z]+(?:_[a-z]+)+\b")
ROLE_CODES = re.compile(r"\b(?:issued|refused|supervisor|clerk|drill_coordinator|auditor)\b")


def staff_pages_text(driver, paths) -> dict[str, str]:
    texts = {}
    for path in paths:
        driver.get(driver.base_url + path)
        texts[path] = wait_for(driver, "main").text
    return texts


def test_no_english_code_on_a_japanese_screen_and_staff_by_display_name(appliance, downtime, login, browser):
    conn = open_ops(appliance.config["SONAE"])
    conn.execute("UPDATE users SET display_name = '窓口　一子' WHERE username = 'clerk1'")
    conn.execute("UPDATE users SET display_name = '係長　二郎' WHERE username = 'boss'")
    conn.close()
    clerk = login("clerk1")
    for code, body in ((YAMADA_TARO, {"kind": "juminhyo"}), (SUZUKI_REMOVED, {"kind": "juminhyo"}),
                       (SATO_SUPPORT, {"kind": "juminhyo", "requester_type": "agent", "requester_name": "代理　人",
                                       "delegation_letter": True}),
                       (YAMADA_TARO, {"kind": "juminhyo", "requester_type": "agent", "requester_name": "代理　人"}),
                       (SATO_SUPPORT, {"kind": "juminhyo"})):
        clerk.api("POST", f"/api/v1/residents/{code}/certificates", json={**ISSUE, **body})
    assert downtime.post("/supervisor/mode", {"to_mode": "recovery", "reason": "住民記録システム復旧"}).status_code == 302
    sign_in(browser, "boss")
    texts = staff_pages_text(browser, ["/supervisor/", "/recovery/", "/recovery/incidents"])
    browser.get(browser.base_url + "/recovery/incidents")
    link = wait_for(browser, "#incident-list a")
    texts["incident report"] = staff_pages_text(browser, [link.get_attribute("href").removeprefix(browser.base_url)]).popitem()[1]
    supervisor = texts["/supervisor/"]
    assert "お断り: " in supervisor and "除票の方に除票の写し以外の証明書" in supervisor and "委任状のない代理人" in supervisor
    assert "支援措置の対象者" in supervisor
    assert "窓口　一子" in supervisor and "係長二郎" in re.sub(r"\s", "", texts["incident report"])
    for where, text in texts.items():
        assert not SNAKE_CODE.findall(text), f"{where}: {SNAKE_CODE.findall(text)}"
        assert not ROLE_CODES.findall(text), f"{where}: {ROLE_CODES.findall(text)}"
        assert "clerk1" not in text, where


def certificate_png(appliance, login, tmp_path) -> bytes:
    clerk = login("clerk1")
    issued = clerk.api("POST", f"/api/v1/residents/{YAMADA_TARO}/certificates", json={"kind": "juminhyo", **ISSUE})
    pdf = clerk.get(issued.get_json()["certificates"][0]["pdf"]).data
    (tmp_path / "c.pdf").write_bytes(pdf)
    subprocess.run(["pdftoppm", "-png", "-r", "200", "-f", "1", "-l", "1", "-singlefile", str(tmp_path / "c.pdf"), str(tmp_path / "page")],
                   check=True)
    return tmp_path / "page.png"


def test_verify_on_a_phone_offers_photos_and_camera_and_brings_the_result_into_view(appliance, downtime, login, browser, tmp_path):
    photo = certificate_png(appliance, login, tmp_path)
    set_viewport(browser, PHONE, mobile=True)
    browser.get(browser.base_url + "/verify/")
    chooser = wait_for(browser, "#verify-file")
    assert chooser.get_attribute("accept") == "image/*,application/pdf"
    camera = browser.find_element(By.ID, "verify-camera")
    assert camera.get_attribute("capture") == "environment" and camera.get_attribute("accept") == "image/*"
    english = browser.find_elements(By.CSS_SELECTOR, "main [lang=en]")
    assert english and any("Check a certificate" in e.text for e in english)
    chooser.send_keys(str(photo))
    click_and_arrive(browser, "#verify-form button[type=submit]")
    verdict = wait_for(browser, "#verify-verdict")
    assert "QRコードの署名を確認しました" in verdict.text and "The QR signature is valid" in verdict.text
    assert focused_id(browser) == "verify-result" and in_viewport(browser, verdict)

"""The public /verify page and `sonae verify` on a real appliance: a
certificate issued at the counter checks out; a forged one is NOT VALID
with the field named (in Japanese on the page); hostile uploads get a clear
answer quickly, never a 500; checks beyond the cap are told to come back;
the printed verification address is flagged while it is loopback."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import io
import os
import subprocess
import sys
import time

import pytest
import requests

from fallback.app import create_app
from fallback.config import load_config
from fallback.counter.rendering import municipality, print_settings
from fallback.keys import signing_key
from fallback.staff.security import UPLOAD_LIMIT
from fallback.verification import views
from printing.model import Certificate, IssueStamp
from tests.browser.conftest import live_url  # noqa: F401  (fixture)
from tests.printing.test_forgery import edited, png, scan, word_box
from tests.printing.test_hostile_files import bomb_png, tiny_pdf
from tests.support import example_records, text_of

YAMADA_TARO = "10000000011"
SELF_REQUEST = {"kind": "juminhyo", "requester_type": "self", "identity_document": "運転免許証", "copies": 1}
QUICK_S = 5.0


@pytest.fixture
def issued_pdf(login, downtime) -> bytes:
    """A certificate issued through the counter API, as the clerk gets it."""
    clerk = login("clerk1")
    response = clerk.api("POST", f"/api/v1/residents/{YAMADA_TARO}/certificates", json=SELF_REQUEST)
    assert response.status_code == 201, response.get_json()
    return clerk.get(response.get_json()["certificates"][0]["pdf"]).data


def taro_certificate(config, serial: int) -> Certificate:
    """山田 太郎's 住民票の写し as the appliance prints it, issued now."""
    taro = next(record for record in example_records("residents") if record["resident_code"] == YAMADA_TARO)
    moment = dt.datetime.now(dt.UTC)
    stamp = IssueStamp(serial=serial, issued_at=moment, data_as_of=moment, municipality=municipality(config),
                       terminal="本庁1", printer_id="プリンタ001")
    return Certificate("juminhyo", [taro], stamp, print_settings(config))


def upload(app, data: bytes, name: str = "certificate.pdf"):
    client = app.test_client()
    token = client.get("/api/v1/session").get_json()["csrf_token"]
    return client.post("/verify/", data={"csrf_token": token, "file": (io.BytesIO(data), name)},
                       content_type="multipart/form-data")


def test_an_issued_certificate_checks_out_with_its_content_shown(appliance, issued_pdf):
    response = upload(appliance, issued_pdf)
    page = text_of(response)
    assert response.status_code == 200
    assert "PDFの記載はすべて署名された内容と一致します" in page
    assert "山田　太郎" in page and "ヤマダ　タロウ" in page and "昭和50年6月15日" in page


def test_a_certificate_with_an_edited_name_is_not_valid_and_the_field_named(appliance, loaded_env):
    forged = edited(taro_certificate(loaded_env, 900123), signing_key(loaded_env), ">山田\u3000太郎（", ">山田\u3000次郎（")
    response = upload(appliance, forged)
    page = text_of(response)
    assert response.status_code == 422
    assert "確認できません：この証明書は署名された内容と一致しません" in page
    assert "1ページ目の1人目（山田　太郎）の氏名が、署名された内容「山田　太郎（ヤマダ　タロウ）」と異なります" in page
    assert 'class="differs"' in response.get_data(as_text=True)


def test_a_painted_scan_shows_what_the_paper_must_say(appliance, issued_pdf):
    image = scan(issued_pdf)
    left, top, right, bottom = word_box(issued_pdf, "太郎")
    from PIL import ImageDraw

    ImageDraw.Draw(image).rectangle((left, top, right, bottom), fill=255)
    jpeg = io.BytesIO()
    image.save(jpeg, format="JPEG", quality=90)  # as a phone or a scanner hands it over
    response = upload(appliance, jpeg.getvalue(), "scan.jpg")
    page = text_of(response)
    assert response.status_code == 200
    assert "用紙の記載を下の内容と見比べてください" in page
    assert "1人目（山田　太郎）の全項目" in page and "山田　太郎" in page


@pytest.mark.parametrize(("data", "message"), [
    (tiny_pdf(media_box="0 0 14400 14400"), "証明書の用紙ではありません"),
    (tiny_pdf(pages=500), "ページが多すぎます"),
    (bomb_png(20_000), "画像が大きすぎます"),
    (b"not a certificate at all", "このファイルは読めません"),
])
def test_hostile_uploads_get_a_clear_answer_quickly(appliance, data, message):
    started = time.monotonic()
    response = upload(appliance, data, "hostile.bin")
    assert response.status_code == 422 and message in text_of(response)
    assert time.monotonic() - started < QUICK_S


def test_an_upload_over_the_bound_is_refused_in_japanese(appliance):
    response = upload(appliance, b"%PDF-" + bytes(UPLOAD_LIMIT))
    assert response.status_code == 413 and "ファイルが大きすぎます（8MBまで）" in text_of(response)


def test_a_phone_photo_just_under_the_bound_is_taken(appliance):
    photo = b"\xff\xd8\xff" + bytes(UPLOAD_LIMIT - 4096)  # a large phone photo: read, then found unreadable
    response = upload(appliance, photo, "photo.jpg")
    assert response.status_code == 422 and "このファイルは読めません" in text_of(response)


def test_uploads_stay_in_memory(appliance):
    big = bytes(1024 * 1024)  # werkzeug spools anything over 500 KB to a temporary file by default
    with appliance.test_request_context("/verify/", method="POST", data={"file": (io.BytesIO(big), "c.pdf")},
                                        content_type="multipart/form-data"):
        from flask import request

        assert isinstance(request.files["file"].stream, io.BytesIO)


def test_checks_beyond_the_cap_are_told_to_come_back(live_url, issued_pdf, tmp_path):  # noqa: F811
    # A slow but legitimate-looking file: the certificate's page twenty times.
    (tmp_path / "one.pdf").write_bytes(issued_pdf)
    subprocess.run(["pdfunite", *[str(tmp_path / "one.pdf")] * 20, str(tmp_path / "twenty.pdf")], check=True)
    slow = (tmp_path / "twenty.pdf").read_bytes()
    session = requests.Session()
    token = session.get(f"{live_url}/api/v1/session").json()["csrf_token"]

    def check(_number):
        started = time.monotonic()
        answer = session.post(f"{live_url}/verify/", data={"csrf_token": token}, files={"file": ("c.pdf", slow, "application/pdf")})
        return answer, time.monotonic() - started

    count = views.MAX_CONCURRENT_CHECKS + 4
    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        answers = list(pool.map(check, range(count)))
    statuses = [answer.status_code for answer, _seconds in answers]
    assert set(statuses) <= {422, 503} and statuses.count(422) >= 1 and statuses.count(503) >= 1, statuses
    for answer, seconds in answers:
        if answer.status_code == 503:
            assert "混み合っています" in answer.text and answer.headers["Retry-After"] == "10"
            assert seconds < QUICK_S
        else:
            assert "全1ページ" in answer.text  # twenty copies of page 1/1: a clear NOT VALID


def test_sonae_verify_prints_valid_and_not_valid_lines(appliance, issued_pdf, loaded_env, tmp_path):
    env = {"PATH": "/usr/bin:/bin", **{key: value for key, value in os.environ.items() if key.startswith("SONAE_")}}
    (tmp_path / "issued.pdf").write_bytes(issued_pdf)
    good = subprocess.run([sys.executable, "-m", "fallback.cli", "verify", str(tmp_path / "issued.pdf")],
                          capture_output=True, text=True, env=env)
    assert good.returncode == 0, good.stderr
    assert good.stdout.startswith("VALID: every page's QR signature holds and the text matches every signed field")
    assert "氏名: 山田　太郎（ヤマダ　タロウ）" in good.stdout and "記録: rendered" in good.stdout
    (tmp_path / "scan.png").write_bytes(png(scan(issued_pdf)))
    scanned = subprocess.run([sys.executable, "-m", "fallback.cli", "verify", str(tmp_path / "scan.png")],
                             capture_output=True, text=True, env=env)
    assert scanned.returncode == 0 and "no text layer (a scan) — compare the paper by eye" in scanned.stdout
    # Signed with this appliance's key under the issued serial, the birth date edited afterwards.
    forged_pdf = edited(taro_certificate(loaded_env, 900001), signing_key(loaded_env), "昭和50年6月15日", "昭和51年6月15日")
    (tmp_path / "forged.pdf").write_bytes(forged_pdf)
    forged = subprocess.run([sys.executable, "-m", "fallback.cli", "verify", str(tmp_path / "forged.pdf")],
                            capture_output=True, text=True, env=env)
    assert forged.returncode == 1
    assert "NOT VALID: page 1: 1人目（山田　太郎）の生年月日 differs from the signed 「昭和50年6月15日」" in forged.stdout
    assert "NOT VALID: the pages differ from the certificate this appliance issued as 900001" in forged.stdout
    assert forged.stderr.strip().endswith("listed above")


def test_a_loopback_verification_address_is_flagged(loaded_env, monkeypatch):
    monkeypatch.setenv("SONAE_ALERTS_METRICS_TOKEN", "monitoring-token")
    token = {"Authorization": "Bearer monitoring-token"}
    appliance = create_app(load_config())
    appliance.config["TESTING"] = True
    readyz = appliance.test_client().get("/readyz", headers=token).get_json()
    assert readyz["checks"]["verification_address"]["ok"] is False
    assert "web.public_base_url が設定されていません" in readyz["checks"]["verification_address"]["detail"]
    assert readyz["status"] == "ready"  # flagged, not a reason to stop the counters
    from tests.support import Staff

    assert "web.public_base_url が設定されていません" in text_of(Staff(appliance, "it1").get("/monitor/"))
    monkeypatch.setenv("SONAE_WEB_PUBLIC_BASE_URL", "https://sonae.city.example.lg.jp")
    configured = create_app(load_config())
    configured.config["TESTING"] = True
    readyz = configured.test_client().get("/readyz", headers=token).get_json()
    assert readyz["checks"]["verification_address"] == {"ok": True, "detail": "確認先が設定されています"}
    assert "web.public_base_url" not in text_of(Staff(configured, "it1").get("/monitor/"))

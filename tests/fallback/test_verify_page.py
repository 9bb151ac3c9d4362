"""The public /verify page and `sonae verify` on a real appliance: the
very PDF issued at the counter checks out in full; the same certificate
painted over (its text layer as signed) is left to the checker's eye,
saying it is not the file issued; a forged one is NOT VALID with the field
or the added text named (in Japanese on the page); hostile uploads get a
clear answer quickly, never a 500; checks beyond the cap, or a second one
from the same client, are told to come back; the printed verification
address is flagged while it is loopback."""

from __future__ import annotations

import base64
import concurrent.futures
import datetime as dt
import io
import os
import re
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
from printing.render import render_html
from printing.verify import decode_qr_codes
from tests.browser.conftest import live_url  # noqa: F401  (fixture)
from tests.printing.test_forgery import edited, painted_over, pdf_from_html, png, scan, word_box
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


FULL_VERDICT = "署名を確認しました。このPDFは交付したファイルと同一で、記載はすべて署名された内容と一致します"
BY_EYE_VERDICT = "要確認：QRコードの署名を確認しました。正しい証明書かどうかは、PDFに見えている記載を下の内容と一字ずつ見比べて判断してください"


def test_an_issued_certificate_checks_out_with_its_content_shown(appliance, issued_pdf):
    response = upload(appliance, issued_pdf)
    page = text_of(response)
    assert response.status_code == 200
    assert FULL_VERDICT in page
    assert "山田　太郎" in page and "ヤマダ　タロウ" in page and "昭和50年6月15日" in page


def test_the_issued_certificate_painted_over_is_left_to_the_eye(appliance, issued_pdf, tmp_path):
    """The outside tester's forgery on the file the counter issued: the
    birth date under a white box, another drawn over it. Its text layer
    still matches what was signed; it used to be 「PDFの記載はすべて署名
    された内容と一致します」."""
    forged = painted_over(issued_pdf, "昭和50年6月15日", "S51.6.15", tmp_path)
    response = upload(appliance, forged)
    page = text_of(response)
    assert response.status_code == 200
    assert BY_EYE_VERDICT in page and "このPDFは交付したファイルと同一ではありません" in page
    assert "すべて署名された内容と一致します" not in page
    # headed in the caution colour, never in a pass's (a glance must not read it as VALID)
    assert '<h2 class="status-caution" id="verify-verdict">' in response.get_data(as_text=True)
    assert "1人目（山田　太郎）の全項目" in page and "昭和50年6月15日" in page  # what it must show, to compare
    # Re-saved unchanged, it is not the file issued either: the machine cannot tell the two apart.
    (tmp_path / "issued.pdf").write_bytes(issued_pdf)
    subprocess.run(["pdfunite", str(tmp_path / "issued.pdf"), str(tmp_path / "resaved.pdf")], check=True)
    resaved = text_of(upload(appliance, (tmp_path / "resaved.pdf").read_bytes()))
    assert BY_EYE_VERDICT in resaved and "このPDFは交付したファイルと同一ではありません" in resaved


def test_a_certificate_signed_but_never_issued_here_is_left_to_the_eye(appliance, loaded_env):
    """Signed with this appliance's key under a serial its records do not
    hold (records lost, or a key used elsewhere): no full verdict."""
    pdf = pdf_from_html(render_html(taro_certificate(loaded_env, 900123), signing_key(loaded_env)))
    response = upload(appliance, pdf)
    page = text_of(response)
    assert response.status_code == 200 and BY_EYE_VERDICT in page
    assert "発行番号 900123 のPDFは、この装置の交付記録にありません" in page


def test_a_household_member_added_after_the_footer_is_named(appliance, loaded_env):
    """The outside tester's extra_person.pdf: a third person written as
    text after the check's address line, which used to be ignored."""
    html = render_html(taro_certificate(loaded_env, 900123), signing_key(loaded_env))
    footer = re.search(r'<div class="verification">[^<]*</div>', html).group(0)
    added = html.replace(footer, footer + "<div>氏名　山田　次郎（ヤマダ　ジロウ）　生年月日　平成22年1月1日</div>", 1)
    response = upload(appliance, pdf_from_html(added))
    page = text_of(response)
    assert response.status_code == 422 and "確認できません：この証明書は署名された内容と一致しません" in page
    assert "1ページ目に、署名された内容にない記載「氏名山田次郎(ヤマダジロウ)生年月日平成22年1月1日」があります" in page


def paste(app, text: str):
    client = app.test_client()
    token = client.get("/api/v1/session").get_json()["csrf_token"]
    return client.post("/verify/", data={"csrf_token": token, "payload": text})


def test_a_pasted_code_is_taken_once_and_refused_twice(appliance, issued_pdf):
    code = decode_qr_codes(png(scan(issued_pdf)))[0]
    once = paste(appliance, code)
    assert once.status_code == 200 and "QRコードの署名を確認しました" in text_of(once)
    twice = paste(appliance, f"{code}\n{code}")
    page = text_of(twice)
    assert twice.status_code == 422 and "確認できません：この証明書は署名された内容と一致しません" in page
    assert "同じページ（1/1）が2回以上あります" in page


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
    assert "要確認：QRコードの署名を確認しました。正しい証明書かどうかは、用紙の記載を下の内容と一字ずつ見比べて判断してください" in page
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
    # A slow but legitimate-looking file: the certificate's page six times
    # (seconds of checking, still well within the check's deadline on a busy
    # machine, where twenty pages came near it).
    (tmp_path / "one.pdf").write_bytes(issued_pdf)
    subprocess.run(["pdfunite", *[str(tmp_path / "one.pdf")] * 6, str(tmp_path / "six.pdf")], check=True)
    slow = (tmp_path / "six.pdf").read_bytes()
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


def sonae_verify(*arguments: str) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", **{key: value for key, value in os.environ.items() if key.startswith("SONAE_")}}
    return subprocess.run([sys.executable, "-m", "fallback.cli", "verify", *arguments], capture_output=True, text=True, env=env)


def test_sonae_verify_prints_valid_and_not_valid_lines(appliance, issued_pdf, loaded_env, tmp_path):
    (tmp_path / "issued.pdf").write_bytes(issued_pdf)
    good = sonae_verify(str(tmp_path / "issued.pdf"))
    assert good.returncode == 0, good.stderr
    assert good.stdout.startswith("VALID: the file is the very PDF this appliance issued as 900001, and every page's QR signature holds")
    assert "氏名: 山田　太郎（ヤマダ　タロウ）" in good.stdout and "記録: rendered" in good.stdout
    (tmp_path / "scan.png").write_bytes(png(scan(issued_pdf)))
    scanned = sonae_verify(str(tmp_path / "scan.png"))
    assert scanned.returncode == 3  # compare by eye: not the status of a pass
    assert scanned.stdout.startswith("SIGNATURE VALID: every page's QR signature holds; no text layer (a scan) — compare the paper by eye")
    # The issued file painted over, its text layer as signed: the signature holds, the eye decides.
    (tmp_path / "painted.pdf").write_bytes(painted_over(issued_pdf, "昭和50年6月15日", "S51.6.15", tmp_path))
    painted = sonae_verify(str(tmp_path / "painted.pdf"))
    assert painted.returncode == 3, painted.stderr
    assert painted.stdout.startswith("SIGNATURE VALID: every page's QR signature holds; the file is not the PDF this appliance issued")
    assert "このPDFは交付したファイルと同一ではありません" in painted.stdout and "1人目（山田　太郎）の全項目" in painted.stdout
    # Offline, with the key alone, not even the issued file is VALID outright: there is nothing to compare it with.
    public_key = base64.b64encode(signing_key(loaded_env).public_key().public_bytes_raw()).decode()
    offline = sonae_verify("--public-key", public_key, str(tmp_path / "issued.pdf"))
    assert offline.returncode == 3, offline.stderr
    assert offline.stdout.startswith("SIGNATURE VALID: every page's QR signature holds; not compared with the issued PDF")
    assert "記録:" not in offline.stdout
    # Signed with this appliance's key under the issued serial, the birth date edited afterwards.
    forged_pdf = edited(taro_certificate(loaded_env, 900001), signing_key(loaded_env), "昭和50年6月15日", "昭和51年6月15日")
    (tmp_path / "forged.pdf").write_bytes(forged_pdf)
    forged = sonae_verify(str(tmp_path / "forged.pdf"))
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


def test_one_client_holds_one_check_at_a_time():
    """An outside tester kept /verify busy for everyone by sending two slow
    files in a loop: one client now holds one of the two slots at most."""
    assert (views.MAX_CONCURRENT_CHECKS, views.MAX_CHECKS_PER_CLIENT) == (2, 1)
    with views.check_slot("192.0.2.1") as first:
        with views.check_slot("192.0.2.1") as second, views.check_slot("192.0.2.2") as other:
            assert first and not second and other
            with views.check_slot("192.0.2.3") as third:
                assert not third  # two checks at once in all
    with views.check_slot("192.0.2.1") as again, views.check_slot("192.0.2.3") as next_client:
        assert again and next_client  # both slots given back


def test_sonae_verify_finds_a_drill_certificate_in_the_drill_records(appliance, login, tmp_path):
    """`sonae verify --accept-drill` on the issuing appliance looked the
    serial up in the real records and said it was not there."""
    from tests.drills.support import case_codes
    from tests.drills.test_drills import issue, start_drill

    coordinator, drill_id = start_drill(login)
    clerk = login("clerk1")
    assert issue(clerk, case_codes(appliance.config["SONAE"], drill_id)["ordinary"]).status_code == 302
    coordinator.post(f"/drills/{drill_id}/declare", {"reason": "住民記録システム障害（訓練）"})
    (tmp_path / "drill.pdf").write_bytes(clerk.get("/counter/certificate/drill/800001.pdf").data)
    coordinator.post(f"/drills/{drill_id}/end")  # the debrief comes after the drill
    login("boss").post("/supervisor/mode", {"to_mode": "downtime", "reason": "住民記録システム障害"})  # and a real outage
    refused = sonae_verify(str(tmp_path / "drill.pdf"))
    assert refused.returncode == 1 and refused.stderr.startswith("Error: NOT VALID:") and "訓練" in refused.stderr
    accepted = sonae_verify("--accept-drill", str(tmp_path / "drill.pdf"))
    assert accepted.returncode == 4, accepted.stdout + accepted.stderr  # shown, but never a script's pass
    assert accepted.stdout.startswith("VALID (drill — not a real certificate): the file is the very PDF this appliance issued as 800001")
    assert "記録: rendered" in accepted.stdout and "NOT VALID" not in accepted.stdout


SEAL_REQUEST = {**SELF_REQUEST, "kind": "inkan", "seal_card_number": "C00000011"}


def test_an_inkan_certificate_with_its_seal_replaced_is_refused_naming_the_seal(appliance, login, downtime):
    """The outside tester's forgery: the 印鑑登録証明書 issued at the counter
    with another seal drawn in place of the registered 印影. It answered
    要確認 with a list of things to compare that left the 印影 out."""
    from tests.printing.test_seal_impression import another_seal, with_seal_replaced

    clerk = login("clerk1")
    response = clerk.api("POST", f"/api/v1/residents/{YAMADA_TARO}/certificates", json=SEAL_REQUEST)
    assert response.status_code == 201, response.get_json()
    issued = clerk.get(response.get_json()["certificates"][0]["pdf"]).data
    genuine = upload(appliance, issued)
    assert genuine.status_code == 200 and FULL_VERDICT in text_of(genuine)
    forged = upload(appliance, with_seal_replaced(issued, another_seal((64, 64))))
    page = text_of(forged)
    assert forged.status_code == 422 and "確認できません：この証明書は署名された内容と一致しません" in page
    assert "1ページ目の印影が、交付したときのものと異なります" in page and "要確認" not in page
    photo = upload(appliance, png(scan(issued)), "photo.png")
    page = text_of(photo)
    assert photo.status_code == 200 and "要確認" in page
    assert "印影、証明文・交付日・市区町村長名" in page  # in the list of what to compare
    assert "写真・スキャンした画像・文字情報のないPDFの印影は、機械では照合できません" in page and "交付した区役所に" in page

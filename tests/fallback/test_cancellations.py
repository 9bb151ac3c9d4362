"""Cancelling a certificate already issued (書損・誤交付): a 係長 names the
serial and why, confirms the issuance it names, and from then on the
public check says NOT VALID for that certificate however it is shown (the
PDF, a photo, the codes' text, `sonae verify`), the counter neither prints
nor opens it, and the audit says who did it. A clerk cannot cancel; a
serial never handed out, or one cancelled already, is refused in words;
nothing else about the certificate changes (its serial stays used)."""

from __future__ import annotations

import os
import subprocess
import sys

from fallback.ops import open_ops
from printing.verify import decode_qr_codes
from tests.fallback.test_verify_page import SELF_REQUEST, YAMADA_TARO, paste, sonae_verify, upload
from tests.printing.test_forgery import png, scan
from tests.support import text_of

CANCELLED_VERDICT = "無効：この証明書は取り消されています"


def issue(clerk, copies: int = 1) -> dict:
    response = clerk.api("POST", f"/api/v1/residents/{YAMADA_TARO}/certificates", json={**SELF_REQUEST, "copies": copies})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def cancel(boss, serial: int, reason: str = "spoiled", note: str = "用紙が詰まり印刷がずれたため回収して廃棄"):
    """Both steps, as the 係長 takes them; returns the second answer."""
    first = boss.post("/cancellations/", {"serial": f"{serial:06d}", "reason": reason, "note": note})
    assert first.status_code == 200, text_of(first)
    assert "この証明書を取り消しますか" in text_of(first)
    return boss.post("/cancellations/", {"serial": str(serial), "reason": reason, "note": note, "confirmed": "yes"})


def records(appliance):
    return open_ops(appliance.config["SONAE"])


def test_a_cancelled_certificate_checks_as_not_valid_however_it_is_shown(appliance, login, downtime, tmp_path):
    clerk = login("clerk1")
    issued = issue(clerk)
    serial = issued["certificates"][0]["serial"]
    pdf = clerk.get(issued["certificates"][0]["pdf"]).data
    code = decode_qr_codes(png(scan(pdf)))[0]
    photo = png(scan(pdf))
    assert "署名を確認しました" in text_of(upload(appliance, pdf))  # genuine until cancelled

    done = cancel(downtime, serial, reason="wrongly_issued", note="別の方に交付したため回収")
    assert done.status_code == 302
    listed = text_of(downtime.get(done.headers["Location"]))
    assert f"発行番号 {serial:06d} の証明書を取り消しました（誤交付）" in listed
    assert "別の方に交付したため回収" in listed and "boss" in listed

    for answer in (upload(appliance, pdf), upload(appliance, photo, "photo.png"), paste(appliance, code)):
        page = text_of(answer)
        assert answer.status_code == 422, page
        assert CANCELLED_VERDICT in page
        assert f"この証明書（発行番号 {serial:06d}）は、令和" in page and "発行した区役所が取り消しました（誤交付）" in page
        assert "別の方に交付したため回収" not in page  # the note stays inside: it may name people
        assert "署名を確認しました" not in page

    (tmp_path / "issued.pdf").write_bytes(pdf)
    checked = sonae_verify(str(tmp_path / "issued.pdf"))
    assert checked.returncode == 1, checked.stdout
    assert f"NOT VALID: cancelled by the issuing ward: この証明書（発行番号 {serial:06d}）" in checked.stdout
    assert "VALID: the file is the very PDF" not in checked.stdout

    conn = records(appliance)
    entry = conn.execute("SELECT actor, target, detail FROM audit WHERE action = 'certificate.cancel'").fetchone()
    assert entry[0] == "boss" and entry[1] == f"real:{serial}" and '"reason":"wrongly_issued"' in entry[2]
    # Nothing else changed: the certificate is still the one issued, its serial used.
    assert conn.execute("SELECT status FROM certificates WHERE scope = 'real' AND serial = ?", (serial,)).fetchone()[0] == "rendered"
    assert issue(clerk)["certificates"][0]["serial"] == serial + 1


def test_the_counter_neither_prints_nor_opens_a_cancelled_copy(appliance, login, downtime):
    clerk = login("clerk1")
    issued = issue(clerk, copies=2)
    first, second = (c["serial"] for c in issued["certificates"])
    assert cancel(downtime, first).status_code == 302

    refused = clerk.get(issued["certificates"][0]["pdf"])
    assert refused.status_code == 410
    assert refused.get_json()["error"] == "certificate_cancelled"
    assert f"発行番号 {first:06d} の証明書は" in refused.get_json()["message"] and "取り消されています（書損）" in refused.get_json()["message"]
    assert clerk.get(issued["certificates"][1]["pdf"]).status_code == 200  # the other copy still holds

    page = clerk.get(f"/counter/issued/{issued['request_id']}")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "取消済み" in text_of(page) and "は取り消されています" in text_of(page)
    assert f"/counter/certificate/real/{first}.pdf" not in html and f"/counter/certificate/real/{second}.pdf" in html

    assert cancel(downtime, second).status_code == 302
    html = clerk.get(f"/counter/issued/{issued['request_id']}").get_data(as_text=True)
    assert 'id="print-form"' not in html and 'id="open-pdf"' not in html and "<iframe" not in html
    printed = clerk.post(f"/counter/issued/{issued['request_id']}/print")
    assert printed.status_code == 410
    assert "はすべて取り消されています。印刷しません" in text_of(printed)


def test_only_a_supervisor_cancels_and_refusals_say_why(appliance, login, downtime):
    clerk = login("clerk1")
    serial = issue(clerk)["certificates"][0]["serial"]

    tried = clerk.post("/cancellations/", {"serial": str(serial), "reason": "spoiled", "note": "x", "confirmed": "yes"})
    assert tried.status_code == 403
    assert login("aud").get("/cancellations/").status_code == 200  # the auditor reads the list
    assert login("aud").post("/cancellations/", {"serial": str(serial), "reason": "spoiled", "note": "x", "confirmed": "yes"}).status_code == 403

    unknown = downtime.post("/cancellations/", {"serial": "999999", "reason": "spoiled", "note": "印刷ミス"})
    assert unknown.status_code == 404 and "発行番号 999999 の証明書は、この装置の交付の記録にありません" in text_of(unknown)
    not_a_number = downtime.post("/cancellations/", {"serial": "00012a", "reason": "spoiled", "note": "印刷ミス"})
    assert not_a_number.status_code == 422 and "発行番号は、証明書の右下に印刷された数字" in text_of(not_a_number)
    huge = downtime.post("/cancellations/", {"serial": "9" * 40, "reason": "spoiled", "note": "印刷ミス"})
    assert huge.status_code == 404
    no_note = downtime.post("/cancellations/", {"serial": str(serial), "reason": "spoiled", "note": "   "})
    assert no_note.status_code == 422 and "取消の経緯を書いてください" in text_of(no_note)
    no_reason = downtime.post("/cancellations/", {"serial": str(serial), "reason": "because", "note": "印刷ミス"})
    assert no_reason.status_code == 422 and "取消の理由は" in text_of(no_reason)
    # Full-width digits, as an IME types them, are the same serial.
    wide = str(serial).translate(str.maketrans("0123456789", "０１２３４５６７８９"))
    confirm = downtime.post("/cancellations/", {"serial": wide, "reason": "spoiled", "note": "印刷ミス"})
    assert confirm.status_code == 200 and f"{serial:06d}" in text_of(confirm) and "住民票の写し" in text_of(confirm)

    assert cancel(downtime, serial).status_code == 302
    again = downtime.post("/cancellations/", {"serial": str(serial), "reason": "spoiled", "note": "もう一度"})
    assert again.status_code == 409 and f"発行番号 {serial:06d} の証明書は、" in text_of(again) and "に boss が取り消し済みです（書損）" in text_of(again)
    conn = records(appliance)
    assert conn.execute("SELECT count(*) FROM certificate_cancellations").fetchone()[0] == 1
    assert conn.execute("SELECT count(*) FROM audit WHERE action = 'certificate.cancel'").fetchone()[0] == 1


def test_a_voided_serial_is_not_cancelled_again(appliance, login, downtime):
    """A serial voided before its PDF was made was never handed out."""
    serial = issue(login("clerk1"))["certificates"][0]["serial"]
    conn = records(appliance)
    conn.execute("UPDATE certificates SET status = 'void' WHERE serial = ?", (serial,))
    refused = downtime.post("/cancellations/", {"serial": str(serial), "reason": "spoiled", "note": "印刷ミス"})
    assert refused.status_code == 409 and "証明書を作る前に無効にした番号で、交付されていません" in text_of(refused)


def test_sonae_certificate_cancel_from_the_console(appliance, login, downtime):
    clerk = login("clerk1")
    issued = issue(clerk)
    serial = issued["certificates"][0]["serial"]
    env = {"PATH": "/usr/bin:/bin", **{key: value for key, value in os.environ.items() if key.startswith("SONAE_")}}

    def sonae(*arguments):
        return subprocess.run([sys.executable, "-m", "fallback.cli", "certificate", *arguments], capture_output=True, text=True, env=env)

    empty = sonae("cancellations")
    assert empty.returncode == 0 and empty.stdout == "" and "no certificate has been cancelled" in empty.stderr
    missing_note = sonae("cancel", str(serial), "--reason", "spoiled")
    assert missing_note.returncode == 2 and "--note" in missing_note.stderr
    done = sonae("cancel", str(serial), "--reason", "spoiled", "--note", "印刷ミス", "--actor", "it:tanaka")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"cancelled {serial:06d} (request {issued['request_id']}, spoiled)")
    twice = sonae("cancel", str(serial), "--reason", "spoiled", "--note", "印刷ミス")
    assert twice.returncode == 1 and "取り消し済みです" in twice.stderr
    unknown = sonae("cancel", "424242", "--reason", "spoiled", "--note", "印刷ミス")
    assert unknown.returncode == 1 and "発行番号 424242 の証明書は、この装置の交付の記録にありません" in unknown.stderr
    listed = sonae("cancellations")
    assert listed.stdout.split("\t")[0] == f"{serial:06d}" and "\tit:tanaka\tspoiled\t" in listed.stdout
    assert records(appliance).execute("SELECT actor FROM audit WHERE action = 'certificate.cancel'").fetchone()[0] == "it:tanaka"

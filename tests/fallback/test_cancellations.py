"""Cancelling a certificate already issued (書損・誤交付): a 係長 names the
serial and why, confirms the issuance it names, and from then on the
public check says NOT VALID for that certificate however it is shown (the
PDF, a photo, the codes' text, `sonae verify`), the counter neither prints
nor opens it, and the audit says who did it. A clerk cannot cancel; a
serial never handed out, or one cancelled already, is refused in words;
nothing else about the certificate changes (its serial stays used)."""

from __future__ import annotations

import os
import pwd
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
        assert f"この証明書（発行番号 {serial:06d}）は、発行した区役所が令和" in page and "に取り消しました（誤交付）" in page
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
    denied = records(appliance).execute("SELECT actor, target, detail FROM audit WHERE action = 'records.denied'").fetchall()
    assert denied == [("clerk1", f"real:{first}", f'{{"reason":"cancelled","request":{issued["request_id"]}}}')]  # the attempt is kept
    assert refused.get_json()["error"] == "certificate_cancelled"
    assert f"発行番号 {first:06d} の証明書は" in refused.get_json()["message"] and "取り消されています（書損）" in refused.get_json()["message"]
    live_pdf = clerk.get(issued["certificates"][1]["pdf"])
    assert live_pdf.status_code == 200  # the other copy still holds
    # Its code on the cancelled copy's paper (the outside tester's swap) checks by eye, the serial first:
    # the copies of one request differ in nothing else.
    swapped = text_of(paste(appliance, decode_qr_codes(png(scan(live_pdf.data)))[0]))
    assert f"まず、証明書の発行番号が {second:06d} であることを確かめてください。" in swapped

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
    assert tried.status_code == 403 and "次の役割の職員が使います: 係長" in text_of(tried)
    assert login("aud").get("/cancellations/").status_code == 200  # the auditor reads the list
    assert login("aud").post("/cancellations/", {"serial": str(serial), "reason": "spoiled", "note": "x", "confirmed": "yes"}).status_code == 403

    unknown = downtime.post("/cancellations/", {"serial": "999999", "reason": "spoiled", "note": "印刷ミス"})
    assert unknown.status_code == 404 and "発行番号 999999 の証明書は、この装置の交付の記録にありません" in text_of(unknown)
    not_a_number = downtime.post("/cancellations/", {"serial": "00012a", "reason": "spoiled", "note": "印刷ミス"})
    assert not_a_number.status_code == 422 and "発行番号は、証明書の右下に印刷された数字" in text_of(not_a_number)
    huge = downtime.post("/cancellations/", {"serial": "9" * 40, "reason": "spoiled", "note": "印刷ミス"})
    assert huge.status_code == 422 and "発行番号が長すぎます（18桁まで）" in text_of(huge)
    for odd in ("²", "9" * 5000):  # a superscript digit, and more digits than Python turns into an int
        answer = downtime.post("/cancellations/", {"serial": odd, "reason": "spoiled", "note": "印刷ミス"})
        assert answer.status_code == 422 and "発行番号" in text_of(answer) and "invalid" not in text_of(answer)
    largest = downtime.post("/cancellations/", {"serial": "9" * 18, "reason": "spoiled", "note": "印刷ミス"})
    assert largest.status_code == 404 and "この装置の交付の記録にありません" in text_of(largest)
    no_note = downtime.post("/cancellations/", {"serial": str(serial), "reason": "spoiled", "note": "   "})
    assert no_note.status_code == 422 and "取消の経緯を書いてください" in text_of(no_note)
    no_reason = downtime.post("/cancellations/", {"serial": str(serial), "reason": "because", "note": "印刷ミス"})
    assert no_reason.status_code == 422 and "取消の理由は 書損・誤交付・その他 のどれかを選んでください" in text_of(no_reason)
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
    for odd in ("evil\tname", "\u202eevil"):  # a tab breaks the listing's columns; a bidi override turns a name around
        refused = sonae("cancel", str(serial), "--reason", "spoiled", "--note", "印刷ミス", "--actor", odd)
        assert refused.returncode == 2 and "control characters" in refused.stderr
    env["LOGNAME"] = env["USER"] = "kakaricho\t2026-12-07T09:00"  # the OS user is the process's, not what the environment says
    done = sonae("cancel", str(serial), "--reason", "spoiled", "--note", "印刷ミス", "--actor", "鈴木　一郎")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"cancelled {serial:06d} (request {issued['request_id']}, spoiled)")
    twice = sonae("cancel", str(serial), "--reason", "spoiled", "--note", "印刷ミス")
    assert twice.returncode == 1 and "取り消し済みです" in twice.stderr
    unknown = sonae("cancel", "424242", "--reason", "spoiled", "--note", "印刷ミス")
    assert unknown.returncode == 1 and "発行番号 424242 の証明書は、この装置の交付の記録にありません" in unknown.stderr
    listed = sonae("cancellations")
    # The console is named first: --actor cannot make it pass for the 係長's own cancellation at the web page.
    console = records(appliance).execute("SELECT actor FROM audit WHERE action = 'certificate.cancel'").fetchone()[0]
    assert console == f"cli:{pwd.getpwuid(os.getuid()).pw_name} for 鈴木　一郎"
    assert listed.stdout.split("\t")[0] == f"{serial:06d}" and f"\t{console}\tspoiled\t" in listed.stdout


def test_nobody_cancels_on_the_web_while_a_drill_runs_and_a_drill_serial_is_named_as_such(appliance, login, downtime):
    """The outside testers' drill: a 係長 taking part in it, on the drill's
    screen (「この画面の操作と証明書はすべて訓練用です」), cancelled a real
    certificate for good — at the drill's terminal, then (the re-test) at
    another one, under the same banner; and a drill certificate's serial
    was called absent from the records."""
    from tests.drills.support import start_drill

    clerk = login("clerk1")
    real_serial = issue(clerk)["certificates"][0]["serial"]
    for mode in ("recovery", "standby"):
        assert downtime.post("/supervisor/mode", {"to_mode": mode, "reason": "上流が復旧"}).status_code == 302
    start_drill(appliance.config["SONAE"], participants=("clerk2", "boss2"))
    for boss, terminal in (("boss2", "本庁1"), ("boss2", "本庁2"), ("boss", "本庁3")):  # a participant anywhere, and one who is not
        staff = login(boss, terminal)
        page = staff.get("/cancellations/")
        assert page.status_code == 200 and 'id="cancellation-form"' not in page.get_data(as_text=True)
        assert "訓練の実施中は、この画面では証明書を取り消せません" in text_of(page)
        refused = staff.post("/cancellations/", {"serial": str(real_serial), "reason": "spoiled", "note": "訓練で書損の練習", "confirmed": "yes"})
        assert refused.status_code == 409 and "訓練の実施中は" in text_of(refused)
    conn = records(appliance)
    assert conn.execute("SELECT count(*) FROM certificate_cancellations").fetchone()[0] == 0
    denied = conn.execute("SELECT actor, detail, drill FROM audit WHERE action = 'records.denied' ORDER BY id").fetchall()
    assert [(actor, drill) for actor, _, drill in denied] == [("boss2", 1), ("boss2", 1), ("boss", 1)]
    assert all(f'"serial":"{real_serial}"' in detail and '"reason":"drill_running"' in detail for _, detail, _ in denied)

    drill_clerk = login("clerk2")
    drill_codes = [r["resident_code"] for r in drill_clerk.api("GET", "/api/v1/residents?kana=ア").get_json()["results"]]
    drill_issued = drill_clerk.api("POST", f"/api/v1/residents/{drill_codes[0]}/certificates", json=SELF_REQUEST)
    assert drill_issued.status_code == 201, drill_issued.get_json()
    drill_serial = drill_issued.get_json()["certificates"][0]["serial"]
    from fallback import drills

    drills.end(conn, drills.active_drill(conn).id, actor="coord")
    named = downtime.post("/cancellations/", {"serial": str(drill_serial), "reason": "spoiled", "note": "印刷ミス"})
    assert named.status_code == 409 and f"発行番号 {drill_serial:06d} は訓練の証明書です" in text_of(named)


def test_the_outage_records_say_which_certificates_were_cancelled(appliance, login, downtime):
    """The recovery worklist, the issuance history handed to the 本人通知制度
    and the incident report (paper accounting) counted cancelled copies as
    issued, with no mark."""
    import csv
    import io

    clerk = login("clerk1")
    issued = issue(clerk, copies=3)
    first, second, third = (c["serial"] for c in issued["certificates"])
    assert cancel(downtime, first).status_code == 302
    assert cancel(downtime, second, reason="wrongly_issued", note="別の方に交付").status_code == 302
    replay = clerk.api("POST", f"/api/v1/residents/{YAMADA_TARO}/certificates", json={**SELF_REQUEST, "copies": 3})
    assert replay.status_code == 422  # a same-day repeat: the third copy still holds
    assert downtime.post("/supervisor/mode", {"to_mode": "recovery", "reason": "上流が復旧"}).status_code == 302
    incident = records(appliance).execute("SELECT min(id) FROM mode_changes").fetchone()[0]

    history = downtime.get(f"/reentry/{incident}/issuance-history.csv")
    assert history.headers["Content-Type"] == "text/csv; charset=utf-8"  # once
    (row,) = list(csv.DictReader(io.StringIO(history.get_data().decode("utf-8-sig"))))
    assert row["発行番号"] == f"{first} {second} {third}"
    assert row["取り消した発行番号"] == f"{first:06d}（書損） {second:06d}（誤交付）"
    report = downtime.get(f"/recovery/incidents/{incident}.md").get_data(as_text=True)
    assert "合計 3枚。" in report and "うち、交付した後に取り消した証明書 2枚（書損 1枚、誤交付 1枚）。" in report

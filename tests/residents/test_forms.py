"""The 交付申請書: pre-filled from the copy (read back with pdftotext), only
for counter roles while the counter is open, audited like a record view;
never for a support-measure resident; blank for paper-only work; the
layout replaceable by the ward's own template."""

from __future__ import annotations

from fallback import audit
from fallback.config import load_config
from fallback.ops import open_ops
from fallback.residents import forms
from tests.support import pdf_text, squeezed

from ..conftest import example_records
from .conftest import jst

YAMADA_TARO, WANG_WEI, SATO_SUPPORT = "10000000011", "10000000061", "10000000087"
PRINTED = jst(2026, 11, 25, 10, 5)


def resident(code: str) -> dict:
    return next(r for r in example_records("residents") if r["resident_code"] == code)


def test_prefilled_form_text(sonae_env, tmp_path):
    pdf = forms.request_form_pdf(sonae_env, resident(YAMADA_TARO), printed_at=PRINTED, data_as_of=jst(2026, 11, 24, 23, 0))
    text = pdf_text(pdf, tmp_path)
    flat = squeezed(text)
    assert "住民票の写し・印鑑登録証明書等交付申請書" in flat and "（あて先）大田区長" in flat
    assert "山田太郎" in flat and "ヤマダタロウ" in flat
    assert "東京都大田区西蒲田七丁目49番1号" in flat
    assert "昭和50年6月15日" in flat
    assert "申請日令和8年11月25日" in flat
    assert "住民記録の写し（令和8年11月24日23時00分時点）から氏名・住所・生年月日を印字しました" in flat
    assert "印字された内容を確認してください" in flat and "申請者の署名" in flat
    # Only what Caora would read from the card: no code, no household, no 本籍.
    person = resident(YAMADA_TARO)
    for withheld in (person["resident_code"], person["household_id"], person["honseki"], person["atena_number"]):
        assert withheld not in flat


def test_foreign_resident_form_uses_the_gregorian_calendar(sonae_env, tmp_path):
    flat = squeezed(pdf_text(forms.request_form_pdf(sonae_env, resident(WANG_WEI), printed_at=PRINTED), tmp_path))
    assert "王偉" in flat and "WANGWEI" in flat and "通称大山偉" in flat
    assert "1991年3月12日" in flat
    assert "東京都大田区蒲田五丁目30番15号第２パークビル５０２" in flat


def test_blank_form_and_drill_marking(sonae_env, tmp_path):
    flat = squeezed(pdf_text(forms.request_form_pdf(sonae_env, None, printed_at=PRINTED, drill=True), tmp_path))
    assert "申請日令和年月日" in flat and "明・大・昭・平・令年月日" in flat
    assert "訓練用TRAINING—実際の申請には使えません" in flat
    assert "印字しました" not in flat and "山田" not in flat


def test_a_ward_template_replaces_the_layout(sonae_env, tmp_path, monkeypatch):
    layout = tmp_path / "ota-form.html"
    layout.write_text(
        '<html><body style="font-family: IPAexMincho"><h1>{{ title }}（大田区様式第3号）</h1>'
        '<p>氏名 {{ applicant.name if applicant else "" }}</p><p>生年月日 {{ applicant.birth_date if applicant else "" }}</p></body></html>',
        encoding="utf-8",
    )
    monkeypatch.setenv("SONAE_FORMS_TEMPLATE", str(layout))
    monkeypatch.setenv("SONAE_FORMS_TITLE", "証明書交付申請書")
    flat = squeezed(pdf_text(forms.request_form_pdf(load_config(), resident(YAMADA_TARO), printed_at=PRINTED), tmp_path))
    assert flat == "証明書交付申請書（大田区様式第3号）氏名山田太郎生年月日昭和50年6月15日"


def test_counter_prints_the_prefilled_form(appliance, login, loaded_env, tmp_path):
    clerk = login("clerk1")
    # Outside downtime the counter is closed, and so is the form.
    assert clerk.get(f"/forms/request/{YAMADA_TARO}.pdf").status_code == 423
    boss = login("boss")
    assert boss.post("/supervisor/mode", {"to_mode": "downtime", "reason": "住民記録システム障害"}).status_code == 302

    page = clerk.get(f"/counter/resident/{YAMADA_TARO}").get_data(as_text=True)
    assert f'href="/forms/request/{YAMADA_TARO}.pdf"' in page and "申請書を印刷" in page
    response = clerk.get(f"/forms/request/{YAMADA_TARO}.pdf")
    assert response.status_code == 200 and response.mimetype == "application/pdf"
    assert response.headers["Cache-Control"] == "no-store"
    flat = squeezed(pdf_text(response.data, tmp_path))
    assert "山田太郎" in flat and "東京都大田区西蒲田七丁目49番1号" in flat and "昭和50年6月15日" in flat

    conn = open_ops(loaded_env)
    printed = [(e["actor"], e["action"], e["target"]) for e in audit.entries(conn, actor="clerk1") if e["action"] in ("view", "form.prefilled")]
    conn.close()
    # The resident page view, then the form: a view and the print, both audited.
    assert printed == [("clerk1", "view", YAMADA_TARO), ("clerk1", "view", YAMADA_TARO), ("clerk1", "form.prefilled", YAMADA_TARO)]

    assert login("aud").get(f"/forms/request/{YAMADA_TARO}.pdf").status_code == 403
    assert clerk.get("/forms/request/99999999999.pdf").status_code == 404


def test_support_measure_resident_gets_a_blank_form(appliance, login, loaded_env, tmp_path):
    boss = login("boss")
    assert boss.post("/supervisor/mode", {"to_mode": "downtime", "reason": "住民記録システム障害"}).status_code == 302
    clerk = login("clerk1")
    page = clerk.get(f"/counter/resident/{SATO_SUPPORT}").get_data(as_text=True)
    assert f"/forms/request/{SATO_SUPPORT}.pdf" not in page and 'href="/forms/request-blank.pdf"' in page

    refused = clerk.get(f"/forms/request/{SATO_SUPPORT}.pdf")
    assert refused.status_code == 403 and refused.mimetype == "text/html"
    body = refused.get_data(as_text=True)
    assert "支援措置" in body and resident(SATO_SUPPORT)["address"]["banchi"] not in body
    conn = open_ops(loaded_env)
    attempts = [e["detail"] for e in audit.entries(conn, action="support_measure.attempt")]
    conn.close()
    assert attempts == [{"outcome": "refused", "rule": "prefilled_form"}]

    blank = clerk.get("/forms/request-blank.pdf")
    assert blank.status_code == 200
    assert "佐藤" not in squeezed(pdf_text(blank.data, tmp_path))


def test_blank_form_is_printable_ahead_of_an_outage(appliance, login):
    # Standby, no counter open: the blank form has no resident data.
    response = login("coord").get("/forms/request-blank.pdf")
    assert response.status_code == 200 and response.data.startswith(b"%PDF")

"""One test per certificate content rule, checked on the real PDF's text
(pdftotext) and, where the rule is about pixels, its images."""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt

import pytest
from PIL import Image

from printing.content import printed_content
from printing.model import NO_OFFICIAL_SEAL, OPTIONAL_ITEMS, SPECIMEN_SEAL_IMAGE, CertificateError, PrintSettings
from printing.render import RenderError, render_certificate
from tests.printing.support import (
    compact,
    extra_members,
    extracted_images,
    household,
    image_list,
    make_stamp,
    page_count,
    page_images,
    pdf_text,
)

YAMADA = "0000100001"
TAKAHASHI = "10000000045"
WANG = "10000000061"
NGUYEN = "10000000079"
SUZUKI_REMOVED = "10000000095"
TANAKA_MOVING = "10000000100"
KOBAYASHI_DECEASED = "10000000118"
ALL_ITEMS = frozenset(OPTIONAL_ITEMS)


def render(cert, signing_key):
    return render_certificate(cert, signing_key)


def entry_items(cert, person: int = 0) -> dict[str, str]:
    """The items of one person of a certificate, label -> value, as printed."""
    entries = [entry for sheet in printed_content(cert).sheets for entry in sheet.entries]
    return {item.label: item.value for item in entries[person].items}


# --- layouts -----------------------------------------------------------------


def test_renketsu_puts_four_people_on_a_sheet_and_continues_on_the_next(residents, certificate, signing_key):
    members = household(residents, YAMADA)
    members += extra_members(members[-1], 2)  # five people
    rendered = render(certificate("juminhyo", members, layout="renketsu", requested=ALL_ITEMS), signing_key)

    assert rendered.pages == page_count(rendered.pdf) == 2
    first, second = compact(pdf_text(rendered.pdf, 1)), compact(pdf_text(rendered.pdf, 2))
    assert [name in first for name in ("山田太郎", "山田花子", "山田一郎", "山田子一")] == [True] * 4
    assert "山田子二" not in first and "山田子二" in second
    # the household address heads every sheet
    assert "東京都大田区西蒲田七丁目49番1号" in first and "東京都大田区西蒲田七丁目49番1号" in second


def test_kojin_prints_one_person_per_sheet(residents, certificate, signing_key):
    members = household(residents, YAMADA)
    rendered = render(certificate("juminhyo", members, layout="kojin"), signing_key)

    assert rendered.pages == page_count(rendered.pdf) == 3
    for page, member in enumerate(members, start=1):
        text = compact(pdf_text(rendered.pdf, page))
        assert compact(member["name"]) in text
        others = [compact(other["name"]) for other in members if other is not member]
        assert not any(other in text for other in others)


def test_johyo_is_issued_only_as_kojin(residents, certificate):
    with pytest.raises(CertificateError, match="個人票"):
        certificate("johyo", [residents[SUZUKI_REMOVED]], layout="renketsu")


def test_inkan_prints_seal_impression_at_stated_size_with_identity(residents, seals, certificate, settings, signing_key):
    person = residents["10000000011"]
    rendered = render(certificate("inkan", [person], seal=seals["10000000011"], layout="kojin"), signing_key)

    text = compact(pdf_text(rendered.pdf))
    for expected in ("印鑑登録証明書", "氏名", "山田太郎（ヤマダタロウ）", "生年月日", "昭和50年6月15日", "住所",
                     "東京都大田区西蒲田七丁目49番1号", "この写しは、登録された印影と相違ないことを証明します。"):
        assert expected in text
    # The common 印鑑条例 prints no more than that; the rest only where configured.
    for absent in ("性別", "登録番号", "S00000011", "登録年月日"):
        assert absent not in text
    impression = [row for row in image_list(rendered.pdf) if row["width"] == "64"]
    assert len(impression) == 1
    # 64 px shown at seal_impression_mm: the PDF states the resulting resolution.
    printed_mm = 64 / int(impression[0]["x-ppi"]) * 25.4
    assert printed_mm == pytest.approx(settings.seal_impression_mm, abs=0.3)


@pytest.mark.parametrize("image_png", ["bm90IGEgcG5n", "iVBORw0KGgo\u5370"], ids=["base64 of 'not a png'", "not ASCII"])
def test_inkan_with_an_unreadable_seal_image_is_refused(residents, seals, certificate, signing_key, image_png):
    broken = dict(seals["10000000011"], image_png=image_png)
    with pytest.raises(CertificateError, match="印影"):
        render(certificate("inkan", [residents["10000000011"]], seal=broken), signing_key)


def test_inkan_for_a_revoked_seal_is_refused(residents, seals, certificate):
    with pytest.raises(CertificateError, match="廃止"):
        certificate("inkan", [residents["10000000011"]], seal=dict(seals["10000000011"], status="revoked"))


# --- dates -------------------------------------------------------------------


def test_japanese_residents_dates_are_wareki(residents, certificate, signing_key):
    rendered = render(certificate("juminhyo", household(residents, YAMADA)), signing_key)
    text = compact(pdf_text(rendered.pdf))
    assert "昭和50年6月15日" in text  # 1975-06-15
    assert "平成22年2月28日" in text  # 2010-02-28
    assert "1975年6月15日" not in text


def test_foreign_residents_birth_and_expiry_are_seireki_only(residents, certificate, signing_key):
    rendered = render(certificate("juminhyo", [residents[WANG]], requested=ALL_ITEMS), signing_key)
    text = compact(pdf_text(rendered.pdf))
    assert "1991年3月12日" in text and "平成3年3月12日" not in text
    assert "2027年4月9日" in text and "令和9年4月9日" not in text


# --- 方書 and optional items -------------------------------------------------


def test_katagaki_is_always_printed_on_a_juminhyo(residents, certificate, signing_key):
    rendered = render(certificate("juminhyo", [residents[TAKAHASHI]]), signing_key)
    assert "大森ハイツ２０３号" in compact(pdf_text(rendered.pdf))


def test_kisai_may_leave_katagaki_out_on_request(residents, certificate, signing_key):
    with_katagaki = render(certificate("kisai", [residents[TAKAHASHI]]), signing_key)
    without = render(certificate("kisai", [residents[TAKAHASHI]], omit_katagaki=True), signing_key)
    assert "大森ハイツ２０３号" in compact(pdf_text(with_katagaki.pdf))
    text = compact(pdf_text(without.pdf))
    assert "大森ハイツ２０３号" not in text and "東京都大田区大森北一丁目6番16号" in text


def test_optional_items_appear_only_when_requested(residents, certificate, signing_key):
    person = dict(residents["10000000011"], individual_number="123456789018")
    foreigner = residents[WANG]
    requested_text = {
        "honseki": (person, "東京都大田区蒲田五丁目13番"),
        "head": (person, "世帯主"),
        "resident_code": (person, "10000000011"),
        "individual_number": (person, "123456789018"),
        "nationality": (foreigner, "中国"),
        "category": (foreigner, "中長期在留者"),
        "status": (foreigner, "技術・人文知識・国際業務"),
        "period": (foreigner, "3年"),
        "expiry": (foreigner, "2027年4月9日"),
        "card_number": (foreigner, "AB12345678CD"),
    }
    assert set(requested_text) == set(OPTIONAL_ITEMS)
    plain = {
        code: compact(pdf_text(render(certificate("juminhyo", [record]), signing_key).pdf))
        for code, record in (("jp", person), ("foreign", foreigner))
    }
    for item, (record, expected) in requested_text.items():
        without = plain["foreign" if record is foreigner else "jp"]
        assert expected not in without, f"{item} printed without being requested"
        with_item = compact(pdf_text(render(certificate("juminhyo", [record], requested={item}), signing_key).pdf))
        assert expected in with_item, f"{item} missing although requested"


def test_planned_move_out_is_not_printed(residents, certificate, signing_key):
    tanaka = residents[TANAKA_MOVING]
    rendered = render(certificate("juminhyo", [tanaka], requested=ALL_ITEMS), signing_key)
    text = compact(pdf_text(rendered.pdf))
    assert "田中健" in text and "東京都大田区南六郷三丁目10番5号" in text
    assert "品川区広町" not in text
    assert "令和8年12月1日" not in text


# --- 除票 ----------------------------------------------------------------------


def test_johyo_prints_its_title_the_date_and_reason_of_removal_and_a_confirmed_destination(residents, certificate, signing_key):
    rendered = render(certificate("johyo", [residents[SUZUKI_REMOVED]], layout="kojin"), signing_key)
    items = entry_items(certificate("johyo", [residents[SUZUKI_REMOVED]], layout="kojin"))
    assert items["消除年月日"] == "令和8年10月1日" and items["消除事由"] == "転出" and items["消除の届出日"] == "令和8年9月25日"
    assert items["転出先"] == "神奈川県横浜市港北区日吉本町一丁目2番3号（確定）"
    assert items["転出先確定日"] == "令和8年10月8日"
    text = compact(pdf_text(rendered.pdf))
    assert text.startswith("住民票の除票の写し") or "住民票の除票の写し" in text
    assert "神奈川県横浜市港北区日吉本町一丁目2番3号（確定）" in text


def test_johyo_marks_an_unconfirmed_destination_as_planned(residents, certificate):
    person = residents[SUZUKI_REMOVED]
    person["removal"].update(moved_to_confirmed=False, confirmed_on=None)
    items = entry_items(certificate("johyo", [person], layout="kojin"))
    assert items["転出先"] == "神奈川県横浜市港北区日吉本町一丁目2番3号（予定）"
    assert "転出先確定日" not in items


def test_johyo_of_a_death_prints_the_reason_without_destination(residents, certificate, signing_key):
    items = entry_items(certificate("johyo", [residents[KOBAYASHI_DECEASED]], layout="kojin"))
    assert (items["消除年月日"], items["消除事由"], items["消除の届出日"]) == ("令和8年11月2日", "死亡", "令和8年11月4日")
    assert "転出先" not in items
    text = compact(pdf_text(render(certificate("johyo", [residents[KOBAYASHI_DECEASED]], layout="kojin"), signing_key).pdf))
    assert "消除事由" in text and "死亡" in text and "転出先" not in text


# --- certification, issuer, official seal ------------------------------------


def test_certification_only_on_last_page_then_date_issuer_and_data_as_of(residents, certificate, signing_key):
    members = household(residents, YAMADA)
    rendered = render(certificate("juminhyo", members, layout="kojin"), signing_key)
    statement = "この写しは、住民票の原本と相違ないことを証明する。"
    for page in (1, 2):
        assert statement not in compact(pdf_text(rendered.pdf, page))
    last = compact(pdf_text(rendered.pdf, 3))
    position = last.index(statement)
    date_at = last.index("令和8年11月25日", position)
    issuer_at = last.index("東京都大田区長鈴木晶雅", date_at)
    assert last.index("本証明書は、障害対応システムにより", issuer_at) > issuer_at
    assert "公印省略" not in last


@pytest.mark.parametrize(
    "kind, person, statement",
    [
        ("kisai", TAKAHASHI, "上記の事項は、住民票の原本と相違ないことを証明する。"),
        ("johyo", SUZUKI_REMOVED, "この写しは、住民票の除票の原本と相違ないことを証明する。"),
    ],
)
def test_certification_text_depends_on_kind(residents, certificate, signing_key, kind, person, statement):
    rendered = render(certificate(kind, [residents[person]], layout="kojin"), signing_key)
    assert statement in compact(pdf_text(rendered.pdf))


def test_certification_text_is_configurable(residents, certificate, signing_key, font_cache):
    settings = PrintSettings.from_config_section(
        {"certification_texts": {"juminhyo": "これは住民票の写しであることを証明する。"}, "official_seal_image": str(SPECIMEN_SEAL_IMAGE)},
        font_cache_dir=font_cache,
    )
    rendered = render(certificate("juminhyo", [residents[TAKAHASHI]], settings=settings), signing_key)
    text = compact(pdf_text(rendered.pdf))
    assert "これは住民票の写しであることを証明する。" in text
    assert "原本と相違ない" not in text


def test_official_seal_image_is_drawn_black_on_white_and_at_most_25mm(residents, certificate, signing_key, font_cache, tmp_path):
    # A red 300 x 200 px seal on a transparent ground: it must come out black
    # on white (opaque: a page with transparency is rasterised whole by
    # CUPS's PostScript path), scaled to 25 mm wide.
    seal_path = tmp_path / "koin.png"
    red = Image.new("RGBA", (300, 200), (255, 255, 255, 0))
    red.paste((200, 0, 0, 255), (20, 20, 280, 180))
    red.save(seal_path)
    settings = PrintSettings(official_seal_image=seal_path, font_cache_dir=font_cache)
    rendered = render(certificate("juminhyo", [residents[TAKAHASHI]], settings=settings), signing_key)

    assert "公印省略" not in compact(pdf_text(rendered.pdf))
    seal_rows = [row for row in image_list(rendered.pdf) if (row["width"], row["height"]) == ("300", "200")]
    assert [row["type"] for row in seal_rows] == ["image"]  # no soft mask
    assert seal_rows[0]["color"] == "gray"
    assert 300 / int(seal_rows[0]["x-ppi"]) * 25.4 == pytest.approx(25.0, abs=0.3)
    (image,) = extracted_images(rendered.pdf, tmp_path, (300, 200))
    assert image.getpixel((150, 100)) == 0 and image.getpixel((5, 5)) == 255


def test_a_real_certificate_without_an_official_seal_is_refused(residents, certificate, settings):
    without = dataclasses.replace(settings, official_seal_image=None)
    with pytest.raises(CertificateError, match="電子公印の画像が設定されていない") as refused:
        certificate("juminhyo", [residents[TAKAHASHI]], settings=without)
    assert str(refused.value) == NO_OFFICIAL_SEAL


@pytest.mark.parametrize("stamp, mark", [(make_stamp(drill=True), "訓練"), (make_stamp(specimen=True), "見本")], ids=["drill", "specimen"])
def test_a_drill_or_specimen_without_an_official_seal_says_so_where_the_seal_goes(residents, certificate, settings, signing_key,
                                                                                  stamp, mark):
    without = dataclasses.replace(settings, official_seal_image=None)
    rendered = render(certificate("juminhyo", [residents[TAKAHASHI]], settings=without, stamp=stamp), signing_key)
    text = compact(pdf_text(rendered.pdf))
    assert f"東京都大田区長鈴木晶雅{mark}" in text and "公印省略" not in text
    assert not [row for row in image_list(rendered.pdf) if row["width"] == "360"]  # no 電子公印 image


def test_missing_official_seal_image_is_refused(residents, certificate, signing_key, font_cache, tmp_path):
    settings = PrintSettings(official_seal_image=tmp_path / "nowhere.png", font_cache_dir=font_cache)
    with pytest.raises(CertificateError, match="電子公印"):
        render(certificate("juminhyo", [residents[TAKAHASHI]], settings=settings), signing_key)


def test_issuer_always_includes_the_prefecture(residents, certificate, signing_key):
    rendered = render(certificate("juminhyo", [residents[TAKAHASHI]]), signing_key)
    text = compact(pdf_text(rendered.pdf))
    assert "東京都大田区長鈴木晶雅" in text
    assert "東京都東京都" not in text


# --- every page --------------------------------------------------------------


def test_every_page_carries_the_serial_with_page_number(residents, certificate, signing_key):
    members = household(residents, YAMADA)[:2]
    rendered = render(certificate("juminhyo", members, layout="kojin"), signing_key)
    assert pdf_text(rendered.pdf, 1).count("20261125 大田区 本庁1 プリンタ001 000123 1/2") == 1
    assert pdf_text(rendered.pdf, 2).count("20261125 大田区 本庁1 プリンタ001 000123 2/2") == 1


def test_serial_date_is_the_japan_date_of_issue(residents, certificate, signing_key):
    # 2026-11-24 20:00 UTC is already 11月25日 in Japan.
    stamp = make_stamp(issued_at=dt.datetime(2026, 11, 24, 20, 0, tzinfo=dt.UTC), serial=7)
    rendered = render(certificate("juminhyo", [residents[TAKAHASHI]], stamp=stamp), signing_key)
    text = pdf_text(rendered.pdf)
    assert "20261125 大田区 本庁1 プリンタ001 000007 1/1" in text
    assert "令和8年11月25日" in compact(text)


def test_every_page_states_the_data_as_of_time(residents, certificate, signing_key):
    rendered = render(certificate("juminhyo", household(residents, YAMADA), layout="kojin"), signing_key)
    notice = "本証明書は、障害対応システムにより令和8年11月24日23時00分時点の住民記録に基づき交付したものです。"
    for page in range(1, rendered.pages + 1):
        assert notice in compact(pdf_text(rendered.pdf, page))


# --- text safety ---------------------------------------------------------------


def test_upstream_text_is_escaped(residents, certificate, signing_key):
    person = residents[TAKAHASHI]
    person["name"] = "<script>alert(1)</script>　&amp;"
    person["address"]["katagaki"] = '<img src="x">'
    rendered = render(certificate("juminhyo", [person]), signing_key)
    text = pdf_text(rendered.pdf)
    assert "<script>alert(1)</script>" in text
    assert "&amp;" in text
    assert '<img src="x">' in text


# --- drill and specimen ------------------------------------------------------


def test_drill_marks_every_page(residents, certificate, signing_key, tmp_path):
    members = household(residents, YAMADA)
    drill = render(certificate("juminhyo", members, layout="kojin", stamp=make_stamp(drill=True)), signing_key)
    real = render(certificate("juminhyo", members, layout="kojin"), signing_key)
    for page in range(1, drill.pages + 1):
        text = pdf_text(drill.pdf, page)
        assert "訓練" in text and "TRAINING" in text
    assert "訓練" not in pdf_text(real.pdf) and "TRAINING" not in pdf_text(real.pdf)
    # The diagonal watermark: light gray across the middle of every page.
    drill_pages = page_images(drill.pdf, tmp_path / "drill", dpi=30)
    real_pages = page_images(real.pdf, tmp_path / "real", dpi=30)
    for drill_page, real_page in zip(drill_pages, real_pages):
        middle = (0, drill_page.height // 3, drill_page.width, 2 * drill_page.height // 3)
        gray = [sum(page.crop(middle).histogram()[151:235]) for page in (drill_page, real_page)]
        assert gray[0] > gray[1] + 500, gray


def test_specimen_is_stamped_on_every_page_and_shows_no_serial(residents, certificate, signing_key):
    stamp = make_stamp(specimen=True, serial=456)
    rendered = render(certificate("juminhyo", household(residents, YAMADA)[:2], layout="kojin", stamp=stamp), signing_key)
    for page in (1, 2):
        text = pdf_text(rendered.pdf, page)
        assert "見本" in text.replace(" ", "")
        assert f"000000/見本 {page}/2" in text
        assert "000456" not in text


# --- format ------------------------------------------------------------------


def test_pdf_is_pdf_a_2b(residents, certificate, signing_key):
    import subprocess

    rendered = render(certificate("juminhyo", [residents[TAKAHASHI]]), signing_key)
    metadata = subprocess.run(["pdfinfo", "-meta", "-"], input=rendered.pdf, capture_output=True, check=True).stdout.decode()
    assert 'pdfaid:part="2"' in metadata
    assert 'pdfaid:conformance="B"' in metadata


# --- fitting the sheet ---------------------------------------------------------


def _crowded_household(residents, count: int, previous_address: str) -> list[dict]:
    people = []
    for number in range(count):
        person = copy.deepcopy(residents[WANG])
        person.update(resident_code=f"3000000000{number}", household_order=number + 1, individual_number="123456789018",
                      name=f"ANDERSSON-WILLIAMSON MARIA {number}", name_alphabet=f"ANDERSSON-WILLIAMSON MARIA {number}",
                      previous_address=previous_address)
        people.append(person)
    return people


def test_four_foreign_residents_with_every_item_fit_one_renketsu_sheet(residents, certificate, signing_key):
    people = _crowded_household(residents, 4, "アメリカ合衆国カリフォルニア州ロサンゼルス市ウィルシャー大通り１２３４５番地")
    rendered = render(certificate("juminhyo", people, requested=ALL_ITEMS), signing_key)
    assert rendered.pages == 1
    text = compact(pdf_text(rendered.pdf))
    assert all(f"ANDERSSON-WILLIAMSONMARIA{number}" in text for number in range(4))


def test_renketsu_puts_fewer_people_on_a_sheet_when_four_do_not_fit(residents, certificate, signing_key):
    people = _crowded_household(residents, 4, "アメリカ合衆国カリフォルニア州ロサンゼルス市" * 6)
    rendered = render(certificate("juminhyo", people, requested=ALL_ITEMS), signing_key)
    assert rendered.pages == page_count(rendered.pdf) == 2
    pages = [compact(pdf_text(rendered.pdf, page)) for page in (1, 2)]
    for number in range(4):
        assert sum(f"ANDERSSON-WILLIAMSONMARIA{number}" in page for page in pages) == 1
    assert "1/2" in pages[0] and "2/2" in pages[1]
    assert "この写しは、住民票の原本と相違ないことを証明する。" in pages[1]


def test_content_that_fits_no_sheet_is_refused(residents, certificate, signing_key):
    person = dict(residents[TAKAHASHI], previous_address="東京都大田区" * 600)
    with pytest.raises(RenderError, match="用紙に収まりません"):
        render(certificate("juminhyo", [person], layout="kojin"), signing_key)

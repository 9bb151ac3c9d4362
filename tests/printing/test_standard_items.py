"""The items and wording of the 住民記録システム標準仕様書's certificates
(README "What a certificate prints"), each rule checked on what the
certificate prints (printing.content) and on the real PDF's text."""

from __future__ import annotations

import dataclasses
import re
import subprocess

import pytest

from printing.content import END_MARK, printed_content
from printing.model import OPTIONAL_ITEMS, PrintSettings
from printing.render import render_certificate
from printing.verify import verify_document
from tests.printing.support import compact, household, page_count, pdf_text

YAMADA = "0000100001"
TARO, HANAKO, ICHIRO = "10000000011", "10000000029", "10000000037"
TAKAHASHI = "10000000045"
WANG = "10000000061"
NGUYEN = "10000000079"
NOTICE = "本証明書は、障害対応システムにより令和8年11月24日23時00分時点の住民記録に基づき交付したものです。"


def items(cert, person: int = 0) -> dict[str, str]:
    entries = [entry for sheet in printed_content(cert).sheets for entry in sheet.entries]
    return {item.label: item.value for item in entries[person].items}


def text_of(cert, signing_key, page: int | None = None) -> str:
    return compact(pdf_text(render_certificate(cert, signing_key).pdf, page))


# --- 振り仮名 --------------------------------------------------------------------


def test_the_legal_furigana_follows_the_name_in_parentheses(residents, certificate, signing_key):
    cert = certificate("juminhyo", [residents[TARO]])
    assert items(cert)["氏名"] == "山田\u3000太郎（ヤマダ\u3000タロウ）"
    assert "山田太郎（ヤマダタロウ）" in text_of(cert, signing_key)


def test_a_furigana_not_yet_confirmed_is_blank_and_the_search_kana_never_stands_in(residents, certificate, signing_key):
    taro = dict(residents[TARO], furigana=None, name_kana="ヤマダ\u3000タロ")  # the ward's search kana differs on purpose
    cert = certificate("juminhyo", [taro])
    assert items(cert)["氏名"] == "山田\u3000太郎"
    assert "ヤマダ" not in text_of(cert, signing_key)


def test_the_search_kana_is_not_printed_on_an_inkan_either(residents, seals, certificate, signing_key):
    taro = dict(residents[TARO], furigana=None)
    cert = certificate("inkan", [taro], seal=seals[TARO], layout="kojin")
    assert items(cert)["氏名"] == "山田\u3000太郎"
    assert "ヤマダ" not in text_of(cert, signing_key)


def test_the_former_surname_carries_its_own_furigana(residents, certificate):
    assert items(certificate("juminhyo", [residents[HANAKO]]))["旧氏"] == "佐々木（ササキ）"
    unconfirmed = dict(residents[HANAKO], former_surname_furigana=None)
    assert items(certificate("juminhyo", [unconfirmed]))["旧氏"] == "佐々木"


def test_a_ward_may_print_a_word_in_blank_items(residents, certificate, settings):
    marked = dataclasses.replace(settings, blank_text="【空欄】")
    ichiro = items(certificate("juminhyo", [dict(residents[ICHIRO], furigana=None)], settings=marked))
    assert ichiro["氏名"] == "山田\u3000一郎（【空欄】）"
    assert ichiro["住所を定めた年月日"] == "【空欄】" and ichiro["転入前住所"] == "【空欄】"


# --- foreign residents --------------------------------------------------------------


def test_a_foreign_residents_alphabet_name_comes_first_and_the_alias_is_its_own_item(residents, certificate, signing_key):
    cert = certificate("juminhyo", [residents[WANG]])
    printed = items(cert)
    assert printed["氏名"] == "WANG WEI\u3000王\u3000偉"
    assert printed["通称"] == "大山\u3000偉"  # printed without being asked for, like the name
    text = text_of(cert, signing_key)
    assert "WANGWEI王偉" in text and "通称大山偉" in text


def test_an_alphabet_only_name_is_printed_once(residents, certificate):
    assert items(certificate("juminhyo", [residents[NGUYEN]]))["氏名"] == "NGUYEN VAN AN"


def test_alias_is_no_longer_an_optional_item():
    assert "alias" not in OPTIONAL_ITEMS


# --- dates and addresses -------------------------------------------------------------


def test_address_since_is_blank_for_someone_who_never_moved_within_the_municipality(residents, certificate):
    ichiro = items(certificate("juminhyo", [residents[ICHIRO]]))  # address_since null
    assert ichiro["住所を定めた年月日"] == "" and ichiro["住民となった年月日"] == "平成22年2月28日"
    assert items(certificate("juminhyo", [residents[TARO]]))["住所を定めた年月日"] == "平成20年4月1日"


def test_the_notification_date_is_its_own_item_with_what_was_notified(residents, certificate):
    assert items(certificate("juminhyo", [residents[ICHIRO]]))["届出日"] == "平成22年3月5日\u3000出生"
    assert items(certificate("juminhyo", [residents[WANG]]))["届出日"] == "令和4年4月10日\u3000国外からの転入"
    # nothing of the notification is appended to another date any more
    assert all("届出" not in value for label, value in items(certificate("juminhyo", [residents[TARO]])).items() if label != "届出日")


def test_a_contract_1_record_without_a_reason_prints_the_date_alone(residents, certificate):
    old = {key: value for key, value in residents[TARO].items() if key != "notified_reason"}
    assert items(certificate("juminhyo", [old]))["届出日"] == "平成20年4月1日"


def test_the_previous_address_is_the_one_before_moving_in_and_blank_when_unknown(residents, certificate, signing_key):
    cert = certificate("juminhyo", household(residents, YAMADA))
    assert items(cert, 0)["転入前住所"] == "神奈川県川崎市川崎区駅前本町11番地2"
    assert items(cert, 2)["転入前住所"] == ""  # born here
    text = text_of(cert, signing_key)
    assert text.count("前住所") == text.count("転入前住所") == 3


# --- remarks, end mark, household, data-as-of -------------------------------------


def test_remarks_are_printed_where_the_record_has_them(residents, certificate, signing_key):
    cert = certificate("juminhyo", household(residents, YAMADA))
    assert items(cert, 2)["備考"] == "令和3年4月1日 世帯主変更"
    assert "備考" not in items(cert, 0)
    assert "備考令和3年4月1日世帯主変更" in text_of(cert, signing_key)


def test_end_mark_follows_the_last_entry_on_the_last_page_only(residents, certificate, signing_key):
    rendered = render_certificate(certificate("juminhyo", household(residents, YAMADA), layout="kojin"), signing_key)
    pages = [compact(pdf_text(rendered.pdf, page)) for page in (1, 2, 3)]
    assert END_MARK not in pages[0] and END_MARK not in pages[1]
    last = pages[2]
    assert last.index("山田一郎") < last.index(END_MARK) < last.index("この写しは")


@pytest.mark.parametrize("kind, text", [
    ("juminhyo", "この写しは、世帯全員の住民票の原本と相違ないことを証明する。"),
    ("kisai", "上記の事項は、世帯全員の住民票の原本と相違ないことを証明する。"),
])
def test_a_whole_household_says_so_and_a_part_keeps_the_plain_text(residents, certificate, signing_key, kind, text):
    members = household(residents, YAMADA)
    whole = text_of(certificate(kind, members, whole_household=True), signing_key)
    part = text_of(certificate(kind, members[:2]), signing_key)
    assert text in whole and "世帯全員" not in part
    assert ("この写しは、住民票の原本と相違ないことを証明する。" if kind == "juminhyo"
            else "上記の事項は、住民票の原本と相違ないことを証明する。") in part


def test_only_a_household_certificate_can_say_whole_household(residents, seals, certificate):
    with pytest.raises(ValueError, match="whole household"):
        certificate("inkan", [residents[TARO]], seal=seals[TARO], layout="kojin", whole_household=True)


def _word_heights(pdf: bytes, page: int, words: tuple[str, ...]) -> list[float]:
    """Heights (pt) of the words on `page` that start any of `words`."""
    bbox = subprocess.run(["pdftotext", "-bbox", "-f", str(page), "-l", str(page), "-", "-"], input=pdf, capture_output=True,
                          check=True).stdout.decode()
    found = re.findall(r'<word xMin="[\d.]+" yMin="([\d.]+)" xMax="[\d.]+" yMax="([\d.]+)">([^<]*)</word>', bbox)
    return [float(bottom) - float(top) for top, bottom, word in found if word.startswith(words)]


def test_the_data_as_of_statement_is_as_large_as_the_certification_on_every_page(residents, certificate, signing_key):
    rendered = render_certificate(certificate("juminhyo", household(residents, YAMADA), layout="kojin"), signing_key)
    for page in (1, 2, 3):
        assert NOTICE in compact(pdf_text(rendered.pdf, page))
        heights = _word_heights(rendered.pdf, page, ("本証明書は",))
        assert heights and min(heights) >= 10.0, heights  # 10.5 pt, like the 認証文; it was a 7–8 pt footer
    certification = _word_heights(rendered.pdf, 3, ("この写しは",))
    assert _word_heights(rendered.pdf, 3, ("本証明書は",)) == pytest.approx(certification, abs=0.5)


def test_the_data_as_of_statement_stands_right_after_the_issuer_line(residents, certificate, signing_key):
    last = text_of(certificate("juminhyo", [residents[TARO]]), signing_key)
    assert last.index("東京都大田区長鈴木晶雅") < last.index(NOTICE) < last.index("発行番号")


# --- 公用 ---------------------------------------------------------------------------


def test_a_certificate_for_another_public_office_is_marked_and_the_mark_is_signed(residents, certificate, signing_key):
    cert = certificate("juminhyo", [residents[TAKAHASHI]], official_use=True)
    rendered = render_certificate(cert, signing_key)
    assert compact(pdf_text(rendered.pdf)).startswith("住民票の写し公用")
    result = verify_document(rendered.pdf, signing_key.public_key())
    assert result.valid and result.pages[0].title == "住民票の写し\u3000公用"
    assert "公用" not in text_of(certificate("juminhyo", [residents[TAKAHASHI]]), signing_key)


# --- 印鑑登録証明書 -------------------------------------------------------------------


def test_inkan_items_follow_the_configured_ordinance(residents, seals, certificate, settings, signing_key):
    every = dataclasses.replace(settings, inkan_items=("furigana", "former_surname", "alias", "sex", "seal_number", "registered_on"))
    hanako = {**residents[HANAKO], "alias": None}
    seal = {**seals[TARO], "resident_code": HANAKO}
    printed = items(certificate("inkan", [hanako], seal=seal, layout="kojin", settings=every))
    assert list(printed) == ["氏名", "旧氏", "生年月日", "性別", "住所", "登録番号", "登録年月日"]
    assert (printed["性別"], printed["登録番号"], printed["登録年月日"]) == ("女", "S00000011", "平成20年4月1日")
    bare = dataclasses.replace(settings, inkan_items=())
    printed = items(certificate("inkan", [hanako], seal=seal, layout="kojin", settings=bare))
    assert printed == {"氏名": "山田\u3000花子", "生年月日": "昭和53年11月3日", "住所": "東京都大田区西蒲田七丁目49番1号"}
    assert "性別" not in text_of(certificate("inkan", [hanako], seal=seal, layout="kojin", settings=bare), signing_key)


def test_unknown_inkan_items_and_certification_kinds_are_refused(font_cache):
    with pytest.raises(ValueError, match="unknown 印鑑登録証明書 items: blood_type"):
        PrintSettings(inkan_items=("blood_type",), font_cache_dir=font_cache)
    with pytest.raises(ValueError, match="unknown kinds: juminhyou"):
        PrintSettings.from_config_section({"certification_texts": {"juminhyou": "x"}}, font_cache_dir=font_cache)


# --- a planned move ------------------------------------------------------------------


def test_a_planned_move_prints_nothing_of_the_move(residents, certificate, signing_key):
    tanaka = residents["10000000100"]
    cert = certificate("juminhyo", [tanaka], requested=frozenset(OPTIONAL_ITEMS))
    text = text_of(cert, signing_key)
    assert "東京都大田区南六郷三丁目10番5号" in text
    assert "品川区" not in text and "令和8年12月1日" not in text and "転出" not in text


# --- fitting -------------------------------------------------------------------------


def test_four_people_still_fit_a_renketsu_sheet_with_every_item(residents, certificate, signing_key):
    members = household(residents, YAMADA)
    fourth = {**members[2], "resident_code": "20000000001", "household_order": 4, "name": "山田\u3000次郎",
              "furigana": "ヤマダ\u3000ジロウ", "birth_date": "2013-08-08"}
    rendered = render_certificate(certificate("juminhyo", members + [fourth], requested=frozenset(OPTIONAL_ITEMS),
                                              whole_household=True), signing_key)
    assert rendered.pages == page_count(rendered.pdf) == 1

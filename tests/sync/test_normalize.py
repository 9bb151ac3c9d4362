"""Search keys: what the clerk types and what the register holds meet in one form."""

import pytest

from sync.normalize import PREFIX_END, address_key, kana_key, kanji_number, name_key


@pytest.mark.parametrize(
    ("typed", "key"),
    [
        ("やまだ　たろう", "ヤマダタロウ"),  # hiragana, ideographic space
        ("ﾔﾏﾀﾞ ﾀﾛｳ", "ヤマダタロウ"),  # half-width kana with a separate dakuten
        ("キョウコ", "キヨウコ"),  # small kana → large, as old registrations write it
        ("ｷｮｳｺ", "キヨウコ"),
        ("ハッタ", "ハツタ"),
        ("ヴァン", "ヴアン"),
        ("ヵヶヮ", "カケワ"),
        ("グエン・ヴァン＝アン", "グエンヴアンアン"),  # separators of foreign names
        ("オーノ", "オーノ"),  # the long vowel mark is kept
        ("ヰヱ", "イエ"),
    ],
)
def test_kana_key(typed, key):
    assert kana_key(typed) == key


def test_long_vowel_mark_keeps_names_apart():
    assert kana_key("オーノ") != kana_key("オノ")


@pytest.mark.parametrize(
    ("typed", "key"),
    [
        ("髙橋　﨑子", "高橋崎子"),
        ("高橋 崎子", "高橋崎子"),
        ("渡邊", "渡辺"),
        ("渡邉", "渡辺"),
        ("齋藤", "斎藤"),
        ("齊藤", "斉藤"),
        ("濵田", "浜田"),
        ("澤田", "沢田"),
        ("櫻井", "桜井"),
        ("廣瀬", "広瀬"),
        ("國分", "国分"),
        ("眞鍋", "真鍋"),
        ("冨田", "富田"),
        ("嶋田", "島田"),
        ("𠮷田", "吉田"),  # outside the BMP
        ("葛\U000e0102城　辻\U000e0102", "葛城辻"),  # IVS selectors removed
        ("神\ufe00", "神"),  # standardized variation selector removed
        ("NGUYEN VAN AN", "NGUYENVANAN"),
        ("ｗａｎｇ　ｗｅｉ", "WANGWEI"),  # full-width latin, lower case
        ("O'Brien-Smith, John", "OBRIENSMITHJOHN"),
    ],
)
def test_name_key(typed, key):
    assert name_key(typed) == key


def test_saito_families_stay_apart():
    # 齋 is the old form of 斎 and 齊 of 斉: different surnames.
    assert name_key("齋藤") != name_key("齊藤")


@pytest.mark.parametrize(
    "written",
    ["西蒲田七丁目49番1号", "西蒲田7-49-1", "西蒲田７－４９－１", "西蒲田7丁目49-1", "西蒲田 7‐49‐1", "西蒲田7ー49ー1", "西蒲田七丁目四十九番一号"],
)
def test_address_spellings_share_a_prefix(written):
    assert address_key(written).startswith("西蒲田7-49-1")


@pytest.mark.parametrize(
    ("written", "key"),
    [
        ("南六郷三丁目10番5号", "南六郷3-10-5-"),  # 六 of 六郷 is a place name, 三 the 丁目
        ("十二番地の三", "12-3"),
        ("一の宮2ー3", "一の宮2-3"),
        ("西蒲田七丁目", "西蒲田7-"),
        ("四十九番", "49-"),
    ],
)
def test_address_key(written, key):
    assert address_key(written) == key


def test_address_marker_at_the_end_keeps_the_number_boundary():
    assert not address_key("西蒲田7-490-1").startswith(address_key("西蒲田七丁目49番"))
    assert address_key("西蒲田7-49-1").startswith(address_key("西蒲田七丁目49番"))


@pytest.mark.parametrize(("numeral", "value"), [("七", 7), ("十", 10), ("十二", 12), ("四十九", 49), ("百二", 102), ("二〇", 20), ("千二百三十四", 1234)])
def test_kanji_number(numeral, value):
    assert kanji_number(numeral) == value


def test_prefix_end_sorts_after_every_character_in_utf8():
    for char in ("\uffff", "𠮷", "\U000e0102", "ン"):
        assert (char.encode("utf-8")) < PREFIX_END.encode("utf-8")

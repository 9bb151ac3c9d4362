"""The synthetic register looks like a Tokyo ward's: each property is checked
on the 20,000-resident session register, with the tolerance stated."""

from __future__ import annotations

import base64
import collections
import datetime as dt
import gzip
import io
import json
import re
import unicodedata
from pathlib import Path

import pytest
from fontTools.ttLib import TTFont
from PIL import Image

from sync.synthetic.refdata import DATA_DIR, reference_data
from sync.synthetic.sealimage import FONT_PATH, seal_png_base64
from tests.cloudsim.conftest import REGISTER_DATE

SPACE = "\u3000"
KATAKANA = re.compile(r"^[\u30A0-\u30FF]+$")
IVS = re.compile("[\U000E0100-\U000E01EF]")


def read_ndjson(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


@pytest.fixture(scope="module")
def register(generated_state):
    (export,) = (generated_state / "exports").iterdir()
    return read_ndjson(export / "residents.ndjson.gz"), read_ndjson(export / "seals.ndjson.gz")


@pytest.fixture(scope="module")
def residents(register):
    return register[0]


@pytest.fixture(scope="module")
def active(residents):
    return [r for r in residents if r["status"] == "active"]


@pytest.fixture(scope="module")
def japanese(residents):
    return [r for r in residents if r["foreign"] is None]


def share(rows, predicate) -> float:
    return sum(1 for r in rows if predicate(r)) / len(rows)


def age(record) -> float:
    return (REGISTER_DATE - dt.date.fromisoformat(record["birth_date"])).days / 365.25


def test_households_are_tokyo_sized(residents):
    sizes = collections.Counter(r["household_id"] for r in residents)
    assert 1.8 <= len(residents) / len(sizes) <= 2.05  # Tokyo wards: about 1.9
    assert 0.45 <= share(list(sizes.values()), lambda size: size == 1) <= 0.56  # about half live alone


def test_every_household_has_one_head_named_on_every_row(residents):
    households = collections.defaultdict(list)
    for r in residents:
        households[r["household_id"]].append(r)
    for members in households.values():
        heads = [m for m in members if m["relationship"] == "世帯主"]
        assert len(heads) == 1 and heads[0]["household_order"] == 1
        assert {m["head_name"] for m in members} == {heads[0]["name"]}
        assert sorted(m["household_order"] for m in members) == list(range(1, len(members) + 1))
        assert len({json.dumps(m["address"], ensure_ascii=False) for m in members}) == 1


def test_relationships_are_those_a_register_records(residents):
    relationships = collections.Counter(r["relationship"] for r in residents)
    assert {"世帯主", "妻", "夫", "子", "父", "母", "孫", "同居人", "子の妻"} <= set(relationships)
    assert set(relationships) <= {"世帯主", "妻", "夫", "子", "父", "母", "孫", "同居人", "子の妻", "妻（未届）", "兄", "姉", "弟", "妹"}


def test_shares_of_special_rows(residents, active):
    assert 0.25 <= share(residents, lambda r: r["address"]["katagaki"]) <= 0.35  # 方書 ≈ 30 %
    assert 0.03 <= share(residents, lambda r: r["foreign"]) <= 0.05  # foreign ≈ 4 %
    assert 0.0003 <= share(residents, lambda r: r["support_measure"]) <= 0.003  # 支援措置 ≈ 0.1 %
    assert 0.015 <= share(residents, lambda r: r["status"] == "removed") <= 0.027  # 除票 ≈ 2 %
    assert 10 <= sum(1 for r in active if r["planned_move_out"]) <= 200  # 転出予定 ≈ 0.4 % of households


def test_addresses_use_the_wards_real_town_names(residents):
    towns = {line.split("\t")[0] for line in (DATA_DIR / "towns-131113.tsv").read_text().splitlines() if not line.startswith("#")}
    used = collections.Counter(r["address"]["town"] for r in residents)
    assert set(used) <= towns and len(used) >= 150
    assert {"西蒲田七丁目", "大森北一丁目", "田園調布三丁目"} <= set(used)
    assert all(re.fullmatch(r"\d+番\d+号", r["address"]["banchi"]) for r in residents)
    assert {r["address"]["prefecture"] + r["address"]["city"] for r in residents} == {"東京都大田区"}


def test_names_are_many_and_drawn_from_real_lists(japanese):
    surnames = {r["name"].split(SPACE)[0] for r in japanese}
    given = {r["name"].split(SPACE)[1] for r in japanese}
    assert len(surnames) >= 300 and len(given) >= 300


def base_form(text: str, part: str) -> str:
    """The name as the reference lists write it: variant forms mapped back."""
    back = {variant.form: char for char, variants in reference_data().variants[part].items() for variant in variants}
    for form in sorted(back, key=len, reverse=True):
        text = text.replace(form, back[form])
    return text


def test_readings_match_the_names(japanese):
    """The 振り仮名 is the name's reading; the search kana too, up to the
    small kana an older system typed large."""
    from sync.normalize import kana_key

    ref = reference_data()
    surname_readings = {(n.written, n.reading) for n in ref.surnames.items}
    given_readings = {(n.written, n.reading) for era in ref.given_eras for n in era.names.items}
    for r in japanese:
        assert r["name"].count(SPACE) == 1 and r["name_kana"].count(SPACE) == 1
        surname, given = r["name"].split(SPACE)
        surname_reading, given_reading = (r["furigana"] or r["name_kana"]).split(SPACE)
        assert KATAKANA.match(surname_reading) and KATAKANA.match(given_reading)
        if r["furigana"] is not None:
            assert (base_form(surname, "surname"), surname_reading) in surname_readings
            assert (base_form(given, "given"), given_reading) in given_readings
        assert kana_key(r["name_kana"]) == kana_key(f"{surname_reading}{given_reading}")


def test_all_text_is_nfc(register):
    for record in register[0] + register[1]:
        text = json.dumps(record, ensure_ascii=False)
        assert unicodedata.normalize("NFC", text) == text


def ivs_sequences_in(text: str) -> set[tuple[int, int]]:
    return {(ord(text[m.start() - 1]), ord(m.group())) for m in IVS.finditer(text)}


@pytest.fixture(scope="module")
def ipamj_sequences() -> set[tuple[int, int]]:
    """(base, selector) of every variation sequence IPAmj明朝's format-14 cmap maps."""
    cmap = TTFont(FONT_PATH, lazy=True)["cmap"]
    (uvs_table,) = [table for table in cmap.tables if table.format == 14]
    return {(base, selector) for selector, pairs in uvs_table.uvsDict.items() for base, _ in pairs}


def test_every_ivs_the_generator_may_write_is_one_ipamj_mincho_maps(ipamj_sequences):
    ours = set()
    for part in reference_data().variants.values():
        for variants in part.values():
            for variant in variants:
                ours |= ivs_sequences_in(variant.form)
    assert len(ours) >= 10
    assert ours <= ipamj_sequences, [f"U+{b:04X} U+{s:05X}" for b, s in ours - ipamj_sequences]


def test_some_names_use_ivs_and_variant_kanji(residents, ipamj_sequences):
    names = [r["name"] for r in residents]
    with_ivs = [n for n in names if IVS.search(n)]
    assert 0.002 <= len(with_ivs) / len(names) <= 0.01  # ≈ 0.5 %
    used = set().union(*(ivs_sequences_in(n) for n in with_ivs))
    assert used <= ipamj_sequences
    assert {(0x845B, 0xE0102), (0x8FBB, 0xE0102)} & used
    for variant in ("髙", "﨑", "邊", "邉", "齋"):
        assert any(variant in n for n in names), variant


def test_foreign_residents_are_recorded_coherently(residents):
    foreign = [r for r in residents if r["foreign"]]
    categories = collections.Counter(r["foreign"]["category"] for r in foreign)
    assert set(categories) == {"中長期在留者", "特別永住者", "一時庇護許可者", "仮滞在許可者", "出生による経過滞在者", "国籍喪失による経過滞在者"}
    assert (categories["中長期在留者"] + categories["特別永住者"]) / len(foreign) >= 0.9
    statuses = collections.Counter(r["foreign"]["status"] for r in foreign if r["foreign"]["status"])
    assert {"永住者", "技術・人文知識・国際業務", "留学", "家族滞在", "特定技能1号", "日本人の配偶者等"} <= set(statuses)
    for r in foreign:
        items = r["foreign"]
        assert r["honseki"] is None and r["hitto"] is None and r["name_alphabet"]
        if items["category"] in ("中長期在留者", "特別永住者"):
            assert re.fullmatch(r"[A-Z]{2}\d{8}[A-Z]{2}", items["card_number"])
        else:
            assert items["card_number"] is None
        if items["category"] == "特別永住者":
            assert items["status"] is None and items["period_expiry"] is None
        if items["period_expiry"]:
            assert items["period"] and dt.date.fromisoformat(items["period_expiry"]) > REGISTER_DATE
        assert items["became_resident_on"] == r["resident_since"]
        assert KATAKANA.match(r["name_kana"].replace(SPACE, ""))
    assert any(r["alias"] for r in foreign)
    assert any(r["name"] != r["name_alphabet"] for r in foreign)  # kanji names (Chinese, Korean)
    assert any(r["name"] == r["name_alphabet"] for r in foreign)  # alphabet only


def test_japanese_residents_have_honseki_and_hitto(japanese):
    assert all(r["honseki"] and r["hitto"] for r in japanese)


def test_removed_rows_say_why_and_when(residents):
    for r in residents:
        if r["status"] != "removed":
            assert r["removal"] is None
            continue
        removal = r["removal"]
        assert dt.date.fromisoformat(removal["occurred_on"]) <= REGISTER_DATE
        assert (removal["moved_to"] is not None) == (removal["reason"] in ("国内転出", "国外転出"))
    reasons = {r["removal"]["reason"] for r in residents if r["removal"]}
    assert {"国内転出", "国外転出", "死亡"} <= reasons


def test_ages_follow_a_tokyo_ward(active):
    ages = [age(r) for r in active]
    assert 0.08 <= share(ages, lambda a: a < 15) <= 0.16  # 大田区: about 11 %
    assert 0.17 <= share(ages, lambda a: a >= 65) <= 0.27  # about 22 %
    assert any(dt.date.fromisoformat(r["birth_date"]) < dt.date(1926, 12, 25) for r in active)  # born in 大正
    assert max(ages) < 107


def test_resident_codes_carry_their_check_digit(residents):
    for r in residents:
        code = r["resident_code"]
        total = sum(int(d) * (n + 1 if n <= 6 else n - 5) for n, d in enumerate(reversed(code[:10]), start=1))
        assert int(code[10]) == (0 if total % 11 <= 1 else 11 - total % 11)


def test_seals_are_small_grayscale_impressions(register):
    residents, seals = register
    adults = {r["resident_code"] for r in residents if r["status"] == "active" and age(r) >= 18}
    sealed = {s["resident_code"] for s in seals}
    assert 0.35 <= len(adults & sealed) / len(adults) <= 0.45  # ≈ 40 % of adults
    assert any(s["status"] == "revoked" for s in seals)
    for seal in seals:
        assert len(base64.b64decode(seal["image_png"])) <= 64 * 1024
    sizes = [len(base64.b64decode(s["image_png"])) for s in seals]
    assert 500 <= sum(sizes) / len(sizes) <= 3000
    image = Image.open(io.BytesIO(base64.b64decode(seals[0]["image_png"])))
    assert image.format == "PNG" and image.mode == "L"
    # Each registration its own scan: identical images for two people are an upstream anomaly
    # (sync.anomalies, shared_seal_image) that the counter warns about, which a demo must not show on every seal.
    assert len({s["image_png"] for s in seals}) == len(seals)


def test_two_registrations_of_one_surnames_seal_look_alike_but_are_not_the_same_image():
    """Every 佐藤's 三文判 presses the same design; each registration's scan
    is its own (a little off centre, its own ink gaps), and the same
    registration always gives the same image (a seeded register)."""
    first, second = (Image.open(io.BytesIO(base64.b64decode(seal_png_base64("佐藤", n)))) for n in (1, 2))
    assert seal_png_base64("佐藤", 1) == seal_png_base64("佐藤", 1)
    assert first.tobytes() != second.tobytes()
    aligned = min(_ink_differences(first, second, dx, dy) for dx in range(-4, 5) for dy in range(-4, 5))
    assert aligned <= 2 * 12 + 40  # the ink gaps of each, and edges resampled: the same design
    assert _ink_differences(first, Image.open(io.BytesIO(base64.b64decode(seal_png_base64("鈴木", 1)))), 0, 0) > 300


def _ink_differences(a: Image.Image, b: Image.Image, dx: int, dy: int) -> int:
    """Pixels that are ink in one image and not in the other, `b` shifted by (dx, dy)."""
    pa, pb = a.load(), b.load()
    return sum((pa[x, y] < 128) != (pb[(x + dx) % a.width, (y + dy) % a.height] < 128) for x in range(a.width) for y in range(a.height))


def test_furigana_is_confirmed_for_most_japanese_residents_and_the_search_kana_stays_apart(residents, japanese):
    """振り仮名 (the legal item since 2025-05-26) for most Japanese residents,
    not yet confirmed for some; for foreign residents only where notified.
    The ward's search kana is another item: the same reading, sometimes in
    the large kana an older system typed."""
    from sync.normalize import kana_key

    assert 0.88 <= share(japanese, lambda r: r["furigana"] is not None) <= 0.97
    foreign = [r for r in residents if r["foreign"] is not None]
    assert 0.1 <= share(foreign, lambda r: r["furigana"] is not None) <= 0.5
    confirmed = [r for r in residents if r["furigana"] is not None]
    assert all(KATAKANA.match(part) for r in confirmed for part in r["furigana"].split(SPACE))
    assert all(kana_key(r["furigana"]) == kana_key(r["name_kana"]) for r in confirmed)
    assert any(r["furigana"] != r["name_kana"] for r in confirmed)  # キョウコ recorded, キヨウコ searched
    with_former = [r for r in residents if r["former_surname_furigana"] is not None]
    assert with_former and all(r["former_surname"] and r["furigana"] for r in with_former)


def test_the_notified_reason_says_what_the_notified_on_date_was(residents):
    reasons = collections.Counter(r["notified_reason"] for r in residents)
    assert {"転入", "転居", "出生", "国外からの転入", "職権記載"} <= set(reasons)
    assert reasons["転入"] > reasons["国外からの転入"]
    for r in residents:
        if r["address_since"] is not None:
            assert r["notified_reason"] == "転居"
        elif r["notified_reason"] == "出生":
            assert r["previous_address"] is None


def test_a_destination_is_confirmed_days_after_a_move_out_within_japan_only(residents):
    removals = [r["removal"] for r in residents if r["removal"]]
    assert all(not m["moved_to_confirmed"] and m["confirmed_on"] is None for m in removals if m["reason"] != "国内転出")
    domestic = [m for m in removals if m["reason"] == "国内転出"]
    assert any(m["moved_to_confirmed"] for m in domestic)
    for m in domestic:
        if m["moved_to_confirmed"]:
            confirmed = dt.date.fromisoformat(m["confirmed_on"])
            assert dt.date.fromisoformat(m["occurred_on"]) < confirmed <= REGISTER_DATE
        else:
            assert m["confirmed_on"] is None and (REGISTER_DATE - dt.date.fromisoformat(m["occurred_on"])).days <= 20


def test_remarks_are_rare_and_dated_in_wareki(residents):
    remarks = [r["remarks"] for r in residents if r["remarks"]]
    assert 0.01 <= len(remarks) / len(residents) <= 0.03
    assert all(re.match(r"^(令和|平成|昭和)(元|\d+)年\d+月\d+日 \S+$", text) for text in remarks)

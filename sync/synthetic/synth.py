"""The synthetic register of a Tokyo ward: households and the people in them.

The model follows what a 住民基本台帳 of a Tokyo special ward looks like:
half of all households are one person, the mean household is about 1.9
people, families are a 世帯主 with 妻/夫, 子, sometimes a parent (母/父) or a
married child with 子の妻 and 孫; about 4 % of residents are foreign, with the
items a register keeps for them (国籍・地域, 第30条の45区分, 在留資格 …); a few
per cent of rows are 除票 (moved out, died). Every draw comes from the `rng`
handed in, so one seed always gives the same register.

The items contract 2 added — 氏名の振り仮名 as the law records it (confirmed
for most Japanese residents, not yet for some; for foreign residents only
where they notified one), 旧氏の振り仮名, 備考, what was notified on the
届出日, and whether a 転出先 is confirmed — draw from a second stream
(`items_rng`), so that a seed still gives the same people it gave before
they existed.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import re
from dataclasses import dataclass, field

from sync.synthetic import codes
from sync.synthetic.refdata import ForeignNamePart, Name, Nationality, ReferenceData, Weighted, reference_data
from sync.synthetic.sealimage import seal_png_base64

JST = dt.timezone(dt.timedelta(hours=9), "JST")
SPACE = "\u3000"  # between surname and given name, in kanji and in kana
# Foreign residents already living in Japan became part of the 住民基本台帳 on
# the day the revised law took effect.
FOREIGN_REGISTER_START = dt.date(2012, 7, 9)
ERA_BOUNDARIES = (
    dt.date(1912, 7, 30),  # 明治 → 大正
    dt.date(1926, 12, 25),  # 大正 → 昭和
    dt.date(1989, 1, 8),  # 昭和 → 平成
    dt.date(2019, 5, 1),  # 平成 → 令和
)
HOUSEHOLD_SIZES = Weighted([1, 2, 3, 4, 5, 6], [0.50, 0.25, 0.13, 0.09, 0.025, 0.005])
FOREIGN_HOUSEHOLD_SIZES = Weighted([1, 2, 3, 4, 5], [0.62, 0.20, 0.10, 0.07, 0.01])
FOREIGN_HOUSEHOLD_SHARE = 0.04
FOREIGN_SPOUSE_SHARE = 0.03  # of Japanese couples


def age_bands(*bands: tuple[float, float, float]) -> Weighted[tuple[float, float]]:
    """Ranges of age in years, (from, to, weight)."""
    return Weighted([(low, high) for low, high, _ in bands], [weight for *_, weight in bands])


SINGLE_AGES = age_bands((18, 22, 6), (22, 30, 20), (30, 40, 16), (40, 50, 12), (50, 60, 11), (60, 70, 10),
                        (70, 80, 12), (80, 90, 10), (90, 100, 3), (100, 106, 0.2))
COUPLE_AGES = age_bands((24, 35, 14), (35, 50, 12), (50, 65, 20), (65, 75, 24), (75, 85, 22), (85, 98, 8))
PARENT_AGES = age_bands((26, 35, 16), (35, 45, 30), (45, 55, 32), (55, 68, 22))
WITH_PARENT_AGES = age_bands((35, 60, 1))
GRANDPARENT_AGES = age_bands((58, 80, 1))
KATAGAKI_SHARE = {1: 0.47, 2: 0.28, 3: 0.22}  # larger households: 0.2
REMOVED_HOUSEHOLD_SHARE = 0.014
PLANNED_MOVE_OUT_SHARE = 0.004
FURIGANA_CONFIRMED_SHARE = 0.93  # Japanese residents whose 振り仮名 is recorded (the rest: not yet confirmed)
FOREIGN_FURIGANA_SHARE = 0.3  # foreign residents who notified one
OLD_SEARCH_KANA_SHARE = 0.05  # search kana typed in large kana by an older system (キヨウコ for キョウコ)
REMARKS_SHARE = 0.02
REMARKS = ("世帯主変更", "住居表示実施による住所変更", "続柄の記載更正", "転入通知受理")
# 転入通知 from the new municipality confirms a 転出先 within days; a move abroad is never confirmed.
CONFIRMATION_DAYS = (3, 20)
ERAS = (("令和", dt.date(2019, 5, 1)), ("平成", dt.date(1989, 1, 8)), ("昭和", dt.date(1926, 12, 25)),
        ("大正", dt.date(1912, 7, 30)), ("明治", dt.date(1868, 1, 25)))
SMALL_KANA = str.maketrans("ァィゥェォッャュョヮ", "アイウエオツヤユヨワ")
SUPPORT_MEASURE_SHARE = 0.0006  # of households
SEAL_SHARE_ADULTS = 0.40
SEAL_SHARE_MINORS = 0.05  # 15–17 may register too
PERIOD_DAYS = {"年": 365, "月": 30}
# Relationships of people who often joined the household after it settled.
JOIN_LATER = frozenset({"妻", "夫", "母", "父", "子の妻", "同居人", "妻（未届）", "兄", "姉", "弟", "妹"})

BUILDING_NAMES = ("サンハイツ{}", "コーポ{}", "メゾン{}", "グランドメゾン{}", "パークハウス{}", "ライオンズマンション{}",
                  "シティハイツ{}", "ベルメゾン{}", "クレストコート{}", "{}レジデンス", "{}荘", "{}ハイム", "{}ハウス")
ROOM_SUFFIXES = Weighted(["号室", "号", ""], [6, 3, 1])
FULL_WIDTH_DIGITS = str.maketrans("0123456789", "０１２３４５６７８９")
ABROAD = Weighted(["アメリカ合衆国", "中華人民共和国", "シンガポール共和国", "タイ王国", "オーストラリア連邦", "英国", "ドイツ連邦共和国", "大韓民国"],
                  [30, 15, 12, 10, 8, 8, 7, 10])
FOREIGN_CATEGORY_RARE = Weighted(["一時庇護許可者", "仮滞在許可者", "国籍喪失による経過滞在者"], [3, 4, 3])
FOREIGN_CATEGORY_RARE_SHARE = 0.03
NEWBORN_FOREIGN_SHARE = 0.15  # foreign households with children whose youngest is under 60 days

STATUS_BY_AGE = (
    (30, Weighted(["留学", "技術・人文知識・国際業務", "特定技能1号", "家族滞在", "永住者", "日本人の配偶者等", "特定活動"],
                  [35, 30, 15, 5, 5, 5, 5])),
    (45, Weighted(["技術・人文知識・国際業務", "永住者", "経営・管理", "技能", "日本人の配偶者等", "定住者", "高度専門職1号ロ", "特定技能1号", "特定活動"],
                  [35, 25, 6, 8, 8, 6, 4, 5, 3])),
    (200, Weighted(["永住者", "定住者", "経営・管理", "技能", "技術・人文知識・国際業務", "日本人の配偶者等"],
                   [55, 12, 10, 8, 10, 5])),
)
# A status that does not allow bringing a family is not the status of a
# household head with family members.
STATUSES_WITHOUT_FAMILY = frozenset({"留学", "特定技能1号", "特定活動", "日本人の配偶者等"})
PERIODS = {
    "永住者": None,
    "技術・人文知識・国際業務": Weighted(["5年", "3年", "1年"], [2, 5, 3]),
    "留学": Weighted(["4年3月", "2年3月", "1年3月", "1年"], [2, 3, 3, 2]),
    "家族滞在": Weighted(["5年", "3年", "2年", "1年"], [2, 4, 2, 2]),
    "日本人の配偶者等": Weighted(["5年", "3年", "1年", "6月"], [2, 4, 3, 1]),
    "永住者の配偶者等": Weighted(["5年", "3年", "1年"], [2, 5, 3]),
    "特定技能1号": Weighted(["1年", "6月", "4月"], [6, 3, 1]),
    "定住者": Weighted(["5年", "3年", "1年", "6月"], [2, 5, 2, 1]),
    "経営・管理": Weighted(["5年", "3年", "1年", "4月"], [1, 3, 5, 1]),
    "技能": Weighted(["5年", "3年", "1年"], [2, 5, 3]),
    "特定活動": Weighted(["5年", "1年", "6月"], [1, 5, 4]),
    "高度専門職1号ロ": Weighted(["5年"], [1]),
}
# Category → period of stay granted to people without a residence card.
CARDLESS_PERIODS = {"一時庇護許可者": "6月", "仮滞在許可者": "6月"}


@dataclass(frozen=True)
class RegisterSpec:
    """What identifies one synthetic register: the same spec gives the same
    bytes."""

    residents: int
    seed: int
    register_date: dt.date  # the register is exported as of 23:00 that day
    municipality_code: str = "131113"
    prefecture: str = "東京都"
    city: str = "大田区"
    individual_numbers: bool = False  # 個人番号 is sent only if the ward enables it

    @property
    def as_of(self) -> str:
        return f"{self.register_date.isoformat()}T23:00:00+09:00"

    @property
    def municipality(self) -> dict:
        return {"code": self.municipality_code, "prefecture": self.prefecture, "name": self.city}


@dataclass
class Member:
    """One person while their household is being put together."""

    relationship: str
    sex: str
    birth: dt.date
    shares_surname: bool = True  # False: 同居人, 未届の妻 … keep their own surname
    koseki: str = "main"  # which 戸籍 they belong to: main, parents, child, own
    surname: Name | None = None
    given: Name | None = None
    foreign_name: Name | None = None  # a foreign resident's whole name: not split into surname and given
    foreign: dict | None = None
    name_alphabet: str | None = None
    alias: str | None = None
    seal_text: str | None = None
    record: dict = field(default_factory=dict)


def timestamp(day: dt.date, rng: random.Random) -> str:
    """A moment in office hours (08:30–17:15) on `day`, JST."""
    seconds = rng.randrange(8 * 3600 + 1800, 17 * 3600 + 900)
    return f"{day.isoformat()}T{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}+09:00"


def apply_variants(text: str, part: str, rng: random.Random, ref: ReferenceData) -> str:
    """Write some names with the 異体字 or IVS form a register keeps."""
    table = ref.variants[part]
    if table.keys().isdisjoint(text):
        return text
    out = []
    for char in text:
        forms = table.get(char)
        if forms:
            draw = rng.random()
            for variant in forms:
                if draw < variant.share:
                    char = variant.form
                    break
                draw -= variant.share
        out.append(char)
    return "".join(out)


class Synth:
    """Draws households, people, addresses and seals for one register."""

    def __init__(self, spec: RegisterSpec, rng: random.Random, items_rng: random.Random | None = None):
        self.spec = spec
        self.rng = rng
        self.items_rng = items_rng or rng  # the contract 2 items (see the module's doc)
        self.ref = reference_data()
        self.towns = self.ref.towns(spec.municipality_code)
        self.today = spec.register_date
        self.countries = frozenset(ABROAD.items) | {n.country for n in self.ref.nationalities.items}

    # --- small draws -----------------------------------------------------

    def days_between(self, start: dt.date, end: dt.date) -> dt.date:
        """A day in [start, end] (start if the span is empty)."""
        span = (end - start).days
        return start if span <= 0 else start + dt.timedelta(days=self.rng.randint(0, span))

    def birth_for_age(self, age_from: float, age_to: float) -> dt.date:
        days = int(self.rng.uniform(age_from, age_to) * 365.25)
        birth = self.today - dt.timedelta(days=max(days, 1))
        return self.near_era_boundary(birth)

    def near_era_boundary(self, birth: dt.date) -> dt.date:
        # A few people are born on the first or last day of an era: the
        # appliance's 和暦 printing has to get them right.
        if self.rng.random() < 0.01:
            for boundary in ERA_BOUNDARIES:
                if abs((birth - boundary).days) < 365:
                    return boundary - dt.timedelta(days=self.rng.randint(0, 1))
        return birth

    def age_of(self, birth: dt.date) -> float:
        return (self.today - birth).days / 365.25

    def surname(self) -> Name:
        name = self.ref.surnames.pick(self.rng)
        return Name(apply_variants(name.written, "surname", self.rng, self.ref), name.reading)

    def given(self, sex: str, birth_year: int) -> Name:
        name = self.ref.given_names(sex, birth_year).pick(self.rng)
        return Name(apply_variants(name.written, "given", self.rng, self.ref), name.reading)

    def town(self) -> str:
        return self.towns[self.rng.randrange(len(self.towns))]

    def address(self, household_size: int) -> dict:
        town = self.town()
        katagaki = None
        if self.rng.random() < KATAGAKI_SHARE.get(household_size, 0.2):
            katagaki = self.building(town)
        return {
            "prefecture": self.spec.prefecture,
            "city": self.spec.city,
            "town": town,
            "banchi": f"{self.rng.randint(1, 40)}番{self.rng.randint(1, 30)}号",
            "katagaki": katagaki,
        }

    def building(self, town: str) -> str:
        area = re.sub(r"[一二三四五六七八九十]+丁目$", "", town)
        name = self.rng.choice(BUILDING_NAMES).format(area)
        if self.rng.random() < 0.15:
            name += self.rng.choice(("第2", "II", "東館", "西館"))
        room = f"{self.rng.randint(1, 12)}{self.rng.randint(1, 12):02d}"
        if self.rng.random() < 0.15:
            room = room.translate(FULL_WIDTH_DIGITS)  # registers hold both forms
        return f"{name}{room}{ROOM_SUFFIXES.pick(self.rng)}"

    def place_address(self) -> str:
        """A full address outside the ward (転入前住所, 転出先)."""
        place = self.ref.places.pick(self.rng)
        if place.town.endswith("丁目"):
            number = f"{self.rng.randint(1, 30)}番{self.rng.randint(1, 25)}号"
        elif place.town:
            number = f"{self.rng.randint(1, 60)}番地{self.rng.randint(1, 20)}"
        else:
            number = f"{self.rng.randint(1, 900)}番地"
        return place.text + number

    def honseki(self) -> str:
        if self.rng.random() < 0.3:
            return f"{self.spec.prefecture}{self.spec.city}{self.town()}{self.rng.randint(1, 40)}番"
        place = self.ref.places.pick(self.rng)
        if place.town.endswith("丁目"):
            return f"{place.text}{self.rng.randint(1, 40)}番"
        if self.rng.random() < 0.3:
            return f"{place.text}{self.rng.randint(1, 999)}番地の{self.rng.randint(1, 9)}"
        return f"{place.text}{self.rng.randint(1, 999)}番地"

    # --- household composition -------------------------------------------

    def compose(self, size: int) -> list[Member]:
        kinds = COMPOSITIONS[min(size, 6)]
        return kinds.pick(self.rng)(self, size)

    def single(self, size: int) -> list[Member]:
        birth = self.birth_for_age(*SINGLE_AGES.pick(self.rng))
        age = self.age_of(birth)
        male_share = 0.58 if age < 60 else 0.45 if age < 75 else 0.3
        return [Member("世帯主", "男" if self.rng.random() < male_share else "女", birth)]

    def couple(self, head_ages: Weighted[tuple[float, float]]) -> list[Member]:
        head_birth = self.birth_for_age(*head_ages.pick(self.rng))
        husband_heads = self.rng.random() < 0.9
        gap = int(self.rng.gauss(2, 3) * 365.25)
        spouse_birth = self.clamp_adult(head_birth + dt.timedelta(days=gap if husband_heads else -gap))
        if husband_heads:
            return [Member("世帯主", "男", head_birth), Member("妻", "女", spouse_birth)]
        return [Member("世帯主", "女", head_birth), Member("夫", "男", spouse_birth)]

    def clamp_adult(self, birth: dt.date) -> dt.date:
        youngest = self.today - dt.timedelta(days=int(18.5 * 365.25))
        return min(birth, youngest)

    def children(self, mother_birth: dt.date, count: int) -> list[Member]:
        mother_age = self.age_of(mother_birth)
        oldest, youngest = min(30.0, mother_age - 20), max(0.0, mother_age - 44)
        births = sorted(self.birth_for_age(youngest, max(youngest, oldest) + 0.01) for _ in range(count))
        return [Member("子", self.rng.choice("男女"), birth) for birth in births]

    def family(self, size: int) -> list[Member]:
        members = self.couple(PARENT_AGES if size > 2 else COUPLE_AGES)
        return members + self.children(self.mother(members).birth, size - 2)

    def single_parent(self, size: int) -> list[Member]:
        head = Member("世帯主", "女" if self.rng.random() < 0.85 else "男", self.birth_for_age(*PARENT_AGES.pick(self.rng)))
        return [head] + self.children(head.birth, size - 1)

    def with_parent(self, size: int) -> list[Member]:
        if size == 2:
            head = Member("世帯主", self.rng.choice("男女"), self.birth_for_age(38, 66))
            members = [head]
        else:
            members = self.couple(WITH_PARENT_AGES)
            members += self.children(self.mother(members).birth, size - 3)
        head_birth = members[0].birth
        parent_birth = self.birth_for_age(self.age_of(head_birth) + 23, min(104, self.age_of(head_birth) + 38))
        mother = self.rng.random() < 0.75
        members.append(Member("母" if mother else "父", "女" if mother else "男", parent_birth, koseki="parents"))
        return members

    def three_generations(self, size: int) -> list[Member]:
        members = self.couple(GRANDPARENT_AGES)
        if size == 3:  # grandparents bringing up a grandchild
            return members + [Member("孫", self.rng.choice("男女"), self.birth_for_age(0, 18))]
        head_age = self.age_of(members[0].birth)
        son = Member("子", "男", self.birth_for_age(max(20.5, head_age - 38), max(21, head_age - 24)), koseki="child")
        wife = Member("子の妻", "女", self.clamp_adult(son.birth + dt.timedelta(days=int(self.rng.gauss(1, 2) * 365.25))), koseki="child")
        grandchildren = self.children(wife.birth, size - 4)
        for grandchild in grandchildren:
            grandchild.relationship, grandchild.koseki = "孫", "child"
        return members + [son, wife] + grandchildren

    def siblings(self, size: int) -> list[Member]:
        head = Member("世帯主", self.rng.choice("男女"), self.birth_for_age(25, 75))
        sister = self.rng.random() < 0.5
        birth = self.clamp_adult(head.birth + dt.timedelta(days=self.rng.randint(-3000, 3000)))
        older = birth < head.birth
        relationship = ("姉" if older else "妹") if sister else ("兄" if older else "弟")
        return [head, Member(relationship, "女" if sister else "男", birth)]

    def cohabitants(self, size: int) -> list[Member]:
        head = Member("世帯主", self.rng.choice("男女"), self.birth_for_age(22, 45))
        other = Member("同居人", self.rng.choice("男女"), self.birth_for_age(22, 45), shares_surname=False, koseki="own")
        return [head, other]

    def common_law(self, size: int) -> list[Member]:
        head = Member("世帯主", "男", self.birth_for_age(25, 65))
        partner = Member("妻（未届）", "女", self.clamp_adult(head.birth + dt.timedelta(days=self.rng.randint(-1500, 3000))),
                         shares_surname=False, koseki="own")
        return [head, partner]

    @staticmethod
    def mother(members: list[Member]) -> Member:
        return next(m for m in members if m.sex == "女")

    # --- names and 戸籍 ----------------------------------------------------

    def name_japanese(self, members: list[Member]) -> None:
        family_surname = self.surname()
        for member in members:
            member.surname = family_surname if member.shares_surname else self.surname()
            member.given = self.given(member.sex, member.birth.year)
            member.seal_text = member.surname.written

    def assign_koseki(self, members: list[Member]) -> None:
        """本籍 and 筆頭者 for Japanese members: a couple and their unmarried
        children share one 戸籍 headed by the husband; a married child has their
        own; a single adult is often still in their parents' 戸籍."""
        main_honseki = self.honseki()
        groups = {"main": (main_honseki, self.main_hitto(members))}
        father = next((m for m in members if m.relationship == "父"), None)
        if any(m.koseki == "parents" for m in members):
            parent = next(m for m in members if m.koseki == "parents")
            groups["parents"] = (main_honseki if self.rng.random() < 0.7 else self.honseki(),
                                 self.full_name(father) if father else self.father_name(parent))
        son = next((m for m in members if m.koseki == "child" and m.relationship == "子"), None)
        if son:
            groups["child"] = (main_honseki if self.rng.random() < 0.5 else self.honseki(), self.full_name(son))
        for member in members:
            if member.foreign is not None:
                continue
            if member.koseki == "own":
                own_hitto = self.full_name(member) if self.age_of(member.birth) >= 35 else self.father_name(member)
                member.record["honseki"], member.record["hitto"] = self.honseki(), own_hitto
            else:
                member.record["honseki"], member.record["hitto"] = groups[member.koseki]

    def main_hitto(self, members: list[Member]) -> str:
        head = members[0]
        spouse = next((m for m in members if m.relationship in ("妻", "夫")), None)
        if spouse is not None:
            husband = head if head.sex == "男" or spouse.foreign is not None else spouse
            return self.full_name(husband)
        if any(m.relationship == "子" for m in members):
            return self.full_name(head)  # a single parent heads their own 戸籍
        if any(m.relationship in ("兄", "姉", "弟", "妹") for m in members):
            return self.father_name(head)
        if self.age_of(head.birth) >= 35 and self.rng.random() < 0.6:
            return self.full_name(head)
        return self.father_name(head)

    def full_name(self, member: Member) -> str:
        return f"{member.surname.written}{SPACE}{member.given.written}"

    def written_name(self, member: Member) -> str:
        return member.foreign_name.written if member.foreign_name is not None else self.full_name(member)

    def father_name(self, member: Member) -> str:
        """The 筆頭者 of the parents' 戸籍, who does not live here."""
        father_birth_year = member.birth.year - self.rng.randint(25, 35)
        return f"{member.surname.written}{SPACE}{self.given('男', father_birth_year).written}"

    # --- foreign residents --------------------------------------------------

    def name_foreign(self, member: Member, nationality: Nationality, family_surname: ForeignNamePart | None = None) -> dict:
        """Name `member` the way residents of `nationality` are named; returns
        the parts chosen, by part name."""
        chosen = {}
        for part in nationality.order:
            if part in nationality.optional and self.rng.random() < 0.5:
                continue
            choices = nationality.parts[part][member.sex]
            chosen[part] = family_surname if part == "surname" and family_surname else choices[self.rng.randrange(len(choices))]
        parts = list(chosen.values())
        member.name_alphabet = " ".join(p.alphabet for p in parts)
        reading = SPACE.join(p.reading for p in parts)
        if nationality.has_kanji:
            written = SPACE.join(p.kanji for p in parts)
            member.seal_text = parts[0].kanji
        else:
            written = member.name_alphabet
            member.seal_text = parts[0].reading
        member.foreign_name = Name(written, reading)
        member.surname = member.given = None  # a spouse named as a Japanese first
        return chosen

    def foreign_household(self, members: list[Member]) -> None:
        nationality = self.ref.nationalities.pick(self.rng)
        special = self.rng.random() < nationality.special_permanent_rate
        head = members[0]
        family_surname = None
        for member in members:
            inherits = member.relationship in ("子", "孫")
            chosen = self.name_foreign(member, nationality, family_surname if inherits else None)
            if member is head:
                family_surname = chosen.get("surname")
            member.shares_surname = False
            member.koseki = "none"
            alias_rate = nationality.special_permanent_alias_rate if special else nationality.alias_rate
            if nationality.alias_surnames and self.rng.random() < alias_rate:
                alias_surname = nationality.alias_surnames[self.rng.randrange(len(nationality.alias_surnames))]
                member.alias = f"{alias_surname.written}{SPACE}{self.given(member.sex, member.birth.year).written}"
        head_status = None if special else self.head_status(head, len(members))
        for member in members:
            member.foreign = self.foreign_items(member, nationality, special, head_status)

    def head_status(self, head: Member, household_size: int) -> str:
        age = self.age_of(head.birth)
        table = next(t for limit, t in STATUS_BY_AGE if age < limit)
        status = table.pick(self.rng)
        while household_size > 1 and status in STATUSES_WITHOUT_FAMILY:
            status = table.pick(self.rng)
        return status

    def member_status(self, member: Member, head_status: str) -> str:
        if member.relationship == "世帯主":
            return head_status
        if head_status == "永住者":
            return self.rng.choice(("永住者", "永住者の配偶者等"))
        if head_status == "定住者":
            return "定住者"
        return "家族滞在"

    def foreign_items(self, member: Member, nationality: Nationality, special: bool, head_status: str | None) -> dict:
        items = {"nationality": nationality.nationality, "category": "中長期在留者", "status": None, "period": None,
                 "period_expiry": None, "card_number": None, "became_resident_on": None}
        if special:
            items.update(category="特別永住者", card_number=codes.residence_card_number(self.rng))
        elif member.relationship == "世帯主" and self.rng.random() < FOREIGN_CATEGORY_RARE_SHARE and self.age_of(member.birth) >= 18:
            category = FOREIGN_CATEGORY_RARE.pick(self.rng)
            items.update(category=category, period=CARDLESS_PERIODS.get(category))
        else:
            status = self.member_status(member, head_status)
            items.update(status=status, card_number=codes.residence_card_number(self.rng))
            periods = PERIODS.get(status)
            items["period"] = periods.pick(self.rng) if periods else None
        return items

    def newborn_foreigner(self, member: Member) -> None:
        """A foreign child born here less than 60 days ago has no status yet:
        出生による経過滞在者."""
        member.birth = self.today - dt.timedelta(days=self.rng.randint(3, 55))
        member.foreign.update(category="出生による経過滞在者", status=None, period=None, card_number=None)

    def foreign_spouse(self, spouse: Member, head: Member) -> None:
        nationality = self.ref.nationalities.pick(self.rng)
        self.name_foreign(spouse, nationality)
        spouse.shares_surname = False
        status = "日本人の配偶者等" if self.rng.random() < 0.6 else "永住者"
        periods = PERIODS[status]
        spouse.foreign = {"nationality": nationality.nationality, "category": "中長期在留者", "status": status,
                          "period": periods.pick(self.rng) if periods else None, "period_expiry": None,
                          "card_number": codes.residence_card_number(self.rng), "became_resident_on": None}
        if self.rng.random() < 0.5:  # 通称: the Japanese spouse's surname
            spouse.alias = f"{head.surname.written}{SPACE}{spouse.foreign_name.reading.split(SPACE)[-1]}"

    # --- dates ---------------------------------------------------------------

    def arrival(self, head: Member) -> dt.date | None:
        """When the household came to the ward; None: the head was born here."""
        age = self.age_of(head.birth)
        if self.rng.random() < 0.12:
            return None
        years = min(max(0.05, age - 18), self.rng.expovariate(1 / 9))
        return self.today - dt.timedelta(days=max(1, int(years * 365.25)))

    def settle(self, members: list[Member], arrival: dt.date | None) -> None:
        """resident_since, address_since, notified_on and previous_address:
        the household came together (or its head was born here), children
        born since were born here, a spouse or parent may have joined later."""
        head = members[0]
        came = arrival or head.birth
        household_previous = self.previous_address(head)
        for member in members:
            if member is head:
                since, previous = came, household_previous if arrival else None
            elif member.relationship in ("子", "孫") and member.birth >= came:
                since, previous = member.birth, None
            elif member.relationship in JOIN_LATER and (arrival is None or self.rng.random() < 0.3):
                adult = max(came, member.birth + dt.timedelta(days=int(18 * 365.25)))
                since, previous = self.days_between(adult, self.today - dt.timedelta(days=1)), self.previous_address(member)
            else:
                since, previous = came, household_previous
            if member.foreign is not None and since < FOREIGN_REGISTER_START:
                since = FOREIGN_REGISTER_START
            member.record["resident_since"], member.record["previous_address"] = since, previous
        moved = arrival is not None and self.rng.random() < 0.25
        moved_on = self.days_between(max(m.record["resident_since"] for m in members), self.today - dt.timedelta(days=1)) if moved else None
        for member in members:
            record = member.record
            record["address_since"] = moved_on if moved_on and record["resident_since"] < moved_on else None
            event = record["address_since"] or record["resident_since"]
            record["notified_on"] = min(self.today, event + dt.timedelta(days=self.rng.randint(0, 14)))

    def previous_address(self, member: Member) -> str:
        if member.foreign is not None and self.rng.random() < 0.5:
            return self.ref.nationality(member.foreign["nationality"]).country
        return self.place_address()

    def foreign_dates(self, member: Member) -> None:
        """外国人住民となった年月日 and a 満了日 that the current period of
        stay (granted on or after arrival) reaches."""
        items, since = member.foreign, member.record["resident_since"]
        items["became_resident_on"] = since.isoformat()
        if items["period"] is None:
            return
        days = period_days(items["period"])
        start = max(since, self.today - dt.timedelta(days=self.rng.randint(0, days - 1)))
        items["period_expiry"] = (start + dt.timedelta(days=days - 1)).isoformat()

    # --- removal, seals ------------------------------------------------------

    def removal_of_household(self, members: list[Member]) -> None:
        foreign = members[0].foreign is not None
        abroad = self.rng.random() < (0.5 if foreign else 0.1)
        latest = max(m.record["resident_since"] for m in members)
        occurred = self.days_between(max(latest + dt.timedelta(days=1), self.today - dt.timedelta(days=1100)), self.today - dt.timedelta(days=1))
        notified = max(latest, occurred - dt.timedelta(days=self.rng.randint(0, 14)))
        destination = self.abroad(members[0]) if abroad else self.place_address()
        confirmed_on = None if abroad else self.confirmation(occurred)
        for member in members:
            member.record["removal"] = {"reason": "国外転出" if abroad else "国内転出", "occurred_on": occurred,
                                        "notified_on": notified, "moved_to": destination,
                                        "moved_to_confirmed": confirmed_on is not None, "confirmed_on": confirmed_on}

    def confirmation(self, moved_out: dt.date) -> dt.date | None:
        """The day the new municipality's 転入通知 confirmed a 転出先, if it
        has arrived by today."""
        day = moved_out + dt.timedelta(days=self.items_rng.randint(*CONFIRMATION_DAYS))
        return day if day <= self.today else None

    def abroad(self, member: Member) -> str:
        """Where someone leaving Japan goes: home, for a foreign resident."""
        if member.foreign is not None:
            return self.ref.nationality(member.foreign["nationality"]).country
        return ABROAD.pick(self.rng)

    def maybe_death(self, member: Member, alone: bool) -> None:
        if member.relationship == "世帯主" and not alone:
            return  # the household would need a new 世帯主, which this model does not draw
        age = self.age_of(member.birth)
        chance = 0.06 if age >= 85 else 0.025 if age >= 75 else 0.007 if age >= 65 else 0.0003
        draw = self.rng.random()
        if draw >= chance:
            if alone and draw < chance + 0.0015:  # found not to live there any more
                day = self.days_between(member.record["resident_since"], self.today - dt.timedelta(days=1))
                member.record["removal"] = {"reason": "職権消除", "occurred_on": day, "notified_on": day, "moved_to": None,
                                            "moved_to_confirmed": False, "confirmed_on": None}
            return
        occurred = self.days_between(max(member.record["resident_since"], self.today - dt.timedelta(days=1100)), self.today - dt.timedelta(days=1))
        notified = min(self.today, occurred + dt.timedelta(days=self.rng.randint(0, 7)))
        member.record["removal"] = {"reason": "死亡", "occurred_on": occurred, "notified_on": notified, "moved_to": None,
                                    "moved_to_confirmed": False, "confirmed_on": None}

    def seals(self, member: Member, ordinal: int, code: str) -> list[dict]:
        age = self.age_of(member.birth)
        if age < 15 or self.rng.random() >= (SEAL_SHARE_ADULTS if age >= 18 else SEAL_SHARE_MINORS):
            return []
        eligible = max(member.record["resident_since"], member.birth + dt.timedelta(days=int(15 * 365.25) + 1))
        removal = member.record.get("removal")
        last_day = removal["occurred_on"] if removal else self.today
        registered = self.days_between(eligible, last_day)
        # A removed resident's registration ends with the removal.
        revoked_on = last_day if removal else None
        draw = self.rng.random()
        if draw < 0.03:  # abolished and not registered again
            revoked_on = revoked_on or self.days_between(registered, self.today)
        seals = [self.seal(member, 2 * ordinal + 1, code, registered, revoked_on)]
        if 0.03 <= draw < 0.09:  # registered anew: the old seal was revoked that day
            old = self.days_between(eligible, registered)
            seals.insert(0, self.seal(member, 2 * ordinal, code, old, revoked_on=registered))
        return seals

    def seal(self, member: Member, seal_ordinal: int, code: str, registered: dt.date, revoked_on: dt.date | None) -> dict:
        return seal_record(seal_ordinal, code, registered, member.seal_text,
                           revoked_on=revoked_on, updated_at=timestamp(revoked_on or registered, self.rng))

    # --- the household as records --------------------------------------------

    def people(self, max_size: int, newborns: bool) -> list[Member]:
        """The members of one household, named, in register order."""
        foreign = self.rng.random() < FOREIGN_HOUSEHOLD_SHARE
        size = min(max_size, (FOREIGN_HOUSEHOLD_SIZES if foreign else HOUSEHOLD_SIZES).pick(self.rng))
        members = self.compose(size)
        if foreign:
            self.foreign_household(members)
        else:
            self.name_japanese(members)
            spouse = next((m for m in members if m.relationship in ("妻", "夫")), None)
            if spouse and self.rng.random() < FOREIGN_SPOUSE_SHARE:
                self.foreign_spouse(spouse, members[0])
            self.assign_koseki(members)
        children = [m for m in members if m.relationship == "子"]
        if newborns and foreign and children and self.rng.random() < NEWBORN_FOREIGN_SHARE and members[0].foreign["category"] == "中長期在留者":
            self.newborn_foreigner(children[-1])
        return order_members(members)

    def household(self, first_ordinal: int, max_size: int) -> tuple[list[dict], list[dict]]:
        """One household of at most `max_size` people with ordinals from
        `first_ordinal`, with its history: its resident records and its seal
        records."""
        members = self.people(max_size, newborns=True)
        self.settle(members, self.arrival(members[0]))
        self.foreign_dates_of(members)
        self.history(members)
        return self.records(members, first_ordinal, self.address(len(members)), with_seals=True)

    def arriving_household(self, first_ordinal: int, max_size: int) -> list[dict]:
        """A household moving into the ward today (転入): the records it gets."""
        members = self.people(max_size, newborns=False)
        previous = self.previous_address(members[0])
        for member in members:
            member.record.update(resident_since=self.today, previous_address=previous, address_since=None,
                                 notified_on=self.today, support_measure=False)
        self.foreign_dates_of(members)
        residents, _ = self.records(members, first_ordinal, self.address(len(members)), with_seals=False)
        return residents

    def foreign_dates_of(self, members: list[Member]) -> None:
        for member in members:
            if member.foreign is not None:
                self.foreign_dates(member)

    def history(self, members: list[Member]) -> None:
        if self.rng.random() < REMOVED_HOUSEHOLD_SHARE * (3 if members[0].foreign else 1):
            self.removal_of_household(members)
        else:
            for member in members:
                self.maybe_death(member, alone=len(members) == 1)
        if all(not m.record.get("removal") for m in members) and self.rng.random() < PLANNED_MOVE_OUT_SHARE:
            planned = {"date": (self.today + dt.timedelta(days=self.rng.randint(1, 14))).isoformat(), "moved_to": self.place_address()}
            for member in members:
                member.record["planned_move_out"] = planned
        support = self.rng.random() < SUPPORT_MEASURE_SHARE
        for member in members:
            member.record["support_measure"] = support

    def records(self, members: list[Member], first_ordinal: int, address: dict, with_seals: bool) -> tuple[list[dict], list[dict]]:
        head_name = self.written_name(members[0])
        household = codes.household_id(first_ordinal)
        residents, seals = [], []
        for index, member in enumerate(members):
            ordinal = first_ordinal + index
            code = codes.resident_code(ordinal)
            if with_seals:
                seals.extend(self.seals(member, ordinal, code))
            residents.append(self.resident_record(member, ordinal, code, household, index + 1, head_name, address))
        return residents, seals

    def resident_record(self, member: Member, ordinal: int, code: str, household: str, order: int, head_name: str,
                        address: dict) -> dict:
        r = member.record
        removal, planned = r.get("removal"), r.get("planned_move_out")
        events = [r["notified_on"]] + ([removal["notified_on"]] if removal else [])
        version = 1 + (r["address_since"] is not None) + (removal is not None) * 2 + (planned is not None)
        name = self.written_name(member)
        if member.foreign_name is not None:
            kana = member.foreign_name.reading
        else:
            kana = f"{member.surname.reading}{SPACE}{member.given.reading}"
        former = None
        if member.relationship in ("妻", "子の妻") and member.foreign is None and self.rng.random() < 0.03:
            former = self.surname()
            version += 1
        furigana = self.furigana(member, kana)
        return {
            "resident_code": code,
            "atena_number": codes.atena_number(ordinal),
            "household_id": household,
            "household_order": order,
            "name": name,
            "name_kana": self.search_kana(kana),
            "name_alphabet": member.name_alphabet,
            "alias": member.alias,
            "former_surname": former.written if former else None,
            "birth_date": member.birth.isoformat(),
            "sex": member.sex,
            "head_name": head_name,
            "relationship": member.relationship,
            "address": address,
            "address_since": _iso(r["address_since"]),
            "resident_since": r["resident_since"].isoformat(),
            "notified_on": r["notified_on"].isoformat(),
            "previous_address": r["previous_address"],
            "honseki": r.get("honseki"),
            "hitto": r.get("hitto"),
            "individual_number": codes.individual_number(self.rng) if self.spec.individual_numbers else None,
            "foreign": member.foreign,
            "status": "removed" if removal else "active",
            "removal": _removal_json(removal),
            "planned_move_out": planned,
            "support_measure": r["support_measure"],
            "version": version,
            "updated_at": timestamp(max(events), self.rng),
            "furigana": furigana,
            "former_surname_furigana": former.reading if former and furigana else None,
            "remarks": self.remarks(r["resident_since"]),
            "notified_reason": self.notified_reason(member),
        }

    # --- the items contract 2 added ---------------------------------------------

    def furigana(self, member: Member, reading: str) -> str | None:
        """氏名の振り仮名 as the law records it, or None while it is not confirmed."""
        share = FOREIGN_FURIGANA_SHARE if member.foreign is not None else FURIGANA_CONFIRMED_SHARE
        return reading if self.items_rng.random() < share else None

    def search_kana(self, reading: str) -> str:
        """The ward's search kana: the reading, in large kana where an older
        system typed it so (it is for finding people, not a legal item)."""
        return reading.translate(SMALL_KANA) if self.items_rng.random() < OLD_SEARCH_KANA_SHARE else reading

    def remarks(self, since: dt.date) -> str | None:
        """備考: now and then an entry the ward prints, dated after the person came."""
        if self.items_rng.random() >= REMARKS_SHARE:
            return None
        day = since + dt.timedelta(days=self.items_rng.randint(0, max(0, (self.today - since).days)))
        return f"{wareki(day)} {REMARKS[self.items_rng.randrange(len(REMARKS))]}"

    def notified_reason(self, member: Member) -> str:
        """What was notified on notified_on."""
        r = member.record
        if r["address_since"] is not None:
            return "転居"
        if member.foreign is not None and r["resident_since"] == FOREIGN_REGISTER_START:
            return "職権記載"  # foreign residents already here joined the register by the ward's entry
        if r["previous_address"] is None:
            return "出生"
        return "国外からの転入" if r["previous_address"] in self.countries else "転入"


COMPOSITIONS = {
    1: Weighted([Synth.single], [1]),
    2: Weighted([Synth.family, Synth.single_parent, Synth.with_parent, Synth.siblings, Synth.cohabitants, Synth.common_law],
                [60, 17, 10, 4, 6, 3]),
    3: Weighted([Synth.family, Synth.single_parent, Synth.with_parent, Synth.three_generations], [74, 10, 12, 4]),
    4: Weighted([Synth.family, Synth.single_parent, Synth.with_parent, Synth.three_generations], [80, 4, 11, 5]),
    5: Weighted([Synth.family, Synth.with_parent, Synth.three_generations], [60, 25, 15]),
    6: Weighted([Synth.family, Synth.with_parent, Synth.three_generations], [45, 30, 25]),
}
_ORDER = {"世帯主": 0, "妻": 1, "夫": 1, "妻（未届）": 1, "子": 2, "兄": 3, "姉": 3, "弟": 3, "妹": 3, "子の妻": 4, "孫": 5, "母": 6, "父": 6, "同居人": 7}


def order_members(members: list[Member]) -> list[Member]:
    """Register order: 世帯主, spouse, children oldest first, then the others."""
    return sorted(members, key=lambda m: (_ORDER[m.relationship], m.birth))


RESIDENT_KEYS = (
    "resident_code", "atena_number", "household_id", "household_order", "name", "name_kana", "name_alphabet", "alias",
    "former_surname", "birth_date", "sex", "head_name", "relationship", "address", "address_since", "resident_since",
    "notified_on", "previous_address", "honseki", "hitto", "individual_number", "foreign", "status", "removal",
    "planned_move_out", "support_measure", "version", "updated_at", "furigana", "former_surname_furigana", "remarks",
    "notified_reason",
)


def resident_in_key_order(fields: dict) -> dict:
    """A RESIDENT with every key, in the contract's order; absent ones null."""
    return {key: fields.get(key) for key in RESIDENT_KEYS}


def seal_record(seal_ordinal: int, code: str, registered: dt.date, text: str, *, revoked_on: dt.date | None, updated_at: str) -> dict:
    return {
        "seal_number": codes.seal_number(seal_ordinal),
        "resident_code": code,
        "registered_on": registered.isoformat(),
        "card_number": codes.seal_card_number(seal_ordinal),
        "image_png": seal_png_base64(text, seal_ordinal),
        "status": "revoked" if revoked_on else "active",
        "version": 2 if revoked_on else 1,
        "updated_at": updated_at,
    }


def period_days(text: str) -> int:
    """'4年3月' → 1550: the length of a period of stay, in days."""
    return sum(int(n) * PERIOD_DAYS[unit] for n, unit in re.findall(r"(\d+)([年月])", text))


def _iso(day: dt.date | None) -> str | None:
    return day.isoformat() if day else None


def _removal_json(removal: dict | None) -> dict | None:
    if removal is None:
        return None
    return {**removal, "occurred_on": removal["occurred_on"].isoformat(), "notified_on": removal["notified_on"].isoformat(),
            "confirmed_on": _iso(removal["confirmed_on"])}


def wareki(day: dt.date) -> str:
    """令和3年4月1日: a date as the ward writes it in 備考."""
    era, start = next((era, start) for era, start in ERAS if day >= start)
    year = day.year - start.year + 1
    return f"{era}{'元' if year == 1 else year}年{day.month}月{day.day}日"


def encode(record: dict) -> str:
    """One NDJSON line (without the newline), as stored and as exported."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))

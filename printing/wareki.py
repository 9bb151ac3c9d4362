"""Japanese era (和暦) dates: printing them and reading them from counter input.

The era table comes from configuration ([printing] eras, a list of
[name, first day] pairs) so that a new era is a configuration change, not a
release. A pair may carry a third element, the one-letter abbreviation used at
the counter (S50.6.15); the five modern eras have theirs built in.

Dates before 1873-01-01 are refused: Japan adopted the Gregorian calendar on
明治6年1月1日, and earlier 明治 dates were lunar, so a Gregorian date before
then has no faithful 和暦 rendering.
"""

from __future__ import annotations

import datetime as _dt
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

JST = _dt.timezone(_dt.timedelta(hours=9), "JST")
GREGORIAN_ADOPTION = _dt.date(1873, 1, 1)

# The abbreviations every Japanese form uses; a future era brings its own
# letter as the third element of its config entry.
KNOWN_ABBREVIATIONS = {"明治": "M", "大正": "T", "昭和": "S", "平成": "H", "令和": "R"}

DEFAULT_ERA_TABLE: tuple[tuple[str, str], ...] = (
    ("明治", "1868-01-25"),
    ("大正", "1912-07-30"),
    ("昭和", "1926-12-25"),
    ("平成", "1989-01-08"),
    ("令和", "2019-05-01"),
)


@dataclass(frozen=True)
class Era:
    name: str
    start: _dt.date
    abbreviation: str | None = None


def eras_from_config(table: Iterable[Sequence[str]]) -> tuple[Era, ...]:
    """Build the era table from config entries [name, "YYYY-MM-DD"(, letter)].

    Raises ValueError when the table is empty, unordered or malformed, so a
    bad config is caught at start-up rather than on a printed certificate."""
    eras: list[Era] = []
    for entry in table:
        if not 2 <= len(entry) <= 3:
            raise ValueError(f"era entry {list(entry)!r} must be [name, first day] or [name, first day, letter]")
        name, start_text = str(entry[0]), str(entry[1])
        try:
            start = _dt.date.fromisoformat(start_text)
        except ValueError:
            raise ValueError(f"era {name}: first day {start_text!r} is not a YYYY-MM-DD date") from None
        letter = str(entry[2]).upper() if len(entry) == 3 else KNOWN_ABBREVIATIONS.get(name)
        if letter is not None and not re.fullmatch(r"[A-Z]", letter):
            raise ValueError(f"era {name}: abbreviation {letter!r} must be one letter")
        eras.append(Era(name, start, letter))
    if not eras:
        raise ValueError("the era table is empty")
    for earlier, later in zip(eras, eras[1:]):
        if later.start <= earlier.start:
            raise ValueError(f"era {later.name} must start after {earlier.name}")
    names = [era.name for era in eras]
    letters = [era.abbreviation for era in eras if era.abbreviation]
    if len(set(names)) != len(names) or len(set(letters)) != len(letters):
        raise ValueError("era names and abbreviations must be unique")
    return tuple(eras)


DEFAULT_ERAS = eras_from_config(DEFAULT_ERA_TABLE)


def _era_of(day: _dt.date, eras: Sequence[Era]) -> tuple[Era, int]:
    if day < GREGORIAN_ADOPTION:
        raise ValueError(f"{format_seireki(day)}は明治6年（1873年）の改暦より前のため、和暦に換算できません")
    for era in reversed(eras):
        if day >= era.start:
            return era, day.year - era.start.year + 1
    raise ValueError(f"{format_seireki(day)}は元号表の最初の元号（{eras[0].name}）より前です")


def _year_label(year: int) -> str:
    return "元" if year == 1 else str(year)


def format_wareki(day: _dt.date, eras: Sequence[Era] = DEFAULT_ERAS) -> str:
    """令和8年11月25日; the first year of an era prints as 元年."""
    era, year = _era_of(day, eras)
    return f"{era.name}{_year_label(year)}年{day.month}月{day.day}日"


def format_seireki(day: _dt.date) -> str:
    """1990年4月1日 (foreign residents' dates that must be in the Gregorian calendar)."""
    return f"{day.year}年{day.month}月{day.day}日"


def format_wareki_datetime(moment: _dt.datetime, eras: Sequence[Era] = DEFAULT_ERAS) -> str:
    """令和8年11月24日23時00分, in Japan time whatever the offset given."""
    if moment.tzinfo is None:
        raise ValueError("a naive datetime cannot be printed as Japan time; pass an aware datetime")
    local = moment.astimezone(JST)
    return f"{format_wareki(local.date(), eras)}{local.hour}時{local.minute:02d}分"


# --- counter input -----------------------------------------------------------

_EXAMPLES = "例: 1975-06-15、1975/6/15、19750615、S50.6.15、昭50.6.15、昭和50年6月15日"
_SEIREKI_PATTERNS = (
    re.compile(r"(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})"),
    re.compile(r"(\d{4})年(\d{1,2})月(\d{1,2})日?"),
    re.compile(r"(\d{4})(\d{2})(\d{2})"),
)
_WAREKI_PATTERN = re.compile(r"(?P<era>\D+?)(?P<year>\d{1,2}|元)(?:[-/.]|年)(?P<month>\d{1,2})(?:[-/.]|月)(?P<day>\d{1,2})日?")
# Seven digits with a leading era number (1 明治 … 5 令和), the 元号コード
# that resident-register systems use for keyboard entry: 3500615 = 昭和50年6月15日.
_ERA_CODE_PATTERN = re.compile(r"(\d)(\d{2})(\d{2})(\d{2})")


def _gregorian(year: int, month: int, day: int, text: str, label: str | None = None) -> _dt.date:
    try:
        return _dt.date(year, month, day)
    except ValueError:
        raise ValueError(f"「{text}」は存在しない日付です（{label or f'{year}年{month}月{day}日'}）") from None


def _from_era(era_index: int, year: int, month: int, day: int, eras: Sequence[Era], text: str) -> _dt.date:
    era = eras[era_index]
    label = f"{era.name}{_year_label(year)}年{month}月{day}日"
    if year < 1:
        raise ValueError(f"「{text}」: {era.name}0年はありません")
    result = _gregorian(era.start.year + year - 1, month, day, text, label)
    if result < era.start:
        raise ValueError(f"「{text}」: {label}は存在しません（{era.name}は{format_seireki(era.start)}から）")
    if era_index + 1 < len(eras):
        following = eras[era_index + 1]
        if result >= following.start:
            last_day = following.start - _dt.timedelta(days=1)
            raise ValueError(f"「{text}」: {label}は存在しません（{era.name}は{format_seireki(last_day)}まで）")
    if result < GREGORIAN_ADOPTION:
        raise ValueError(f"「{text}」: 明治6年（1873年）の改暦より前の日付は扱えません")
    return result


def _era_index(token: str, eras: Sequence[Era]) -> int | None:
    """The era a typed token names: its name, its letter (any case) or its
    first character (昭47.8.21, as forms abbreviate 明大昭平令) when no
    other era's name starts with it."""
    initials = [era.name[0] for era in eras]
    for index, era in enumerate(eras):
        if token == era.name or (era.abbreviation and token.upper() == era.abbreviation):
            return index
        if token == era.name[0] and initials.count(token) == 1:
            return index
    return None


def parse_date_input(text: str, eras: Sequence[Era] = DEFAULT_ERAS) -> _dt.date:
    """Read a date typed at the counter, 西暦 or 和暦, half- or full-width.

    Accepts 1975-06-15, 1975/6/15, 1975.6.15, 1975年6月15日, 19750615,
    S50.6.15 (any case), H31/4/30, R1.5.1, 昭50.6.15, 昭和50年6月15日, 令和元年5月1日 and
    the seven-digit era code form 3500615. Raises ValueError with a message
    the clerk can act on when the text is not a date or names a day that does
    not exist (昭和64年1月8日, 平成32年1月1日, 2月30日 …)."""
    normalized = re.sub(r"\s+", "", unicodedata.normalize("NFKC", text))
    if not normalized:
        raise ValueError(f"日付が入力されていません。{_EXAMPLES}")
    for pattern in _SEIREKI_PATTERNS:
        match = pattern.fullmatch(normalized)
        if match:
            year, month, day = (int(group) for group in match.groups())
            return _gregorian(year, month, day, text)
    match = _WAREKI_PATTERN.fullmatch(normalized)
    if match:
        index = _era_index(match["era"], eras)
        if index is None:
            known = "、".join(f"{era.name}({era.abbreviation})" if era.abbreviation else era.name for era in eras)
            known += "。「昭50.6.15」のように元号の1文字目でも入力できます"
            raise ValueError(f"「{text}」: 元号「{match['era']}」が分かりません（使える元号: {known}）")
        year = 1 if match["year"] == "元" else int(match["year"])
        return _from_era(index, year, int(match["month"]), int(match["day"]), eras, text)
    match = _ERA_CODE_PATTERN.fullmatch(normalized)
    if match:
        code, year, month, day = (int(group) for group in match.groups())
        if not 1 <= code <= len(eras):
            raise ValueError(f"「{text}」: 元号番号{code}はありません（1={eras[0].name} … {len(eras)}={eras[-1].name}）")
        return _from_era(code - 1, year, month, day, eras, text)
    raise ValueError(f"「{text}」は日付として読めません。{_EXAMPLES}")

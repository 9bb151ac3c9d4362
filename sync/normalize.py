"""Search keys for the mirrored register.

The same functions build the keys stored in a snapshot and normalise what a
clerk types at the counter, so a query and a record always meet in the same
form. Every key is meant for *prefix* search with an index range scan
(`key >= q AND key < q || U+10FFFF`), so normalisation must never reorder or
drop the beginning of a string.

Choices (each one makes two spellings a clerk would call "the same" equal):

kana_key
    NFKC (half-width カナ and full-width latin fold), hiragana → katakana,
    small kana → large (ァ→ア, ッ→ツ, ャ→ヤ, ヮ→ワ, ヵ→カ, ヶ→ケ and the Ainu
    small kana ㇰ…ㇿ): old registrations write キヨウコ where newer ones write
    キョウコ. The historical ヰ/ヱ become イ/エ. Spaces (including U+3000) and
    the separators ・ and = that foreign names use between parts are removed.
    The long-vowel mark ー is kept: オーノ and オノ are different names.

name_key
    Ideographic variation selectors (U+E0100–U+E01EF, U+FE00–U+FE0F) are
    removed: the register keeps 葛󠄂 with its glyph variant, a clerk types 葛.
    NFKC folds width and canonical compatibility ideographs. Then the
    旧字/異体字 in NAME_VARIANTS map to the common form (髙→高, 﨑→崎 …).
    Latin letters are upper-cased; spaces and the punctuation that
    romanised names are written with ( , . ' - ・ = ) are removed. 齊 is the
    old form of 斉 and 齋 the old form of 斎; the two families stay apart
    because 斉藤 and 斎藤 are different surnames (the kana search finds both).

address_key
    NFKC (full-width digits and hyphens fold), spaces removed, every dash
    look-alike (‐ ‑ ‒ – — ― − and ー between digits) becomes "-", kanji
    numerals directly before 丁目/番地/番/号/地割, or after a number and
    の/-, become arabic digits, and 丁目, 番地, 番, 号, 地割 and の between
    numbers become "-". So 西蒲田七丁目49番1号, 西蒲田7丁目49-1 and
    西蒲田７－４９－１ all start with 西蒲田7-49-1. A marker typed at the end
    of a query is kept as "-" so "49番" does not also find 490番.
    Kanji numerals inside place names (六郷, 三田, 八幡) are left alone
    because no marker follows them.
"""

from __future__ import annotations

import functools
import re
import unicodedata

# Upper bound of a prefix range: U+10FFFF encodes as F4 8F BF BF in UTF-8,
# which sorts after every other encoded character (SQLite compares TEXT as
# UTF-8 bytes), so `key < prefix + PREFIX_END` holds for every key that
# starts with `prefix`, including characters outside the BMP.
PREFIX_END = "\U0010ffff"

_HIRAGANA_TO_KATAKANA = {code: code + 0x60 for code in range(0x3041, 0x3097)}
_SMALL_TO_LARGE_KANA = str.maketrans(
    "ァィゥェォッャュョヮヵヶㇰㇱㇲㇳㇴㇵㇶㇷㇸㇹㇺㇻㇼㇽㇾㇿヰヱ",
    "アイウエオツヤユヨワカケクシストヌハヒフヘホムラリルレロイエ",
)
_KANA_SEPARATORS = {ord(c): None for c in " \u3000\t・="}

# 旧字・異体字 → the form a clerk types. Pairs of one character each; the
# right side is what the keys store.
NAME_VARIANTS = {
    "髙": "高", "﨑": "崎", "嵜": "崎", "碕": "崎", "邊": "辺", "邉": "辺", "齋": "斎",
    "齊": "斉", "濵": "浜", "濱": "浜", "澤": "沢", "櫻": "桜", "廣": "広", "國": "国",
    "德": "徳", "眞": "真", "冨": "富", "槇": "槙", "嶋": "島", "嶌": "島", "龍": "竜",
    "瀨": "瀬", "藏": "蔵", "惠": "恵", "榮": "栄", "圓": "円", "實": "実", "壽": "寿",
    "豐": "豊", "禮": "礼", "靜": "静", "黑": "黒", "條": "条", "增": "増", "兒": "児",
    "萬": "万", "彌": "弥", "學": "学", "來": "来", "晉": "晋", "淺": "浅", "澁": "渋",
    "鐵": "鉄", "關": "関", "團": "団", "曾": "曽", "戶": "戸", "靑": "青", "淸": "清",
    "峯": "峰", "檜": "桧", "舘": "館", "𠮷": "吉", "渕": "淵", "驒": "騨", "巖": "巌",
    "辯": "弁", "辨": "弁", "瓣": "弁", "恆": "恒", "傳": "伝", "會": "会", "縣": "県",
}
_NAME_TABLE = str.maketrans(NAME_VARIANTS)
_NAME_REMOVE = {ord(c): None for c in " \u3000\t・=,.'-"}
_VARIATION_SELECTORS = re.compile("[\U000e0100-\U000e01ef\ufe00-\ufe0f]")


def _composed(*tables: dict) -> dict[int, str]:
    """One translate table doing what `tables` do one after another: a key
    is looked up once instead of once per table (every key of the counter's
    searches and of a million records at each full load)."""
    composed = {}
    for code in set().union(*tables):
        text = chr(code)
        for table in tables:
            text = text.translate(table)
        composed[code] = text
    return composed


_KANA_TABLE = _composed(_HIRAGANA_TO_KATAKANA, _SMALL_TO_LARGE_KANA, _KANA_SEPARATORS)
_NAME_KEY_TABLE = _composed(_NAME_TABLE, _NAME_REMOVE)

_DASHES = str.maketrans({c: "-" for c in "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe63"})
_KANJI_DIGITS = {"〇": 0, "零": 0, "一": 1, "二": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
_KANJI_UNITS = {"十": 10, "百": 100, "千": 1000}
_KANJI_NUMERAL = "[〇零一二三四五六七八九十百千]+"
_MARKER = "丁目|番地|番|号|地割"
_NUMERAL_BEFORE_MARKER = re.compile(f"({_KANJI_NUMERAL})(?=(?:{_MARKER}))")
_NUMERAL_AFTER_NUMBER = re.compile(f"(?<=[0-9]-)({_KANJI_NUMERAL})")
_LONG_VOWEL_BETWEEN_DIGITS = re.compile("(?<=[0-9])ー(?=[0-9])")
_MARKERS = re.compile(f"(?:{_MARKER})")
_NO_BETWEEN_NUMBERS = re.compile("(?<=[0-9-])の(?=[0-9〇零一二三四五六七八九十百千])")
_REPEATED_DASH = re.compile("-{2,}")


def kana_key(text: str) -> str:
    """The search key of a フリガナ (or of kana typed at the counter)."""
    return unicodedata.normalize("NFKC", text).translate(_KANA_TABLE)


def name_key(text: str) -> str:
    """The search key of a name in kanji or in the alphabet."""
    plain = _VARIATION_SELECTORS.sub("", text)
    return unicodedata.normalize("NFKC", plain).translate(_NAME_KEY_TABLE).upper()


def kanji_number(numeral: str) -> int:
    """四十九 → 49, 百二 → 102, 二〇 → 20 (digit-by-digit form)."""
    if not any(c in _KANJI_UNITS for c in numeral):
        return int("".join(str(_KANJI_DIGITS[c]) for c in numeral))
    total, digit = 0, None
    for char in numeral:
        if char in _KANJI_UNITS:
            total += (1 if digit is None else digit) * _KANJI_UNITS[char]
            digit = None
        else:
            digit = _KANJI_DIGITS[char]
    return total + (digit or 0)


def _arabic(match: re.Match) -> str:
    return str(kanji_number(match.group(1)))


@functools.lru_cache(maxsize=1 << 14)
def address_key(text: str) -> str:
    """The search key of an address (町字 + 番地, or what a clerk types).
    Cached: members of a household, and neighbours, share an address."""
    folded = unicodedata.normalize("NFKC", text).translate(_DASHES)
    folded = "".join(folded.split())
    folded = _LONG_VOWEL_BETWEEN_DIGITS.sub("-", folded)
    folded = _NUMERAL_BEFORE_MARKER.sub(_arabic, folded)
    folded = _MARKERS.sub("-", folded)
    folded = _REPEATED_DASH.sub("-", _NO_BETWEEN_NUMBERS.sub("-", folded))
    return _NUMERAL_AFTER_NUMBER.sub(_arabic, folded)

"""What one certificate is: plain data in, validated once, rendered later.

`printing` never reads configuration itself. The caller builds
`PrintSettings` from its [printing] section and `Municipality` from its
[municipality] section (both have `from_config_section` helpers taking plain
dicts) and an `IssueStamp` per certificate from its issuance record.

Residents and seals are the contract's RESIDENT and SEAL dicts, unchanged.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from printing.wareki import DEFAULT_ERAS, Era, eras_from_config

KINDS = ("juminhyo", "kisai", "johyo", "inkan")
KIND_TITLES = {
    "juminhyo": "住民票の写し",
    "kisai": "住民票記載事項証明書",
    "johyo": "住民票の除票の写し",
    "inkan": "印鑑登録証明書",
}
# Kinds that may print a whole household (and then say so in the 認証文).
HOUSEHOLD_KINDS = ("juminhyo", "kisai")
LAYOUTS = ("renketsu", "kojin")  # 世帯連記式, 個人票
PEOPLE_PER_RENKETSU_SHEET = 4

# Items printed only when the resident asks for them (住民基本台帳法第12条第5項
# lets the requester leave them out, so the default is "left out"). 通称 is
# not among them: a recorded 通称 is printed like the name, always.
OPTIONAL_ITEMS = (
    "honseki",  # 本籍・筆頭者
    "head",  # 世帯主・続柄
    "resident_code",  # 住民票コード
    "individual_number",  # 個人番号
    "nationality",  # 国籍・地域
    "category",  # 法第30条の45に規定する区分
    "status",  # 在留資格
    "period",  # 在留期間
    "expiry",  # 在留期間の満了の日
    "card_number",  # 在留カード等の番号
)

# 認証文 per certificate type; "<kind>_household" is the text for a whole
# household, which says so.
DEFAULT_CERTIFICATION_TEXTS = {
    "juminhyo": "この写しは、住民票の原本と相違ないことを証明する。",
    "juminhyo_household": "この写しは、世帯全員の住民票の原本と相違ないことを証明する。",
    "kisai": "上記の事項は、住民票の原本と相違ないことを証明する。",
    "kisai_household": "上記の事項は、世帯全員の住民票の原本と相違ないことを証明する。",
    "johyo": "この写しは、住民票の除票の原本と相違ないことを証明する。",
    "inkan": "この写しは、登録された印影と相違ないことを証明します。",
}
CERTIFICATION_TEXT_KEYS = tuple(DEFAULT_CERTIFICATION_TEXTS)

# What an 印鑑登録証明書 prints besides 氏名, 生年月日, 住所 and the 印影, as the
# ward's 印鑑条例 says. The default is the common one: the name with its
# 振り仮名, and the 旧氏 and 通称 where recorded (they are part of the name
# the seal may carry); 男女の別, the 登録番号 and the 登録年月日 only where the
# 条例 asks for them.
INKAN_ITEMS = ("furigana", "former_surname", "alias", "sex", "seal_number", "registered_on")
DEFAULT_INKAN_ITEMS = ("furigana", "former_surname", "alias")

SERIAL_LIMIT = 1_000_000  # the 発行番号 carries six digits

# The synthetic 電子公印 for the demo, the scripted outage day, the benches
# and the tests: a square seal reading 見本, never a ward's seal.
SPECIMEN_SEAL_IMAGE = Path(__file__).with_name("specimen-seal.png")

NO_OFFICIAL_SEAL = (
    "電子公印の画像が設定されていないため、証明書を交付できません（公印省略の証明書は交付しません）。"
    "情報政策課に電子公印の画像（設定 printing.official_seal_image）の設定を依頼してください。"
)


class CertificateError(ValueError):
    """The certificate cannot be issued as requested. The message is written
    for the counter clerk."""


@dataclass(frozen=True)
class Municipality:
    code: str  # 全国地方公共団体コード, six digits
    prefecture: str  # 東京都
    name: str  # 大田区
    mayor: str  # 大田区長　鈴木　晶雅

    @classmethod
    def from_config_section(cls, section: Mapping[str, Any]) -> Municipality:
        """From the [municipality] config section (code, prefecture, name, mayor)."""
        return cls(str(section["code"]), str(section["prefecture"]), str(section["name"]), str(section["mayor"]))

    @property
    def issuer(self) -> str:
        """The issuer line: the prefecture is always part of it (東京都大田区長　…)."""
        mayor = self.mayor.strip()
        return mayor if mayor.startswith(self.prefecture) else self.prefecture + mayor


@dataclass(frozen=True)
class PrintSettings:
    """Per-appliance printing settings, the same for every certificate.

    official_seal_image: the 電子公印 PNG, drawn black at most
    `official_seal_mm` square. A real certificate is never printed without
    it (no 「公印省略」); a drill or a specimen without one shows 訓練 / 見本
    where the seal goes.
    seal_impression_mm: the printed size of the registered 印影's longer side
    (the contract carries the image without its physical size).
    font_cache_dir: where subsets of IPAmj明朝 for rare glyphs are kept
    (see printing.glyphs); None uses a per-process temporary directory.
    anti_copy_pattern: lay the 地紋 with a hidden 「複写」 under every page
    (printing.pattern), for plain paper; off when the ward prints on
    改ざん防止用紙, which carries its own.
    verification_url: the public page where anyone checks a certificate's
    QR code, printed beside it ("" prints no address).
    blank_text: what an item the record leaves blank shows (住所を定めた年月日
    of someone who never moved within the municipality, 転入前住所 the record
    does not hold, 振り仮名 not yet confirmed): the standard prints the item
    blank; a ward may print e.g. 【空欄】.
    inkan_items: what the 印鑑登録証明書 prints besides 氏名, 生年月日, 住所
    and the 印影 (INKAN_ITEMS)."""

    eras: tuple[Era, ...] = DEFAULT_ERAS
    certification_texts: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_CERTIFICATION_TEXTS))
    official_seal_image: Path | None = None
    official_seal_mm: float = 25.0
    seal_impression_mm: float = 15.0
    font_cache_dir: Path | None = None
    anti_copy_pattern: bool = False
    verification_url: str = ""
    blank_text: str = ""
    inkan_items: tuple[str, ...] = DEFAULT_INKAN_ITEMS

    def __post_init__(self) -> None:
        missing = [key for key in CERTIFICATION_TEXT_KEYS if not self.certification_texts.get(key)]
        if missing:
            raise ValueError(f"certification texts missing for: {', '.join(missing)}")
        unknown = set(self.certification_texts) - set(CERTIFICATION_TEXT_KEYS)
        if unknown:
            raise ValueError(f"certification texts for unknown kinds: {', '.join(sorted(unknown))}; known: {', '.join(CERTIFICATION_TEXT_KEYS)}")
        unknown = set(self.inkan_items) - set(INKAN_ITEMS)
        if unknown:
            raise ValueError(f"unknown 印鑑登録証明書 items: {', '.join(sorted(unknown))}; known: {', '.join(INKAN_ITEMS)}")
        if not 0 < self.official_seal_mm <= 25.0:
            raise ValueError("official_seal_mm must be more than 0 and at most 25 (mm)")
        if not 0 < self.seal_impression_mm <= 30.0:
            raise ValueError("seal_impression_mm must be more than 0 and at most 30 (mm)")

    @classmethod
    def from_config_section(cls, section: Mapping[str, Any], *, font_cache_dir: str | Path | None = None) -> PrintSettings:
        """From the [printing] config section. Keys read: eras,
        official_seal_image ("" = none configured), official_seal_mm,
        seal_impression_mm, certification_texts (a table kind -> text; kinds
        not given keep their default), anti_copy_pattern, blank_text,
        inkan_items."""
        texts = dict(DEFAULT_CERTIFICATION_TEXTS)
        texts.update(section.get("certification_texts") or {})
        seal_image = section.get("official_seal_image") or None
        return cls(
            eras=eras_from_config(section["eras"]) if section.get("eras") else DEFAULT_ERAS,
            certification_texts=texts,
            official_seal_image=Path(seal_image) if seal_image else None,
            official_seal_mm=float(section.get("official_seal_mm", 25.0)),
            seal_impression_mm=float(section.get("seal_impression_mm", 15.0)),
            font_cache_dir=Path(font_cache_dir) if font_cache_dir else None,
            anti_copy_pattern=bool(section.get("anti_copy_pattern", False)),
            blank_text=str(section.get("blank_text", "")),
            inkan_items=tuple(section.get("inkan_items", DEFAULT_INKAN_ITEMS)),
        )


@dataclass(frozen=True)
class IssueStamp:
    """Who issued the certificate, when, and from which data."""

    serial: int
    issued_at: _dt.datetime
    data_as_of: _dt.datetime
    municipality: Municipality
    terminal: str  # 本庁1
    printer_id: str  # プリンタ001
    drill: bool = False
    specimen: bool = False

    def __post_init__(self) -> None:
        if self.issued_at.tzinfo is None or self.data_as_of.tzinfo is None:
            raise ValueError("issued_at and data_as_of must be timezone-aware")
        if not 0 <= self.serial < SERIAL_LIMIT:
            raise ValueError(f"serial {self.serial} does not fit the six digits of the 発行番号")


@dataclass(frozen=True)
class Certificate:
    kind: str
    residents: Sequence[Mapping[str, Any]]
    stamp: IssueStamp
    settings: PrintSettings = field(default_factory=PrintSettings)
    layout: str = "renketsu"
    seal: Mapping[str, Any] | None = None
    requested: frozenset[str] = frozenset()
    omit_katagaki: bool = False
    whole_household: bool = False  # every current member of the household is printed: the 認証文 says so
    official_use: bool = False  # 公用請求 (another public office): 「公用」 is printed by the title

    def __post_init__(self) -> None:
        object.__setattr__(self, "residents", tuple(self.residents))
        object.__setattr__(self, "requested", frozenset(self.requested))
        if self.kind not in KINDS:
            raise ValueError(f"unknown certificate kind {self.kind!r}; one of {', '.join(KINDS)}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"unknown layout {self.layout!r}; one of {', '.join(LAYOUTS)}")
        unknown = self.requested - set(OPTIONAL_ITEMS)
        if unknown:
            raise ValueError(f"unknown optional items: {', '.join(sorted(unknown))}")
        if not self.residents:
            raise CertificateError("証明書に載せる住民が選ばれていません")
        if self.omit_katagaki and self.kind != "kisai":
            raise CertificateError("方書の省略は住民票記載事項証明書でのみできます")
        if self.whole_household and self.kind not in HOUSEHOLD_KINDS:
            raise ValueError(f"a {self.kind} certificate does not print a whole household")
        if not (self.stamp.drill or self.stamp.specimen) and self.settings.official_seal_image is None:
            raise CertificateError(NO_OFFICIAL_SEAL)
        if self.kind == "johyo":
            if self.layout != "kojin":
                raise CertificateError("除票の写しは個人票でのみ発行できます")
            if any(resident.get("status") != "removed" for resident in self.residents):
                raise CertificateError("除票の写しには消除された住民だけを載せられます")
        elif any(resident.get("status") != "active" for resident in self.residents):
            raise CertificateError(f"消除された住民は{KIND_TITLES[self.kind]}に載せられません（除票の写しで発行してください）")
        if self.kind == "inkan":
            self._check_seal()
        elif self.seal is not None:
            raise ValueError("a seal is only printed on an 印鑑登録証明書")
        if self.kind != "inkan" and self.layout == "renketsu":
            households = {resident.get("household_id") for resident in self.residents}
            if len(households) != 1:
                raise CertificateError("世帯連記式には同じ世帯の住民だけを載せられます")

    def _check_seal(self) -> None:
        if len(self.residents) != 1:
            raise CertificateError("印鑑登録証明書は一人ずつ発行します")
        if self.seal is None:
            raise CertificateError("印鑑登録がありません")
        if self.seal.get("resident_code") != self.residents[0].get("resident_code"):
            raise CertificateError("印鑑登録の住民票コードが本人と一致しません")
        if self.seal.get("status") != "active":
            raise CertificateError("この印鑑登録は廃止されています")

    @property
    def title(self) -> str:
        return KIND_TITLES[self.kind]

    @property
    def certification_text(self) -> str:
        key = f"{self.kind}_household" if self.whole_household else self.kind
        return self.settings.certification_texts[key]

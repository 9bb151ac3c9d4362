"""What a certificate prints, as plain strings, before any layout.

`printed_content(cert)` applies every content rule (optional items only when
requested, 和暦 or 西暦 per resident, 方書, no 転出届 data for a planned
move-out, 除票 reason, issuer line …). The renderer only lays these strings
out, so the digest of this structure — signed into the QR code — is the
digest of what the paper says, independent of fonts and page geometry.
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import io
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from PIL import Image, UnidentifiedImageError

from printing.model import PEOPLE_PER_RENKETSU_SHEET, Certificate, CertificateError
from printing.wareki import JST, format_seireki, format_wareki, format_wareki_datetime

# The register records a move within Japan as 国内転出; the certificate says 転出.
REMOVAL_WORDS = {"国内転出": "転出"}

# What a page prints besides its content, which its QR code does not sign:
# marks its flags already say, a caption, and the address of the public
# check (a ward may move it), printed last.
DRILL_NOTICE = "訓練用（TRAINING）：訓練で作成したもので、証明書としての効力はありません。"
DRILL_MARK = ("訓練", "TRAINING")
SPECIMEN_MARK = "見本"
SEAL_CAPTION = "印影"
VERIFICATION_LEAD = "この証明書の内容はQRコードで確認できます"
UNSIGNED_TEXTS = (DRILL_NOTICE, *DRILL_MARK, SPECIMEN_MARK, SEAL_CAPTION)


@dataclass(frozen=True)
class Item:
    key: str  # stable name of the item, used for layout
    label: str
    value: str  # lines separated by "\n"
    annotation: str = ""  # small text printed above the value (フリガナ)
    wide: bool = False  # takes a whole row


@dataclass(frozen=True)
class Entry:
    """One person on a sheet."""

    items: tuple[Item, ...]


@dataclass(frozen=True)
class Sheet:
    header: tuple[Item, ...]  # 住所 (and 世帯主) shared by the entries
    entries: tuple[Entry, ...]


@dataclass(frozen=True)
class SealImpression:
    """The registered 印影, printed at `width_mm` x `height_mm`."""

    png: bytes
    width_mm: float
    height_mm: float


@dataclass(frozen=True)
class PrintedContent:
    kind: str
    title: str
    sheets: tuple[Sheet, ...]
    seal_impression: SealImpression | None
    certification: str
    issue_date: str
    issuer: str
    notice: str  # the data-as-of statement on every page
    serial_label: str  # 発行番号 without the page number
    drill: bool
    specimen: bool

    def page_label(self, index: int) -> str:
        return f"{self.serial_label} {index + 1}/{len(self.sheets)}"

    def digest(self, official_seal_png: bytes | None) -> str:
        """SHA-256 over everything printed: the strings, and the images by
        their own SHA-256 (the official seal, or None for 公印省略)."""
        data = asdict(self)
        if self.seal_impression is not None:
            data["seal_impression"]["png"] = hashlib.sha256(self.seal_impression.png).hexdigest()
        data["official_seal"] = hashlib.sha256(official_seal_png).hexdigest() if official_seal_png else None
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class _Formatter:
    def __init__(self, cert: Certificate):
        self.cert = cert
        self.eras = cert.settings.eras

    def wareki(self, value: str) -> str:
        return format_wareki(_dt.date.fromisoformat(value), self.eras)

    def birth(self, resident: Mapping[str, Any]) -> str:
        # Foreign residents' birth dates are printed in the Gregorian calendar only.
        day = _dt.date.fromisoformat(resident["birth_date"])
        return format_seireki(day) if resident.get("foreign") else format_wareki(day, self.eras)

    def address(self, resident: Mapping[str, Any]) -> str:
        address = resident["address"]
        line = "".join(address[part] or "" for part in ("prefecture", "city", "town", "banchi"))
        katagaki = address.get("katagaki")
        if katagaki and not self.cert.omit_katagaki:
            return f"{line}\n{katagaki}"
        return line

    def header(self, resident: Mapping[str, Any]) -> tuple[Item, ...]:
        items = [Item("address", "住所", self.address(resident), wide=True)]
        if "head" in self.cert.requested:
            items.append(Item("head", "世帯主", resident["head_name"], wide=True))
        return tuple(items)

    def name(self, resident: Mapping[str, Any]) -> Item:
        lines = [resident["name"]]
        alphabet = resident.get("name_alphabet")
        if alphabet and alphabet != resident["name"]:
            lines.append(alphabet)
        return Item("name", "氏名", "\n".join(lines), annotation=resident.get("name_kana") or "", wide=True)

    def person(self, resident: Mapping[str, Any]) -> Entry:
        requested = self.cert.requested
        foreign = resident.get("foreign")
        items = [self.name(resident), Item("birth", "生年月日", self.birth(resident)), Item("sex", "性別", resident["sex"])]
        if "head" in requested:
            items.append(Item("relationship", "続柄", resident["relationship"]))
        if foreign:
            items.append(Item("resident_since", "外国人住民となった年月日", self.wareki(foreign["became_resident_on"])))
        else:
            items.append(Item("resident_since", "住民となった年月日", self.wareki(resident["resident_since"])))
        if resident.get("former_surname"):
            items.append(Item("former_surname", "旧氏", resident["former_surname"]))
        # A null address_since means the person has not moved within the
        # ward: the address was set on the day they became a resident.
        settled = resident.get("address_since") or resident["resident_since"]
        items.append(
            Item("address_since", "住所を定めた年月日", f"{self.wareki(settled)}（{self.wareki(resident['notified_on'])}届出）", wide=True)
        )
        if resident.get("previous_address"):
            items.append(Item("previous_address", "前住所", resident["previous_address"], wide=True))
        if "honseki" in requested and resident.get("honseki"):
            items.append(Item("honseki", "本籍", resident["honseki"], wide=True))
            items.append(Item("hitto", "筆頭者", resident.get("hitto") or ""))
        if "resident_code" in requested:
            items.append(Item("resident_code", "住民票コード", resident["resident_code"]))
        if "individual_number" in requested and resident.get("individual_number"):
            items.append(Item("individual_number", "個人番号", resident["individual_number"]))
        if foreign:
            items.extend(self.foreign_items(resident, foreign))
        if self.cert.kind == "johyo":
            items.extend(self.removal_items(resident["removal"]))
        return Entry(tuple(items))

    def foreign_items(self, resident: Mapping[str, Any], foreign: Mapping[str, Any]) -> list[Item]:
        requested = self.cert.requested
        items = []
        if "nationality" in requested:
            items.append(Item("nationality", "国籍・地域", foreign["nationality"]))
        if "category" in requested:
            items.append(Item("category", "法第30条の45に規定する区分", foreign["category"]))
        if "status" in requested:
            items.append(Item("status", "在留資格", foreign["status"]))
        if "period" in requested:
            items.append(Item("period", "在留期間", foreign["period"]))
        if "expiry" in requested and foreign.get("period_expiry"):
            # Printed in the Gregorian calendar only, like the residence card.
            items.append(Item("expiry", "在留期間の満了の日", format_seireki(_dt.date.fromisoformat(foreign["period_expiry"]))))
        if "card_number" in requested:
            items.append(Item("card_number", "在留カード等の番号", foreign["card_number"]))
        if "alias" in requested and resident.get("alias"):
            items.append(Item("alias", "通称", resident["alias"]))
        return items

    def removal_items(self, removal: Mapping[str, Any]) -> list[Item]:
        reason = REMOVAL_WORDS.get(removal["reason"], removal["reason"])
        value = f"{self.wareki(removal['occurred_on'])}　{reason}（{self.wareki(removal['notified_on'])}届出）"
        items = [Item("removal", "消除", value, wide=True)]
        if removal.get("moved_to"):
            label = "転出先" if "転出" in removal["reason"] else "異動先"
            items.append(Item("moved_to", label, removal["moved_to"], wide=True))
        return items

    def seal_items(self, resident: Mapping[str, Any], seal: Mapping[str, Any]) -> Entry:
        items = [self.name(resident)]
        if resident.get("former_surname"):
            items.append(Item("former_surname", "旧氏", resident["former_surname"]))
        if "alias" in self.cert.requested and resident.get("alias"):
            items.append(Item("alias", "通称", resident["alias"]))
        items.append(Item("birth", "生年月日", self.birth(resident)))
        items.append(Item("sex", "性別", resident["sex"]))
        items.append(Item("address", "住所", self.address(resident), wide=True))
        items.append(Item("seal_number", "登録番号", seal["seal_number"]))
        items.append(Item("registered_on", "登録年月日", self.wareki(seal["registered_on"])))
        return Entry(tuple(items))

    def seal_impression(self, seal: Mapping[str, Any]) -> SealImpression:
        try:
            png = base64.b64decode(seal["image_png"], validate=True)
            with Image.open(io.BytesIO(png)) as image:
                if image.format != "PNG":
                    raise UnidentifiedImageError("not a PNG")
                width, height = image.size
        except (ValueError, UnidentifiedImageError, OSError, KeyError, TypeError):  # ValueError: bad base64, or not ASCII
            raise CertificateError("登録されている印影の画像が読めません（印影データが壊れています）") from None
        longer = self.cert.settings.seal_impression_mm
        scale = longer / max(width, height)
        return SealImpression(png, round(width * scale, 2), round(height * scale, 2))


def printed_content(cert: Certificate, people_per_sheet: int = PEOPLE_PER_RENKETSU_SHEET) -> PrintedContent:
    """What `cert` prints; a 世帯連記式 puts `people_per_sheet` people on a sheet."""
    fmt = _Formatter(cert)
    stamp = cert.stamp
    if cert.kind == "inkan":
        sheets = (Sheet((), (fmt.seal_items(cert.residents[0], cert.seal),)),)
        impression = fmt.seal_impression(cert.seal)
    else:
        if cert.layout == "renketsu":
            groups = [
                cert.residents[start : start + people_per_sheet]
                for start in range(0, len(cert.residents), people_per_sheet)
            ]
        else:
            groups = [(resident,) for resident in cert.residents]
        sheets = tuple(Sheet(fmt.header(group[0]), tuple(fmt.person(resident) for resident in group)) for group in groups)
        impression = None
    issued_local = stamp.issued_at.astimezone(JST)
    serial = "000000/見本" if stamp.specimen else f"{stamp.serial:06d}"
    municipality = stamp.municipality
    return PrintedContent(
        kind=cert.kind,
        title=cert.title,
        sheets=sheets,
        seal_impression=impression,
        certification=cert.certification_text,
        issue_date=format_wareki(issued_local.date(), cert.settings.eras),
        issuer=municipality.issuer,
        notice=(
            "本証明書は、障害対応システムにより"
            f"{format_wareki_datetime(stamp.data_as_of, cert.settings.eras)}時点の住民記録に基づき交付したものです。"
        ),
        serial_label=f"{issued_local:%Y%m%d} {municipality.name} {stamp.terminal} {stamp.printer_id} {serial}",
        drill=stamp.drill,
        specimen=stamp.specimen,
    )

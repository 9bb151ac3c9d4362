"""What a certificate prints, as plain strings, before any layout.

`printed_content(cert)` applies every content rule of the 住民記録システム
標準仕様書's certificates (README "What a certificate prints"): optional items
only when requested, 和暦 or 西暦 per resident, the legal 振り仮名 in
parentheses after the name (blank while not confirmed, never the search
kana), a foreign resident's alphabet name first and 通称 as its own item,
住所を定めた年月日 blank for someone who never moved within the municipality,
届出日 with what was notified, 転入前住所, 備考, 方書, a 除票's date and reason
of removal and its 転出先 marked 予定 or 確定, nothing of a planned move-out,
the issuer line. The renderer only lays these strings out, so what the QR
code signs is what the paper says, independent of fonts and page geometry.
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
DOMESTIC_MOVE = "国内転出"
REMOVAL_WORDS = {DOMESTIC_MOVE: "転出"}

# What a page prints besides its content, which its QR code does not sign:
# marks its flags already say, a caption, the end of the entries, and the
# address of the public check (a ward may move it), printed last.
DRILL_NOTICE = "訓練用（TRAINING）：訓練で作成したもので、証明書としての効力はありません。"
DRILL_MARK = ("訓練", "TRAINING")
SPECIMEN_MARK = "見本"
SEAL_CAPTION = "印影"
END_MARK = "以下余白"  # after the last entry: nothing can be added below it
VERIFICATION_LEAD = "この証明書の内容はQRコードで確認できます"
UNSIGNED_TEXTS = (DRILL_NOTICE, *DRILL_MARK, SPECIMEN_MARK, SEAL_CAPTION, END_MARK)
OFFICIAL_USE_MARK = "公用"  # by the title of a certificate for another public office; signed with the title


@dataclass(frozen=True)
class Item:
    key: str  # stable name of the item, used for layout
    label: str
    value: str  # lines separated by "\n"; "" for an item the record leaves blank
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
    """The registered 印影, printed at `width_mm` x `height_mm`; `png` is
    the image exactly as embedded (printed_seal), `pixel_digest` its
    seal_pixels_digest, which the QR code signs."""

    png: bytes
    width_mm: float
    height_mm: float
    pixel_digest: str


def seal_pixels_digest(image: Image.Image) -> str:
    """SHA-256 of an image's size and its pixels as 8-bit RGB. The pixels,
    not the file: a PDF stores them under its own compression (WeasyPrint
    re-encodes every PNG, another PDF writer would again), while its
    samples come back unchanged from the PDF (pdfimages) and from the PNG.
    As RGB because pdfimages writes a grayscale image as RGB, each gray
    value thrice, exactly what converting it gives."""
    rgb = image.convert("RGB")
    return hashlib.sha256(f"RGB {rgb.width}x{rgb.height}\n".encode("ascii") + rgb.tobytes()).hexdigest()


def printed_seal(image: Image.Image) -> Image.Image:
    """The 印影 as it is embedded: 8-bit grayscale or RGB, opaque. WeasyPrint
    would turn a palette or 1-bit image into RGB and split transparency into
    a soft mask (which also makes CUPS rasterise the page); giving it the
    samples it stores unchanged is what lets a checker recompute the signed
    digest from the PDF."""
    if image.mode in ("L", "RGB") and "transparency" not in image.info:
        return image.copy()
    gray = image.mode in ("1", "L", "LA", "I", "I;16") or (image.mode == "P" and image.palette.mode == "L")
    white = Image.new("RGBA", image.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, image.convert("RGBA")).convert("L" if gray else "RGB")


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
    official_use: bool

    @property
    def signed_title(self) -> str:
        """The title as the page prints and its QR code signs it (with 「公用」)."""
        return f"{self.title}　{OFFICIAL_USE_MARK}" if self.official_use else self.title

    def page_label(self, index: int) -> str:
        return f"{self.serial_label} {index + 1}/{len(self.sheets)}"

    def digest(self, official_seal_png: bytes | None) -> str:
        """SHA-256 over everything printed: the strings, and the images by
        their own SHA-256 (the official seal, or None where a drill or a
        specimen has none)."""
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
        self.blank = cert.settings.blank_text

    def wareki(self, value: str) -> str:
        return format_wareki(_dt.date.fromisoformat(value), self.eras)

    def wareki_or_blank(self, value: str | None) -> str:
        return self.wareki(value) if value else self.blank

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

    def with_furigana(self, text: str, furigana: str | None) -> str:
        """「住民　太郎（ジュウミン　タロウ）」: the legal 振り仮名 in parentheses
        after the name. While it is not confirmed (null) the item is blank:
        the search kana (name_kana) is never printed in its place."""
        shown = furigana or self.blank
        return f"{text}（{shown}）" if shown else text

    @staticmethod
    def display_name(resident: Mapping[str, Any]) -> str:
        """A foreign resident's name as the 在留カード gives it: the alphabet
        name first, then the kanji name where there is one."""
        name, alphabet = resident["name"], resident.get("name_alphabet")
        return f"{alphabet}　{name}" if alphabet and alphabet != name else name

    def name_items(self, resident: Mapping[str, Any], *, furigana: bool = True) -> list[Item]:
        """氏名 (with its 振り仮名), then 旧氏 (with its own) and 通称 where
        recorded: each its own item."""
        name = self.display_name(resident)
        items = [Item("name", "氏名", self.with_furigana(name, resident.get("furigana")) if furigana else name, wide=True)]
        former = resident.get("former_surname")
        if former:
            value = self.with_furigana(former, resident.get("former_surname_furigana")) if furigana else former
            items.append(Item("former_surname", "旧氏", value))
        if resident.get("alias"):
            items.append(Item("alias", "通称", resident["alias"]))
        return items

    def notification(self, resident: Mapping[str, Any]) -> str:
        """届出日 and what was notified then (転入, 出生, 転居, 職権記載 …)."""
        reason = resident.get("notified_reason")  # absent from a contract 1 record
        date = self.wareki(resident["notified_on"])
        return f"{date}　{reason}" if reason else date

    def person(self, resident: Mapping[str, Any]) -> Entry:
        requested = self.cert.requested
        foreign = resident.get("foreign")
        items = [*self.name_items(resident), Item("birth", "生年月日", self.birth(resident)), Item("sex", "性別", resident["sex"])]
        if "head" in requested:
            items.append(Item("relationship", "続柄", resident["relationship"]))
        if foreign:
            items.append(Item("resident_since", "外国人住民となった年月日", self.wareki(foreign["became_resident_on"])))
        else:
            items.append(Item("resident_since", "住民となった年月日", self.wareki(resident["resident_since"])))
        # address_since is null for someone who has not moved within the
        # municipality: the item is printed blank, the date is the one above.
        items.append(Item("address_since", "住所を定めた年月日", self.wareki_or_blank(resident.get("address_since"))))
        items.append(Item("notified_on", "届出日", self.notification(resident)))
        items.append(Item("previous_address", "転入前住所", resident.get("previous_address") or self.blank, wide=True))
        if "honseki" in requested and resident.get("honseki"):
            items.append(Item("honseki", "本籍", resident["honseki"], wide=True))
            items.append(Item("hitto", "筆頭者", resident.get("hitto") or ""))
        if "resident_code" in requested:
            items.append(Item("resident_code", "住民票コード", resident["resident_code"]))
        if "individual_number" in requested and resident.get("individual_number"):
            items.append(Item("individual_number", "個人番号", resident["individual_number"]))
        if foreign:
            items.extend(self.foreign_items(foreign))
        if resident.get("remarks"):
            items.append(Item("remarks", "備考", resident["remarks"], wide=True))
        if self.cert.kind == "johyo":
            items.extend(self.removal_items(resident["removal"]))
        # A planned move-out (planned_move_out) prints nothing: the standard
        # prints the move only once the record is a 除票.
        return Entry(tuple(items))

    def foreign_items(self, foreign: Mapping[str, Any]) -> list[Item]:
        requested = self.cert.requested
        items = []
        if "nationality" in requested:
            items.append(Item("nationality", "国籍・地域", foreign["nationality"]))
        if "category" in requested:
            items.append(Item("category", "法第30条の45に規定する区分", foreign["category"]))
        if "status" in requested and foreign.get("status"):
            items.append(Item("status", "在留資格", foreign["status"]))
        if "period" in requested and foreign.get("period"):
            items.append(Item("period", "在留期間", foreign["period"]))
        if "expiry" in requested and foreign.get("period_expiry"):
            # Printed in the Gregorian calendar only, like the residence card.
            items.append(Item("expiry", "在留期間の満了の日", format_seireki(_dt.date.fromisoformat(foreign["period_expiry"]))))
        if "card_number" in requested and foreign.get("card_number"):
            items.append(Item("card_number", "在留カード等の番号", foreign["card_number"]))
        return items

    def removal_items(self, removal: Mapping[str, Any]) -> list[Item]:
        """The date and reason of removal, when it was notified, and where
        the person went: a move within Japan's 転出先 is 予定 until the new
        municipality's 転入通知 confirms it."""
        reason = removal["reason"]
        notified_label = "消除を記載した日" if reason.startswith("職権") else "消除の届出日"
        # Each on a row of its own, in this order, after the person's items.
        items = [
            Item("removed_on", "消除年月日", self.wareki(removal["occurred_on"]), wide=True),
            Item("removal_reason", "消除事由", REMOVAL_WORDS.get(reason, reason), wide=True),
            Item("removal_notified_on", notified_label, self.wareki(removal["notified_on"]), wide=True),
        ]
        moved_to = removal.get("moved_to")
        if moved_to and reason == DOMESTIC_MOVE:
            confirmed = bool(removal.get("moved_to_confirmed"))
            items.append(Item("moved_to", "転出先", f"{moved_to}（{'確定' if confirmed else '予定'}）", wide=True))
            if confirmed and removal.get("confirmed_on"):
                items.append(Item("confirmed_on", "転出先確定日", self.wareki(removal["confirmed_on"]), wide=True))
        elif moved_to:
            items.append(Item("moved_to", "転出先" if "転出" in reason else "異動先", moved_to, wide=True))
        return items

    def seal_items(self, resident: Mapping[str, Any], seal: Mapping[str, Any]) -> Entry:
        """The 印鑑登録証明書's items, as the ward's 印鑑条例 lists them
        (PrintSettings.inkan_items)."""
        options = self.cert.settings.inkan_items
        items = [
            item for item in self.name_items(resident, furigana="furigana" in options)
            if item.key == "name" or item.key in options
        ]
        items.append(Item("birth", "生年月日", self.birth(resident)))
        if "sex" in options:
            items.append(Item("sex", "性別", resident["sex"]))
        items.append(Item("address", "住所", self.address(resident), wide=True))
        if "seal_number" in options:
            items.append(Item("seal_number", "登録番号", seal["seal_number"]))
        if "registered_on" in options:
            items.append(Item("registered_on", "登録年月日", self.wareki(seal["registered_on"])))
        return Entry(tuple(items))

    def seal_impression(self, seal: Mapping[str, Any]) -> SealImpression:
        try:
            registered = base64.b64decode(seal["image_png"], validate=True)
            with Image.open(io.BytesIO(registered)) as image:
                if image.format != "PNG":
                    raise UnidentifiedImageError("not a PNG")
                printed = printed_seal(image)
        except (ValueError, UnidentifiedImageError, OSError, KeyError, TypeError):  # ValueError: bad base64, or not ASCII
            raise CertificateError("登録されている印影の画像が読めません（印影データが壊れています）") from None
        out = io.BytesIO()
        printed.save(out, format="PNG")
        longer = self.cert.settings.seal_impression_mm
        scale = longer / max(printed.size)
        return SealImpression(
            out.getvalue(), round(printed.width * scale, 2), round(printed.height * scale, 2), seal_pixels_digest(printed)
        )


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
        official_use=cert.official_use,
    )

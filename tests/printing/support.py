"""Helpers for the printing tests: the fixed issue stamp, example
households, and reading real PDFs with poppler (pdftotext, pdftoppm,
pdfimages)."""

from __future__ import annotations

import copy
import datetime as dt
import subprocess
from pathlib import Path

from PIL import Image

from printing.model import IssueStamp, Municipality

JST = dt.timezone(dt.timedelta(hours=9))
ISSUED_AT = dt.datetime(2026, 11, 25, 10, 30, tzinfo=JST)
DATA_AS_OF = dt.datetime(2026, 11, 24, 23, 0, tzinfo=JST)
OTA = Municipality(code="131113", prefecture="東京都", name="大田区", mayor="大田区長　鈴木　晶雅")


def make_stamp(**changes) -> IssueStamp:
    values = dict(
        serial=123,
        issued_at=ISSUED_AT,
        data_as_of=DATA_AS_OF,
        municipality=OTA,
        terminal="本庁1",
        printer_id="プリンタ001",
    )
    values.update(changes)
    return IssueStamp(**values)


def printed_name(record: dict) -> str:
    """The 氏名 item as a certificate prints it: the name, then its legal
    振り仮名 in parentheses while it is confirmed."""
    return f"{record['name']}（{record['furigana']}）" if record.get("furigana") else record["name"]


def household(residents: dict[str, dict], household_id: str) -> list[dict]:
    members = [record for record in residents.values() if record["household_id"] == household_id]
    return sorted(members, key=lambda record: record["household_order"])


def extra_members(template: dict, count: int) -> list[dict]:
    """`count` more members of the template's household (synthetic children)."""
    members = []
    for number in range(count):
        member = copy.deepcopy(template)
        member.update(
            resident_code=f"2000000{number:04d}",
            household_order=template["household_order"] + number + 1,
            name=f"山田　子{'一二三四五六七八九'[number]}",
            name_kana="ヤマダ　コ",
            furigana=None,  # not yet confirmed: printed blank
            relationship="子",
            birth_date=f"201{number}-01-0{number + 1}",
            former_surname=None,
            remarks=None,
        )
        members.append(member)
    return members


def write_pdf(pdf: bytes, directory: Path, name: str = "certificate.pdf") -> Path:
    path = directory / name
    path.write_bytes(pdf)
    return path


def pdf_text(pdf: bytes | Path, page: int | None = None) -> str:
    """The text layer, as a reader of the PDF gets it (pdftotext -layout)."""
    command = ["pdftotext", "-layout"]
    if page is not None:
        command += ["-f", str(page), "-l", str(page)]
    if isinstance(pdf, Path):
        return subprocess.run(command + [str(pdf), "-"], capture_output=True, check=True).stdout.decode()
    return subprocess.run(command + ["-", "-"], input=pdf, capture_output=True, check=True).stdout.decode()


def compact(text: str) -> str:
    """Text without whitespace: layout spacing is not what the rules are about."""
    return "".join(text.split())


def page_count(pdf: bytes) -> int:
    info = subprocess.run(["pdfinfo", "-"], input=pdf, capture_output=True, check=True).stdout.decode()
    return int(next(line.split()[-1] for line in info.splitlines() if line.startswith("Pages:")))


def page_images(pdf: bytes | Path, directory: Path, dpi: int = 50) -> list[Image.Image]:
    """Each page rendered by pdftoppm, grayscale."""
    directory.mkdir(parents=True, exist_ok=True)
    source = pdf if isinstance(pdf, Path) else write_pdf(pdf, directory, "to-raster.pdf")
    prefix = directory / f"{source.stem}-{dpi}"
    subprocess.run(["pdftoppm", "-r", str(dpi), "-gray", "-png", str(source), str(prefix)], check=True)
    return [Image.open(path).convert("L") for path in sorted(directory.glob(f"{prefix.name}-*.png"))]


def image_list(pdf: bytes) -> list[dict[str, str]]:
    """pdfimages -list rows (page, width, height, x-ppi, y-ppi …) as dicts."""
    output = subprocess.run(["pdfimages", "-list", "-"], input=pdf, capture_output=True, check=True).stdout.decode()
    lines = output.splitlines()
    header = lines[0].split()
    return [dict(zip(header, line.split())) for line in lines[2:]]


def extracted_images(pdf: bytes, directory: Path, size: tuple[int, int]) -> list[Image.Image]:
    """The embedded images of that pixel size, as stored (pdfimages -png),
    in PDF order: an image is followed by its soft mask."""
    prefix = directory / "extracted"
    subprocess.run(["pdfimages", "-png", "-", str(prefix)], input=pdf, check=True)
    images = [Image.open(path) for path in sorted(directory.glob("extracted-*.png"))]
    return [image.convert("L") for image in images if image.size == size]

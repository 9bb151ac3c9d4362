"""Certificate → HTML → PDF (WeasyPrint), with a signed QR code on every page.

Each page's code carries that page's printed text (printing.signing), laid
out in the same reading order as the page, beside the address where anyone
can check it (PrintSettings.verification_url).

Every string that came from upstream goes through `_markup`: it is
HTML-escaped, and the characters that need IPAmj明朝 are wrapped in a span set
in a per-certificate IPAmj subset (see printing.glyphs). Each sheet is one
page; if content ever overflows a sheet the page count no longer matches and
the certificate is refused rather than printed with a split page.
"""

from __future__ import annotations

import base64
import html
import io
import re
import sys
import threading
from dataclasses import dataclass
from functools import lru_cache
from html.parser import HTMLParser
from itertools import takewhile
from pathlib import Path

import segno
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from PIL import Image, ImageChops, UnidentifiedImageError
from weasyprint import HTML
from weasyprint.text.fonts import FontConfiguration

from printing.content import (
    DRILL_MARK,
    DRILL_NOTICE,
    END_MARK,
    OFFICIAL_USE_MARK,
    SEAL_CAPTION,
    SPECIMEN_MARK,
    VERIFICATION_LEAD,
    Item,
    PrintedContent,
    Sheet,
    printed_content,
)
from printing.glyphs import clusters_of, ipamj_has, is_variation_selector, rare_clusters, rare_glyph_fonts, split_glyph_runs
from printing.model import PEOPLE_PER_RENKETSU_SHEET, Certificate, CertificateError
from printing.pattern import page_background_css
from printing.signing import Field, SignedPage, sign_page

STYLESHEET = (Path(__file__).with_name("certificate.css")).read_text(encoding="utf-8")
PDF_VARIANT = "pdf/a-2b"
# QR modules are whole dots of a 300 dpi grid (and so of 600 and 1200 dpi
# printers): 4 dots (0.339 mm) when the code fits the footer that way, else
# 3 dots (0.254 mm, 6 dots of a 600 dpi counter printer). A page whose code
# does not fit at 3 dots is laid out again with fewer people (see
# render_certificate).
QR_MODULE_DOTS_AT_300_DPI = (4, 3)
QR_BORDER_MODULES = 2
QR_MAX_MM = 29.0  # the footer's height (certificate.css: 33 mm margin less 3 mm padding, 1 mm spare)
QR_ERROR_LEVEL = "m"
PAGE_WIDTH_MM = 182.0  # A4 minus the side margins in certificate.css

# Label column width (mm) and item pairs per table row, per layout.
_GRIDS = {"renketsu": (27.0, 3), "kojin": (34.0, 2), "inkan": (28.0, 1)}
_INKAN_DETAILS_MM = PAGE_WIDTH_MM - 44.0 - 4.0
_SEAL_OVERLAP_MM = 3.0  # how far the 電子公印 reaches over the issuer's name
_ISSUER_LINE_MM = 5.1  # height of the 12 pt issuer line in certificate.css
_SEAL_BELOW_MM = 2.0  # how far the 電子公印 reaches below the issuer line (certificate.css leaves that much room)

# WeasyPrint (Pango, fontconfig) is not documented as thread-safe and the
# counter web server is threaded; under one interpreter lock one render at a
# time is also all a process can do usefully. Every PDF the project makes
# goes through `html_to_pdf`, which holds this lock while WeasyPrint runs;
# `sonae serve` renders certificates in printing.pool's processes, one at a
# time in each.
weasyprint_lock = threading.Lock()


class RenderError(RuntimeError):
    """The certificate could not be laid out correctly; nothing is printed."""


class _QrTooLarge(RenderError):
    pass


@dataclass(frozen=True)
class LaidOut:
    """What WeasyPrint made of a page of HTML: its PDF (None when the layout
    had another page count than required), and its page count."""

    pdf: bytes | None
    pages: int


def html_to_pdf(html: str, *, pdf_variant: str | None = None, pages: int | None = None) -> LaidOut:
    """The one entry to WeasyPrint for every PDF in the project (certificates,
    posters, forms, reports), one at a time in the process. With `pages`, a
    layout of any other page count is not written out (pdf None)."""
    with weasyprint_lock:
        document = HTML(string=html).render(font_config=FontConfiguration())
        if pages is not None and len(document.pages) != pages:
            return LaidOut(None, len(document.pages))
        return LaidOut(document.write_pdf(pdf_variant=pdf_variant), len(document.pages))


# Elements whose content is not text the page shows as HTML text: the
# document's title (PDF metadata), style sheets and scripts, raw text
# (a form field's value, <xmp>, <plaintext>, frames' fallbacks), and
# foreign content (SVG, MathML), where a <span> would end the drawing.
_NOT_SHOWN_AS_TEXT = frozenset({"title", "style", "script", "textarea", "xmp", "plaintext", "iframe", "noembed", "noframes", "svg", "math"})
_NUMERIC_REFERENCE = re.compile(r"&#(?:[xX]([0-9a-fA-F]+)|([0-9]+));")


def _selector_written_out(reference: re.Match) -> str:
    """A variation selector written as a character reference (&#xE0109;)
    as the character itself, which makes a sequence with the one before it."""
    code = int(reference.group(1), 16) if reference.group(1) else int(reference.group(2))
    return chr(code) if code <= sys.maxunicode and is_variation_selector(chr(code)) else reference.group(0)


class _ShownText(HTMLParser):
    """Where the text a page shows lies in its HTML source: the (start, end)
    of each stretch of character data and character references outside the
    elements above, and where the real </head> begins (None without one).
    Tags, attributes, comments and declarations are never text. Each event's
    source runs from where it starts to where the next one does."""

    def __init__(self, source: str):
        super().__init__(convert_charrefs=False)  # data and references arrive as their source, offsets intact
        self._line_starts = [0, *(match.end() for match in re.finditer("\n", source))]
        self._inside: list[str] = []
        self._open: int | None = None  # where the stretch of shown text being read began
        self.spans: list[tuple[int, int]] = []
        self.head_end: int | None = None
        self.feed(source)
        self.close()
        self._event(shown=False, at=len(source))

    def _event(self, *, shown: bool, at: int | None = None) -> None:
        if at is None:
            line, column = self.getpos()
            at = self._line_starts[line - 1] + column
        if self._open is not None and not shown:
            self.spans.append((self._open, at))
            self._open = None
        elif self._open is None and shown:
            self._open = at

    def _text(self, *_) -> None:
        self._event(shown=not self._inside)

    def _markup(self, *_) -> None:
        self._event(shown=False)

    handle_data = handle_charref = handle_entityref = _text
    handle_startendtag = handle_comment = handle_decl = handle_pi = unknown_decl = _markup

    def handle_starttag(self, tag, attrs):
        self._markup()
        if tag in _NOT_SHOWN_AS_TEXT:
            self._inside.append(tag)

    def handle_endtag(self, tag):
        self._markup()
        if tag in self._inside:
            del self._inside[len(self._inside) - 1 - self._inside[::-1].index(tag):]
        elif tag == "head" and not self._inside and self.head_end is None:
            line, column = self.getpos()
            self.head_end = self._line_starts[line - 1] + column


def with_rare_glyphs(document: str, font_cache_dir: Path | None = None) -> str:
    """An HTML page (a form, a card, a report — any paper but a certificate,
    which does this itself) whose rare glyphs — 外字 and IVS sequences in
    names, which IPAex does not have or would print in their common form —
    are routed to an IPAmj明朝 subset of exactly those glyphs, as on a
    certificate. Only the shown text changes, by <span class="mj"> around
    them, and one <style> is added; a page without any is returned
    unchanged. Unlike a certificate, which refuses one, a paper with a
    character IPAmj明朝 does not have (an emoji typed by staff) prints it as
    WeasyPrint's font fallback can."""
    shown = _ShownText(document)
    texts = {(start, end): _NUMERIC_REFERENCE.sub(_selector_written_out, document[start:end]) for start, end in shown.spans}
    clusters = frozenset(cluster for cluster in rare_clusters(texts.values()) if ipamj_has(cluster))
    if not clusters:
        return document
    font_path = rare_glyph_fonts(font_cache_dir).font_for(clusters)
    style = (f'<style>@font-face {{ font-family: "SonaeRareGlyphs"; src: url("{font_path.as_uri()}"); }}\n'
             '.mj { font-family: "SonaeRareGlyphs"; }</style>')

    def marked(text: str) -> str:
        return "".join(f'<span class="mj">{run}</span>' if rare and clusters.intersection(clusters_of(run)) else run
                       for run, rare in split_glyph_runs(text))

    # The style goes before </head>, or without one at the end: WeasyPrint
    # applies a style element wherever it stands.
    style_at = len(document) if shown.head_end is None else shown.head_end
    edits = [(start, end, replacement) for (start, end), text in texts.items() if (replacement := marked(text)) != text]
    edits.append((style_at, style_at, style))
    pieces, done = [], 0
    for start, end, replacement in sorted(edits, key=lambda edit: edit[0]):
        pieces += [document[done:start], replacement]
        done = end
    pieces.append(document[done:])
    return "".join(pieces)


@dataclass(frozen=True)
class _Prepared:
    """The final HTML and what it vouches for, before WeasyPrint runs."""

    html: str
    content: PrintedContent
    content_digest: str
    qr_payloads: tuple[str, ...]


@dataclass(frozen=True)
class RenderedCertificate:
    pdf: bytes
    pages: int
    content_digest: str  # SHA-256 (hex) of the printed content, kept in the issuance record
    qr_payloads: tuple[str, ...]  # each page's signed QR text (printing.signing), in page order


def _markup(text: str) -> str:
    """Escape upstream text; route rare glyphs to the IPAmj subset; keep line breaks."""
    lines = []
    for line in text.split("\n"):
        parts = []
        for run, rare in split_glyph_runs(line):
            escaped = html.escape(run, quote=True)
            parts.append(f'<span class="mj">{escaped}</span>' if rare else escaped)
        lines.append("".join(parts))
    return "<br>".join(lines)


def _all_text(content: PrintedContent) -> list[str]:
    texts = [content.title, content.certification, content.issuer, content.notice, content.serial_label]
    for sheet in content.sheets:
        for item in sheet.header:
            texts += [item.label, item.value]
        for entry in sheet.entries:
            for item in entry.items:
                texts += [item.label, item.value]
    return texts


def _value_html(item: Item) -> str:
    return f'<span class="value-{item.key}">{_markup(item.value)}</span>'


def _reading_order(items: tuple[Item, ...], grid: str) -> tuple[Item, ...]:
    """The items in the order the table shows them (and the QR code signs them)."""
    if _GRIDS[grid][1] == 1:
        return items
    # Leading full-row items (氏名) stay on top; short items are packed
    # into rows before the other full-row ones, so no row is left half empty.
    leading = tuple(takewhile(lambda item: item.wide, items))
    rest = items[len(leading):]
    return (*leading, *(item for item in rest if not item.wide), *(item for item in rest if item.wide))


def _items_table(items: tuple[Item, ...], grid: str, css_class: str, width_mm: float = PAGE_WIDTH_MM) -> str:
    label_mm, pairs = _GRIDS[grid]
    value_mm = (width_mm - label_mm * pairs) / pairs
    columns = f'<col style="width:{label_mm}mm"><col style="width:{value_mm:.2f}mm">' * pairs
    items = _reading_order(items, grid)
    rows: list[list[Item]] = []
    current: list[Item] = []
    for item in items:
        if item.wide:
            if current:
                rows.append(current)
                current = []
            rows.append([item])
        else:
            current.append(item)
            if len(current) == pairs:
                rows.append(current)
                current = []
    if current:
        rows.append(current)
    body = []
    for row in rows:
        cells = []
        for position, item in enumerate(row):
            # The last cell of a short row stretches to the table's edge.
            span = 1 + 2 * (pairs - len(row)) if position == len(row) - 1 else 1
            colspan = f' colspan="{span}"' if span > 1 else ""
            cells.append(f'<th>{_markup(item.label)}</th><td{colspan}>{_value_html(item)}</td>')
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f'<table class="items {css_class}"><colgroup>{columns}</colgroup>{"".join(body)}</table>'


def _certification_html(content: PrintedContent, official_seal: _OfficialSeal | None) -> str:
    if official_seal is None:
        # Only a drill or a specimen comes here (a real certificate without
        # its 電子公印 is refused): the seal's place says what it is.
        seal = f'<span class="seal-mark">{SPECIMEN_MARK if content.specimen else DRILL_MARK[0]}</span>'
    else:
        # As a stamped 公印 is placed: overlapping the last character of the
        # issuer's name by a few millimetres. It rises over the empty right
        # end of the lines above rather than below the name, so that the
        # data-as-of statement follows closely and four people still fit a
        # 世帯連記式 sheet.
        right = _SEAL_OVERLAP_MM - official_seal.width_mm
        top = _ISSUER_LINE_MM + _SEAL_BELOW_MM - official_seal.height_mm
        seal = (
            f'<img class="official-seal" alt="" src="data:image/png;base64,{official_seal.png_base64}" '
            f'style="width:{official_seal.width_mm}mm;height:{official_seal.height_mm}mm;right:{right:.2f}mm;top:{top:.2f}mm">'
        )
    # The data-as-of statement closes the block, at the size of the 認証文:
    # it is what makes a certificate issued from the copy honest.
    return (
        '<div class="certification">'
        f'<p class="text">{_markup(content.certification)}</p>'
        f'<p class="date">{_markup(content.issue_date)}</p>'
        f'<p class="issuer"><span class="issuer-name">{_markup(content.issuer)}</span>{seal}</p>'
        f'<p class="data-as-of">{_markup(content.notice)}</p>'
        "</div>"
    )


def _inkan_html(content: PrintedContent, sheet: Sheet) -> str:
    impression = content.seal_impression
    image = (
        f'<img alt="" src="data:image/png;base64,{base64.b64encode(impression.png).decode("ascii")}" '
        f'style="width:{impression.width_mm}mm;height:{impression.height_mm}mm">'
    )
    details = _items_table(sheet.entries[0].items, "inkan", "details-table", _INKAN_DETAILS_MM)
    return (
        '<table class="inkan"><tr>'
        f'<td class="impression"><span class="caption">{SEAL_CAPTION}</span>{image}</td>'
        f'<td class="details">{details}</td>'
        "</tr></table>"
    )


def _sheet_html(content: PrintedContent, index: int, qr_svg: str, grid: str, official_seal: _OfficialSeal | None,
                verification_url: str) -> str:
    sheet = content.sheets[index]
    # The diagonal mark is for the eye; this line is for anyone reading the
    # text (pdftotext, a screen reader), where rotated text gets lost.
    drill_line = f'<div class="drill-notice">{DRILL_NOTICE}</div>' if content.drill else ""
    address = (
        f'<div class="verification">{VERIFICATION_LEAD}　{html.escape(verification_url)}</div>'
        if verification_url else ""
    )
    footer = (
        f'<div class="page-footer"><div class="footer-text">{drill_line}'
        f'<div class="serial">発行番号　{_markup(content.page_label(index))}</div>{address}'
        f'</div><div class="qr">{qr_svg}</div></div>'
    )
    official_use = f'<span class="official-use">{OFFICIAL_USE_MARK}</span>' if content.official_use else ""
    parts = [f'<section class="sheet">{footer}<h1>{_markup(content.title)}{official_use}</h1>']
    if content.kind == "inkan":
        parts.append(_inkan_html(content, sheet))
    else:
        if sheet.header:
            parts.append(_items_table(sheet.header, "renketsu", "header"))
        parts.extend(_items_table(entry.items, grid, "entry") for entry in sheet.entries)
    if index == len(content.sheets) - 1:
        parts.append(f'<p class="end-mark">{END_MARK}</p>')
        parts.append(_certification_html(content, official_seal))
    else:
        parts.append(f'<p class="data-as-of">{_markup(content.notice)}</p>')
    parts.append("</section>")
    return "".join(parts)


@dataclass(frozen=True)
class _OfficialSeal:
    png: bytes
    width_mm: float
    height_mm: float

    @property
    def png_base64(self) -> str:
        return base64.b64encode(self.png).decode("ascii")


@lru_cache(maxsize=8)
def _load_official_seal(path: Path, modified_ns: int, size_mm: float) -> _OfficialSeal:
    # Keyed by modification time so that replacing the image takes effect
    # without a restart.
    try:
        with Image.open(path) as source:
            rgba = source.convert("RGBA")
    except (OSError, UnidentifiedImageError):
        raise CertificateError(f"電子公印の画像 {path} が読めません（設定 printing.official_seal_image を確認してください）") from None
    # Printed black whatever colour the source is: the amount of ink (how
    # far the pixel is from white, so a red seal counts as full ink) times
    # its opacity becomes black on white. Opaque, without an alpha channel:
    # a page with transparency is rasterised whole by CUPS's PostScript
    # path (poppler's pdftops -rasterize whenneeded). The seal is painted
    # under the issuer's name (certificate.css), so the name stays legible.
    red, green, blue, alpha = rgba.split()
    ink = ImageChops.invert(ImageChops.darker(ImageChops.darker(red, green), blue))
    black_on_white = ImageChops.invert(ImageChops.multiply(ink, alpha))
    out = io.BytesIO()
    black_on_white.save(out, format="PNG", optimize=True)
    width, height = rgba.size
    scale = size_mm / max(width, height)
    return _OfficialSeal(out.getvalue(), round(width * scale, 2), round(height * scale, 2))


def _official_seal(cert: Certificate) -> _OfficialSeal | None:
    """The 電子公印 as printed; None only for a drill or a specimen without
    one (printing.model refuses a real certificate without it)."""
    path = cert.settings.official_seal_image
    if path is None:
        return None
    try:
        modified = path.stat().st_mtime_ns
    except OSError:
        raise CertificateError(f"電子公印の画像 {path} がありません（設定 printing.official_seal_image を確認してください）") from None
    return _load_official_seal(path, modified, cert.settings.official_seal_mm)


def qr_code(payload: str) -> tuple[segno.QRCode, float]:
    """The code for this payload and its module size (mm); _QrTooLarge when
    it does not fit the footer at 3 dots."""
    # make_qr, not make: segno.make may choose a Micro QR, which zbar (and
    # many phone readers) cannot decode. Made once per page: choosing the
    # mask is most of a render's QR cost (≈ 45 ms at version 19).
    code = segno.make_qr(payload, error=QR_ERROR_LEVEL)
    modules = code.symbol_size(border=0)[0]
    for dots in QR_MODULE_DOTS_AT_300_DPI:
        module_mm = dots * 25.4 / 300
        if (modules + 2 * QR_BORDER_MODULES) * module_mm <= QR_MAX_MM:
            return code, module_mm
    raise _QrTooLarge(f"QRコードが用紙の余白に収まりません（{modules}モジュール）")


def _qr_svg(payload: str) -> str:
    code, module_mm = qr_code(payload)
    return code.svg_inline(scale=module_mm, unit="mm", border=QR_BORDER_MODULES, dark="#000")


def _fields(items: tuple[Item, ...], grid: str) -> tuple[Field, ...]:
    return tuple(Field(item.label, item.value) for item in _reading_order(items, grid))


def _signed_page(cert: Certificate, content: PrintedContent, index: int, grid: str) -> SignedPage:
    """What page `index` prints, for its QR code."""
    sheet = content.sheets[index]
    stamp = cert.stamp
    last = index == len(content.sheets) - 1
    return SignedPage(
        municipality_code=stamp.municipality.code,
        kind=cert.kind,
        serial=0 if stamp.specimen else stamp.serial,  # a specimen consumes no serial and shows 000000
        issued_at=stamp.issued_at,
        data_as_of=stamp.data_as_of,
        drill=stamp.drill,
        specimen=stamp.specimen,
        page=index + 1,
        pages=len(content.sheets),
        title=content.signed_title,
        header=_fields(sheet.header, "renketsu"),
        people=tuple(_fields(entry.items, grid) for entry in sheet.entries),
        closing=(content.certification, content.issue_date, content.issuer) if last else (),
        notice=content.notice,
        serial_line=f"発行番号　{content.page_label(index)}",
        # The 印鑑登録証明書 is one sheet: its 印影 is on the signed page.
        seal_digest=content.seal_impression.pixel_digest if content.seal_impression else "",
    )


def _prepare(cert: Certificate, signing_key: Ed25519PrivateKey, people_per_sheet: int = PEOPLE_PER_RENKETSU_SHEET) -> _Prepared:
    """Build the final HTML: content, digest, signed QR payload."""
    content = printed_content(cert, people_per_sheet)
    official_seal = _official_seal(cert)
    digest = content.digest(official_seal.png if official_seal else None)
    grid = "inkan" if cert.kind == "inkan" else cert.layout
    payloads = tuple(
        sign_page(_signed_page(cert, content, index, grid), signing_key) for index in range(len(content.sheets))
    )
    qr_svgs = [_qr_svg(payload) for payload in payloads]

    font_face = ""
    clusters = rare_clusters(_all_text(content))
    if clusters:
        font_path = rare_glyph_fonts(cert.settings.font_cache_dir).font_for(clusters)
        font_face = f'@font-face {{ font-family: "SonaeRareGlyphs"; src: url("{font_path.as_uri()}"); }}\n'

    marks = ""
    if content.drill:
        marks += f'<div class="drill-mark">{"<br>".join(DRILL_MARK)}</div>'
    if content.specimen:
        marks += f'<div class="specimen-mark">{SPECIMEN_MARK}</div>'
    sheets = "".join(
        _sheet_html(content, index, qr_svgs[index], grid, official_seal, cert.settings.verification_url)
        for index in range(len(content.sheets))
    )
    document = (
        '<!DOCTYPE html><html lang="ja"><head><meta charset="utf-8">'
        f"<title>{html.escape(content.title)}</title>"
        f"<style>{font_face}{STYLESHEET}{page_background_css() if cert.settings.anti_copy_pattern else ''}</style></head>"
        f'<body class="kind-{cert.kind} layout-{grid}">{marks}{sheets}</body></html>'
    )
    return _Prepared(document, content, digest, payloads)


def render_html(cert: Certificate, signing_key: Ed25519PrivateKey) -> str:
    """The exact HTML render_certificate hands to WeasyPrint."""
    return _prepare(cert, signing_key).html


def render_certificate(cert: Certificate, signing_key: Ed25519PrivateKey) -> RenderedCertificate:
    """Render, sign and check one certificate.

    A 世帯連記式 sheet holds up to four people; when four do not fit (long
    foreign names, every optional item), or their QR code would not fit the
    footer, the household is laid out again with fewer per sheet. Any other
    overflow raises RenderError."""
    people_per_sheet = PEOPLE_PER_RENKETSU_SHEET
    while True:
        try:
            prepared = _prepare(cert, signing_key, people_per_sheet)
        except _QrTooLarge:
            if cert.kind == "inkan" or cert.layout != "renketsu" or people_per_sheet == 1:
                raise
            people_per_sheet -= 1
            continue
        laid_out = html_to_pdf(prepared.html, pdf_variant=PDF_VARIANT, pages=len(prepared.content.sheets))
        if laid_out.pdf is not None:
            return RenderedCertificate(laid_out.pdf, laid_out.pages, prepared.content_digest, prepared.qr_payloads)
        if cert.kind == "inkan" or cert.layout != "renketsu" or people_per_sheet == 1:
            raise RenderError(
                f"証明書の内容が用紙に収まりません（{len(prepared.content.sheets)}枚の予定が{laid_out.pages}ページになりました）"
            )
        people_per_sheet -= 1


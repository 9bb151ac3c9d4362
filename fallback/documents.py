"""Staff documents other than certificates — incident and drill reports,
the paper-procedure forms, persona cards — as HTML and as PDF.

Reports are written as Markdown (so a report is one text that becomes the
page, the PDF and the Markdown export alike); forms and cards are Jinja
templates, rendered through fallback.paper like every other paper Sonae
prints. Everything the staff typed is escaped before it goes into
Markdown, and raw HTML is switched off in the converter, so a reason or a
name can never become markup. PDFs use IPAex fonts (IPAexMincho for body
text, IPAexGothic for headings; see documents/pdf_base.html), and IPAmj明朝
for a name's rare glyphs (fallback.paper).
"""

from __future__ import annotations

import datetime as dt
import re

import markdown

from fallback import paper

# Values always go inside a line (a table cell, after a label), never at its
# start, so only the inline specials need escaping ("<" needs none: raw
# HTML is switched off below).
_MARKDOWN_SPECIALS = re.compile(r"([\\`*_\[\]>|])")


def md_text(value) -> str:
    """Text typed by staff or taken from records, safe inside a line of
    Markdown: whitespace collapsed, inline special characters escaped."""
    if value is None or value == "":
        return "—"
    return _MARKDOWN_SPECIALS.sub(r"\\\1", " ".join(str(value).split()))


def md_table(headings: list[str], rows: list[list]) -> str:
    """A Markdown table; cells are escaped with md_text unless they are
    numbers."""
    def cell(value) -> str:
        return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else md_text(value)

    lines = ["| " + " | ".join(headings) + " |", "|" + "---|" * len(headings)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown_to_html(text: str) -> str:
    md = markdown.Markdown(extensions=["tables", "sane_lists"])
    # Reports carry what staff typed: no raw HTML may pass through.
    md.preprocessors.deregister("html_block")
    md.inlinePatterns.deregister("html")
    return md.convert(text)


def render_pdf(template: str, **context) -> bytes:
    return paper.html_to_pdf(paper.render_html(template, **context))


def markdown_pdf(title: str, text: str, *, drill: bool) -> bytes:
    """A report as PDF; `drill` puts the 訓練 watermark on every page."""
    return render_pdf("documents/document_pdf.html", title=title, body=markdown_to_html(text), drill=drill)


# Times and durations as reports print them (stamps are ISO 8601 in JST).
def minutes_between(start: str, end: str) -> float:
    return (dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)).total_seconds() / 60


def format_minutes(minutes: float | None) -> str:
    if minutes is None:
        return "—"
    whole = int(round(minutes))
    return f"{whole // 60}時間{whole % 60}分" if whole >= 60 else f"{whole}分"


def format_time(stamp: str | None) -> str:
    return stamp[:16].replace("T", " ") if stamp else "—"

"""The papers the residents' side prints — the notice poster and the
交付申請書 — from Jinja templates to PDF with WeasyPrint.

They are rendered outside any web request (the incident report, a command)
as well as inside one, so this uses its own template environment over
fallback/templates rather than Flask's. Fonts are IPAex only, named in the
templates' stylesheets.
"""

from __future__ import annotations

import threading
from pathlib import Path

import jinja2
from weasyprint import HTML
from weasyprint.text.fonts import FontConfiguration

TEMPLATES_DIR = Path(__file__).with_name("templates")

_environment = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)

# WeasyPrint (Pango, fontconfig) is not documented as thread-safe and the web
# server is threaded; one render at a time is all two cores do usefully.
_render_lock = threading.Lock()


def render_html(template: str | jinja2.Template, **context) -> str:
    """A built-in template by name, or an already loaded template."""
    loaded = _environment.get_template(template) if isinstance(template, str) else template
    return loaded.render(**context)


def template_from_file(path: str | Path) -> jinja2.Template:
    """A ward's own layout from a file; it may extend or include the
    built-in templates by name."""
    return _environment.from_string(Path(path).read_text(encoding="utf-8"))


def html_to_pdf(html: str) -> bytes:
    with _render_lock:
        return HTML(string=html).write_pdf(font_config=FontConfiguration())

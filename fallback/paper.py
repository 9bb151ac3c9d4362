"""Papers Sonae prints other than certificates (the notice poster, the
交付申請書, staff documents) — from Jinja templates to PDF with WeasyPrint.

They are rendered outside any web request (the incident report, a command)
as well as inside one, so this uses its own template environment rather
than Flask's, over the same folders: fallback/templates (the shared base)
and each feature's templates/. Fonts are IPAex, named in the templates'
stylesheets, and an IPAmj明朝 subset for the rare glyphs of names.
"""

from __future__ import annotations

from pathlib import Path

import jinja2

from printing import render

PACKAGE_DIR = Path(__file__).parent
TEMPLATE_DIRS = [PACKAGE_DIR / "templates", *sorted(PACKAGE_DIR.glob("*/templates"))]

_environment = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATE_DIRS),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)

def render_html(template: str | jinja2.Template, **context) -> str:
    """A built-in template by name, or an already loaded template."""
    loaded = _environment.get_template(template) if isinstance(template, str) else template
    return loaded.render(**context)


def template_from_file(path: str | Path) -> jinja2.Template:
    """A ward's own layout from a file; it may extend or include the
    built-in templates by name."""
    return _environment.from_string(Path(path).read_text(encoding="utf-8"))


def html_to_pdf(html: str) -> bytes:
    """Through printing's one entry to WeasyPrint, which renders one PDF at
    a time in the process, certificates included. A name with a 外字 or an
    IVS prints as the register holds it (printing.render.with_rare_glyphs)."""
    return render.html_to_pdf(render.with_rare_glyphs(html)).pdf

"""CSV exports that staff open in a spreadsheet (the audit log, deferred
requests).

Anything a person typed can reach a cell: a name, a note, a search query.
A spreadsheet runs a cell that starts with = + - @ (or a tab or carriage
return before one) as a formula, so =HYPERLINK(…) typed at a counter
would become a live link on the auditor's PC. Such a cell gets a leading
apostrophe (OWASP's rule for CSV injection): the spreadsheet shows the
text as typed, and the CSV parser still reads it as plain text.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value):
    """A cell's value as a spreadsheet will not run it."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def write_rows(out, headings: list[str], rows: Iterable[Iterable]) -> None:
    writer = csv.writer(out)
    writer.writerow([safe_cell(h) for h in headings])
    for row in rows:
        writer.writerow([safe_cell(value) for value in row])


def csv_text(headings: list[str], rows: Iterable[Iterable]) -> str:
    """The whole CSV, BOM-prefixed so Excel on the ward's PCs opens it as
    UTF-8."""
    out = io.StringIO()
    write_rows(out, headings, rows)
    return "\ufeff" + out.getvalue()

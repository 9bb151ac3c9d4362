"""The auditor's desk: who looked at whose record, when and why, and proof
that the log was not altered. Reading the log is itself audited."""

from __future__ import annotations

from flask import Blueprint, Response, g, render_template, request

from fallback import audit
from fallback.db import get_ops
from fallback.staff import spreadsheets
from fallback.staff.security import roles

bp = Blueprint("auditor", __name__, url_prefix="/audit", template_folder="templates")

PAGE_SIZE = 500
FILTERS = ("since", "until", "actor", "action", "target")
MAX_FILTER_LENGTH = 100


def _filters() -> dict[str, str]:
    # Bounded: the filters are written into the audit entry of the reading.
    values = {name: request.args.get(name, "").strip()[:MAX_FILTER_LENGTH] for name in FILTERS}
    if values["until"] and len(values["until"]) == 10:  # a date: the whole day
        values["until"] += "T23:59:59.999+09:00"
    return values


def _entries(filters: dict[str, str]):
    rows = audit.entries(get_ops(), filters["since"] or None, filters["until"] or None,
                         actor=filters["actor"] or None, action=filters["action"] or None)
    if filters["target"]:
        rows = (row for row in rows if row["target"] == filters["target"])
    return rows


@bp.route("/")
@roles("auditor")
def index():
    filters = _filters()
    searched = any(filters.values())
    rows = []
    if searched:
        for row in _entries(filters):
            rows.append(row)
            if len(rows) > PAGE_SIZE:
                break
        audit.record(get_ops(), g.staff.username, "audit.read", None, {k: v for k, v in filters.items() if v})
    return render_template("auditor/index.html", rows=rows[:PAGE_SIZE], truncated=len(rows) > PAGE_SIZE,
                           filters=filters, searched=searched, page_size=PAGE_SIZE, chain=None)


@bp.route("/verify", methods=["POST"])
@roles("auditor")
def verify():
    report = audit.verify_chain(get_ops())
    audit.record(get_ops(), g.staff.username, "audit.verify", None, {"ok": report.ok, "entries": report.entries})
    return render_template("auditor/index.html", rows=[], truncated=False, filters=_filters(), searched=False,
                           page_size=PAGE_SIZE, chain=report)


@bp.route("/export.csv")
@roles("auditor")
def export_csv():
    filters = _filters()
    audit.record(get_ops(), g.staff.username, "audit.export", None, {k: v for k, v in filters.items() if v})
    return Response(spreadsheets.csv_text(audit.CSV_HEADINGS, map(audit.csv_row, _entries(filters))), content_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": 'attachment; filename="sonae-audit.csv"'})

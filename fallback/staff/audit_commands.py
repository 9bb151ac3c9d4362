"""`sonae audit`: verify the hash chain, export entries for the auditor."""

from __future__ import annotations

import json

import click

from fallback import anchor
from fallback import audit as audit_log
from fallback.cli_support import config
from fallback.ops import open_ops
from fallback.staff import spreadsheets


@click.group("audit")
def audit_group():
    """The append-only, hash-chained audit log."""


@audit_group.command("verify")
def verify():
    """Check every entry's hash and the database against the audit anchor;
    exit 1 naming the first altered, removed or reordered entry, or the
    newest entries the database has lost."""
    loaded = config()
    conn = open_ops(loaded)
    report = audit_log.verify_chain(conn)
    if not report.ok:
        raise click.ClickException(f"audit chain broken at entry {report.first_break}: {report.reason}")
    try:
        held = anchor.read_anchor(loaded)
    except anchor.AnchorError as exc:
        raise click.ClickException(str(exc)) from exc
    lost = anchor.problems(conn, held)
    if lost:
        raise click.ClickException("; ".join(lost) + " (runbooks/08-snapshot-restore.md)")
    click.echo(f"audit chain intact: {report.entries} entries"
               + (f"; matches the anchor of {held.at[:19]} ({held.entries} entries)" if held else "; no anchor yet (nothing issued)"))


@audit_group.command("export")
@click.option("--from", "since", help="Start time, ISO 8601 (e.g. 2026-11-25 or 2026-11-25T09:00+09:00).")
@click.option("--to", "until", help="End time, inclusive.")
@click.option("--actor", help="Only this staff member.")
@click.option("--action", help="Only actions starting with this (e.g. issue, search).")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl", show_default=True)
def export(since, until, actor, action, fmt):
    """Write entries to stdout for the auditor."""
    if until and len(until) == 10:
        until += "T23:59:59.999+09:00"
    rows = audit_log.entries(open_ops(config()), since, until, actor=actor, action=action)
    if fmt == "jsonl":
        for row in rows:
            click.echo(json.dumps(row, ensure_ascii=False))
        return
    import sys

    spreadsheets.write_rows(sys.stdout, audit_log.CSV_HEADINGS, map(audit_log.csv_row, rows))

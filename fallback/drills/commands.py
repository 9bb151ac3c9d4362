"""`sonae drill`: the yearly drill from the console — the reminder that a
cron job or the coordinator runs, the list, the measured report and the
paper forms."""

from __future__ import annotations

from pathlib import Path

import click

from fallback import documents, drills, runbooks
from fallback.cli_support import config as load_config
from fallback.cli_support import operator
from fallback.drills import report as drill_report
from fallback.ops import now, open_ops
from fallback.residents import forms
from fallback.runbooks import paper_ledger


@click.group("drill")
def drill_group():
    """The yearly downtime drill (ダウン対策訓練)."""


@drill_group.command("schedule")
@click.option("--notify", is_flag=True, help="Also send the reminder on the alert channels ([alerts] webhook / mail).")
def schedule(notify):
    """Say whether this year's drill is planned and what is still to prepare
    (run it daily from cron; it prints nothing alarming until the drill
    month is within [drills] remind_days_before)."""
    config = load_config()
    section = config["drills"]
    reminder = drills.schedule_reminder(open_ops(config), yearly_month=section["yearly_month"],
                                        remind_days_before=section["remind_days_before"])
    click.echo(reminder.message)
    if notify and reminder.level != "none":
        from fallback.monitoring import notify as channels

        message = channels.Message("【Sonae】年次訓練のお知らせ", reminder.message,
                                   {"kind": "drill_reminder", "level": reminder.level, "drill": reminder.drill.id if reminder.drill else None})
        failed = [d for d in channels.deliver(config, message) if not d.ok]
        if failed:
            raise click.ClickException("reminder not delivered on " + ", ".join(f"{d.channel} ({d.error})" for d in failed))


@drill_group.command("list")
def list_drills():
    """Every drill, newest first."""
    for drill in drills.all_drills(open_ops(load_config())):
        click.echo(f"{drill.id}\t{drill.status}\t{drill.planned_start}\t{drill.scenario}\t{drill.title}")


@drill_group.command("report")
@click.argument("drill_id", type=int)
@click.option("--pdf", "pdf_path", type=click.Path(dir_okay=False, path_type=Path), help="Write the report as PDF here instead of Markdown to stdout.")
def report(drill_id, pdf_path):
    """The measured drill report (Markdown on stdout, or a PDF)."""
    config = load_config()
    try:
        text = drill_report.build(open_ops(config), drill_id, terminals=config["counter"]["terminals"],
                                  runbook_list=runbooks.load_all(runbooks.runbook_dir(config)))
    except drills.DrillError as exc:
        raise click.ClickException(str(exc)) from exc
    if pdf_path is None:
        click.echo(text)
        return
    pdf_path.write_bytes(documents.markdown_pdf("訓練報告書", text, drill=True))
    click.echo(f"wrote {pdf_path}")


@drill_group.command("paper-kit")
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), required=True, help="Directory for request-form.pdf and ledger.pdf.")
@click.option("--for-drill", "drill_id", type=int, help="Print the kit for this drill (訓練 watermark and numbers).")
@click.option("--ledger-pages", default=3, show_default=True, help="Ledger pages per office.")
def paper_kit(out_dir, drill_id, ledger_pages):
    """The paper procedure's forms (runbook 04): a blank 交付申請書 and the
    手書き交付台帳, to print and keep ready at every counter."""
    config = load_config()
    drill = drill_id is not None
    if drill:
        conn = open_ops(config)
        if drills.get(conn, drill_id) is None:
            raise click.ClickException(f"no drill {drill_id}")
        drills.record_event(conn, drill_id, operator(None), "paper_kit_printed", {"paper": "request_form+ledger"})
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "request-form.pdf").write_bytes(forms.request_form_pdf(config, None, printed_at=now(), drill=drill))
    (out_dir / "ledger.pdf").write_bytes(paper_ledger.ledger_pdf(config, drill=drill, pages=ledger_pages))
    click.echo(f"wrote {out_dir / 'request-form.pdf'} and {out_dir / 'ledger.pdf'}")

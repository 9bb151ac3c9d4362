"""The drill screens: plan a drill, run it (start, 訓練上の宣言, end),
prepare personas and the paper forms, and read its measured report."""

from __future__ import annotations

import datetime as dt

from flask import Blueprint, Response, abort, current_app, flash, g, redirect, render_template, request, url_for
from markupsafe import Markup

from fallback import documents, drills, modes, runbooks
from fallback.db import get_ops
from fallback.drills import personas as drill_personas
from fallback.drills import report as drill_report
from fallback.ops import TOKYO, now
from fallback.residents import forms
from fallback.runbooks import paper_ledger
from fallback.staff import users
from fallback.staff.security import roles

bp = Blueprint("drills", __name__, url_prefix="/drills", template_folder="templates")

COORDINATORS = ("drill_coordinator", "supervisor")
VIEWERS = ("drill_coordinator", "supervisor", "clerk")


def _drill_or_404(drill_id: int) -> drills.Drill:
    drill = drills.get(get_ops(), drill_id)
    if drill is None:
        abort(404, "この訓練はありません。")
    return drill


def _jst(value: str) -> str:
    """A datetime-local form value (Japan time, as the form says) as ISO
    8601 with offset; a value that names its own offset is converted."""
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise drills.DrillError("開始予定と終了予定の日時を入力してください。") from None
    moment = moment.replace(tzinfo=TOKYO) if moment.tzinfo is None else moment.astimezone(TOKYO)
    return moment.isoformat(timespec="minutes")


def _form_time(moment: dt.datetime) -> str:
    """A datetime-local input's value: Japan time, to the minute."""
    return moment.astimezone(TOKYO).strftime("%Y-%m-%dT%H:%M")


@bp.route("/")
@roles(*VIEWERS)
def index():
    conn = get_ops()
    return render_template(
        "drills/index.html", drills=drills.all_drills(conn), scenarios=drills.SCENARIOS,
        staff=[u for u in users.list_users(conn) if not u.disabled],
        terminals=current_app.config["SONAE"]["counter"]["terminals"], can_manage=g.staff.role in COORDINATORS,
        default_start=_form_time(now() + dt.timedelta(hours=1)), default_end=_form_time(now() + dt.timedelta(hours=4)),
    )


@bp.route("/new", methods=["POST"])
@roles(*COORDINATORS)
def create():
    form = request.form
    try:
        drill_id = drills.create(
            get_ops(), scenario=form.get("scenario", ""), title=form.get("title", ""), description=form.get("description", ""),
            planned_start=_jst(form.get("planned_start", "")), planned_end=_jst(form.get("planned_end", "")),
            participants=form.getlist("participants"), terminals=form.getlist("terminals"), actor=g.staff.username,
        )
    except drills.DrillError as exc:
        flash(str(exc), "error")
        return redirect(url_for("drills.index"))
    flash("訓練を登録しました。", "info")
    return redirect(url_for("drills.show", drill_id=drill_id))


@bp.route("/<int:drill_id>")
@roles(*VIEWERS)
def show(drill_id):
    drill = _drill_or_404(drill_id)
    conn = get_ops()
    can_manage = g.staff.role in COORDINATORS
    personas = drill_personas.cards(conn, current_app.config["SONAE"], drill_id, actor=g.staff.username, output="page") if can_manage else []
    return render_template(
        "drills/show.html", drill=drill, events=drills.events(conn, drill_id), personas=personas,
        can_manage=can_manage, real_downtime=modes.current(conn).mode == modes.DOWNTIME,
        runbook_slugs=runbooks.FOR_SCENARIO[drill.scenario],
    )


def _act(drill_id: int, action, done_message: str):
    try:
        action()
    except drills.DrillError as exc:
        flash(str(exc), "error")
    else:
        flash(done_message, "info")
    return redirect(url_for("drills.show", drill_id=drill_id))


@bp.route("/<int:drill_id>/start", methods=["POST"])
@roles(*COORDINATORS)
def start(drill_id):
    conn = get_ops()
    return _act(drill_id, lambda: drills.start(conn, current_app.config["SONAE"], drill_id, actor=g.staff.username,
                                                current_mode=modes.current(conn).mode),
                "訓練を開始しました。参加者の画面に「訓練中」と表示されます。")


@bp.route("/<int:drill_id>/declare", methods=["POST"])
@roles(*COORDINATORS)
def declare(drill_id):
    return _act(drill_id, lambda: drills.declare(get_ops(), drill_id, actor=g.staff.username, reason=request.form.get("reason", "")),
                "訓練上の宣言を記録しました（実際の運用モードは変わりません）。")


@bp.route("/<int:drill_id>/end", methods=["POST"])
@roles(*COORDINATORS)
def end(drill_id):
    return _act(drill_id, lambda: drills.end(get_ops(), drill_id, actor=g.staff.username), "訓練を終了しました。")


@bp.route("/<int:drill_id>/personas", methods=["POST"])
@roles(*COORDINATORS)
def prepare_personas(drill_id):
    return _act(drill_id, lambda: drill_personas.prepare(get_ops(), current_app.config["SONAE"], drill_id, actor=g.staff.username),
                "住民役を用意しました。")


@bp.route("/<int:drill_id>/personas.pdf")
@roles(*COORDINATORS)
def persona_cards(drill_id):
    drill = _drill_or_404(drill_id)
    personas = drill_personas.cards(get_ops(), current_app.config["SONAE"], drill_id, actor=g.staff.username, output="pdf")
    pdf = documents.render_pdf("drills/persona_cards_pdf.html", title="住民役カード", drill=True, drill_info=drill, personas=personas)
    return _pdf(pdf, f"drill-{drill_id}-personas.pdf")


@bp.route("/<int:drill_id>/request-form.pdf")
@roles(*COORDINATORS)
def request_form_pdf(drill_id):
    _drill_or_404(drill_id)
    pdf = forms.request_form_pdf(current_app.config["SONAE"], None, printed_at=now(), drill=True)
    drills.record_event(get_ops(), drill_id, g.staff.username, "paper_kit_printed", {"paper": "request_form"})
    return _pdf(pdf, f"drill-{drill_id}-request-form.pdf")


@bp.route("/<int:drill_id>/ledger.pdf")
@roles(*COORDINATORS)
def ledger_pdf(drill_id):
    _drill_or_404(drill_id)
    pdf = paper_ledger.ledger_pdf(current_app.config["SONAE"], drill=True)
    drills.record_event(get_ops(), drill_id, g.staff.username, "paper_kit_printed", {"paper": "ledger"})
    return _pdf(pdf, f"drill-{drill_id}-ledger.pdf")


def _report_markdown(drill_id: int) -> str:
    _drill_or_404(drill_id)
    config = current_app.config["SONAE"]
    return drill_report.build(get_ops(), drill_id, terminals=config["counter"]["terminals"],
                              runbook_list=runbooks.load_all(runbooks.runbook_dir(config)))


@bp.route("/<int:drill_id>/report")
@roles(*COORDINATORS)
def report(drill_id):
    body = documents.markdown_to_html(_report_markdown(drill_id))
    return render_template("drills/report.html", drill_id=drill_id, body=Markup(body))


@bp.route("/<int:drill_id>/report.pdf")
@roles(*COORDINATORS)
def report_pdf(drill_id):
    pdf = documents.markdown_pdf("訓練報告書", _report_markdown(drill_id), drill=True)
    return _pdf(pdf, f"drill-{drill_id}-report.pdf")


def _pdf(pdf: bytes, filename: str) -> Response:
    return Response(pdf, mimetype="application/pdf", headers={"Content-Disposition": f'inline; filename="{filename}"'})

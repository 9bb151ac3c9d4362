"""The runbooks in the app: the list (those that fit the moment first), one
runbook with its steps, ticking a step off, and the paper procedure's
ledger."""

from __future__ import annotations

from flask import Blueprint, Response, abort, current_app, flash, g, get_template_attribute, redirect, render_template, request, url_for
from markupsafe import Markup

from fallback import audit, modes, runbooks
from fallback.db import get_ops
from fallback.errors import Forbidden
from fallback.runbooks import paper_ledger
from fallback.staff.security import roles

bp = Blueprint("runbooks", __name__, url_prefix="/runbooks", template_folder="templates")

ALL_STAFF = ("clerk", "supervisor", "drill_coordinator", "it", "auditor")
# Who ticks steps off: the supervisor runs the procedure; IT and the drill
# coordinator tick the steps they lead — the coordinator a drill's only: a
# real incident's steps go into its report as done.
TICK_ROLES = ("supervisor", "it", "drill_coordinator")


def _may_tick(drill) -> bool:
    return g.staff.role in TICK_ROLES and (drill is not None or g.staff.role != "drill_coordinator")


def _directory():
    return runbooks.runbook_dir(current_app.config["SONAE"])


def _load(slug: str) -> runbooks.Runbook:
    try:
        return runbooks.load(_directory(), slug)
    except runbooks.RunbookError:
        abort(404, "この手順書はありません。")


@bp.route("/")
@roles(*ALL_STAFF)
def index():
    conn = get_ops()
    drill = runbooks.drill_of(conn, g.staff.username, g.staff.terminal)
    fitting = runbooks.relevant(modes.current(conn), drill)
    books = runbooks.load_all(_directory())
    return render_template("runbooks/index.html", books=books, fitting=[b for s in fitting for b in books if b.slug == s],
                           drill=drill, can_print=g.staff.role in TICK_ROLES)


@bp.route("/<slug>")
@roles(*ALL_STAFF)
def show(slug):
    book = _load(slug)
    conn = get_ops()
    drill = runbooks.drill_of(conn, g.staff.username, g.staff.terminal)
    history = runbooks.tick_history(conn, drill_id=drill.id if drill else None,
                                    since="" if drill else runbooks.current_run_start(conn))
    standing = runbooks.tick_state(history)
    can_tick = _may_tick(drill)
    control = get_template_attribute("runbooks/_step.html", "step_control")
    body = runbooks.render_html(book, lambda step: str(control(slug, step, standing.get((slug, step.id)), can_tick)))
    done = sum(1 for step in book.steps if (slug, step.id) in standing)
    return render_template("runbooks/show.html", book=book, body=Markup(body), done=done, drill=drill)


@bp.route("/<slug>/steps/<step_id>", methods=["POST"])
@roles(*TICK_ROLES)
def tick(slug, step_id):
    book = _load(slug)
    conn = get_ops()
    drill = runbooks.drill_of(conn, g.staff.username, g.staff.terminal)
    if not _may_tick(drill):
        audit.record(conn, g.staff.username, "records.denied", f"runbook:{slug}", {"step": step_id, "why": "not in a drill"})
        raise Forbidden("訓練の担当は、訓練中の手順だけを記録できます。実際の障害の手順は、係長または情報政策課が記録します。")
    try:
        runbooks.record_tick(conn, book, step_id, done=request.form.get("done") == "1", actor=g.staff.username,
                             drill_id=drill.id if drill else None)
    except runbooks.RunbookError as exc:
        flash(str(exc), "error")
    return redirect(url_for("runbooks.show", slug=slug) + f"#step-{step_id}")


@bp.route("/ledger.pdf")
@roles(*TICK_ROLES)
def ledger_pdf():
    pdf = paper_ledger.ledger_pdf(current_app.config["SONAE"], drill=False)
    audit.record(get_ops(), g.staff.username, "paper_ledger.print", None, {})
    return Response(pdf, mimetype="application/pdf", headers={"Content-Disposition": 'inline; filename="ledger.pdf"'})

"""/maintenance/: the vendor's planned windows — entered by a supervisor
or IT, prepared by the worker before they begin (or now, by IT's button),
and the pre-staged downtime declaration a supervisor presses when the
window begins."""

from __future__ import annotations

import datetime as dt

from flask import Blueprint, current_app, flash, g, redirect, render_template, request, url_for

from fallback import maintenance
from fallback.db import get_ops
from fallback.ops import TOKYO
from fallback.staff.security import roles

bp = Blueprint("maintenance", __name__, url_prefix="/maintenance", template_folder="templates")

EDITORS = ("supervisor", "it")


def _moment(text: str, label: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise maintenance.MaintenanceError(f"{label}の日時を「2026-12-05T22:00」の形で入力してください。") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=TOKYO)


@bp.route("/", methods=["GET", "POST"])
@roles(*EDITORS)
def index():
    conn = get_ops()
    error = None
    if request.method == "POST":
        form = request.form
        try:
            window_id = maintenance.add(conn, starts_at=_moment(form.get("starts_at", ""), "開始"), ends_at=_moment(form.get("ends_at", ""), "終了"),
                                        vendor=form.get("vendor", ""), description=form.get("description", ""), actor=g.staff.username)
        except maintenance.MaintenanceError as exc:
            error = exc.message
        else:
            flash(f"計画停止 {window_id} を登録しました。開始の{current_app.config['SONAE']['maintenance']['prepare_hours_before']:g}時間前から準備します。", "info")
            return redirect(url_for("maintenance.index"))
    return render_template("maintenance/index.html", windows=maintenance.windows(conn), error=error, form=request.form), (422 if error else 200)


@bp.route("/<int:window_id>/prepare", methods=["POST"])
@roles(*EDITORS)
def prepare(window_id):
    window = maintenance.prepare(current_app.config["SONAE"], window_id, actor=g.staff.username)
    flash("準備を終えました。" + ("すべて問題ありません。" if window.ready else "問題のある項目があります。") + "結果を情報政策課に送りました。",
          "info" if window.ready else "warning")
    return redirect(url_for("maintenance.index") + f"#window-{window_id}")


@bp.route("/<int:window_id>/cancel", methods=["POST"])
@roles(*EDITORS)
def cancel(window_id):
    maintenance.cancel(get_ops(), window_id, actor=g.staff.username)
    flash(f"計画停止 {window_id} を取り消しました。", "info")
    return redirect(url_for("maintenance.index"))


@bp.route("/<int:window_id>/declare", methods=["POST"])
@roles("supervisor")
def declare(window_id):
    maintenance.declare(get_ops(), window_id, actor=g.staff.username, role=g.staff.role)
    flash("ダウン対策モードを宣言しました（計画停止）。", "info")
    return redirect(url_for("supervisor.index"))

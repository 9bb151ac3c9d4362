"""/cancellations/: a 係長 cancels a certificate issued in error or spoiled
(書損・誤交付), in two steps — the serial and why, then the issuance it
names, confirmed — and sees the cancellations made. The auditor reads the
list."""

from __future__ import annotations

from flask import Blueprint, flash, g, redirect, render_template, request, url_for

from fallback import audit, drills, modes
from fallback.counter import cancellations, issuance
from fallback.db import get_ops
from fallback.errors import SonaeError
from fallback.staff.security import roles

bp = Blueprint("cancellations", __name__, url_prefix="/cancellations", template_folder="templates")


SERIAL_DIGITS = 18  # a serial has six digits and a box's range prefix; more was never printed
DRILL_RUNNING = ("訓練の実施中は、この画面では証明書を取り消せません（画面は訓練用と表示されますが、取消は本番の証明書に効きます）。"
                 "訓練を終えてから操作してください。急ぐときは、情報政策課がコンソールで取り消せます（sonae certificate cancel）。"
                 "訓練の証明書はもともと有効な証明書ではないため、取り消す必要はありません。")


def _serial(text: str) -> int:
    digits = text.strip().translate(str.maketrans("０１２３４５６７８９", "0123456789"))
    if not (digits.isascii() and digits.isdigit()):
        raise ValueError("発行番号は、証明書の右下に印刷された数字（例: 000123）を入力してください。")
    if len(digits.lstrip("0")) > SERIAL_DIGITS:
        raise ValueError(f"発行番号が長すぎます（{SERIAL_DIGITS}桁まで）。証明書の右下に印刷された数字を入力してください。")
    return int(digits)


def _drill_running() -> bool:
    """Whether a drill runs outside a real downtime: every screen then says
    that what is done on it is training (fallback.counter.screen), so none
    may cancel a real certificate — whichever terminal or role."""
    conn = get_ops()
    return drills.active_drill(conn) is not None and not modes.current(conn).counters_open


def _page(*, error: str | None = None, confirm: cancellations.Cancellable | None = None, status: int = 200):
    return render_template(
        "cancellations/index.html", error=error, confirm=confirm, form=request.values, reasons=cancellations.REASONS,
        kinds=issuance.KINDS, recent=cancellations.recent(get_ops()), drill_running=DRILL_RUNNING if _drill_running() else None,
    ), status


@bp.route("/")
@roles("supervisor", "auditor")
def index():
    return _page()


@bp.route("/", methods=["POST"])
@roles("supervisor")
def cancel():
    form, conn = request.form, get_ops()
    if _drill_running():
        tried = form.get("serial", "").strip()[:40]
        audit.record(conn, g.staff.username, "records.denied", "certificate.cancel", {"reason": "drill_running", "serial": tried}, drill=True)
        return _page(error=DRILL_RUNNING, status=409)
    try:
        serial = _serial(form.get("serial", ""))
        if form.get("confirmed") != "yes":
            cancellations.check_reason(form.get("reason", ""), form.get("note", ""))
            return _page(confirm=cancellations.cancellable(conn, serial))
        done = cancellations.cancel(conn, serial, reason=form.get("reason", ""), note=form.get("note", ""), actor=g.staff.username)
    except ValueError as exc:
        return _page(error=str(exc), status=422)
    except SonaeError as exc:
        return _page(error=exc.message, status=exc.status)
    flash(f"発行番号 {done.serial:06d} の証明書を取り消しました（{cancellations.REASON_NAMES[done.reason]}）。"
          "この証明書は、証明書の確認（/verify）で無効と表示されます。", "info")
    return redirect(url_for("cancellations.index") + f"#cancellation-{done.serial}")

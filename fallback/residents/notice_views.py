"""The supervisor's side of the residents' notice: let Sonae draft it from
the current situation, edit the three languages, approve (which publishes
it), take it down, and get the SNS posts and the entrance poster.

During a drill that includes the supervisor, everything here works on the
drill's own versions, drafted from the drill's scenario; they are never
published on the public page.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from flask import Blueprint, Response, abort, current_app, flash, g, redirect, render_template, request, url_for

from fallback import drills, modes
from fallback.counter.issuance import KINDS, REAL
from fallback.counter.state import counter_scope
from fallback.db import get_ops
from fallback.mirror.registry import snapshot_summary
from fallback.monitoring.probes import COMPONENT_LABELS
from fallback.ops import TOKYO, now
from fallback.residents import notice
from fallback.residents.notice_outputs import notice_sns_posts, notice_sns_text, poster_pdf
from fallback.residents.public_views import notice_page
from fallback.staff.security import roles

bp = Blueprint("notice_admin", __name__, url_prefix="/supervisor/notice", template_folder="templates")

STATUS_LABELS = {notice.DRAFT: "下書き", notice.APPROVED: "承認済み", notice.DISCARDED: "破棄"}


def _scope():
    scope, _ = counter_scope(get_ops(), g.staff, current_app.config["SONAE"])
    return scope if scope is not None and scope.is_drill else REAL


def _version_or_404(version_id: int) -> notice.NoticeVersion:
    version = notice.get(get_ops(), version_id)
    if version is None:
        abort(404, "その版はありません。")
    return version


@bp.route("/")
@roles("supervisor")
def index():
    conn = get_ops()
    scope = _scope()
    return render_template(
        "notice/index.html", scope=scope, state=modes.current(conn), public_version=notice.current_public(conn),
        outdated_notice=None if scope.is_drill else notice.outdated_public_notice(conn),
        versions=notice.versions(conn, scope=scope.name, drill_id=scope.drill_id), status_labels=STATUS_LABELS,
        drill=drills.get(conn, scope.drill_id) if scope.is_drill else None,
    )


@bp.route("/draft", methods=["POST"])
@roles("supervisor")
def draft():
    conn = get_ops()
    config = current_app.config["SONAE"]
    scope = _scope()
    summary = snapshot_summary(config)
    scenario = drills.get(conn, scope.drill_id).scenario if scope.is_drill else None
    situation = notice.assess(conn, config, data_as_of=summary.as_of if summary else None, drill_scenario=scenario)
    version_id = notice.create_draft(conn, config, situation, actor=g.staff.username, scope=scope.name, drill_id=scope.drill_id)
    flash("現在の状況からお知らせの下書きを作りました。内容を確認・修正してから承認してください。", "info")
    return redirect(url_for("notice_admin.version", version_id=version_id))


def _next_update_from_form(text: str) -> dt.datetime | None:
    text = text.strip()
    if not text:
        return None
    try:
        return dt.datetime.fromisoformat(text).replace(tzinfo=TOKYO)
    except ValueError:
        raise notice.NoticeError("次回更新予定の日時を読み取れません。") from None


def _texts_from_form() -> dict:
    return {language: {"title": request.form.get(f"{language}_title", ""), "body": request.form.get(f"{language}_body", "")}
            for language in notice.LANGUAGES}


def _save_posted(version_id: int) -> str | None:
    """Save the edits the form posted; None, or why they cannot be saved."""
    try:
        notice.save_draft(get_ops(), version_id, _texts_from_form(), _next_update_from_form(request.form.get("next_update", "")),
                          actor=g.staff.username)
    except notice.NoticeError as exc:
        return str(exc)
    return None


def _version_page(shown: notice.NoticeVersion, error: str | None = None):
    """The version page; after a refused save, with what was typed (never dropped)."""
    config = current_app.config["SONAE"]
    if error is not None:
        shown = dataclasses.replace(shown, texts=_texts_from_form())
    return render_template(
        "notice/version.html", version=shown, error=error, status_labels=STATUS_LABELS, languages=notice.LANGUAGES,
        sns=notice_sns_posts(shown, config) if error is None else None, sns_limit=config["notice"]["sns_post_chars"],
        mode_labels=modes.LABELS, component_labels=COMPONENT_LABELS, kinds=KINDS,
        next_update_value=request.form.get("next_update", "") if error is not None else (
            shown.next_update.astimezone(TOKYO).strftime("%Y-%m-%dT%H:%M") if shown.next_update else ""),
    ), (422 if error else 200)


@bp.route("/<int:version_id>", methods=["GET", "POST"])
@roles("supervisor")
def version(version_id):
    shown = _version_or_404(version_id)
    if request.method == "POST":
        error = _save_posted(version_id)
        if error is not None:
            return _version_page(shown, error)
        flash("下書きを保存しました。", "info")
        return redirect(url_for("notice_admin.version", version_id=version_id))
    return _version_page(shown)


def _act(action, version_id: int, done: str):
    try:
        action(get_ops(), version_id, actor=g.staff.username)
    except notice.NoticeError as exc:
        flash(str(exc), "error")
    else:
        flash(done, "info")


@bp.route("/<int:version_id>/approve", methods=["POST"])
@roles("supervisor")
def approve(version_id):
    """Approve what the supervisor sees: the edits on the page are saved
    first (never dropped), then that text is approved."""
    version = _version_or_404(version_id)
    if "ja_title" in request.form:
        error = _save_posted(version_id)
        if error is not None:
            return _version_page(version, error)
    _act(notice.approve, version_id, "承認しました。" + ("訓練用の版のため公開はされません。" if version.is_drill else "公開ページに掲載しました。"))
    return redirect(url_for("notice_admin.version", version_id=version_id))


@bp.route("/<int:version_id>/discard", methods=["POST"])
@roles("supervisor")
def discard(version_id):
    _version_or_404(version_id)
    _act(notice.discard, version_id, "下書きを破棄しました。")
    return redirect(url_for("notice_admin.index"))


@bp.route("/<int:version_id>/copy", methods=["POST"])
@roles("supervisor")
def copy(version_id):
    _version_or_404(version_id)
    new_id = notice.copy_as_draft(get_ops(), version_id, actor=g.staff.username)
    flash("この版をもとに新しい下書きを作りました。", "info")
    return redirect(url_for("notice_admin.version", version_id=new_id))


@bp.route("/withdraw", methods=["POST"])
@roles("supervisor")
def withdraw():
    try:
        notice.withdraw(get_ops(), actor=g.staff.username)
    except notice.NoticeError as exc:
        flash(str(exc), "error")
    else:
        flash("公開ページからお知らせを取り下げました。", "info")
    return redirect(url_for("notice_admin.index"))


@bp.route("/<int:version_id>/poster.pdf")
@roles("supervisor")
def poster(version_id):
    version = _version_or_404(version_id)
    pdf = poster_pdf(version, current_app.config["SONAE"], printed_at=now())
    return Response(pdf, mimetype="application/pdf",
                    headers={"Content-Disposition": f'inline; filename="notice-{version_id}.pdf"'})


@bp.route("/<int:version_id>/sns.txt")
@roles("supervisor")
def sns(version_id):
    version = _version_or_404(version_id)
    return Response(notice_sns_text(version, current_app.config["SONAE"]), mimetype="text/plain; charset=utf-8")


@bp.route("/<int:version_id>/preview")
@roles("supervisor")
def preview(version_id):
    return notice_page(_version_or_404(version_id), preview=True)

"""The public side: the approved outage notice and the counters' waiting
times, for residents, the ward website and the screen at the entrance.

No login, no staff controls, no resident data: only the notice a
supervisor approved, its timestamps, and per office a name and minutes.
The page's content renews itself every [notice] refresh_seconds (the page
script fetches it again and replaces it in place: a meta refresh would
reload the whole page under a reader, which accessibility rules forbid),
and the waits are also served as JSON for the ward website or a
congestion display to poll.
"""

from __future__ import annotations

import datetime as dt

from flask import Blueprint, current_app, jsonify, make_response, render_template

from fallback import modes
from fallback.db import get_ops
from fallback.ops import now
from fallback.residents import notice
from fallback.residents.notice import LANGUAGES, next_update_line, time_text
from fallback.residents.waits import OfficeWait, estimate_waits
from fallback.staff.security import public

bp = Blueprint("public", __name__, template_folder="templates")


def wait_text(wait: OfficeWait) -> dict[str, str]:
    if wait.minutes is None:
        return {"ja": "推計できません（直近の記録が少ないため）", "en": "no estimate (too few recent records)"}
    if wait.at_least:
        return {"ja": f"{wait.minutes}分以上", "en": f"{wait.minutes} min or more"}
    return {"ja": f"約{wait.minutes}分", "en": f"about {wait.minutes} min"}


def notice_page(version: notice.NoticeVersion | None, *, preview: bool = False):
    """The public page for `version` (None: no notice). Staff preview a
    draft through the same template, so what they approve is what
    residents see."""
    config = current_app.config["SONAE"]
    conn = get_ops()
    at = now()
    waits = estimate_waits(conn, config, at=at) if modes.current(conn).mode == modes.DOWNTIME else None
    return render_template(
        "public/notice.html",
        version=version,
        preview=preview,
        languages=LANGUAGES,
        municipality=config["municipality"]["name"],
        published=time_text(dt.datetime.fromisoformat(version.approved_at), "ja", config) if version and version.approved_at else None,
        next_update={language: next_update_line(version.next_update, language, config) for language in LANGUAGES} if version else None,
        waits=[(wait, wait_text(wait)) for wait in waits] if waits is not None else None,
        updated=time_text(at, "ja", config),
        refresh_seconds=config["notice"]["refresh_seconds"],
    )


@bp.route("/notice", endpoint="notice")
@public
def notice_view():
    response = make_response(notice_page(notice.current_public(get_ops())))
    # Always revalidated: a resident must never see yesterday's notice.
    response.headers["Cache-Control"] = "no-cache"
    return response


@bp.route("/notice/waits.json", endpoint="waits")
@public
def waits_json():
    config = current_app.config["SONAE"]
    at = now()
    response = jsonify(updated_at=at.isoformat(timespec="seconds"),
                       offices=[wait.public() for wait in estimate_waits(get_ops(), config, at=at)])
    response.headers["Cache-Control"] = "no-cache"
    return response

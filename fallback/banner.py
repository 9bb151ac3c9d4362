"""What every screen shows at the top: the mode and the data-as-of time of
the snapshot, turning to a warning past the configured age. The eight-day
Ota outage must be visible on every screen, not discovered on a certificate.
"""

from __future__ import annotations

from flask import current_app, g, request, url_for

from fallback import clock, drills, modes
from fallback.counter.rendering import print_settings
from fallback.counter.service import NO_DRILL_REGISTER
from fallback.counter.state import drill_scope
from fallback.db import get_ops
from fallback.mirror.availability import unavailable_message
from fallback.mirror.registry import format_age, get_register, register_for, register_problem, register_summary, snapshot_store
from fallback.staff.users import ROLES
from printing.wareki import format_wareki_datetime
from sync import crypto

NAV = (
    # (endpoint, label, roles)
    ("counter.search", "窓口（検索・交付）", {"clerk", "supervisor"}),
    ("counter.deferred", "後日対応の受付", {"clerk", "supervisor"}),
    ("filings.index", "届出の受付", {"clerk", "supervisor"}),
    ("holds.index", "保留", {"supervisor"}),
    ("reentry.index", "復旧後の入力", {"supervisor"}),
    ("maintenance.index", "計画停止", {"supervisor", "it"}),
    ("supervisor.index", "係長メニュー", {"supervisor"}),
    ("notice_admin.index", "住民向けのお知らせ", {"supervisor"}),
    ("drills.index", "訓練", {"drill_coordinator", "supervisor", "clerk"}),
    ("monitor.dashboard", "監視", {"it", "supervisor"}),
    ("runbooks.index", "手順書", {"clerk", "supervisor", "drill_coordinator", "it", "auditor"}),
    ("auditor.index", "監査", {"auditor"}),
)


def banner_context() -> dict:
    config = current_app.config["SONAE"]
    state = modes.current(get_ops())
    eras = print_settings(config).eras
    warning_hours = config["counter"]["data_age_warning_hours"]
    level, warning, as_of, as_of_text, age_text = "ok", None, None, None, None
    drill = drills.active_drill(get_ops())
    # A drill's participants see their drill register's data-as-of (a
    # long-outage drill's is days old), exactly as their certificates print it.
    participant = drill is not None and g.get("staff") is not None and drill.includes(g.staff.username, g.staff.terminal)
    try:
        summary = register_summary(register_for(drill_scope(drill)) if participant else get_register())
        problem = None if participant else register_problem()
    except crypto.DatabaseError as exc:  # it opens, but its data cannot be read: every page says so, none fails
        summary, problem = None, exc
    if summary is None:
        level = "danger"
        warning = NO_DRILL_REGISTER if participant else unavailable_message(problem, snapshot_store(config))
    else:
        as_of, age_hours = summary.as_of, summary.age_hours
        as_of_text = format_wareki_datetime(as_of, eras)
        age_text = format_age(age_hours)
        if age_hours > warning_hours:
            level = "danger"
            warning = f"データが{age_text}前のものです（基準 {warning_hours:g}時間）。交付前に内容が古い可能性を住民の方に説明してください。"
    doubts = clock.doubts(get_ops(), data_as_of=summary.as_of if summary else None)
    if doubts:
        level = "danger"
        warning = clock.warning_message(doubts) + "時計が直るまで証明書は交付できません。情報政策課に連絡してください。"
    if level == "ok" and state.mode != modes.STANDBY:
        # Every mode but standby has its own colour, so nobody mistakes the
        # downtime counter for the normal one.
        level = state.mode
    return {
        "mode": state.mode,
        "mode_label": state.label,
        "as_of": as_of,
        "as_of_text": as_of_text,
        "age_text": age_text,
        "level": level,
        "warning": warning,
        "drill": drill,
    }


def nav_items() -> list[dict]:
    if g.get("staff") is None:
        return []
    items = [{"url": url_for(endpoint), "label": label, "active": False}
             for endpoint, label, allowed in NAV if g.staff.role in allowed and endpoint in current_app.view_functions]
    # The longest matching prefix wins: /supervisor/notice/ is the notice page, not the supervisor's desk.
    matching = [item for item in items if request.path.startswith(item["url"])]
    if matching:
        max(matching, key=lambda item: len(item["url"]))["active"] = True
    return items


def init_app(app) -> None:
    @app.context_processor
    def inject_banner():
        return {"banner": banner_context(), "nav_items": nav_items(), "role_labels": ROLES}

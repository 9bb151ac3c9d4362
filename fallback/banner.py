"""Every screen's chrome: the banner (mode, data-as-of, the terminal, from
fallback.counter.screen, which /api/v1/status answers too, so that the page
script keeps it current) and the menu."""

from __future__ import annotations

from flask import current_app, g, request, url_for

from fallback.counter import screen
from fallback.db import get_ops
from fallback.staff.users import ROLES

NAV = (
    # (endpoint, label, roles)
    ("counter.search", "窓口（検索・交付）", {"clerk", "supervisor"}),
    ("counter.deferred", "後日対応の受付", {"clerk", "supervisor"}),
    ("filings.index", "届出の受付", {"clerk", "supervisor"}),
    ("holds.index", "保留", {"supervisor"}),
    ("reentry.index", "復旧後の入力", {"supervisor"}),
    ("maintenance.index", "計画停止", {"supervisor", "it"}),
    ("supervisor.index", "係長メニュー", {"supervisor"}),
    ("cancellations.index", "証明書の取消", {"supervisor", "auditor"}),
    ("notice_admin.index", "住民向けのお知らせ", {"supervisor"}),
    ("drills.index", "訓練", {"drill_coordinator", "supervisor", "clerk"}),
    ("monitor.dashboard", "監視", {"it", "supervisor"}),
    ("runbooks.index", "手順書", {"clerk", "supervisor", "drill_coordinator", "it", "auditor"}),
    ("auditor.index", "監査", {"auditor"}),
)


def banner_context() -> dict:
    return screen.banner(get_ops(), current_app.config["SONAE"], g.get("staff"))


def screen_context() -> dict:
    """What the page script needs to keep this screen current: where to
    poll, what this page was rendered with."""
    staff = g.get("staff")
    if staff is None:
        return {}
    counter = screen.counter_state(get_ops(), current_app.config["SONAE"], staff)
    return {"status_url": url_for("api.status"), "login_url": url_for("auth.login", expired=1),
            "poll_ms": screen.POLL_INTERVAL_MS, "counter_open": "" if counter is None else ("1" if counter["open"] else "0"),
            "revision": screen.revision(get_ops())}


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
        return {"banner": banner_context(), "screen": screen_context(), "nav_items": nav_items(), "role_labels": ROLES}

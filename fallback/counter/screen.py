"""What every staff screen shows at the top and keeps current: the mode,
the data-as-of of the register this staff member works on (turning to a
warning past the configured age), whether their counter is open, and a
revision of what the self-refreshing pages show.

The page's banner (fallback.banner) renders it, and GET /api/v1/status
answers it, which every open screen polls every few seconds
(fallback/static/sonae.js): short polling, not server-sent events, which
would each hold one of waitress's threads. The eight-day Ota outage must
be visible on every screen, not discovered on a certificate.
"""

from __future__ import annotations

import hashlib

from fallback import clock, disk, drills, modes
from fallback.config import Config
from fallback.counter.rendering import print_settings
from fallback.counter.service import NO_DRILL_REGISTER, NO_TERMINAL
from fallback.counter.state import COUNTER_ROLES, counter_scope, drill_scope
from fallback.mirror.availability import unavailable_message
from fallback.mirror.registry import format_age, get_register, register_for, register_problem, register_summary, snapshot_store
from printing.wareki import format_wareki_datetime
from sync import crypto

# How often an open screen asks (milliseconds, for the page script).
POLL_INTERVAL_MS = 5000

# The newest row of what the self-refreshing pages (the supervisor's desk,
# the IT dashboard, recovery) show: when one changes, they reload their
# content. Each is one index step, however long the tables grow.
_REVISION_SQL = """SELECT
    (SELECT coalesce(max(id), 0) FROM mode_changes),
    (SELECT coalesce(max(id), 0) FROM requests),
    (SELECT coalesce(max(id), 0) FROM deferred_requests),
    (SELECT max(status_changed_at) FROM deferred_requests),
    (SELECT id || ':' || outcome FROM sync_runs ORDER BY id DESC LIMIT 1),
    (SELECT group_concat(component || status, ',') FROM component_status),
    (SELECT coalesce(max(id), 0) || ':' || count(resolved_at) FROM alerts),
    (SELECT coalesce(max(id), 0) || ':' || coalesce(max(approved_at), '') || coalesce(max(withdrawn_at), '') FROM notice_versions),
    (SELECT coalesce(max(id), 0) || ':' || coalesce(max(status_changed_at), '') FROM recovery_checks),
    (SELECT coalesce(max(id), 0) FROM recovery_attempts),
    (SELECT coalesce(max(id), 0) FROM drill_events)"""


def revision(conn) -> str:
    row = conn.execute(_REVISION_SQL).fetchone()
    return hashlib.sha256(repr(row).encode()).hexdigest()[:16]


def banner(conn, config: Config, staff) -> dict:
    """The banner of every screen for `staff` (None: nobody logged in)."""
    state = modes.current(conn)
    eras = print_settings(config).eras
    warning_hours = config["counter"]["data_age_warning_hours"]
    level, warning, as_of, as_of_text, age_text = "ok", None, None, None, None
    drill = drills.active_drill(conn)
    # A drill's participants see their drill register's data-as-of (a
    # long-outage drill's is days old), exactly as their certificates print it.
    participant = drill is not None and staff is not None and drill.includes(staff.username, staff.terminal)
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
    doubts = clock.doubts(conn, data_as_of=summary.as_of if summary else None)
    if doubts:
        level = "danger"
        warning = clock.warning_message(doubts) + "時計が直るまで証明書は交付できません。情報政策課に連絡してください。"
    if not disk.room_for_a_certificate(config, conn):
        level = "danger"
        warning = ("装置のディスクが一杯で、証明書を交付・記録できません。窓口は紙の手順（手順書「システムが全く使えない場合」）に"
                   "切り替え、情報政策課に連絡してください。")
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


def counter_state(conn, config: Config, staff) -> dict | None:
    """Whether `staff`'s counter is open now and, if not, why (None for a
    role that works no counter)."""
    if staff is None or staff.role not in COUNTER_ROLES:
        return None
    scope, locked = counter_scope(conn, staff, config)
    if scope is not None and not staff.terminal:
        scope, locked = None, NO_TERMINAL
    if scope is None:
        return {"open": False, "scope": None, "message": f"窓口は閉じています（検索・交付はできません）。{locked}"}
    where = "訓練の窓口" if scope.is_drill else "窓口"
    return {"open": True, "scope": scope.name, "message": f"{where}が開いています。検索と交付ができます。"}


def status(conn, config: Config, staff) -> dict:
    """GET /api/v1/status: the banner, the counter and the revision, as JSON."""
    shown = banner(conn, config, staff)
    drill = shown.pop("drill")
    as_of = shown.pop("as_of")
    return {
        "mode": shown["mode"], "mode_label": shown["mode_label"],
        "banner": {**shown, "as_of": as_of.isoformat() if as_of else None,
                   "drill": None if drill is None else {"id": drill.id, "scenario_label": drill.scenario_label}},
        "counter": counter_state(conn, config, staff),
        "revision": revision(conn),
        "poll_interval_ms": POLL_INTERVAL_MS,
    }

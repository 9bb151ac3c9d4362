"""Template filters: how resident data reads on a counter screen — dates
the way the certificate will print them (和暦 for Japanese residents, 西暦
for foreign residents), addresses with their 方書 — and how staff and the
counter's codes read on every Japanese screen (display names, never login
names; rules and outcomes in Japanese, never their codes)."""

from __future__ import annotations

import datetime as dt
import json

from flask import g

from fallback.counter import issuance, labels
from fallback.counter.rendering import print_settings
from fallback.db import get_ops
from fallback.ops import TOKYO
from fallback.staff.users import ROLES, SYSTEM_DISPLAY_NAME, display_names
from printing.wareki import format_seireki, format_wareki


def init_app(app) -> None:
    eras = print_settings(app.config["SONAE"]).eras

    @app.template_filter("birth")
    def birth(resident: dict) -> str:
        date = dt.date.fromisoformat(resident["birth_date"])
        if resident.get("foreign"):
            return format_seireki(date)
        return f"{format_wareki(date, eras)}（{date.year}）"

    @app.template_filter("wareki")
    def wareki(iso_date: str) -> str:
        return issuance.wareki_text(iso_date, eras)

    @app.template_filter("address")
    def address(resident: dict) -> str:
        a = resident["address"]
        text = f"{a['prefecture']}{a['city']}{a['town']}{a['banchi']}"
        return f"{text}　{a['katagaki']}" if a.get("katagaki") else text

    @app.template_filter("staff_name")
    def staff_name(username: str | None) -> str:
        if not username:
            return ""
        if "display_names" not in g:  # one query per page, however many names it shows
            g.display_names = {**display_names(get_ops()), "system": SYSTEM_DISPLAY_NAME}
        return g.display_names.get(username, username)

    app.add_template_filter(labels.rule_label, "rule_label")
    app.add_template_filter(labels.outcome_label, "outcome_label")
    app.add_template_filter(lambda role: ROLES.get(role, role), "role_label")

    @app.template_filter("jst")
    def jst(moment: str) -> str:
        """An ISO 8601 time with its offset, as every screen shows times:
        Japan time, to the minute (a time stored with another offset is
        converted, never shown as stored)."""
        return dt.datetime.fromisoformat(moment).astimezone(TOKYO).strftime("%Y-%m-%d %H:%M")

    @app.template_filter("fromjson")
    def fromjson(text: str):
        return json.loads(text)

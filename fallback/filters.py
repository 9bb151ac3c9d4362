"""Template filters: how resident data reads on a counter screen — dates
the way the certificate will print them (和暦 for Japanese residents, 西暦
for foreign residents), addresses with their 方書."""

from __future__ import annotations

import datetime as dt
import json

from fallback.counter.rendering import print_settings
from printing.wareki import format_seireki, format_wareki


def init_app(app) -> None:
    eras = print_settings(app.config["SONAE"]).eras

    @app.template_filter("birth")
    def birth(resident: dict) -> str:
        date = dt.date.fromisoformat(resident["birth_date"])
        if resident.get("foreign"):
            return format_seireki(date)
        return f"{format_wareki(date, eras)}（{date.year}）"

    @app.template_filter("address")
    def address(resident: dict) -> str:
        a = resident["address"]
        text = f"{a['prefecture']}{a['city']}{a['town']}{a['banchi']}"
        return f"{text}　{a['katagaki']}" if a.get("katagaki") else text

    @app.template_filter("fromjson")
    def fromjson(text: str):
        return json.loads(text)

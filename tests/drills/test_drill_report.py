"""The drill report's figures against a scripted drill (and last year's),
with drill and real records interleaved in time."""

from __future__ import annotations

from pathlib import Path

import pytest

from fallback import documents, drills, runbooks
from fallback.drills import report as drill_report
from fallback.ops import open_ops
from tests.support import pdf_text

from . import scripted

RUNBOOKS = runbooks.load_all(Path(__file__).resolve().parents[2] / "runbooks")
TERMINALS = [{"id": "本庁1", "office": "本庁"}, {"id": "本庁2", "office": "本庁"}]


@pytest.fixture
def scripted_drills(sonae_env):
    conn = open_ops(sonae_env)
    last_year = scripted.drill(conn, title="令和7年度 訓練", started="2025-09-16T09:00:00.000+09:00",
                               ended="2025-09-16T11:00:00.000+09:00", declared="2025-09-16T09:12:00.000+09:00")
    for i, at in enumerate(("09:30", "09:50", "10:20", "10:40")):
        scripted.request(conn, f"2025-09-16T{at}:00.000+09:00", scope="drill", drill_id=last_year, serial=800001 + i)
    scripted.request(conn, "2025-09-16T10:00:00.000+09:00", scope="drill", drill_id=last_year, outcome="refused", rule="support_measure")

    this_year = scripted.drill(conn, title="令和8年度 訓練", started="2026-09-15T09:00:00.000+09:00",
                               ended="2026-09-15T11:30:00.000+09:00", declared="2026-09-15T09:07:00.000+09:00",
                               suspended=("2026-09-15T10:00:00.000+09:00", "2026-09-15T10:30:00.000+09:00"))
    serial = 800005
    for terminal, times in (("本庁1", ("09:20", "09:40", "10:40", "11:10")), ("本庁2", ("09:25", "10:50"))):
        for at in times:
            scripted.request(conn, f"2026-09-15T{at}:00.000+09:00", terminal=terminal, scope="drill", drill_id=this_year, serial=serial)
            serial += 1
    for rule in ("removed_resident", "johyo_for_active", "support_measure"):
        scripted.request(conn, "2026-09-15T09:45:00.000+09:00", scope="drill", drill_id=this_year, outcome="refused", rule=rule)
    scripted.deferred(conn, "2026-09-15T09:50:00.000+09:00", "tennyu", scope="drill", drill_id=this_year)
    # real work at the same time must not count
    scripted.request(conn, "2026-09-15T09:30:00.000+09:00", terminal="本庁1", serial=900001)
    scripted.request(conn, "2026-09-15T09:31:00.000+09:00", outcome="refused", rule="removed_resident")
    scripted.deferred(conn, "2026-09-15T09:32:00.000+09:00", "tenshutsu")

    book = next(b for b in RUNBOOKS if b.slug == "06-nenji-kunren")
    declare_step, serve_step = book.steps[6], book.steps[7]
    scripted.tick(conn, "2026-09-15T09:07:30.000+09:00", book, declare_step, drill_id=this_year)
    scripted.tick(conn, "2026-09-15T09:21:00.000+09:00", book, serve_step, actor="coord", drill_id=this_year)
    scripted.tick(conn, "2026-09-15T09:22:00.000+09:00", book, serve_step, actor="coord", drill_id=this_year, done=False)
    scripted.tick(conn, "2026-09-15T09:08:00.000+09:00", book, serve_step)  # a real tick
    return conn, this_year, declare_step


def test_figures_are_measured_from_this_drills_records_only(scripted_drills):
    conn, drill_id, declare_step = scripted_drills
    figures = drill_report.figures(conn, drills.get(conn, drill_id), terminals=TERMINALS, runbook_list=RUNBOOKS)
    assert figures.active_minutes == 120  # 150 minutes less the 30-minute suspension
    assert figures.minutes_to_declaration == 7
    assert [(c.terminal, c.certificates, c.minutes_to_first, c.per_hour) for c in figures.counters] == [
        ("本庁1", 4, 20, 2.0), ("本庁2", 2, 25, 1.0)]
    assert figures.hourly == {"本庁1": {"09": 2, "10": 1, "11": 1}, "本庁2": {"09": 1, "10": 1}}
    assert figures.certificates_per_counter_hour == 1.5
    assert figures.refusals == {"johyo_for_active": 1, "removed_resident": 1, "support_measure": 1}
    assert figures.errors_caught == 3 and figures.wrong_type_attempts == 2
    assert figures.deferred_by_kind == {"tennyu": 1}
    assert [(s.tick.step_id, s.step_number, s.minutes_from_start) for s in figures.steps_done] == [(declare_step.id, 7, 7.5)]
    scenario_steps = sum(len(b.steps) for b in RUNBOOKS if b.slug in runbooks.FOR_SCENARIO["full_outage"])
    assert figures.steps_total == scenario_steps


def test_the_report_compares_with_last_years_drill(scripted_drills, tmp_path):
    conn, drill_id, _ = scripted_drills
    text = drill_report.build(conn, drill_id, terminals=TERMINALS, runbook_list=RUNBOOKS)
    assert "前年の訓練：令和7年度 訓練（2025-09-16 09:00）" in text
    assert "| 障害発生から宣言まで | 7分 | 12分 | -5 |" in text
    assert "| 最初の交付まで（最も早い窓口） | 20分 | 30分 | -10 |" in text
    assert "| 交付した証明書 | 6枚 | 4枚 | +2 |" in text
    assert "| 見つけた誤り（お断り） | 3件 | 1件 | +2 |" in text
    assert "| 本庁1 | 本庁 | 2026-09-15 09:20 | 20分 | 4 | 2.0 |" in text
    assert "| 除票の方に除票の写し以外の証明書 | 1 |" in text
    assert "実際の障害のため中断" in text and "訓練上の宣言" in text

    pdf = pdf_text(documents.markdown_pdf("訓練報告書", text, drill=True), tmp_path)
    flat = "".join(pdf.split())
    assert "訓練報告書：令和8年度訓練" in flat and "訓練用の文書です" in flat and "障害発生から宣言まで7分12分-5" in flat


def test_the_first_drill_has_nothing_to_compare_with(sonae_env):
    conn = open_ops(sonae_env)
    drill_id = scripted.drill(conn, title="初回", started="2026-09-15T09:00:00.000+09:00", ended="2026-09-15T10:00:00.000+09:00")
    text = drill_report.build(conn, drill_id, terminals=TERMINALS, runbook_list=RUNBOOKS)
    assert "前年の訓練の記録はありません" in text and "| 障害発生から宣言まで | — | — | — |" in text
    assert "| 本庁1 | 本庁 | — | — | 0 | —（データ不足） |" in text  # a participating counter that issued nothing is shown


def test_the_report_page_and_pdf_through_the_app(appliance, login, tmp_path):
    coordinator = login("coord")
    created = coordinator.post("/drills/new", {"scenario": "juki_net", "title": "部分障害訓練", "planned_start": "2026-09-15T09:00",
                                               "planned_end": "2026-09-15T10:00", "participants": ["clerk1"]})
    drill_id = int(created.headers["Location"].rsplit("/", 1)[1])
    coordinator.post(f"/drills/{drill_id}/start")
    coordinator.post(f"/drills/{drill_id}/declare", {"reason": "住基ネット連携障害（訓練）"})
    coordinator.post(f"/drills/{drill_id}/end")
    page = coordinator.get(f"/drills/{drill_id}/report").get_data(as_text=True)
    assert "訓練報告書：部分障害訓練" in page and "住基ネット連携のみの障害" in page
    assert "<td>障害発生から宣言まで</td>" in page
    pdf = coordinator.get(f"/drills/{drill_id}/report.pdf")
    assert "訓練報告書" in pdf_text(pdf.data, tmp_path)
    assert login("clerk1").get(f"/drills/{drill_id}/report").status_code == 403


def test_sonae_drill_report_writes_markdown_or_pdf(scripted_drills, tmp_path):
    import os
    import subprocess
    import sys

    _, drill_id, _ = scripted_drills
    run = lambda *args: subprocess.run([sys.executable, "-m", "fallback.cli", "drill", *args],  # noqa: E731
                                       capture_output=True, text=True, env=dict(os.environ))
    markdown = run("report", str(drill_id))
    assert markdown.returncode == 0 and "| 障害発生から宣言まで | 7分 | 12分 | -5 |" in markdown.stdout
    written = run("report", str(drill_id), "--pdf", str(tmp_path / "report.pdf"))
    assert written.returncode == 0 and "訓練報告書" in pdf_text((tmp_path / "report.pdf").read_bytes(), tmp_path)
    missing = run("report", "999")
    assert missing.returncode == 1 and missing.stderr.strip() == "Error: 訓練 999 はありません。"
    assert "令和8年度 訓練" in run("list").stdout


def test_a_rate_needs_half_an_hour_and_two_certificates():
    """One certificate a quarter of a minute into a drill is no 「262.4枚/時」."""
    assert drill_report.rate_per_hour(1, 0.23) is None
    assert drill_report.rate_per_hour(1, 120) is None
    assert drill_report.rate_per_hour(2, 29.9) is None
    assert drill_report.rate_per_hour(2, 30) == 4.0

"""The SLA arithmetic on a constructed month of probes (with the appliance
switched off for a while: unknown, never up), and the page and PDF a ward
hands to its vendor."""

from __future__ import annotations

import datetime as dt
import subprocess
import threading

import pytest

from fallback.app import create_app
from fallback.monitoring import sla
from fallback.ops import TOKYO, Transaction, open_ops
from fallback.staff import users
from tests.support import PASSWORD, Staff

FEBRUARY = 28 * 86400
OUTAGE_START, OUTAGE_END = dt.datetime(2026, 2, 10, 10, 0, tzinfo=TOKYO), dt.datetime(2026, 2, 10, 12, 0, tzinfo=TOKYO)
LAST_BEFORE_GAP, GAP_END = dt.datetime(2026, 2, 20, 0, 0, tzinfo=TOKYO), dt.datetime(2026, 2, 20, 6, 0, tzinfo=TOKYO)
INTERVAL_S = 60


def failing(component: str, moment: dt.datetime) -> bool:
    if component == "register":  # two hours: missed nothing
        return OUTAGE_START <= moment < OUTAGE_END
    if component == "juki_net":  # twenty hours: missed whatever the unknown time was
        return dt.datetime(2026, 2, 3, 0, 0, tzinfo=TOKYO) <= moment < dt.datetime(2026, 2, 3, 20, 0, tzinfo=TOKYO)
    if component == "batch":  # twelve hours: met or missed depending on the unknown time
        return dt.datetime(2026, 2, 5, 0, 0, tzinfo=TOKYO) <= moment < dt.datetime(2026, 2, 5, 12, 0, tzinfo=TOKYO)
    raise AssertionError(component)


@pytest.fixture
def february(configure):
    """A month of one-minute probes of register, juki_net and batch (the
    synthetic read was never configured), with the appliance off from
    00:00 to 06:00 on 20 February."""
    config = configure(PROBES_INTERVAL_S=INTERVAL_S)
    rows, moment = [], dt.datetime(2026, 2, 1, tzinfo=TOKYO)
    while moment < dt.datetime(2026, 3, 1, tzinfo=TOKYO):
        if not LAST_BEFORE_GAP < moment < GAP_END:
            stamp = moment.isoformat(timespec="milliseconds")
            for component in ("register", "juki_net", "batch"):
                ok = not failing(component, moment)
                rows.append((stamp, component, int(ok), "ok" if ok else "down", 42.0))
        moment += dt.timedelta(seconds=INTERVAL_S)
    conn = open_ops(config)
    with Transaction(conn):
        conn.executemany("INSERT INTO probes (at, component, ok, state, latency_ms) VALUES (?,?,?,?,?)", rows)
    conn.close()
    return config


def test_monthly_availability_counts_the_appliance_being_off_as_unknown(february):
    conn = open_ops(february)
    report = sla.monthly_report(conn, february, 2026, 2, dt.datetime(2026, 3, 5, tzinfo=TOKYO))
    conn.close()
    assert report.complete and report.threshold_percent == 97.5
    rows = {a.component: a for a in report.components}

    # The last probe before the gap stands for three intervals, then nothing is known.
    unknown = (GAP_END - LAST_BEFORE_GAP).total_seconds() - 3 * INTERVAL_S
    register = rows["register"]
    assert register.down_s == 7200
    assert register.unknown_s == unknown == 21_420
    assert register.up_s == FEBRUARY - 7200 - unknown
    assert [(i.start, i.end) for i in register.downtime] == [(OUTAGE_START, OUTAGE_END)]
    assert [(i.start, i.end) for i in register.gaps] == [(LAST_BEFORE_GAP + dt.timedelta(minutes=3), GAP_END)]
    assert register.measured_percent == pytest.approx(100 * (FEBRUARY - 7200 - unknown) / (FEBRUARY - unknown))
    assert register.lower_percent == pytest.approx(100 * (FEBRUARY - 7200 - unknown) / FEBRUARY)  # 98.817 %
    assert register.upper_percent == pytest.approx(100 * (FEBRUARY - 7200) / FEBRUARY)
    assert report.verdict(register) == sla.MET

    juki_net = rows["juki_net"]
    assert juki_net.down_s == 20 * 3600
    assert juki_net.upper_percent == pytest.approx(97.0238, abs=1e-4)
    assert report.verdict(juki_net) == sla.MISSED

    batch = rows["batch"]
    assert batch.lower_percent == pytest.approx(97.3289, abs=1e-4)
    assert batch.upper_percent == pytest.approx(98.2143, abs=1e-4)
    assert report.verdict(batch) == sla.UNDETERMINED, "the unknown hours decide, so the report does not guess"

    synthetic = rows["synthetic"]
    assert synthetic.unknown_s == FEBRUARY and synthetic.measured_percent is None
    assert report.verdict(synthetic) == sla.UNDETERMINED


def test_a_month_in_progress_ends_now_and_a_future_month_is_refused(february):
    conn = open_ops(february)
    halfway = dt.datetime(2026, 2, 15, tzinfo=TOKYO)
    report = sla.monthly_report(conn, february, 2026, 2, halfway)
    assert not report.complete and report.end == halfway
    assert report.components[0].period_s == 14 * 86400
    with pytest.raises(ValueError):
        sla.monthly_report(conn, february, 2026, 3, halfway)
    conn.close()


@pytest.fixture
def it_staff(february):
    conn = open_ops(february)
    users.add_user(conn, "it1", "情報 一郎", "it", PASSWORD, actor="test")
    users.add_user(conn, "clerk1", "窓口 花子", "clerk", PASSWORD, actor="test")
    conn.close()
    app = create_app(february)
    app.config["TESTING"] = True
    return app


def test_the_sla_page_shows_the_figures_and_verdicts(it_staff):
    page = Staff(it_staff, "it1").get("/monitor/sla?month=2026-02")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "2026年2月" in text
    assert "99.700%" in text  # register, measured over the observed time
    assert "98.817%" in text and "99.702%" in text  # its range
    for label in ("達成", "未達", "判定できません"):
        assert label in text
    assert "2026-02-10 10:00" in text and "2026-02-10 12:00" in text
    assert "2026-02-20 00:03" in text and "2026-02-20 06:00" in text
    assert Staff(it_staff, "clerk1").get("/monitor/sla?month=2026-02").status_code == 403


def test_a_wrong_or_future_month_is_explained(it_staff):
    it = Staff(it_staff, "it1")
    wrong = it.get("/monitor/sla?month=2026-13")
    assert wrong.status_code == 400 and "2026-11 の形" in wrong.get_data(as_text=True)
    future = it.get("/monitor/sla?month=2099-01")
    assert future.status_code == 400 and "まだ始まっていません" in future.get_data(as_text=True)


def test_the_sla_pdf_is_for_the_vendor_and_set_in_ipaex_only(it_staff, tmp_path):
    response = Staff(it_staff, "it1").get("/monitor/sla.pdf?month=2026-02")
    assert response.status_code == 200 and response.mimetype == "application/pdf"
    assert "sonae-sla-2026-02.pdf" in response.headers["Content-Disposition"]
    pdf = tmp_path / "sla.pdf"
    pdf.write_bytes(response.data)
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    assert "稼働率報告書" in text and "2026年2月" in text
    assert "99.700%" in text and "97.5%" in text
    assert "未達" in text and "不明" in text
    fonts = subprocess.run(["pdffonts", str(pdf)], capture_output=True, text=True, check=True).stdout.splitlines()[2:]
    assert fonts and all("IPAex" in line for line in fonts), fonts


def test_the_sla_pdf_waits_for_the_weasyprint_lock_like_every_pdf(it_staff):
    """WeasyPrint is not thread-safe: while a certificate holds the lock,
    the SLA report waits for it instead of rendering beside it."""
    from printing.render import weasyprint_lock

    staff = Staff(it_staff, "it1")
    answers = []
    with weasyprint_lock:
        render = threading.Thread(target=lambda: answers.append(staff.get("/monitor/sla.pdf?month=2026-02")))
        render.start()
        render.join(timeout=5)  # longer than the report takes to render unhindered
        assert render.is_alive() and not answers  # blocked on the lock, not rendering beside it
    render.join(timeout=60)
    assert answers and answers[0].status_code == 200 and answers[0].data.startswith(b"%PDF")

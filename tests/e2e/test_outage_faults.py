"""The outage day with one more thing going wrong each time. Whatever the
fault, the day ends with a consistent issuance log (every certificate
rendered or void, none left allocated after the worker's sweep, serials
unique, an audit entry for every issued request), a chain that `sonae
audit verify` accepts, a snapshot that `sonae snapshot verify` accepts, and
an incident report whose figures are what the counters did."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from fallback.app import create_app
from fallback.demo.outage_day import DayRecord
from fallback.mirror.syncing import INTERRUPTED
from fallback.modes.views import issuance_summary
from tests.mounts import require_tmpfs
from tests.printing.cups_server import cups_server  # noqa: F401  (fixture)

from .conftest import appliance_config, assert_report_matches_the_day, ops_rows, run_day


def sonae(record: DayRecord, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SONAE_HOME": str(record.root / "home"), "SONAE_CONFIG": str(record.root / "etc" / "sonae.toml")}
    return subprocess.run([sys.executable, "-m", "fallback.cli", *args], capture_output=True, text=True, env=env)


def assert_the_day_ends_consistent(record: DayRecord) -> None:
    assert record.problems == []  # `sonae audit verify` and `sonae snapshot verify` passed at the end of the day
    statuses = dict(ops_rows(record, "SELECT status, count(*) FROM certificates GROUP BY status"))
    killed = ops_rows(record, "SELECT copies FROM requests WHERE id = ?", (record.killed_request,))
    assert statuses == {"rendered": record.certificates, **({"void": killed[0][0]} if killed else {})}
    rows = ops_rows(record, "SELECT scope, serial FROM certificates")
    assert len(rows) == len(set(rows))
    issued = {row[0] for row in ops_rows(record, "SELECT id FROM requests WHERE outcome = 'issued'")}
    audited = [json.loads(detail)["request"] for (detail,) in ops_rows(record, "SELECT detail FROM audit WHERE action = 'issue'")]
    assert sorted(audited) == sorted(issued)
    verified = sonae(record, "audit", "verify")
    assert verified.returncode == 0 and verified.stdout.startswith("audit chain intact"), verified.stderr
    assert_report_matches_the_day(record)
    # what the supervisor's screen and /metrics count as handed out
    conn_config = appliance_config(record)
    from fallback.ops import open_ops

    conn = open_ops(conn_config)
    try:
        assert issuance_summary(conn, "")["total"] == record.certificates
    finally:
        conn.close()
    # the counts are for IT's scraper, not the public
    scraped = create_app(appliance_config(record, SONAE_ALERTS_METRICS_TOKEN="scrape-secret"))
    metrics = scraped.test_client().get("/metrics", headers={"Authorization": "Bearer scrape-secret"}).get_data(as_text=True)
    counted = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines() if line.startswith("sonae_certificates_issued_total{"))
    assert counted == record.certificates


def test_web_server_killed_mid_issuance(tmp_path):
    day = run_day(tmp_path / "site", faults=frozenset({"web_kill"}))
    assert_the_day_ends_consistent(day)
    killed = ops_rows(day, "SELECT serial, status FROM certificates WHERE request_id = ? ORDER BY serial", (day.killed_request,))
    assert killed and {status for _, status in killed} == {"void"}
    assert not {serial for serial, _ in killed} & {s for i in day.issued for s in i.serials}
    voided = [json.loads(detail) for (detail,) in ops_rows(day, "SELECT detail FROM audit WHERE action = 'issue.void'")]
    assert voided == [{"serials": [["real", serial] for serial, _ in killed], "reason": "PDF never rendered (crash)"}]
    # the clerk issued again for the same resident, and got a certificate
    (subject,) = ops_rows(day, "SELECT subject_code FROM requests WHERE id = ?", (day.killed_request,))[0]
    assert any(i.subject == subject and i.serials for i in day.issued)
    assert (day.root / "logs" / "web.log").read_text().count("Sonae counter app on") == 2


def test_worker_killed_mid_sync(tmp_path):
    day = run_day(tmp_path / "site", faults=frozenset({"worker_kill"}))
    assert_the_day_ends_consistent(day)
    run_id = int(day.fault_notes["worker_kill"].split()[-1])
    (outcome, error), = ops_rows(day, "SELECT outcome, error FROM sync_runs WHERE id = ?", (run_id,))
    assert (outcome, error) == ("failed", INTERRUPTED)
    later = ops_rows(day, "SELECT outcome FROM sync_runs WHERE id > ? AND kind = 'changes'", (run_id,))
    assert ("ok",) in later


def test_snapshot_disk_fills_up_during_a_sync(tmp_path):
    require_tmpfs()  # the small snapshot disk is a tmpfs
    day = run_day(tmp_path / "site", faults=frozenset({"disk_full"}))
    assert_the_day_ends_consistent(day)
    assert "the snapshot disk is full" in day.fault_notes["disk_full"]
    assert any(b["key"] == "sync.changes" and b["event"] == "opened" for b in day.alerts)
    failed = ops_rows(day, "SELECT id FROM sync_runs WHERE outcome = 'failed' AND error LIKE '%snapshot disk is full%'")
    assert failed and ops_rows(day, "SELECT 1 FROM sync_runs WHERE id > ? AND outcome = 'ok'", (failed[-1][0],))


def test_upstream_flapping(tmp_path):
    # The day runs on 1 s probes: flipping every 5 s (the demo flips every
    # 30 s) still outlasts the 3 failed and 2 good probes that change the
    # register's state, and fits several flips into the time the counters work.
    day = run_day(tmp_path / "site", faults=frozenset({"flapping"}), flap_every_s=5.0)
    assert_the_day_ends_consistent(day)
    # the register came and went while the counters worked
    answers = [ok for (ok,) in ops_rows(day, "SELECT ok FROM probes WHERE component = 'register' AND at > ? AND at < ? ORDER BY at",
                                        (day.outage_started_at.isoformat(), day.upstream_back_at.isoformat()))]
    flips = sum(1 for a, b in zip(answers, answers[1:]) if a != b)
    assert flips >= 2, answers
    (mode,), = ops_rows(day, "SELECT to_mode FROM mode_changes ORDER BY id DESC LIMIT 1")
    assert mode == "standby"


def test_corrupt_export_published_during_the_outage(tmp_path):
    day = run_day(tmp_path / "site", faults=frozenset({"corrupt_export"}))
    assert_the_day_ends_consistent(day)
    refused = day.fault_notes["corrupt_export_refused"]
    assert "SHA-256" in refused and "differs from the manifest" in refused and "the current generation keeps serving" in refused
    assert any(b["key"] == "sync.full" and b["event"] == "opened" for b in day.alerts)
    # every request used the generation loaded before the outage; the republished export became the next one
    generations = {g for (g,) in ops_rows(day, "SELECT DISTINCT snapshot_generation FROM requests")}
    assert generations == {day.snapshot_at_outage[0]}
    listed = json.loads(sonae(day, "snapshot", "list", "--json").stdout)
    assert next(g for g in listed if g["current"])["generation"] == day.snapshot_at_outage[0] + 1


@pytest.mark.skipif(os.geteuid() != 0, reason="a private cupsd needs root")
def test_printer_queue_stopped(tmp_path, cups_server, monkeypatch):  # noqa: F811
    monkeypatch.setenv("CUPS_SERVER", cups_server.socket)
    day = run_day(tmp_path / "site", faults=frozenset({"printer_stopped"}), printer_queue="SONAE_PDF")
    assert_the_day_ends_consistent(day)
    first_counter = [s for i in day.issued if i.clerk == "madoguchi1" for s in i.serials]
    states = dict(ops_rows(day, "SELECT serial, print_state FROM certificates WHERE status = 'rendered'"))
    assert first_counter and all(states[s] == "stopped" for s in first_counter)
    assert all(state is None for serial, state in states.items() if serial not in first_counter)  # browser printing
    printed = [json.loads(d) for (d,) in ops_rows(day, "SELECT detail FROM audit WHERE action = 'print'")]
    assert sorted(p["state"] for p in printed) == ["stopped"] * len(first_counter)
    assert all("停止" in p["message"] for p in printed)

"""The outage day with one of the appliance's own parts failing each time:
the web server or the worker killed, the snapshot disk full. Whatever the
fault, the day ends consistent (conftest.assert_the_day_ends_consistent).
The faults around the appliance are in test_outage_faults_outside.py: each
file is one unit of the suite's parallel run, and six days in one would be
its longest."""

from __future__ import annotations

import json

from fallback.mirror.syncing import INTERRUPTED
from tests.mounts import require_tmpfs

from .conftest import assert_the_day_ends_consistent, ops_rows, run_day


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

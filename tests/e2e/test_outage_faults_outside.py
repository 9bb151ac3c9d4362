"""The outage day with something around the appliance going wrong each
time: the upstream flapping, a corrupt export published during the outage,
the counter's printer queue stopped. Whatever the fault, the day ends
consistent (conftest.assert_the_day_ends_consistent)."""

from __future__ import annotations

import json
import os

import pytest

from tests.printing.cups_server import cups_server  # noqa: F401  (fixture)

from .conftest import assert_the_day_ends_consistent, ops_rows, run_day, sonae


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

"""Reconciliation does not trust this appliance's clock alone. The
campaign's case: with the clock an hour behind, a certificate issued after
the upstream had moved the resident was judged `changed_after_issue`, so
reconciliation never listed it. Here the clock goes an hour behind with no
reading of the upstream's clock to give it away (a reboot during the
outage), a certificate is issued on a record the upstream had already
changed, and after the outage the verdict is made in the upstream's time."""

from __future__ import annotations

import datetime as dt

import pytest

from fallback import recovery
from fallback.app import create_app
from fallback.mirror.syncing import run_full_sync
from fallback.monitoring import run_probe_cycle
from fallback.ops import TOKYO, open_ops
from fallback.staff import users
from tests.clocks import set_clock_off
from tests.support import ACCOUNTS, PASSWORD, Staff
from tests.sync.exports import make_resident, population, write_export
from tests.sync.upstream_server import TOKEN, TestUpstream

REQUEST = {"kind": "juminhyo", "requester_type": "self", "identity_document": "運転免許証", "copies": 1}


def true_now() -> dt.datetime:
    return dt.datetime.now(TOKYO)


@pytest.fixture
def appliance(sonae_env, tmp_path, monkeypatch):
    """Data as of two days ago (tests/sync/exports), served by a real HTTP
    upstream that answers look-ups with what the test puts in it."""
    residents, seals = population(30)
    write_export(tmp_path / "export", residents, seals)
    server = TestUpstream(tmp_path / "export").start()
    for name, value in {"URL": server.url, "TOKEN": TOKEN, "TIMEOUT_S": "2"}.items():
        monkeypatch.setenv(f"SONAE_UPSTREAM_{name}", value)
    from fallback.config import load_config

    config = load_config()
    run_full_sync(config, tmp_path / "export")
    server.residents = {r["resident_code"]: r for r in residents}
    conn = open_ops(config)
    for username, role in ACCOUNTS.items():
        users.add_user(conn, username, username, role, PASSWORD, actor="test")
    conn.close()
    app = create_app(config)
    app.config["TESTING"] = True
    yield config, app, server, residents
    server.stop()


def probe(config, server) -> None:
    server.as_of = true_now().isoformat()  # the upstream's health says what time it is
    run_probe_cycle(config)


def test_an_hour_behind_a_certificate_on_a_record_already_moved_is_at_risk(appliance, monkeypatch):
    config, app, server, residents = appliance
    moved, later = residents[3], residents[6]
    boss = Staff(app, "boss")
    boss.post("/supervisor/mode", {"to_mode": "downtime", "reason": "住民記録システム障害"})

    set_clock_off(monkeypatch, -dt.timedelta(hours=1))  # after a reboot: nothing has read the upstream's clock since
    clerk = Staff(app, "clerk1")
    # the upstream moved this resident half an hour ago (its own time)
    server.residents[moved["resident_code"]] = make_resident(3, version=2, updated_at=(true_now() - dt.timedelta(minutes=30)).isoformat(),
                                                            address={**moved["address"], "town": "蒲田五丁目"})
    for resident in (moved, later):
        issued = clerk.api("POST", f"/api/v1/residents/{resident['resident_code']}/certificates", json=REQUEST)
        assert issued.status_code == 201, issued.get_json()  # the data is two days old either way: nothing looked wrong
    # and this one after the certificates (its own time, a minute on)
    server.residents[later["resident_code"]] = make_resident(6, version=2, updated_at=(true_now() + dt.timedelta(minutes=1)).isoformat())

    boss.post("/supervisor/mode", {"to_mode": "recovery", "reason": "ベンダーから復旧の連絡"})
    probe(config, server)  # the upstream answers again, and shows the clock an hour behind
    waiting = recovery.reconcile_once(config)
    assert waiting.outcome == "waiting_for_clock" and "60分遅れています" in waiting.error

    monkeypatch.undo()  # IT sets the clock right
    probe(config, server)
    done = recovery.reconcile_once(config)
    assert done.outcome == "done" and done.checked == 2
    conn = open_ops(config)
    try:
        verdicts = dict(conn.execute("SELECT resident_code, verdict FROM recovery_checks").fetchall())
        flagged = [a.resident_code for a in recovery.at_risk(conn)]
    finally:
        conn.close()
    assert verdicts == {moved["resident_code"]: recovery.AT_RISK, later["resident_code"]: recovery.CHANGED_AFTER_ISSUE}
    assert flagged == [moved["resident_code"]]


ISSUED = "2025-01-06T14:00:00.000+09:00"  # this clock's time of issue


@pytest.mark.parametrize("updated_at, lag_minutes, data_as_of, verdict", [
    # this clock an hour behind: the upstream's 14:30 came before the issue (15:00 its time)
    ("2025-01-06T14:30:00+09:00", 0, None, recovery.CHANGED_AFTER_ISSUE),  # by this clock alone: the campaign's miss
    ("2025-01-06T14:30:00+09:00", 60, None, recovery.AT_RISK),
    ("2025-01-06T15:00:00+09:00", 60, None, recovery.AT_RISK),  # the boundary: the same instant counts as before
    ("2025-01-06T15:00:01+09:00", 60, None, recovery.CHANGED_AFTER_ISSUE),
    # a clock two days behind stamped the issue before the data it printed: a change
    # stamped before the snapshot's as-of was due in it, whatever the clock said
    ("2025-01-07T09:00:00+09:00", 0, "2025-01-08T10:00:00+09:00", recovery.AT_RISK),
    ("2025-01-08T10:00:01+09:00", 0, "2025-01-08T10:00:00+09:00", recovery.CHANGED_AFTER_ISSUE),
])
def test_the_moment_of_issue_is_placed_in_the_upstreams_time(updated_at, lag_minutes, data_as_of, verdict):
    current = {"resident_code": "10000000011", "version": 4, "updated_at": updated_at}
    assert recovery.judge(3, ISSUED, current, data_as_of=data_as_of, clock_lag=dt.timedelta(minutes=lag_minutes)) == verdict

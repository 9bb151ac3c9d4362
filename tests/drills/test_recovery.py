"""Reconciliation after an outage against cloudsim: the register changes in
the cloud while Sonae is issuing from its snapshot; after recovery every
certificate issued on data that had already changed is listed as at risk.
The upstream stays down for a while after downtime ends: reconciliation
waits and retries until it answers."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from apscheduler.schedulers.background import BackgroundScheduler

from cloudsim.sim import start_cloudsim
from fallback import recovery
from fallback.app import create_app
from fallback.config import load_config
from fallback.mirror.registry import snapshot_store
from fallback.mirror.syncing import run_changes, run_full_sync
from fallback.ops import open_ops
from fallback.staff import users
from tests.support import ACCOUNTS, PASSWORD, Staff, text_of

ISSUE = {"kind": "juminhyo", "requester_type": "self", "identity_document": "運転免許証", "copies": "1",
         "acknowledge_move_out": "1", "contact": "090-1234-5678"}


@pytest.fixture
def cloud(tmp_path, sonae_env, monkeypatch):
    # with 個人番号, which the appliance does not mirror by default
    sim = start_cloudsim(tmp_path / "cloudsim", residents=300, seed=7, workers=1, individual_numbers=True)
    monkeypatch.setenv("SONAE_UPSTREAM_URL", sim.url)
    monkeypatch.setenv("SONAE_UPSTREAM_TOKEN", sim.token)
    monkeypatch.setenv("SONAE_UPSTREAM_PUBLIC_KEY", sim.public_key)
    monkeypatch.setenv("SONAE_UPSTREAM_TIMEOUT_S", "2")
    config = load_config()
    run_full_sync(config)
    conn = open_ops(config)
    for username, role in ACCOUNTS.items():
        users.add_user(conn, username, username, role, PASSWORD, actor="test")
    app = create_app(config)
    app.config["TESTING"] = True
    yield sim, config, app, conn
    sim.stop()


def changed_residents(sim, after: int) -> tuple[set[str], int]:
    lines, last_seq = sim.feed.page(after, 100_000)
    changes = [json.loads(line) for line in lines]
    return {c["key"] for c in changes if c["kind"] == "residents"}, last_seq


def active_residents(config) -> list[dict]:
    """Active residents of Sonae's snapshot without a support measure (the
    register has no listing, so search every kana initial)."""
    found = {}
    with snapshot_store(config).open_register() as register:
        for kana in "アイウエオカキクケコサシスセソタチツテトナニヌネノハヒフヘホマミムメモヤユヨラリルレロワ":
            for r in register.search(kana=kana, limit=1000):
                if r["status"] == "active" and not r.get("support_measure"):
                    found[r["resident_code"]] = r
    return list(found.values())


def test_certificates_issued_on_changed_records_are_listed_at_risk(cloud):
    sim, config, app, conn = cloud
    boss, clerk = Staff(app, "boss"), Staff(app, "clerk1")
    first_seq = sim.status()["last_seq"]

    # the outage: Sonae cannot reach the cloud, which goes on changing
    sim.faults.set("down")
    boss.post("/supervisor/mode", {"to_mode": "downtime", "reason": "住民記録システム障害"})
    sim.feed.make(120)
    before_issue, issue_seq = changed_residents(sim, first_seq)
    active = active_residents(config)
    stale = [r for r in active if r["resident_code"] in before_issue][:6]
    fresh = [r for r in active if r["resident_code"] not in before_issue][:6]
    assert len(stale) == 6 and len(fresh) == 6
    for resident in stale + fresh:
        response = clerk.post(f"/counter/resident/{resident['resident_code']}/issue", ISSUE)
        assert response.status_code == 302, text_of(response)[-400:]
    # cloudsim stamps updated_at in whole seconds, and a change stamped in the
    # second of an issue counts as before it (the safe side): let that second pass
    time.sleep(1.1)
    sim.feed.make(60)  # later changes: the certificates were right when issued
    after_issue, _ = changed_residents(sim, issue_seq)

    boss.post("/supervisor/mode", {"to_mode": "recovery", "reason": "ベンダーから復旧の連絡"})
    # the cloud is not reachable yet: nothing is judged, the attempt is recorded
    waiting = recovery.reconcile_once(config)
    assert waiting.outcome == "upstream_unavailable" and waiting.checked == 0 and waiting.pending == 12
    assert "応答しません" in text_of(boss.get("/recovery/"))

    sim.faults.clear("down")
    # the worker catches up with the feed first: the snapshot no longer holds
    # the records as they were printed
    run_changes(config)
    done = recovery.reconcile_once(config)
    assert done.outcome == "done" and done.checked == 12
    assert recovery.reconcile_once(config).outcome == "nothing_to_check"

    verdicts = dict(conn.execute("SELECT resident_code, verdict FROM recovery_checks").fetchall())
    flagged = {r.resident_code for r in recovery.at_risk(conn)}
    for resident in stale:
        code = resident["resident_code"]
        assert code in flagged, code  # no certificate on stale data is missed
        if code not in after_issue:
            assert verdicts[code] == recovery.AT_RISK
    for resident in fresh:
        code = resident["resident_code"]
        if code not in after_issue:
            assert verdicts[code] == recovery.UNCHANGED
        else:
            assert verdicts[code] in (recovery.CHANGED_AFTER_ISSUE, recovery.UNCERTAIN)
    assert any(verdicts[r["resident_code"]] == recovery.UNCHANGED for r in fresh)

    # the worklist: differences, the requester's contact, an action, a status
    item = next(a for a in recovery.at_risk(conn) if a.verdict == recovery.AT_RISK)
    assert item.contact == "090-1234-5678" and item.action and item.difference and item.serials
    # field by field, against the record as printed
    assert all(d["field"] in recovery.FIELD_LABELS.values() for a in recovery.at_risk(conn) for d in a.difference)
    # 個人番号 is not mirrored: the upstream's answer does not bring it in
    assert not any(d.get("key") == "individual_number" for a in recovery.at_risk(conn) for d in a.difference)
    assert "個人番号" not in json.dumps([r for (r,) in conn.execute("SELECT difference FROM recovery_checks")], ensure_ascii=False)
    page = text_of(boss.get("/recovery/"))
    assert "090-1234-5678" in page and item.difference[0]["field"] in page and "交付の前に住民記録が変わっていた" in page
    boss.post(f"/recovery/at-risk/{item.check_id}", {"status": "contacted"})
    assert next(a for a in recovery.at_risk(conn) if a.check_id == item.check_id).status == "contacted"


def test_the_worker_job_retries_until_the_upstream_answers(cloud, monkeypatch):
    sim, config, app, conn = cloud
    boss, clerk = Staff(app, "boss"), Staff(app, "clerk1")
    sim.faults.set("down")
    boss.post("/supervisor/mode", {"to_mode": "downtime", "reason": "住民記録システム障害"})
    code = active_residents(config)[0]["resident_code"]
    assert clerk.post(f"/counter/resident/{code}/issue", ISSUE).status_code == 302
    boss.post("/supervisor/mode", {"to_mode": "recovery", "reason": "ベンダーから復旧の連絡"})

    monkeypatch.setenv("SONAE_RECOVERY_INTERVAL_S", "1")
    scheduler = BackgroundScheduler()
    recovery.register_recovery_jobs(scheduler, load_config())
    scheduler.start()
    try:
        deadline = time.monotonic() + 20
        while conn.execute("SELECT count(*) FROM recovery_attempts WHERE outcome = 'upstream_unavailable'").fetchone()[0] < 2:
            assert time.monotonic() < deadline, "the job did not retry"
            time.sleep(0.1)
        sim.faults.clear("down")
        while recovery.progress(conn).pending:
            assert time.monotonic() < deadline, "the job did not finish once the upstream answered"
            time.sleep(0.1)
    finally:
        scheduler.shutdown()
    assert conn.execute("SELECT verdict FROM recovery_checks").fetchall() == [(recovery.UNCHANGED,)]


def test_nothing_is_checked_while_downtime_lasts(cloud):
    sim, config, app, conn = cloud
    boss, clerk = Staff(app, "boss"), Staff(app, "clerk1")
    boss.post("/supervisor/mode", {"to_mode": "downtime", "reason": "住民記録システム障害"})
    code = active_residents(config)[0]["resident_code"]
    clerk.post(f"/counter/resident/{code}/issue", ISSUE)
    result = recovery.reconcile_once(config)
    assert result.outcome == "waiting_for_downtime_end" and result.pending == 1
    assert conn.execute("SELECT count(*) FROM recovery_checks").fetchone()[0] == 0


def test_the_supervisors_button_and_the_worker_may_reconcile_at_once(cloud):
    """Found by the outage day: the supervisor's 「今すぐ照合する」 and the
    worker's job both check what is pending; the second to reach a
    certificate must skip it, not fail on the one check per certificate."""
    sim, config, app, conn = cloud
    boss, clerk = Staff(app, "boss"), Staff(app, "clerk1")
    boss.post("/supervisor/mode", {"to_mode": "downtime", "reason": "住民記録システム障害"})
    sim.faults.set("slow", seconds=0.05)  # each look-up takes a while, so the two runs overlap
    for resident in active_residents(config)[:12]:
        assert clerk.post(f"/counter/resident/{resident['resident_code']}/issue", ISSUE).status_code == 302
    boss.post("/supervisor/mode", {"to_mode": "recovery", "reason": "ベンダーから復旧の連絡"})
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: recovery.reconcile_once(config), range(2)))
    assert {r.outcome for r in results} == {"done"}
    assert sum(r.checked for r in results) == 12  # every certificate checked once, by one of the two
    assert conn.execute("SELECT count(*), count(DISTINCT request_id) FROM recovery_checks").fetchone() == (12, 12)


def residents_with_an_active_seal(config, count: int) -> list[tuple[str, str, str]]:
    """(resident code, seal number, card number) of residents whose one
    registered seal is active in Sonae's snapshot."""
    found = []
    with snapshot_store(config).open_register() as register:
        for resident in active_residents(config):
            seals = register.seals_of(resident["resident_code"])
            if len(seals) == 1 and seals[0]["status"] == "active":
                found.append((resident["resident_code"], seals[0]["seal_number"], seals[0]["card_number"]))
            if len(found) == count:
                return found
    raise AssertionError(f"fewer than {count} residents with an active seal")


def test_an_inkan_certificate_on_a_seal_revoked_before_issue_is_at_risk(cloud):
    """The upstream has no per-seal lookup: the seal is judged against the
    snapshot, and only once the change feed has brought it past the issue."""
    sim, config, app, conn = cloud
    boss, clerk = Staff(app, "boss"), Staff(app, "clerk1")
    sim.faults.set("down")
    boss.post("/supervisor/mode", {"to_mode": "downtime", "reason": "住民記録システム障害"})
    (revoked, revoked_seal, revoked_card), (kept, _, kept_card) = residents_with_an_active_seal(config, 2)
    sim.feed.make_for(revoked, "seal_revoked")  # the card was reported lost; Sonae's snapshot still has the seal active
    for code, card in ((revoked, revoked_card), (kept, kept_card)):
        response = clerk.post(f"/counter/resident/{code}/issue",
                              {**ISSUE, "kind": "inkan", "identity_document": "印鑑登録証", "seal_card_number": card})
        assert response.status_code == 302, text_of(response)[-400:]

    boss.post("/supervisor/mode", {"to_mode": "recovery", "reason": "ベンダーから復旧の連絡"})
    sim.faults.clear("down")
    waiting = recovery.reconcile_once(config)  # the snapshot is still as of before the outage
    assert waiting.outcome == "waiting_for_feed" and waiting.checked == 0 and waiting.pending == 2
    assert recovery.progress(conn).pending == 2
    assert "差分の取り込み待ち" in text_of(boss.get("/recovery/"))

    time.sleep(1.1)  # cloudsim's feed is as of whole seconds: let the second of the issue pass
    run_changes(config)
    done = recovery.reconcile_once(config)
    assert done.outcome == "done" and done.checked == 2
    verdicts = dict(conn.execute("SELECT resident_code, verdict FROM recovery_checks").fetchall())
    assert verdicts == {revoked: recovery.AT_RISK, kept: recovery.UNCHANGED}
    item = next(a for a in recovery.at_risk(conn))
    assert item.resident_code == revoked and item.kind == "inkan"
    assert {"field": "印鑑登録", "key": "seal", "printed": f"{revoked_seal}（登録中）", "now": f"{revoked_seal}（廃止）"} in item.difference
    assert "印鑑登録証明書を回収" in item.action
    page = text_of(boss.get("/recovery/"))
    assert f"{revoked_seal}（廃止）" in page and "印鑑登録証明書を回収" in page

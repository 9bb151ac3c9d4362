"""Sync against cloudsim, the stand-in upstream, with its fault switches."""

from __future__ import annotations

import pytest

from fallback.mirror.registry import snapshot_store
from fallback.mirror.syncing import StopRequest, full_export_due, run_changes, run_full_sync, upstream_from_config
from fallback.monitoring.mirror import any_resident_code
from fallback.worker import changes_job
from sync.errors import ExportInvalid, FeedBroken, GateRefused, UpstreamUnavailable, UpstreamUntrusted
from tests.sync.conftest import assert_serving, audit_entries, reload_config, run_sonae, sync_runs

cloudsim = pytest.importorskip("cloudsim.sim")
RESIDENTS = 2000


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    running = cloudsim.start_cloudsim(tmp_path_factory.mktemp("cloudsim"), residents=RESIDENTS, seed=11, workers=1)
    yield running
    running.stop()


@pytest.fixture
def appliance(sonae_env, sim, monkeypatch):
    """An appliance pointed at cloudsim, with its export loaded as generation 1."""
    monkeypatch.setenv("SONAE_UPSTREAM_URL", sim.url)
    monkeypatch.setenv("SONAE_UPSTREAM_TOKEN", sim.token)
    monkeypatch.setenv("SONAE_UPSTREAM_PUBLIC_KEY", sim.public_key)
    monkeypatch.setenv("SONAE_UPSTREAM_TIMEOUT_S", "1.0")
    config = reload_config()
    result = run_full_sync(config)
    assert result.residents == RESIDENTS
    yield config
    sim.faults.clear()


def _residents(config) -> int:
    with snapshot_store(config).open_register() as register:
        return register.meta.residents


def _fault(sim, name: str, *extra: str) -> None:
    result = run_sonae("cloudsim", "fault", "set", name, *extra, "--admin-url", sim.admin_url, "--token", sim.token)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("bad_signature", r"manifest signature does not verify"),
        ("truncated_file", r"residents.ndjson.gz: [\d,]+ bytes, the manifest says [\d,]+ \(truncated or altered\)"),
        ("bytes_mismatch", r"residents.ndjson.gz: SHA-256 \w+ differs from the manifest's \w+ \(altered or damaged\)"),
    ],
)
def test_damaged_exports_are_refused(appliance, sim, fault, reason):
    sim.faults.set(fault)
    with pytest.raises(ExportInvalid, match=reason):
        run_full_sync(appliance)
    assert_serving(appliance, 1, RESIDENTS)
    assert sync_runs(appliance)[-1]["outcome"] == "refused"


def test_halved_export_is_refused_then_loaded_with_the_override(appliance, sim):
    _fault(sim, "halved_export")  # through the operator's command and the admin port
    with pytest.raises(GateRefused, match=r"record count gate refused the export: residents [\d,]+ vs 2,000 \(-[45]\d\.\d%\)"):
        run_full_sync(appliance)
    assert_serving(appliance, 1, RESIDENTS)
    result = run_sonae("sync", "full", "--allow-drop", "--actor", "it-kato")
    assert result.returncode == 0, result.stderr
    assert _residents(appliance) < RESIDENTS * 0.6
    assert audit_entries(appliance, "sync.override")[-1]["actor"] == "it-kato"


@pytest.mark.parametrize(
    ("fault", "seconds", "reason"),
    [
        ("down", None, r"cannot connect \(connection refused\)"),
        ("slow", 2.0, r"no answer within 1 s"),
        ("error5xx", None, r"HTTP 503 service_unavailable: the register is not answering"),
    ],
)
def test_unavailable_upstream_keeps_the_snapshot(appliance, sim, fault, seconds, reason):
    sim.faults.set(fault, seconds=seconds)
    with pytest.raises(UpstreamUnavailable, match=reason):
        run_changes(appliance)
    with pytest.raises(UpstreamUnavailable, match=reason):
        run_full_sync(appliance)
    assert_serving(appliance, 1, RESIDENTS)
    assert [r["outcome"] for r in sync_runs(appliance)[-2:]] == ["failed", "failed"]
    assert full_export_due(appliance) is None


def test_change_feed_follows_cloudsim(appliance, sim):
    sim.feed.make(40)
    result = run_changes(appliance)
    assert result.applied + result.skipped == result.last_seq - result.from_seq > 0
    assert snapshot_store(appliance).verify().ok
    upstream = upstream_from_config(appliance)
    try:
        with snapshot_store(appliance).open_register() as register:
            # What the mirror holds is what upstream says now.
            for change in upstream.changes(after=result.from_seq, limit=100)["changes"][-5:]:
                if change["kind"] == "residents" and change["op"] == "upsert":
                    lookup = upstream.lookup(change["key"])  # None when a later change deleted the row
                    assert register.resident(change["key"]) == (lookup.resident and {**lookup.resident, "individual_number": None})
                    assert [s["seal_number"] for s in lookup.seals] == [s["seal_number"] for s in register.seals_of(change["key"])]
    finally:
        upstream.close()


def test_a_feed_and_look_ups_with_bad_signatures_are_no_answer(appliance, sim):
    sim.feed.make(5)
    sim.faults.set("bad_signature")
    with pytest.raises(UpstreamUntrusted, match=r"/v1/changes\?after=0: refused by the contract's signature rule: change-feed page signature does not verify"):
        run_changes(appliance)
    upstream = upstream_from_config(appliance)
    try:
        with pytest.raises(UpstreamUntrusted, match="resident look-up signature does not verify"):
            upstream.lookup(any_resident_code(appliance))
    finally:
        upstream.close()
    assert_serving(appliance, 1, RESIDENTS)
    assert sync_runs(appliance)[-1]["outcome"] == "refused" and full_export_due(appliance) is None
    sim.faults.clear("bad_signature")
    assert run_changes(appliance).last_seq > 0


def test_feed_gap_makes_the_worker_reload(appliance, sim):
    sim.feed.make(10)
    sim.faults.set("feed_gap")
    with pytest.raises(FeedBroken, match="gap in the change feed"):
        run_changes(appliance)
    assert full_export_due(appliance)
    sim.faults.clear("feed_gap")
    changes_job(appliance, StopRequest())
    assert snapshot_store(appliance).current() == 2 and full_export_due(appliance) is None


@pytest.mark.parametrize(("fault", "component", "state"), [("juki_net_down", "juki_net", "down"), ("batch_stuck", "batch", "running")])
def test_health_faults_do_not_stop_the_mirror(appliance, sim, fault, component, state):
    sim.faults.set(fault)
    upstream = upstream_from_config(appliance)
    try:
        health = upstream.health()
    finally:
        upstream.close()
    assert health["status"] == "degraded" and health["components"][component] == state
    sim.feed.make(3)
    assert run_changes(appliance).last_seq > 0

"""End to end against cloudsim, the stand-in upstream: the appliance loads
its export over HTTP, then the simulator's fault switches are thrown and
each outage must be detected, alerted (webhook and mail) and its recovery
announced."""

from __future__ import annotations

import datetime as dt

import pytest

from cloudsim.sim import start_cloudsim
from fallback import modes
from fallback.mirror.syncing import run_full_sync
from fallback.monitoring import alerts, run_alert_cycle, run_probe_cycle
from fallback.ops import TOKYO, open_ops
from tests.monitoring.conftest import Clock


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    running = start_cloudsim(tmp_path_factory.mktemp("cloudsim"), residents=400, seed=7, token="monitoring-test-token")
    yield running
    running.stop()


@pytest.fixture
def appliance(configure, sim):
    """An appliance that loaded the simulator's export and watches it."""
    config = configure(UPSTREAM_URL=sim.url, UPSTREAM_TOKEN=sim.token, UPSTREAM_PUBLIC_KEY=sim.public_key)
    run_full_sync(config)
    yield config
    sim.faults.clear()


def probe(config, clock, count):
    statuses = {}
    for _ in range(count):
        statuses = run_probe_cycle(config, at=clock.tick())
    return statuses


def mode(config):
    conn = open_ops(config)
    try:
        return modes.current(conn).mode
    finally:
        conn.close()


def test_a_healthy_simulator_is_all_up_including_the_synthetic_read(appliance, clock):
    statuses = probe(appliance, clock, 2)
    assert {c: s.status for c, s in statuses.items()} == {"register": "up", "juki_net": "up", "batch": "up", "synthetic": "up"}


@pytest.mark.parametrize("fault, options", [("down", {}), ("error5xx", {}), ("slow", {"seconds": 6.0})])  # twice the probes' timeout (tests/monitoring/conftest.py)
def test_a_full_outage_is_detected_alerted_and_its_recovery_announced(appliance, sim, webhook, smtp, clock, fault, options):
    probe(appliance, clock, 2)
    sim.faults.set(fault, **options)
    statuses = probe(appliance, clock, 3)
    assert statuses["register"].status == "down"
    assert mode(appliance) == modes.SUSPECT
    run_alert_cycle(appliance, at=clock.at)
    assert webhook.events("upstream.") == [("upstream.register", "opened")]
    assert any("上流の住民記録システムが応答しません" in s for s in smtp.subjects())

    sim.faults.clear(fault)
    probe(appliance, clock, 2)
    assert mode(appliance) == modes.STANDBY
    run_alert_cycle(appliance, at=clock.at)
    assert webhook.events("upstream.") == [("upstream.register", "opened"), ("upstream.register", "resolved")]
    assert any(s.startswith("【復旧】") for s in smtp.subjects())


def test_a_juki_net_outage_is_partial(appliance, sim, webhook, clock):
    probe(appliance, clock, 2)
    sim.faults.set("juki_net_down")
    statuses = probe(appliance, clock, 3)
    assert statuses["juki_net"].status == "down"
    assert statuses["register"].status == statuses["synthetic"].status == "up"
    run_alert_cycle(appliance, at=clock.at)
    alert = next(b for b in webhook.bodies if b["key"] == "upstream.juki_net")
    assert "住民記録システムは使えます" in alert["still_works"]


def test_a_batch_stuck_past_the_deadline_is_partial(appliance, sim, webhook):
    morning = Clock(dt.datetime.now(TOKYO).replace(hour=9, minute=10, second=0, microsecond=0))
    probe(appliance, morning, 2)  # done: up
    sim.faults.set("batch_stuck")
    statuses = probe(appliance, morning, 3)
    assert statuses["batch"].status == "down"
    assert alerts.describe_outage(statuses, None).level == "partial"
    run_alert_cycle(appliance, at=morning.at)
    alert = next(b for b in webhook.bodies if b["key"] == "upstream.batch")
    assert alert["runbook"] == "runbooks/03-bubun-shogai.md"

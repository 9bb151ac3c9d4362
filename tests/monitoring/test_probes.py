"""Outage detection against a real HTTP upstream: debounced component
states, the appliance's own move to suspect (and back), partial outages,
the stuck batch, the synthetic read, and the ward's auto-downtime policy."""

from __future__ import annotations

import datetime as dt

import pytest

from fallback import modes
from fallback.monitoring import alerts, mirror, run_probe_cycle
from fallback.monitoring.probes import NO_ANSWER
from fallback.ops import TOKYO, open_ops
from tests.monitoring.conftest import Clock, ops_rows, sensitive_values


def cycles(config, clock, count):
    statuses = None
    for _ in range(count):
        statuses = run_probe_cycle(config, at=clock.tick())
    return statuses


def current_mode(config):
    conn = open_ops(config)
    try:
        return modes.current(conn)
    finally:
        conn.close()


def test_a_component_is_down_after_three_failures_and_up_after_two_successes(config, upstream, clock):
    statuses = cycles(config, clock, 2)
    assert statuses["register"].status == "up"

    upstream.components["register"] = "down"
    first_failure = clock.at + clock.step
    statuses = cycles(config, clock, 2)
    assert statuses["register"].status == "up", "two failures are not an outage yet"
    assert current_mode(config).mode == modes.STANDBY
    statuses = cycles(config, clock, 1)
    assert statuses["register"].status == "down"
    assert dt.datetime.fromisoformat(statuses["register"].since) == first_failure, "the outage dates from its first failed probe"
    state = current_mode(config)
    assert (state.mode, state.actor) == (modes.SUSPECT, "system")
    assert "住民記録システム" in state.reason

    upstream.components["register"] = "ok"
    assert cycles(config, clock, 1)["register"].status == "down", "one success is not a recovery"
    assert current_mode(config).mode == modes.SUSPECT
    assert cycles(config, clock, 1)["register"].status == "up"
    assert current_mode(config).mode == modes.STANDBY

    rows = ops_rows(config, "SELECT ok, state, latency_ms FROM probes WHERE component = 'register' ORDER BY id")
    assert [r[0] for r in rows] == [1, 1, 0, 0, 0, 1, 1]
    assert all(r[2] is not None and r[2] >= 0 for r in rows), "every probe is stored with its latency"


def test_a_flapping_upstream_neither_flaps_the_state_nor_the_mode(config, upstream, clock):
    cycles(config, clock, 2)
    for _ in range(6):
        upstream.components["register"] = "down"
        cycles(config, clock, 2)
        upstream.components["register"] = "ok"
        cycles(config, clock, 1)
    assert ops_rows(config, "SELECT status FROM component_status WHERE component = 'register'") == [("up",)]
    assert current_mode(config).mode == modes.STANDBY


@pytest.mark.parametrize("fault", ["timeout", "500", "malformed", "refused"])
def test_timeout_refusal_5xx_and_malformed_body_all_mean_no_answer(configure, upstream, clock, fault):
    if fault == "refused":
        config = configure(UPSTREAM_URL=f"http://127.0.0.1:{_closed_port()}")
    else:
        config = configure()
        upstream.fault = fault
    statuses = cycles(config, clock, 3)
    for component in ("register", "juki_net", "batch"):
        assert statuses[component].last_state == NO_ANSWER
        assert statuses[component].last_error.startswith("上流が応答しません")
    assert statuses["register"].status == "down"
    # what only the upstream's answer reports is not known to be down when it does not answer
    assert statuses["juki_net"].status == statuses["batch"].status == "unknown"


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_juki_net_alone_is_a_partial_outage_that_never_declares_downtime(configure, upstream, clock):
    config = configure(PROBES_AUTO_DOWNTIME_AFTER_MINUTES=1)
    cycles(config, clock, 2)
    upstream.components["juki_net"] = "down"
    statuses = cycles(config, clock, 10)  # well past the one-minute policy
    assert statuses["juki_net"].status == "down"
    assert statuses["register"].status == "up"
    assert current_mode(config).mode == modes.SUSPECT, "a partial outage is still worth IT's attention"

    outage = alerts.describe_outage(statuses, None)
    assert outage.level == "partial"
    assert "住基ネット連携" in outage.headline
    assert "住民記録システムは使えます" in outage.still_works
    assert outage.runbook == "03-bubun-shogai"


def test_a_batch_still_running_past_nine_is_stuck(config, upstream):
    upstream.components["batch"] = "running"
    morning = Clock(dt.datetime.now(TOKYO).replace(hour=8, minute=58, second=0, microsecond=0))
    statuses = cycles(config, morning, 5)  # 08:58:20 … 08:59:40: a batch at work before 09:00 is fine
    assert statuses["batch"].status == "up"
    statuses = cycles(config, morning, 2)  # 09:00:00, 09:00:20: late, but two failures are not three
    assert statuses["batch"].status == "up"
    statuses = cycles(config, morning, 1)  # 09:00:40
    assert statuses["batch"].status == "down"
    assert "09:00を過ぎても夜間バッチが終わっていません" in statuses["batch"].last_error
    assert alerts.describe_outage(statuses, None).level == "partial"

    upstream.components["batch"] = "done"
    assert cycles(config, morning, 2)["batch"].status == "up"


def test_the_synthetic_read_uses_a_resident_from_the_snapshot_and_keeps_nothing_of_the_record(loaded, upstream, clock):
    code = mirror.any_resident_code(loaded)
    assert code in upstream.residents
    statuses = cycles(loaded, clock, 2)
    assert statuses["synthetic"].status == "up"

    del upstream.residents[code]  # upstream no longer finds a resident the snapshot has
    statuses = cycles(loaded, clock, 3)
    assert statuses["synthetic"].status == "down"
    assert "見つけられません" in statuses["synthetic"].last_error
    assert current_mode(loaded).mode == modes.SUSPECT

    stored = " ".join(str(v) for row in ops_rows(loaded, "SELECT * FROM probes") + ops_rows(loaded, "SELECT * FROM component_status")
                      for v in row)
    assert code not in stored
    assert not [v for v in sensitive_values() if v in stored]


def test_a_look_up_signed_by_another_key_is_said_to_fail_verification_not_to_go_unanswered(loaded, upstream, clock):
    """The contract counts it as no answer, so the component goes down as
    for one; but the upstream did answer, and IT reads what to check."""
    assert cycles(loaded, clock, 2)["synthetic"].status == "up"
    upstream.fault = "wrong_key"
    status = cycles(loaded, clock, 3)["synthetic"]
    assert status.status == "down"
    assert "上流の答えを検証できません" in status.last_error and "upstream.public_key" in status.last_error
    assert "応答しません" not in status.last_error and "signature" in status.last_error


def test_a_configured_synthetic_resident_is_read_instead(configure, upstream, clock):
    code = next(iter(upstream.residents))
    config = configure(PROBES_SYNTHETIC_RESIDENT=code)
    assert cycles(config, clock, 2)["synthetic"].status == "up"


def test_the_wards_policy_declares_downtime_after_the_set_time(configure, upstream, clock):
    config = configure(PROBES_AUTO_DOWNTIME_AFTER_MINUTES=2)
    cycles(config, clock, 2)
    upstream.fault = "500"
    cycles(config, clock, 3)  # down since the first failure, 40 s ago
    assert current_mode(config).mode == modes.SUSPECT
    cycles(config, clock, 3)  # 1 min 40 s
    assert current_mode(config).mode == modes.SUSPECT
    cycles(config, clock, 1)  # 2 min
    state = current_mode(config)
    assert (state.mode, state.actor) == (modes.DOWNTIME, "system")
    assert "区の運用方針" in state.reason

    upstream.fault = None
    cycles(config, clock, 3)
    assert current_mode(config).mode == modes.DOWNTIME, "ending downtime is a supervisor's decision"


def test_without_a_policy_only_a_supervisor_declares_downtime(config, upstream, clock):
    upstream.fault = "500"
    cycles(config, clock, 30)  # ten minutes of outage
    assert current_mode(config).mode == modes.SUSPECT


def test_a_suspicion_raised_by_a_person_is_not_cleared_by_the_probes(config, upstream, clock):
    conn = open_ops(config)
    modes.change(conn, modes.SUSPECT, actor="it1", role="it", reason="ベンダーから障害の連絡")
    conn.close()
    cycles(config, clock, 4)
    state = current_mode(config)
    assert (state.mode, state.actor) == (modes.SUSPECT, "it1")

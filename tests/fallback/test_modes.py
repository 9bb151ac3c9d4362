"""The operating mode's rules in both directions, on a real operational
database: each transition exists for exactly the roles listed, every other
one is refused with its reason, and each change is recorded and audited."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest

from fallback import audit, drills, modes
from fallback.ops import open_ops
from tests.clocks import set_clock_off

ROLES = ("system", "supervisor", "it", "clerk")
REASON = "住民記録システム障害"
# The design's transitions: downtime is declared by a supervisor (or by the
# probes, once an outage is suspected); recovery and the way back to
# standby are a supervisor's alone.
DESIGN = {
    ("standby", "suspect"): {"system", "supervisor", "it"},
    ("suspect", "standby"): {"system", "supervisor", "it"},
    ("standby", "downtime"): {"supervisor"},
    ("suspect", "downtime"): {"supervisor", "system"},
    ("downtime", "recovery"): {"supervisor"},
    ("recovery", "downtime"): {"supervisor"},
    ("recovery", "standby"): {"supervisor"},
}


@pytest.fixture
def ops(sonae_env):
    conn = open_ops(sonae_env)
    yield conn
    conn.close()


def reach(conn, mode: str) -> None:
    """Walk from standby to `mode` by allowed transitions, as a supervisor."""
    path = {modes.STANDBY: [], modes.SUSPECT: [modes.SUSPECT], modes.DOWNTIME: [modes.DOWNTIME],
            modes.RECOVERY: [modes.DOWNTIME, modes.RECOVERY]}[mode]
    for step in path:
        modes.change(conn, step, actor="boss", role="supervisor", reason=REASON)


def test_a_new_appliance_is_on_standby_with_the_counters_closed(ops):
    state = modes.current(ops)
    assert (state.mode, state.since, state.actor, state.reason, state.label) == (modes.STANDBY, "", "system", "初期状態", "通常（待機中）")
    assert not state.counters_open


@pytest.mark.parametrize("from_mode, to_mode", list(itertools.permutations(modes.LABELS, 2)))
@pytest.mark.parametrize("role", ROLES)
def test_each_transition_is_allowed_to_its_roles_only(ops, from_mode, to_mode, role):
    reach(ops, from_mode)
    allowed = DESIGN.get((from_mode, to_mode), set())
    if role in allowed:
        state = modes.change(ops, to_mode, actor="someone", role=role, reason=REASON)
        assert modes.current(ops) == state and state.mode == to_mode and state.actor == "someone"
        assert state.counters_open == (to_mode == modes.DOWNTIME)
    else:
        expected = "切替えは係長が行います" if (from_mode, to_mode) in DESIGN else "へは切り替えられません"
        with pytest.raises(modes.ModeError, match=expected):
            modes.change(ops, to_mode, actor="someone", role=role, reason=REASON)
        assert modes.current(ops).mode == from_mode


def test_the_same_mode_again_is_refused(ops):
    reach(ops, modes.DOWNTIME)
    with pytest.raises(modes.ModeError, match="すでに「ダウン対策モード」です"):
        modes.change(ops, modes.DOWNTIME, actor="boss", role="supervisor", reason=REASON)


def test_an_unknown_mode_is_refused_naming_the_known_ones(ops):
    with pytest.raises(modes.ModeError, match="不明なモード 'outage'.*standby, suspect, downtime, recovery"):
        modes.change(ops, "outage", actor="boss", role="supervisor", reason=REASON)


@pytest.mark.parametrize("reason", ["", "   ", None])
def test_a_change_without_a_reason_is_refused(ops, reason):
    with pytest.raises(modes.ModeError, match="^理由を入力してください。$"):
        modes.change(ops, modes.DOWNTIME, actor="boss", role="supervisor", reason=reason)
    assert modes.history(ops) == []


def test_a_reason_is_bounded_at_its_maximum_length(ops):
    with pytest.raises(modes.ModeError, match="500文字まで"):
        modes.change(ops, modes.DOWNTIME, actor="boss", role="supervisor", reason="あ" * (modes.MAX_REASON_LENGTH + 1))
    longest = "あ" * modes.MAX_REASON_LENGTH
    assert modes.change(ops, modes.DOWNTIME, actor="boss", role="supervisor", reason=f"  {longest}  ").reason == longest


def test_each_change_is_in_the_history_and_the_audit_with_who_and_why(ops, monkeypatch):
    modes.change(ops, modes.DOWNTIME, actor="boss", role="supervisor", reason=" 住民記録システム障害 ")
    set_clock_off(monkeypatch, dt.timedelta(minutes=1))  # the next change a minute later
    modes.change(ops, modes.RECOVERY, actor="boss2", role="supervisor", reason="復旧の連絡")
    history = modes.history(ops)
    assert [(h["from_mode"], h["to_mode"], h["actor"], h["reason"]) for h in history] == [
        (modes.STANDBY, modes.DOWNTIME, "boss", REASON), (modes.DOWNTIME, modes.RECOVERY, "boss2", "復旧の連絡")]
    assert modes.history(ops, since=history[1]["at"]) == history[1:]
    changes = [e for e in audit.entries(ops, action="mode.change")]
    assert [(e["actor"], e["action"], e["target"], e["detail"]) for e in changes] == [
        ("boss", "mode.change", modes.DOWNTIME, {"from": modes.STANDBY, "to": modes.DOWNTIME, "reason": REASON}),
        ("boss2", "mode.change", modes.RECOVERY, {"from": modes.DOWNTIME, "to": modes.RECOVERY, "reason": "復旧の連絡"}),
    ]
    assert audit.verify_chain(ops).ok
    state = modes.current(ops)
    assert (state.mode, state.actor, state.reason, state.since) == (modes.RECOVERY, "boss2", "復旧の連絡", history[1]["at"])


def test_a_real_outage_suspends_a_drill_in_progress_and_nothing_else_does(ops):
    drill_id = drills.create(ops, scenario="full_outage", title="", description="", planned_start="2026-12-01T09:00",
                             planned_end="2026-12-01T12:00", participants=["clerk1"], terminals=["本庁1"], actor="boss")
    ops.execute("UPDATE drills SET status = ? WHERE id = ?", (drills.ACTIVE, drill_id))  # started (its register is not needed here)
    modes.change(ops, modes.SUSPECT, actor="system", role="system", reason="上流の応答なし")
    assert drills.get(ops, drill_id).status == drills.ACTIVE
    modes.change(ops, modes.DOWNTIME, actor="boss", role="supervisor", reason=REASON)
    assert drills.get(ops, drill_id).status == drills.SUSPENDED
    suspended = drills.events(ops, drill_id)[-1]
    assert (suspended.actor, suspended.event, suspended.detail) == ("boss", "suspended", {"reason": f"実際の障害によりダウン対策モードへ切替え: {REASON}"})

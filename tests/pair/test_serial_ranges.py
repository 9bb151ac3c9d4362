"""Two boxes never hand out the same serial: each box of a pair issues from
its own ranges, which ops.db records with the host that runs the box. A box
whose range overlaps another box's, or a second host under a box's id (the
active's configuration copied onto the standby), does not start; a range
may change only to one that still holds the serials its box handed out.
Each way at its boundary, at start-up and at allocation."""

from __future__ import annotations

import dataclasses
import json
import shutil
import socket

import pytest

from fallback import anchor, ops
from fallback.app import create_app
from fallback.config import ConfigError, load_config
from fallback.counter import issuance
from tests.pair.boxes import BOX_1_RANGES, BOX_2_RANGES, Box, require_other_hosts
from tests.support import Staff

YAMADA_TARO = "10000000011"
# The same certificate again and again on purpose: each repeat is confirmed, as a clerk would.
SELF_REQUEST = {"kind": "juminhyo", "requester_type": "self", "identity_document": "運転免許証", "copies": 1, "confirm_repeat": True}
NO_DAILY_CAP = (("SONAE_COUNTER_DAILY_CAP_PER_REQUESTER", "0"),)


def box(config, box_id: str, ranges, *, home=None, hostname=None) -> Box:
    serial_range, drill_serial_range = ranges
    local = config.home.parent / f"box-{box_id}-local"
    local.mkdir(exist_ok=True)
    return Box(box_id, home or config.home, local, serial_range, drill_serial_range, hostname, NO_DAILY_CAP)


def counter_of(a_box: Box) -> Staff:
    """A clerk at a counter of this box, in the same process (the box's own
    configuration, ops.db on its home)."""
    app = create_app(load_config(env=a_box.env()))
    app.config["TESTING"] = True
    return Staff(app, "clerk1")


def issue(clerk: Staff):
    return clerk.api("POST", f"/api/v1/residents/{YAMADA_TARO}/certificates", json=SELF_REQUEST)


def serial_of(response) -> int:
    assert response.status_code == 201, response.get_json()
    return response.get_json()["certificates"][0]["serial"]


def claim(a_box: Box) -> None:
    """What `sonae serve` and `sonae worker` do first, on this host."""
    conn = ops.open_ops(load_config(env=a_box.env()))
    try:
        issuance.claim_serial_ranges(conn, load_config(env=a_box.env())["counter"])
    finally:
        conn.close()


def one_line(result) -> str:
    assert result.returncode == 1, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


@pytest.mark.parametrize("box_2_range, starts", [
    ((949999, 999999), False),  # one serial in common
    (BOX_1_RANGES[0], False),  # the same range as box 1
    ((950000, 999999), True),  # right after box 1's
])
def test_a_box_whose_range_overlaps_the_other_boxs_does_not_start(loaded_env, box_2_range, starts):
    claim(box(loaded_env, "1", BOX_1_RANGES))
    box_2 = box(loaded_env, "2", (box_2_range, BOX_2_RANGES[1]))
    if starts:
        with box_2.serving() as base:
            assert base  # it answers /healthz: started
        return
    line = one_line(box_2.run("serve", "--port", "1"))
    assert line == (f"Error: counter.serial_range {box_2_range[0]}-{box_2_range[1]} of box 2 overlaps box 1's 900001-949999 "
                    f"(host {socket.gethostname()}) recorded in ops.db: give each box a range of its own")


def test_a_standby_given_the_actives_configuration_does_not_start(loaded_env):
    """The active's sonae.toml copied onto the standby: the same box id and
    ranges on another host. Both would count from the same counter in their
    own copies of ops.db should they ever both be active."""
    require_other_hosts()
    active = box(loaded_env, "1", BOX_1_RANGES, hostname="sonae-1")
    with active.serving():
        pass
    standby = dataclasses.replace(active, hostname="sonae-2")
    expected = ("Error: ops.db records box 1 on host sonae-1, and this host is sonae-2: each box of a pair needs its own "
                "counter.box_id and serial ranges (a box that replaces another takes a new box_id and new ranges)")
    assert one_line(standby.run("serve", "--port", "1")) == expected
    assert one_line(standby.run("worker")) == expected
    with active.serving() as base:  # the active itself starts again on its own host
        assert base


def test_each_box_issues_from_its_own_range_through_takeovers_both_ways(loaded_env, downtime):
    box_1, box_2 = box(loaded_env, "1", BOX_1_RANGES), box(loaded_env, "2", BOX_2_RANGES)
    assert [serial_of(issue(counter_of(box_1))) for _ in range(2)] == [900001, 900002]
    assert serial_of(issue(counter_of(box_2))) == 950000  # box 2 took over on the same ops.db
    # box 1 back: above its own serials — its anchor, and box 2's highest, do not push it out of its range
    assert serial_of(issue(counter_of(box_1))) == 900003
    held = anchor.read_anchor(load_config(env=box_1.env()))
    assert held.serials == {"real:1": 900003, "real:2": 950000}


@pytest.mark.parametrize("box_1_last, status", [(950000, 503), (949999, 201)])
def test_a_running_box_does_not_issue_from_a_range_another_box_has_claimed(loaded_env, downtime, box_1_last, status):
    assert serial_of(issue(counter_of(box(loaded_env, "2", BOX_2_RANGES)))) == 950000
    response = issue(counter_of(box(loaded_env, "1", ((900001, box_1_last), BOX_1_RANGES[1]))))
    assert response.status_code == status, response.get_json()
    if status == 503:
        assert response.get_json()["error"] == "serial_range"
        assert "発行番号の範囲" in response.get_json()["message"]


@pytest.mark.parametrize("new_range, outcome", [
    ((900001, 949999), 900003),  # narrowed for a second box: still holds 900001-900002
    ((900002, 949999), "refused"),  # would leave out 900001
    ((900001, 900002), "serials_exhausted"),  # holds exactly what was handed out: nothing left to hand out
    ((900001, 900001), "refused"),  # would leave out 900002
])
def test_a_range_changes_only_to_one_that_still_holds_the_serials_handed_out(loaded_env, downtime, new_range, outcome):
    box_1 = box(loaded_env, "1", ((900001, 999999), BOX_1_RANGES[1]))
    assert [serial_of(issue(counter_of(box_1))) for _ in range(2)] == [900001, 900002]
    response = issue(counter_of(dataclasses.replace(box_1, serial_range=new_range)))
    if outcome == "refused":
        assert response.status_code == 503 and response.get_json()["error"] == "serial_range"
        assert "leaves out serials it has handed out (900001-900002)" in str(
            pytest.raises(issuance.SerialRangeError, claim, dataclasses.replace(box_1, serial_range=new_range)).value.reason)
    elif outcome == "serials_exhausted":
        assert response.status_code == 422 and response.get_json()["rule"] == "serials_exhausted"
    else:
        assert serial_of(response) == outcome


def test_split_brain_hands_out_no_serial_twice_and_the_discarded_box_knows_what_it_lost(loaded_env, downtime, tmp_path):
    """Both boxes active on diverged copies of ops.db (the replication link
    cut, no fencing); then the copy of box 2 is discarded, as DRBD's
    split-brain recovery does with one side. Each box's anchor lives on its
    own disk, so box 2 still knows what it handed out."""
    box_1 = box(loaded_env, "1", BOX_1_RANGES)
    shutil.copytree(loaded_env.home, tmp_path / "home-2")
    box_2 = box(loaded_env, "2", BOX_2_RANGES, home=tmp_path / "home-2")
    issued_1 = [serial_of(issue(counter_of(box_1))) for _ in range(2)]
    issued_2 = [serial_of(issue(counter_of(box_2))) for _ in range(2)]
    assert issued_1 == [900001, 900002] and issued_2 == [950000, 950001]

    shutil.rmtree(box_2.home)
    shutil.copytree(box_1.home, box_2.home)  # box 2's side discarded: it now holds box 1's data
    verified = box_2.run("audit", "verify")
    assert verified.returncode == 1
    assert "serials of scope real (box 2) up to 950001 were handed out but the database knows only up to 0" in verified.stderr
    assert serial_of(issue(counter_of(box_2))) == 950002, "a serial box 2 handed out during the split brain was issued again"
    assert box_1.run("audit", "verify").returncode == 0  # box 1's side was kept: its own anchor agrees


def test_a_database_from_before_pairs_is_claimed_by_box_1(sonae_env, monkeypatch):
    """Migration 9 gives the counters of a box that ran alone to box 1; an
    anchor written then names scopes alone and is read as box 1's."""
    with monkeypatch.context() as before_pairs:
        before_pairs.setattr(ops, "MIGRATIONS", ops.MIGRATIONS[:8])
        conn = ops.open_ops(sonae_env)
        conn.execute("INSERT INTO serial_counters (scope, next_serial, last_serial) VALUES ('real', 900501, 999999)")
        conn.execute("INSERT INTO requests (id, created_at, scope, clerk, office, terminal, printer, kind, subject_code, requester_type, "
                     "options, copies, fee_yen, outcome) VALUES (1, '2026-01-01T09:00:00+09:00', 'real', 'clerk1', '本庁', '本庁1', "
                     "'プリンタ001', 'juminhyo', ?, 'self', '{}', 1, 300, 'issued')", (YAMADA_TARO,))
        conn.execute("INSERT INTO certificates (serial, scope, request_id, copy_number, status, issued_at, resident_codes, printed_records) "
                     "VALUES (900001, 'real', 1, 1, 'rendered', '2026-01-01T09:00:00+09:00', '[]', '{}')")
        conn.close()
    box_1, box_2 = box(sonae_env, "1", BOX_1_RANGES), box(sonae_env, "2", BOX_2_RANGES)
    legacy = anchor.Anchor(3, "0" * 64, {"real": 900500}, "2026-01-01T09:00:00.000+09:00")
    box_1.anchor.write_text(json.dumps({**dataclasses.asdict(legacy), "mac": anchor._mac(anchor._key(sonae_env), legacy)}))

    with pytest.raises(issuance.SerialRangeError) as refused:  # box 1 has not narrowed its range yet
        claim(box_2)
    assert "overlaps box 1's 900001-999999 (host not started since the upgrade)" in refused.value.reason
    claim(box_1)  # box 1 narrowed to its half: it still holds 900001-900500
    claim(box_2)
    conn = ops.open_ops(sonae_env)
    assert conn.execute("SELECT box_id, host, first_serial, last_serial, next_serial FROM serial_counters WHERE scope = 'real' "
                        "ORDER BY box_id").fetchall() == [("1", socket.gethostname(), 900001, 949999, 900501),
                                                          ("2", socket.gethostname(), 950000, 999999, 950000)]
    config_1 = load_config(env=box_1.env())
    assert anchor.read_anchor(config_1).serials == {"real:1": 900500}
    assert anchor.serial_floor(config_1, "real") == 900500
    box_2.anchor.write_bytes(box_1.anchor.read_bytes())  # box 2 reading the same anchor: those serials are not its own
    assert anchor.serial_floor(load_config(env=box_2.env()), "real") == 0


@pytest.mark.parametrize("setting, problem", [
    ('box_id = ""', "counter.box_id: '': 1 to 32 letters"),
    ('box_id = "box 2"', "counter.box_id: 'box 2': 1 to 32 letters"),
    ('box_id = "sonae-2"', None),
    ("serial_range = [950000, 949999]", "counter.serial_range: [950000, 949999]: first must be at least 1 and at most last"),
    ("serial_range = [950000, 950000]", None),
    ("drill_serial_range = [0, 10]", "counter.drill_serial_range: [0, 10]: first must be at least 1"),
    ("drill_serial_range = [1, 10]", None),
    ('serial_range = [950000, "999999"]', "counter.serial_range: must be [first, last], two whole numbers"),
])
def test_a_box_id_or_range_that_cannot_be_used_is_refused_in_one_line(tmp_path, setting, problem):
    path = tmp_path / "sonae.toml"
    path.write_text(f"[counter]\n{setting}\n", encoding="utf-8")
    if problem is None:
        load_config(path, env={})
        return
    with pytest.raises(ConfigError) as refused:
        load_config(path, env={})
    assert problem in str(refused.value) and "\n" not in str(refused.value)

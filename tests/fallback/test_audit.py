"""The audit chain detects altered, removed and reordered entries."""

import datetime as dt
import hashlib

import pytest

from fallback import audit
from fallback.ops import open_ops
from tests.clocks import set_clock_off


@pytest.fixture
def ops(sonae_env):
    conn = open_ops(sonae_env)
    for i in range(5):
        audit.record(conn, "clerk1", "search", None, {"kana": f"ヤマダ{i}"})
    yield conn
    conn.close()


def test_intact_chain_verifies(ops):
    report = audit.verify_chain(ops)
    assert report.ok and report.entries == 5 and report.first_break is None and report.reason is None


def test_the_hash_covers_each_field_in_the_documented_form(ops):
    """A chain written by an earlier release, or checked by an auditor's own
    tool, verifies only if the hash's material never changes: SHA-256 of the
    compact JSON array [prev_hash, at, actor, action, target, detail, drill]
    with non-ASCII text as is, detail itself compact JSON with sorted keys."""
    entry_id = audit.record(ops, "clerk2", "view", "10000000011", {"z": 1, "名前": "山田", "a": [1, 2]}, drill=True)
    (at, prev_hash, stored_detail, stored_hash) = ops.execute(
        "SELECT at, prev_hash, detail, hash FROM audit WHERE id = ?", (entry_id,)).fetchone()
    detail = '{"a":[1,2],"z":1,"名前":"山田"}'
    material = f'["{prev_hash}","{at}","clerk2","view","10000000011","{detail.replace(chr(34), chr(92) + chr(34))}",1]'
    assert stored_detail == detail
    assert stored_hash == hashlib.sha256(material.encode()).hexdigest()
    first = ops.execute("SELECT prev_hash FROM audit WHERE id = 1").fetchone()[0]
    assert first == "0" * 64


def test_an_entry_is_recorded_as_given_and_found_by_its_filters(ops, monkeypatch):
    audit.record(ops, "boss", "mode.change", "downtime", {"reason": "障害"})
    set_clock_off(monkeypatch, dt.timedelta(minutes=1))
    audit.record(ops, "clerk1", "view", "10000000011", drill=True)
    entries = list(audit.entries(ops))
    assert [e["id"] for e in entries] == [1, 2, 3, 4, 5, 6, 7]
    mode, view = entries[-2:]
    assert {k: mode[k] for k in ("actor", "action", "target", "detail", "drill")} == {
        "actor": "boss", "action": "mode.change", "target": "downtime", "detail": {"reason": "障害"}, "drill": False}
    assert (view["target"], view["detail"], view["drill"]) == ("10000000011", {}, True)
    assert mode["hash"] == ops.execute("SELECT hash FROM audit WHERE id = 6").fetchone()[0] and mode["at"] < view["at"]
    assert [e["id"] for e in audit.entries(ops, actor="boss")] == [6]
    assert [e["id"] for e in audit.entries(ops, action="mode.")] == [6]
    assert [e["id"] for e in audit.entries(ops, since=view["at"])] == [7]
    assert [e["id"] for e in audit.entries(ops, until=mode["at"])] == [1, 2, 3, 4, 5, 6]
    assert [e["id"] for e in audit.entries(ops, since=mode["at"], until=view["at"], actor="clerk1", action="view")] == [7]
    assert audit.csv_row(view)[4:7] == ["10000000011", "{}", 1]
    assert audit.csv_row(entries[0]) == [1, entries[0]["at"], "clerk1", "search", "", '{"kana": "ヤマダ0"}', 0, entries[0]["hash"]]


def test_update_and_delete_are_refused_by_the_database(ops):
    with pytest.raises(Exception, match="append-only"):
        ops.execute("UPDATE audit SET actor = 'x' WHERE id = 2")
    with pytest.raises(Exception, match="append-only"):
        ops.execute("DELETE FROM audit WHERE id = 2")


def _tamper(ops, statement, params=()):
    ops.execute("DROP TRIGGER audit_no_update")
    ops.execute("DROP TRIGGER audit_no_delete")
    ops.execute(statement, params)


def test_altered_entry_is_found(ops):
    _tamper(ops, "UPDATE audit SET detail = '{\"kana\":\"サトウ\"}' WHERE id = 3")
    report = audit.verify_chain(ops)
    assert (report.first_break, report.entries, report.reason) == (3, 2, "entry 3 was altered after it was written")


def test_removed_entry_is_found(ops):
    _tamper(ops, "DELETE FROM audit WHERE id = 2")
    report = audit.verify_chain(ops)
    assert (report.first_break, report.entries, report.reason) == (3, 1, "entries 2–2 are missing")


def test_reordered_entries_are_found(ops):
    rows = ops.execute("SELECT at, actor, action, target, detail, drill, prev_hash, hash FROM audit WHERE id IN (2, 3) ORDER BY id").fetchall()
    _tamper(ops, "DELETE FROM audit WHERE id IN (2, 3)")
    for new_id, row in zip((2, 3), reversed(rows)):
        ops.execute("INSERT INTO audit (id, at, actor, action, target, detail, drill, prev_hash, hash) VALUES (?,?,?,?,?,?,?,?,?)", (new_id, *row))
    report = audit.verify_chain(ops)
    assert (report.first_break, report.entries) == (2, 1) and "does not follow" in report.reason


def test_ops_database_reveals_nothing_without_the_key(sonae_env, ops):
    ops.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    raw = sonae_env.ops_db_path.read_bytes()
    assert "ヤマダ".encode() not in raw and b"clerk1" not in raw

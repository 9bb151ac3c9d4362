"""The audit chain detects altered, removed and reordered entries."""

import pytest

from fallback import audit
from fallback.ops import open_ops


@pytest.fixture
def ops(sonae_env):
    conn = open_ops(sonae_env)
    for i in range(5):
        audit.record(conn, "clerk1", "search", None, {"kana": f"ヤマダ{i}"})
    yield conn
    conn.close()


def test_intact_chain_verifies(ops):
    report = audit.verify_chain(ops)
    assert report.ok and report.entries == 5


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
    assert report.first_break == 3 and "altered" in report.reason


def test_removed_entry_is_found(ops):
    _tamper(ops, "DELETE FROM audit WHERE id = 2")
    report = audit.verify_chain(ops)
    assert report.first_break == 3 and "missing" in report.reason


def test_reordered_entries_are_found(ops):
    rows = ops.execute("SELECT at, actor, action, target, detail, drill, prev_hash, hash FROM audit WHERE id IN (2, 3) ORDER BY id").fetchall()
    _tamper(ops, "DELETE FROM audit WHERE id IN (2, 3)")
    for new_id, row in zip((2, 3), reversed(rows)):
        ops.execute("INSERT INTO audit (id, at, actor, action, target, detail, drill, prev_hash, hash) VALUES (?,?,?,?,?,?,?,?,?)", (new_id, *row))
    report = audit.verify_chain(ops)
    assert report.first_break == 2 and "does not follow" in report.reason


def test_ops_database_reveals_nothing_without_the_key(sonae_env, ops):
    ops.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    raw = sonae_env.ops_db_path.read_bytes()
    assert "ヤマダ".encode() not in raw and b"clerk1" not in raw

"""The operational database's migrations: SQL or sqlite-utils functions,
one transaction each, and table rebuilds that keep triggers and indexes."""

import pytest

from fallback import audit, ops
from fallback.keys import ops_key
from fallback.ops import Transaction, open_ops, schema_database, transform_table


@pytest.fixture
def conn(sonae_env):
    conn = open_ops(sonae_env)
    for i in range(3):
        audit.record(conn, "clerk1", "search", None, {"kana": f"ヤマダ{i}"})
    yield conn
    conn.close()


def test_a_transformed_audit_table_stays_append_only_and_its_chain_intact(conn):
    with Transaction(conn):
        transform_table(schema_database(conn), "audit", types={"drill": int}, defaults={"drill": 0})
    assert {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE tbl_name = 'audit'")} >= {
        "audit_no_update", "audit_no_delete", "audit_at", "audit_actor_action_scope"}
    with pytest.raises(Exception, match="append-only"):
        conn.execute("UPDATE audit SET actor = 'x' WHERE id = 2")
    with pytest.raises(Exception, match="append-only"):
        conn.execute("DELETE FROM audit WHERE id = 2")
    assert audit.verify_chain(conn).ok and audit.verify_chain(conn).entries == 3


def test_a_plain_transform_would_have_lost_the_triggers(conn):
    """Why transform_table exists: sqlite-utils' own rebuild drops them."""
    db = schema_database(conn)
    with Transaction(conn):
        for statement in db["audit"].transform_sql(types={"target": str}):
            conn.execute(statement)
    assert not conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit'").fetchall()


def test_a_function_migration_runs_inside_its_transaction(sonae_env, monkeypatch):
    def add_table_then_fail(db):
        db["scratch"].create({"id": int, "note": str}, pk="id")
        raise RuntimeError("the migration failed half-way")

    conn = open_ops(sonae_env)
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    monkeypatch.setattr(ops, "MIGRATIONS", [*ops.MIGRATIONS, add_table_then_fail])
    with pytest.raises(RuntimeError):
        ops.migrate(conn)
    assert "scratch" not in schema_database(conn).table_names()
    assert conn.execute("PRAGMA user_version").fetchone()[0] == version

    monkeypatch.setattr(ops, "MIGRATIONS", [*ops.MIGRATIONS[:-1], lambda db: db["scratch"].create({"id": int}, pk="id")])
    reopened = ops.connect_ops(sonae_env.ops_db_path, ops_key(sonae_env))
    assert "scratch" in schema_database(reopened).table_names()
    assert reopened.execute("PRAGMA user_version").fetchone()[0] == version + 1

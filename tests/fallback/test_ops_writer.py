"""Writers of ops.db queue on an flock beside it (fallback.ops._Writer), so
that the serving processes of `sonae serve` and the worker wait for one
another in the kernel's order, not in SQLite's sleeping busy handler. The
lock is held exactly while a transaction is open — through nested ones —
and a state directory where the file cannot be made still writes."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys

import pytest

from fallback.ops import Transaction, open_ops


def _locked_by_someone(path) -> bool:
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases what this probe took
    return False


@pytest.fixture
def conn(sonae_env):
    connection = open_ops(sonae_env)
    yield connection
    connection.close()


def test_the_writer_lock_is_held_while_a_transaction_is_open_and_through_a_refused_nested_one(sonae_env, conn):
    lock = sonae_env.ops_db_path.with_name(sonae_env.ops_db_path.name + "-writer.lock")
    with Transaction(conn):
        assert lock.exists() and oct(lock.stat().st_mode & 0o777) == "0o600"
        assert _locked_by_someone(lock)
        with pytest.raises(Exception, match="within a transaction"):  # SQLite refuses a second BEGIN
            Transaction(conn).__enter__()
        assert _locked_by_someone(lock)  # that refusal did not release the outer transaction's lock
    assert not _locked_by_someone(lock)


def test_another_process_waits_for_the_lock_and_then_writes(sonae_env, conn):
    lock = sonae_env.ops_db_path.with_name(sonae_env.ops_db_path.name + "-writer.lock")
    writer = [sys.executable, "-c", (
        "from fallback.config import load_config\n"
        "from fallback.ops import Transaction, open_ops\n"
        "conn = open_ops(load_config())\n"
        "with Transaction(conn):\n"
        "    conn.execute(\"INSERT INTO settings_probe VALUES ('other process')\")\n"
        "print('written')\n")]
    conn.execute("CREATE TABLE settings_probe (said TEXT)")
    with Transaction(conn):
        other = subprocess.Popen(writer, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        with pytest.raises(subprocess.TimeoutExpired):
            other.wait(1.5)  # queued behind this transaction
        conn.execute("INSERT INTO settings_probe VALUES ('this process')")
    out, err = other.communicate(timeout=60)
    assert other.returncode == 0 and out.strip() == "written", err
    assert [said for (said,) in conn.execute("SELECT said FROM settings_probe ORDER BY rowid")] == ["this process", "other process"]
    assert not _locked_by_someone(lock)


def test_a_lock_file_that_cannot_be_opened_leaves_sqlite_to_queue_the_writers(sonae_env, conn):
    lock = sonae_env.ops_db_path.with_name(sonae_env.ops_db_path.name + "-writer.lock")
    lock.mkdir()  # what is there cannot be opened for writing
    with Transaction(conn):
        conn.execute("CREATE TABLE written_anyway (x)")
    assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'written_anyway'").fetchone() == (1,)

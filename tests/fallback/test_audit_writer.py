"""The writer of look-up audit entries (fallback.audit_writer), as `sonae
serve` starts it: the threads of a serving process hand it their search
and view entries and get each one's id once it is committed; the chain
stays whole with durable entries written in between; with the writer gone
every entry is still written, by the thread itself."""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fallback import audit, audit_writer
from fallback.ops import open_ops
from fallback.serve import LookupWriter


@pytest.fixture
def writer(loaded_env):
    """`sonae serve --lookup-writer` with this test as its server; the
    process's look-up entries go to it until the test ends."""
    path = audit_writer.socket_path(loaded_env.home)
    process = subprocess.Popen([sys.executable, "-m", "fallback.cli", "serve", "--lookup-writer", "--server-pid", str(os.getpid())],
                               env=os.environ.copy())
    deadline = time.monotonic() + 30
    while not path.exists():
        assert process.poll() is None and time.monotonic() < deadline, "the writer never listened"
        time.sleep(0.05)
    audit_writer.use(path)
    yield process
    audit_writer.use(None)
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=10)


def count(config, action: str) -> int:
    conn = open_ops(config)
    try:
        return conn.execute("SELECT count(*) FROM audit WHERE action = ?", (action,)).fetchone()[0]
    finally:
        conn.close()


def test_the_threads_look_up_entries_are_committed_by_the_writer_and_the_chain_holds(loaded_env, writer):
    assert audit_writer.append("clerk1", "search", None, '{"query":{}}', 0) is not None  # the writer answers, not the thread

    def searches(thread: int) -> list[int]:
        conn = open_ops(loaded_env)
        try:
            return [audit.record(conn, f"clerk{thread}", "search", None, {"n": n}, durable=False) for n in range(25)]
        finally:
            conn.close()

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        running = [pool.submit(searches, thread) for thread in range(8)]
        conn = open_ops(loaded_env)
        durable = [audit.record(conn, "boss", "mode.change", None, {"n": n}) for n in range(5)]  # the server's own, between them
        ids = [entry_id for done in running for entry_id in done.result()]
    assert len(set(ids)) == 200 and not set(ids) & set(durable)
    stored = {row[0]: row[1] for row in conn.execute("SELECT id, actor FROM audit WHERE action = 'search'")}
    assert set(ids) <= set(stored) and stored[ids[0]] == "clerk0"
    assert audit.verify_chain(conn).ok
    # The writer's socket is the owner's alone: it hands resident codes over.
    assert oct(audit_writer.socket_path(loaded_env.home).stat().st_mode & 0o777) == "0o600"


def test_with_the_writer_gone_the_thread_writes_its_entry_itself(loaded_env, writer):
    conn = open_ops(loaded_env)
    audit.record(conn, "clerk1", "search", None, {"n": 1}, durable=False)
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=10)
    before = count(loaded_env, "search")
    entry_id = audit.record(conn, "clerk1", "search", None, {"n": 2}, durable=False)
    assert count(loaded_env, "search") == before + 1 and conn.execute("SELECT actor FROM audit WHERE id = ?", (entry_id,)).fetchone() == ("clerk1",)
    assert audit_writer.append("clerk1", "search", None, "{}", 0) is None  # and it does not knock on a dead door again at once
    assert audit.verify_chain(conn).ok


def test_the_writer_takes_look_up_entries_only_and_no_client_holds_it_up(loaded_env, writer):
    """The outside tester's socket: another action under any name, a detail
    that would stop `sonae audit export` for good, a line without end, and
    a client that never reads its answers, which used to wedge the writer
    (every counter then waited 10 s a look-up)."""
    import json
    import socket as sockets

    path = str(audit_writer.socket_path(loaded_env.home))
    before = count(loaded_env, "mode.change") + count(loaded_env, "search")
    for line in (json.dumps(["boss", "mode.change", "x", "{}", 0]), json.dumps(["clerk1", "search", None, "not json {", 0]),
                 json.dumps(["clerk1", "search", None, "[]", 0]), "x" * (audit_writer.MAX_LINE_BYTES + 10)):
        with sockets.socket(sockets.AF_UNIX, sockets.SOCK_STREAM) as forger:
            forger.settimeout(5)
            forger.connect(path)
            forger.sendall(line.encode() + (b"\n" if not line.startswith("x") else b""))
            assert forger.recv(100) == b""  # no answer: the connection is closed
    assert count(loaded_env, "mode.change") + count(loaded_env, "search") == before
    deaf = sockets.socket(sockets.AF_UNIX, sockets.SOCK_STREAM)
    deaf.connect(path)
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the writer drops it once its answers back up
        deaf.sendall(b"".join(json.dumps(["clerk1", "search", None, '{"n":1}', 0]).encode() + b"\n" for _ in range(20000)))
    started = time.monotonic()
    assert audit_writer.append("clerk2", "search", None, "{}", 0) is not None
    assert time.monotonic() - started < audit_writer.REPLY_TIMEOUT_S
    deaf.close()


def _answering_writer(writer: LookupWriter, home: Path, not_pid: int | None = None, timeout: float = 60.0) -> int:
    """The pid of the writer once it answers a look-up entry (another than `not_pid`)."""
    deadline = time.monotonic() + timeout
    while True:
        pid = writer.process.pid
        audit_writer.use(audit_writer.socket_path(home))  # the thread's back-off starts over
        if pid != not_pid and audit_writer.append("clerk1", "search", None, "{}", 0) is not None:
            return pid
        assert time.monotonic() < deadline, "no writer answered"
        time.sleep(0.2)


def test_a_writer_that_ends_is_started_again(loaded_env, monkeypatch, caplog):
    monkeypatch.setattr(LookupWriter, "QUICK_END_S", 0.0)
    try:
        with LookupWriter() as writer:
            first = _answering_writer(writer, loaded_env.home)
            os.kill(first, signal.SIGKILL)
            second = _answering_writer(writer, loaded_env.home, not_pid=first)
            assert second != first and writer.process.poll() is None
        assert writer.process.poll() is not None  # the server's end ends it
    finally:
        audit_writer.use(None)
    assert f"look-up audit writer {first} was killed by SIGKILL" in caplog.text


def test_a_writer_that_ends_as_it_starts_is_not_started_again_at_once(loaded_env, monkeypatch):
    monkeypatch.setattr(LookupWriter, "RETRY_AFTER_QUICK_END_S", 600.0)
    try:
        with LookupWriter() as writer:
            first = _answering_writer(writer, loaded_env.home)
            os.kill(first, signal.SIGKILL)
            time.sleep(3 * LookupWriter.RESTART_PAUSE_S)
            assert writer.process.pid == first  # still the ended one: no new process a second
            conn = open_ops(loaded_env)
            entry_id = audit.record(conn, "clerk1", "search", None, {"n": 1}, durable=False)  # written by the thread itself
            assert conn.execute("SELECT actor FROM audit WHERE id = ?", (entry_id,)).fetchone() == ("clerk1",)
            conn.close()
    finally:
        audit_writer.use(None)


def test_a_writer_that_goes_silent_is_killed_and_replaced(loaded_env, monkeypatch, caplog):
    """The outside tester's SIGSTOP: a writer that neither answers nor ends
    held every serving thread for 2 s a look-up, once per 30 s each, and
    nothing said so."""
    monkeypatch.setattr(LookupWriter, "SILENT_AFTER_S", 3.0)
    monkeypatch.setattr(LookupWriter, "QUICK_END_S", 0.0)
    try:
        with LookupWriter() as writer:
            first = _answering_writer(writer, loaded_env.home)
            time.sleep(2 * LookupWriter.SILENT_AFTER_S)
            assert writer.process.pid == first  # beating while idle: left alone
            os.kill(first, signal.SIGSTOP)
            second = _answering_writer(writer, loaded_env.home, not_pid=first)
            assert second != first
    finally:
        audit_writer.use(None)
    assert f"look-up audit writer {first} has been silent for" in caplog.text

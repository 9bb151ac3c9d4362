"""Fixtures for the sync tests: a configured appliance (the shared
`sonae_env`), its snapshot store, exports written on the fly, a real HTTP
upstream, and helpers to run the `sonae` command and read what it recorded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fallback.config import load_config
from fallback.mirror.registry import snapshot_store
from fallback.mirror.syncing import run_full_sync
from fallback.ops import open_ops
from sync.register import connect_snapshot
from sync.schema import summary_text
from tests.sync.exports import population, write_export
from tests.sync.upstream_server import TOKEN, TestUpstream

SONAE = str(Path(sys.executable).with_name("sonae"))


@pytest.fixture
def config(sonae_env):
    return sonae_env


@pytest.fixture
def store(config):
    return snapshot_store(config)


@pytest.fixture
def small_export(tmp_path):
    """A valid export of 30 residents and 10 seals."""
    residents, seals = population(30)
    directory = tmp_path / "export-small"
    write_export(directory, residents, seals)
    return directory


@pytest.fixture
def loaded(config, small_export):
    """An appliance whose generation 1 holds `small_export`."""
    run_full_sync(config, small_export, actor="test")
    return config


@pytest.fixture
def upstream(small_export, monkeypatch):
    """A real HTTP upstream serving `small_export` (and whatever changes a
    test appends to `upstream.changes`), configured for the appliance."""
    server = TestUpstream(small_export).start()
    monkeypatch.setenv("SONAE_UPSTREAM_URL", server.url)
    monkeypatch.setenv("SONAE_UPSTREAM_TOKEN", TOKEN)
    monkeypatch.setenv("SONAE_UPSTREAM_TIMEOUT_S", "1.0")
    yield server
    server.stop()


def reload_config():
    """The configuration as the environment says now (after monkeypatch)."""
    return load_config()


def run_sonae(*args: str, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([SONAE, *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})


def sync_runs(config) -> list[dict]:
    """All recorded sync runs, oldest first."""
    ops = open_ops(config)
    try:
        cursor = ops.execute("SELECT * FROM sync_runs ORDER BY id")
        names = [d[0] for d in cursor.description]
        rows = [dict(zip(names, row)) for row in cursor]
    finally:
        ops.close()
    for row in rows:
        row["detail"] = json.loads(row["detail"] or "{}")
    return rows


def audit_entries(config, action: str) -> list[dict]:
    from fallback import audit

    ops = open_ops(config)
    try:
        return list(audit.entries(ops, action=action))
    finally:
        ops.close()


def assert_serving(config, generation: int, residents: int) -> None:
    """`generation` is current, passes verify, and answers the counter's
    questions."""
    store = snapshot_store(config)
    assert store.current() == generation
    report = store.verify()
    assert report.ok, report.problems
    with store.open_register() as register:
        assert register.meta.residents == residents
        assert register.search(kana="ヤマダ"), "the register answers a search"
    assert_summaries_match_records(store, generation)
    leftovers = [p.name for p in store.directory.iterdir() if p.name.endswith((".tmp", ".deleting"))]
    assert not leftovers, leftovers


def assert_summaries_match_records(store, generation: int) -> None:
    """resident_summaries holds exactly one row per resident, keyed by the
    resident's search row and equal to the summary of the stored record."""
    conn = connect_snapshot(store.path_of(generation), store.key, readonly=True)
    try:
        expected = sorted(
            (kana, birth, row_id, summary_text(json.loads(record)))
            for kana, birth, row_id, record in conn.execute(
                "SELECT r.kana_key, r.birth_date, r.id, rec.record FROM residents r JOIN resident_records rec ON rec.id = r.id"
            )
        )
        stored = conn.execute("SELECT kana_key, birth_date, id, summary FROM resident_summaries").fetchall()
    finally:
        conn.close()
    assert stored == expected  # in key order too: the table is clustered by kana


@pytest.fixture
def signal_handlers_restored():
    """For a test that installs fallback.mirror.sync_commands.StopSignals in
    the test process: a command that ended on a signal keeps ignoring the
    ones after it, which pytest must not."""
    import signal

    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)

"""A disk that fills up during a write: the write is refused with a clear
reason, the half-built generation is removed, the previous one serves."""

from __future__ import annotations

import os
import subprocess

import pytest

from fallback.mirror.registry import snapshot_store
from fallback.mirror.syncing import run_changes, run_full_sync
from sync.errors import SnapshotDiskFull
from tests.mounts import require_tmpfs
from tests.sync.conftest import assert_serving, reload_config, sync_runs
from tests.sync.exports import change, make_resident, population, write_export


@pytest.fixture
def small_disk(config):
    """The snapshot directory on a 2 MB tmpfs (where this process may mount one)."""
    require_tmpfs()
    directory = config.snapshot_dir
    directory.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(directory)], check=True, capture_output=True)
    yield directory
    subprocess.run(["umount", "-l", str(directory)], check=True)


def test_disk_full_during_a_full_load(config, small_disk, small_export, tmp_path):
    run_full_sync(config, small_export)
    residents, seals = population(20000)  # ~20 MB of register
    write_export(tmp_path / "big", residents, seals)
    with pytest.raises(SnapshotDiskFull, match=r"the snapshot disk is full \(.* MB free of 2\.\d MB in .*\); the previous generation keeps serving"):
        run_full_sync(config, tmp_path / "big")
    assert_serving(config, 1, 30)
    run = sync_runs(config)[-1]
    assert run["outcome"] == "failed" and "the snapshot disk is full" in run["error"]


def test_disk_full_during_the_change_feed(config, small_disk, small_export, upstream):
    run_full_sync(config, small_export)
    filler = small_disk / "filler"
    free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
    with open(filler, "wb") as handle:
        handle.write(b"\0" * (free - 64 * 1024))
    upstream.changes = [change(1001 + i, make_resident(100 + i, previous_address="大阪府" * 300)) for i in range(400)]
    config = reload_config()
    with pytest.raises(SnapshotDiskFull):
        run_changes(config)
    filler.unlink()
    assert_serving(config, 1, 30)
    run = sync_runs(config)[-1]
    assert run["outcome"] == "failed" and "the snapshot disk is full" in run["error"]


def test_a_catch_up_keeps_the_wal_to_about_one_page(config, small_disk, small_export, upstream, monkeypatch):
    """The campaign's catch-up grew the WAL to 3-4x the database and filled
    a freed disk again. Forty pages rewriting the same twenty residents:
    each fits in the 2 MB disk, all of them together do not. A reader stays
    open throughout, as the counter's do."""
    run_full_sync(config, small_export)
    monkeypatch.setenv("SONAE_SYNC_CHANGES_BATCH", "20")
    seq = 1000
    for version in range(2, 42):
        upstream.changes += [change(seq + i + 1, make_resident(i, version=version, previous_address=f"大阪府{version}" * 250))
                             for i in range(20)]
        seq += 20
    store = snapshot_store(config)
    with store.open_register() as reader:
        result = run_changes(reload_config())
        assert result.pages == 40 and result.applied == 800
        wal = store.path_of(1).with_name("register.db-wal")
        database = store.path_of(1).stat().st_size
        assert wal.stat().st_size < database, (wal.stat().st_size, database)
        assert reader.resident(make_resident(0)["resident_code"])["version"] == 41
    assert_serving(config, 1, 30)

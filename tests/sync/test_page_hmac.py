"""Snapshot layout 4: every page authenticated with HMAC-SHA256 (cheaper than
SQLCipher's default HMAC-SHA512). The per-page check must still catch any
altered byte, and a generation written with the older settings must be
refused by its layout, not taken for a wrong key."""

from __future__ import annotations

import os

import pytest

from fallback.mirror.syncing import full_export_due
from sync import crypto
from sync.errors import SnapshotOutdated
from sync.register import connect_snapshot
from sync.schema import PAGE_HMAC, SCHEMA_VERSION
from sync.store import OUTDATED, page_check
from tests.sync.conftest import assert_serving, run_sonae

PAGE = 4096


def test_a_generation_is_written_with_hmac_sha256(loaded, store):
    conn = connect_snapshot(store.path_of(1), store.key, readonly=True)
    try:
        assert PAGE_HMAC == "HMAC_SHA256"
        assert conn.execute("PRAGMA cipher_hmac_algorithm").fetchone()[0] == "HMAC_SHA256"
        assert conn.execute("PRAGMA cipher_integrity_check").fetchall() == []
    finally:
        conn.close()
    with pytest.raises(crypto.WrongKeyError):  # the format differs from SQLCipher's default
        crypto.connect(store.path_of(1), store.key, readonly=True)


@pytest.mark.parametrize("where", [100, PAGE // 2, PAGE - 40, PAGE - 1], ids=["data", "middle", "iv", "hmac"])
def test_snapshot_verify_catches_one_flipped_byte_anywhere_in_a_page(loaded, store, where):
    """A byte of the page's data, of its IV or of its stored HMAC."""
    path = store.path_of(1)
    assert run_sonae("snapshot", "verify").returncode == 0
    data = bytearray(path.read_bytes())
    pages = len(data) // PAGE
    page = pages // 2 + 1
    data[(page - 1) * PAGE + where] ^= 0x01
    path.write_bytes(bytes(data))
    failures, counted = page_check(path, store.key)
    assert counted == pages and len(failures) == 1 and f"page {page}" in failures[0]
    result = run_sonae("snapshot", "verify")
    assert result.returncode == 1
    assert "generation 1 FAILED verification" in result.stderr and f"1 of {pages:,} page(s) fail their check (damaged); first: page {page:,}" in result.stderr
    # One line however many messages SQLCipher and SQLite give, and the step there is: no other generation to go back to.
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.strip().endswith("— no other generation to roll back to: run `sonae sync full` to load a new one")


def make_layout_3(store, generation: int) -> None:
    """Rewrite a generation as Sonae wrote it before layout 4: SQLCipher's
    default cipher settings (HMAC-SHA512), layout 3 in its meta."""
    path = store.path_of(generation)
    legacy = path.with_name("legacy.db")
    conn = connect_snapshot(path, store.key)
    conn.execute("ATTACH DATABASE ? AS legacy KEY ?", (str(legacy), f"x'{store.key.hex()}'"))  # ATTACH takes the defaults
    conn.execute("SELECT sqlcipher_export('legacy')")
    conn.execute("DETACH DATABASE legacy")
    conn.close()
    for leftover in ("-wal", "-shm"):
        path.with_name(path.name + leftover).unlink(missing_ok=True)
    os.replace(legacy, path)
    conn = crypto.connect(path, store.key)
    conn.execute("UPDATE meta SET value = 3 WHERE key = 'schema_version'")
    conn.commit()
    conn.close()


def test_a_layout_3_generation_is_refused_by_name_and_replaced_by_a_full_load(loaded, config, store, small_export):
    assert SCHEMA_VERSION >= 4  # layout 4 changed the cipher settings a layout 3 file was written with
    make_layout_3(store, 1)
    outdated = rf"generation 1 has snapshot layout 3, this Sonae reads layout {SCHEMA_VERSION} .*run `sonae sync full`"
    with pytest.raises(SnapshotOutdated, match=outdated):
        store.open_register()
    with pytest.raises(SnapshotOutdated, match=outdated):
        store.verify(1)
    (info,) = store.generations()
    assert info.state == OUTDATED and "snapshot layout 3" in info.problem and "key" not in info.problem
    assert "generation 1 has snapshot layout 3" in full_export_due(config)  # the worker loads a current one unasked
    result = run_sonae("sync", "full", "--from", str(small_export))  # the gates still read the old generation's meta
    assert result.returncode == 0, result.stderr
    assert "override" not in result.stdout + result.stderr
    assert_serving(config, 2, 30)
    assert run_sonae("snapshot", "verify").returncode == 0


def test_a_key_rotation_keeps_each_generations_cipher_settings(loaded, store, small_export):
    assert run_sonae("sync", "full", "--from", str(small_export)).returncode == 0
    make_layout_3(store, 1)
    new_key = os.urandom(32)
    assert store.rekey(new_key) == [1, 2]
    assert store.verify(2).ok
    with pytest.raises(SnapshotOutdated, match="generation 1 has snapshot layout 3"):  # still itself, under the new key
        store.open_register(1)


def test_a_wrong_key_is_not_taken_for_an_older_layout(loaded, store):
    store.key = bytes(32)
    with pytest.raises(crypto.WrongKeyError):
        store.open_register()
    (info,) = store.generations()
    assert "cannot be opened with the configured key" in info.problem

"""Damaged files: a flipped byte in the pointer, a damaged generation, a
killed load's leftovers. Each is reported as what it is, `snapshot list`
and `rollback` keep working, and nobody falls back to an older generation
without a person's confirmation (DECISIONS: it may undo a support measure)."""

from __future__ import annotations

import json

import pytest

from fallback.mirror.syncing import reclaim_leftovers, run_changes
from sync import crypto
from sync.errors import StoreDamaged
from sync.store import DAMAGED, OK, POINTER_COPY_FILE, WRONG_KEY
from tests.sync.conftest import assert_serving, audit_entries, reload_config, run_sonae
from tests.sync.exports import change, make_resident

PAGE = 4096


def flip_byte(path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def damage_pages(path, pages) -> None:
    """One flipped byte in each page (1-based numbers): its HMAC fails."""
    data = bytearray(path.read_bytes())
    for page in pages:
        data[(page - 1) * PAGE + 100] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture
def two_generations(loaded, store, small_export):
    assert run_sonae("sync", "full", "--from", str(small_export)).returncode == 0
    assert store.current() == 2
    return store


def test_one_flipped_byte_in_current_is_reported_and_its_copy_serves(loaded, two_generations, upstream):
    store = two_generations
    flip_byte(store.directory / "CURRENT", 2)  # "gen-…" no longer text: the campaign's UnicodeDecodeError
    pointer = store.pointer()
    assert pointer.generation == 2 and "CURRENT is damaged (it holds bytes that are not text)" in pointer.damage
    status = run_sonae("sync", "status")
    assert status.returncode == 0, status.stderr
    listing = run_sonae("snapshot", "list")
    assert listing.returncode == 0 and "*   2" in listing.stdout
    assert "damaged pointer:" in listing.stderr and "its copy names gen-000002, which serves" in listing.stderr
    # The next writer puts CURRENT right again.
    run_changes(reload_config())
    assert store.pointer().damage is None
    assert_serving(loaded, 2, 30)


def test_a_flipped_digit_is_damage_not_another_generation(loaded, two_generations):
    store = two_generations
    pointer = store.directory / "CURRENT"
    data = bytearray(pointer.read_bytes())
    data[len("gen-00000")] = ord("1")  # one byte: now it names generation 1, which exists
    pointer.write_bytes(bytes(data))
    pointer = store.pointer()
    assert "its checksum does not match" in pointer.damage
    assert pointer.generation == 2, "the copy says what CURRENT held: not the generation the damage happens to name"


def test_with_both_copies_damaged_nothing_serves_until_a_person_confirms(loaded, two_generations):
    store = two_generations
    flip_byte(store.directory / "CURRENT", 0)
    (store.directory / POINTER_COPY_FILE).write_bytes(b"\x00" * 20)
    with pytest.raises(StoreDamaged, match=r"The newest generation that opens is 2; serving it needs a supervisor's or IT's confirmation"):
        store.current()
    status = run_sonae("sync", "status")
    assert status.returncode == 1 and "Traceback" not in status.stderr
    assert "`sonae snapshot rollback 2 --reason ...`" in status.stderr and len(status.stderr.strip().splitlines()) == 1
    # list and rollback still work: listing is how the operator checks
    listing = run_sonae("snapshot", "list", "--json")
    assert listing.returncode == 0, listing.stderr
    assert [(g["generation"], g["current"], g["state"]) for g in json.loads(listing.stdout)] == [(1, False, OK), (2, False, OK)]
    assert "serving it needs a supervisor's or IT's confirmation" in listing.stderr
    # the confirmation
    result = run_sonae("snapshot", "rollback", "2", "--reason", "CURRENT damaged; generation 2 checked", "--actor", "it-tanaka")
    assert result.returncode == 0, result.stderr
    assert "generation 2 is current (no readable generation was current)" in result.stdout
    assert_serving(loaded, 2, 30)
    assert audit_entries(loaded, "snapshot.rollback")[-1]["detail"]["reason"] == "CURRENT damaged; generation 2 checked"


def test_a_pointer_to_a_missing_generation_without_a_copy_waits_for_rollback(loaded, two_generations):
    store = two_generations
    (store.directory / POINTER_COPY_FILE).unlink()
    (store.directory / "CURRENT").write_text("gen-000042\n")  # a pointer of the format before checksums
    status = run_sonae("sync", "status")
    assert status.returncode == 1 and "names gen-000042, which does not exist" in status.stderr
    assert run_sonae("snapshot", "rollback", "2", "--reason", "CURRENT was overwritten").returncode == 0
    assert_serving(loaded, 2, 30)


def test_a_damaged_older_generation_is_listed_as_damaged_beside_the_good_ones(loaded, two_generations):
    store = two_generations
    damage_pages(store.path_of(1), [1])  # its first page: it does not even open
    listing = run_sonae("snapshot", "list", "--json")
    assert listing.returncode == 0, listing.stderr
    states = {g["generation"]: (g["state"], g["problem"]) for g in json.loads(listing.stdout)}
    assert states[2] == (OK, None)
    assert states[1][0] == DAMAGED and "damaged" in states[1][1] and "wrong key" not in states[1][1]
    text = run_sonae("snapshot", "list")
    assert text.returncode == 0 and "1  damaged" in text.stdout and "*   2" in text.stdout
    refused = run_sonae("snapshot", "rollback", "1", "--reason", "try")
    assert refused.returncode == 1 and "fails verification" in refused.stderr and store.current() == 2


def test_a_damaged_first_page_is_damage_not_a_wrong_key_even_alone(loaded, store):
    damage_pages(store.path_of(1), [1])
    (info,) = store.generations()
    assert info.state == DAMAGED and "1 of" in info.problem and "first: page 1" in info.problem
    verify = run_sonae("snapshot", "verify")
    assert verify.returncode == 1
    assert "encrypted page check: 1 of" in verify.stderr and "its first page cannot be read" in verify.stderr
    assert "configured key" not in verify.stderr


def test_a_wrong_key_still_reads_as_a_wrong_key(loaded, store):
    store.key = bytes(32)
    (info,) = store.generations()
    assert info.state == WRONG_KEY and "cannot be opened with the configured key" in info.problem
    with pytest.raises(crypto.WrongKeyError):
        store.verify()


def test_snapshot_verify_summarises_many_damaged_pages(loaded, store):
    path = store.path_of(1)
    pages = path.stat().st_size // PAGE
    damage_pages(path, range(3, pages + 1))
    verify = run_sonae("snapshot", "verify")
    assert verify.returncode == 1
    line = verify.stderr.strip()
    assert len(line.splitlines()) == 1 and len(line) < 1500, len(line)
    assert f"{pages - 2:,} of {pages:,} page(s) fail their check (damaged); first: page 3, last: page {pages:,}" in line


def test_a_killed_loads_leftovers_are_reclaimed_by_the_next_writer_of_any_kind(loaded, store, upstream):
    def leave_a_killed_load(number: int):
        building = store.directory / f"gen-{number:06d}.tmp"
        building.mkdir()
        (building / "register.db").write_bytes(b"\0" * 1_000_000)
        return building

    # the change feed
    leftover = leave_a_killed_load(7)
    upstream.changes = [change(1001, make_resident(100))]
    run_changes(reload_config())
    assert not leftover.exists()
    # the worker's start
    leftover = leave_a_killed_load(8)
    assert reclaim_leftovers(loaded) == ["gen-000008.tmp"]
    assert not leftover.exists()
    # a full load (as before)
    leftover = leave_a_killed_load(9)
    assert run_sonae("sync", "full", "--from", str(upstream.export_dir)).returncode == 0
    assert not leftover.exists()

"""Loading good exports, and what the counter app gets from the result."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest

from fallback.mirror.registry import snapshot_store
from sync.errors import NoSnapshot, StoreDamaged
from tests.support import EXAMPLE_EXPORT
from tests.sync.conftest import assert_serving, assert_summaries_match_records, audit_entries, reload_config, run_sonae, sync_runs
from tests.sync.exports import AS_OF, make_resident, make_seal, population, write_export


def test_example_export_loads_and_is_searchable(config, store):
    result = run_sonae("sync", "full", "--from", str(EXAMPLE_EXPORT))
    assert result.returncode == 0, result.stderr
    assert "generation 1 is current: 12 residents, 8 seals" in result.stdout
    with store.open_register() as register:
        meta = register.meta
        assert (meta.generation, meta.residents, meta.seals, meta.last_seq) == (1, 12, 8, 1000)
        assert meta.as_of == dt.datetime.fromisoformat("2026-11-24T23:00:00+09:00")
        assert meta.municipality_code == "131113"
        assert register.age(dt.datetime.fromisoformat("2026-11-25T23:00:00+09:00")) == dt.timedelta(days=1)
        assert [r["name"] for r in register.search(kana="やまだ")] == ["山田\u3000一郎", "山田\u3000太郎", "山田\u3000花子"]
        assert [r["name"] for r in register.search(name="高橋")] == ["髙橋\u3000﨑子"]
        assert [r["name"] for r in register.search(name="葛城")] == ["葛\U000e0102城\u3000辻\U000e0102"]
        assert [r["name"] for r in register.search(name="大山")] == ["王\u3000偉"]  # 通称
        assert [r["name"] for r in register.search(name="wang wei")] == ["王\u3000偉"]  # alphabet name
        assert len(register.search(address="東京都大田区西蒲田七丁目49番")) == 3
        assert len(register.search(address="西蒲田7-49-1")) == 3
        assert [r["name"] for r in register.search(kana="ヤマダ", birth_date=dt.date(1978, 11, 3))] == ["山田\u3000花子"]
        assert register.search(resident_code="10000000011")[0]["name"] == "山田\u3000太郎"
        assert register.search(kana="ヤマダ", birth_date="1999-01-01") == []
        assert len(register.search(kana="ヤマダ", limit=2)) == 2
        assert register.resident("10000000011")["relationship"] == "世帯主"
        assert register.resident("99999999999") is None
        household = register.household("0000100001")
        assert [m["household_order"] for m in household.active] == [1, 2, 3] and household.removed == []
        seals = register.seals_of("10000000011")
        assert seals and register.seal(seals[0]["seal_number"])["resident_code"] == "10000000011"
    assert sync_runs(config)[-1]["outcome"] == "ok"


def test_removed_members_are_kept_apart_in_the_household(config, store, tmp_path):
    residents = [make_resident(0), make_resident(1), make_resident(2, status="removed", removal={"reason": "死亡", "occurred_on": "2025-01-02", "notified_on": "2025-01-03", "moved_to": None,
                                                                                                "moved_to_confirmed": False, "confirmed_on": None})]
    write_export(tmp_path / "e", residents, [])
    assert run_sonae("sync", "full", "--from", str(tmp_path / "e")).returncode == 0
    with store.open_register() as register:
        household = register.household(residents[0]["household_id"])
        assert [m["resident_code"] for m in household.active] == [residents[0]["resident_code"], residents[1]["resident_code"]]
        assert [m["resident_code"] for m in household.removed] == [residents[2]["resident_code"]]
        assert register.search(resident_code=residents[2]["resident_code"])[0]["status"] == "removed"


def test_search_needs_a_criterion(loaded, store):
    with store.open_register() as register, pytest.raises(ValueError, match="at least one criterion"):
        register.search()
    with store.open_register() as register, pytest.raises(ValueError, match="kana criterion is empty"):
        register.search(kana="　")


@pytest.mark.parametrize(
    "criteria",
    [
        {"kana": "ヤマダ"},
        {"name": "山田"},
        {"birth_date": "1975-06-15"},
        {"address": "西蒲田7"},
        {"resident_code": "10000000011"},
        {"kana": "ヤ", "address": "大森"},
        {"kana": "ヤマダ", "address": "西蒲田7-1"},
        {"name": "佐藤", "birth_date": "1980-01-01"},
    ],
)
def test_every_search_is_an_index_range_scan(loaded, store, criteria):
    with store.open_register() as register:
        plan = register.query_plan(**criteria)
    # Scanning the (few) matches of a subquery is fine; scanning a table or a whole index is not.
    assert not any(re.match(r"SCAN (r|s)\b", step) for step in plan), plan
    assert any("USING COVERING INDEX" in step or "USING INDEX" in step or "USING INTEGER PRIMARY KEY" in step for step in plan)
    # Each match's summary is found by its key, never by a scan.
    assert "SEARCH s USING PRIMARY KEY (kana_key=? AND birth_date=? AND id=?)" in plan, plan
    if "kana" in criteria and "address" in criteria:  # the town and the kana together in one index
        # covering: it says whether a match is under a 支援措置 (which an address never matches), so no row is read
        assert any(step.startswith("SEARCH r USING COVERING INDEX residents_town (town_key=? AND kana_key>? AND kana_key<?)")
                   for step in plan), plan


def test_a_town_and_kana_search_reads_no_table_row_also_with_protected_residents(loaded, store):
    """Residents under a counter's 仮支援措置 are left out by id, which the
    index holds, so the search stays on residents_town alone."""
    with store.open_register() as register:
        code = register.search(kana="ヤマダ", limit=1)[0]["resident_code"]
        criteria = {"kana": "ヤマダ", "address": register.resident(code)["address"]["town"]}
        assert code in {r["resident_code"] for r in register.search(**criteria)}
        plan = register.query_plan(**criteria, protected_codes=frozenset({code, "10000000000"}))
        assert any(step.startswith("SEARCH r USING COVERING INDEX residents_town (town_key=? AND kana_key>? AND kana_key<?)")
                   for step in plan), plan
        assert code not in {r["resident_code"] for r in register.search(**criteria, protected_codes=frozenset({code}))}


TOWN_QUERIES = ["西蒲田", "西蒲田七丁目", "西蒲田7-1", "西蒲田7-12-", "西蒲田七丁目12番3号", "蒲田", "蒲田本町", "羽田", "羽田空港3", "東京都大田区大森北1",
                "六郷", "南六郷3-2"]


@pytest.mark.parametrize("kana", ["ヤ", "ヤマダ", "サトウ ハ", "タカハシ"])
def test_kana_with_an_address_finds_what_the_address_alone_finds(config, store, tmp_path, kana):
    """The town path (residents_town, towns found by seeking) returns exactly
    the residents of the address-only path whose kana matches — for whole
    towns, parts of town names shared by several towns, addresses that go on
    into the 番地, and towns with and without 丁目."""
    residents, seals = population(900)
    extra_towns = ["西蒲田", "蒲田本町一丁目", "羽田空港", "六郷", "六郷土手"]
    for i, resident in enumerate(residents[::7]):
        resident["address"]["town"] = extra_towns[i % len(extra_towns)]
    write_export(tmp_path / "e", residents, seals)
    assert run_sonae("sync", "full", "--from", str(tmp_path / "e")).returncode == 0
    with store.open_register() as register:
        for address in TOWN_QUERIES:
            by_address = [r for r in register.search(address=address, limit=10000) if r["resident_code"] in
                          {x["resident_code"] for x in register.search(kana=kana, limit=10000)}]
            assert register.search(address=address, kana=kana, limit=10000) == by_address, address
        found = sum(bool(register.search(address=address, kana=kana)) for address in TOWN_QUERIES)
        assert found >= len(TOWN_QUERIES) // 2, found  # the comparisons are not between empty lists


def test_a_generation_of_an_older_layout_is_refused_and_replaced_by_a_full_load(loaded, config, store, small_export):
    from fallback.mirror.syncing import full_export_due
    from sync.errors import SnapshotOutdated
    from sync.register import connect_snapshot

    conn = connect_snapshot(store.path_of(1), store.key)
    conn.execute("UPDATE meta SET value = 1 WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(SnapshotOutdated, match=r"generation 1 has snapshot layout 1, this Sonae reads layout \d+ .*run `sonae sync full`"):
        store.open_register()
    listed = run_sonae("snapshot", "list")
    assert "run `sonae sync full`" in listed.stdout + listed.stderr
    assert "generation 1 has snapshot layout 1" in full_export_due(config)  # the worker loads a current one unasked
    result = run_sonae("sync", "full", "--from", str(small_export))  # the count gate still reads the old generation's meta
    assert result.returncode == 0, result.stderr
    assert_serving(config, 2, 30)


def test_individual_number_is_dropped_unless_mirrored(config, store, small_export, monkeypatch):
    assert run_sonae("sync", "full", "--from", str(small_export)).returncode == 0
    with store.open_register() as register:
        assert register.resident("20000000000")["individual_number"] is None
        assert not register.meta.individual_number_mirrored
    result = run_sonae("sync", "full", "--from", str(small_export), env={"SONAE_SYNC_MIRROR_INDIVIDUAL_NUMBER": "true"})
    assert result.returncode == 0, result.stderr
    with store.open_register() as register:
        assert register.resident("20000000000")["individual_number"] == "100000000000"
        assert register.meta.individual_number_mirrored
    assert store.verify().ok


def test_snapshot_files_reveal_no_name_without_the_key(config, store, tmp_path, upstream):
    from fallback.mirror.syncing import run_changes
    from tests.sync.exports import change

    residents, seals = population(300)
    residents[7]["name"] = "須藤\u3000蘭丸"
    write_export(upstream.export_dir, residents, seals)
    assert run_sonae("sync", "full").returncode == 0
    # A reader keeps the WAL from being checkpointed away while a change
    # (a name only the change feed knows) is written into it.
    with store.open_register() as reader:
        upstream.changes = [change(1001, make_resident(9000, name="鬼頭\u3000鞠子", name_kana="キトウ\u3000マリコ"))]
        run_changes(reload_config())
        files = {path.name: path.read_bytes() for path in store.path_of(1).parent.iterdir()}
        assert reader.meta.last_seq == 1001
    assert len(files.get("register.db-wal", b"")) > 0, "the change is in the WAL"
    raw = b"".join(files.values())
    for needle in ("須藤", "蘭丸", "鬼頭", "鞠子", "キトウ", "20000000007", "20000009000", "西蒲田", "individual_number"):
        assert needle.encode("utf-8") not in raw, needle
    assert b"SQLite format 3" not in raw
    with store.open_register() as register:
        assert register.search(name="須藤蘭丸") and register.search(kana="キトウマリコ")


def test_store_reports_missing_generations_and_a_bad_pointer(config, store):
    assert store.current() is None
    with pytest.raises(NoSnapshot, match="no snapshot has been loaded"):
        store.open_register()
    store.directory.mkdir(parents=True)
    (store.directory / "CURRENT").write_text("gen-000009\n")
    with pytest.raises(StoreDamaged, match="gen-000009, which does not exist"):
        store.current()


def test_generations_prune_and_rollback(config, small_export):
    for _ in range(4):
        assert run_sonae("sync", "full", "--from", str(small_export), env={"SONAE_SYNC_KEEP_GENERATIONS": "3"}).returncode == 0
    store = snapshot_store(config)
    assert store.generation_numbers() == [2, 3, 4] and store.current() == 4

    listing = run_sonae("snapshot", "list", "--json")
    generations = json.loads(listing.stdout)
    assert [(g["generation"], g["current"]) for g in generations] == [(2, False), (3, False), (4, True)]
    assert all(g["residents"] == 30 and g["as_of"] == AS_OF and g["age_hours"] > 0 for g in generations)

    result = run_sonae("snapshot", "rollback", "2", "--reason", "generation 4 shows the wrong town", "--actor", "it-tanaka")
    assert result.returncode == 0, result.stderr
    assert "generation 2 is current (was 4)" in result.stdout
    assert_serving(config, 2, 30)
    entry = audit_entries(config, "snapshot.rollback")[-1]
    assert entry["actor"] == "it-tanaka" and entry["detail"] == {"from": 4, "to": 2, "reason": "generation 4 shows the wrong town"}

    # Pruning never removes the current generation, even when it is the oldest.
    assert run_sonae("sync", "full", "--from", str(small_export), env={"SONAE_SYNC_KEEP_GENERATIONS": "1"}).returncode == 0
    assert store.generation_numbers() == [5] and store.current() == 5


def test_rollback_to_a_missing_generation_is_refused(loaded):
    result = run_sonae("snapshot", "rollback", "7", "--reason", "typo")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == ["Error: generation 7 does not exist in " + str(snapshot_store(loaded).directory) + " (generations: 1)"]


def test_verify_finds_a_damaged_page(loaded):
    store = snapshot_store(loaded)
    path = store.path_of(1)
    data = bytearray(path.read_bytes())
    data[4096 * 3 + 100] ^= 0xFF  # one flipped bit in the fourth page
    path.write_bytes(bytes(data))
    result = run_sonae("snapshot", "verify")
    assert result.returncode == 1
    assert "generation 1 FAILED verification" in result.stderr and "page" in result.stderr
    assert "Traceback" not in result.stderr


def test_verify_finds_records_altered_behind_sonaes_back(loaded):
    store = snapshot_store(loaded)
    from sync.register import connect_snapshot

    conn = connect_snapshot(store.path_of(1), store.key)
    conn.execute("UPDATE resident_records SET record = replace(record, '山田', '川田') WHERE id = 1")
    conn.commit()
    conn.close()
    report = store.verify()
    assert not report.ok and any("residents: record digest differs" in p for p in report.problems)


@pytest.mark.parametrize("tamper", [
    "DELETE FROM resident_summaries WHERE id = 2",  # a resident no search would find
    "UPDATE resident_summaries SET kana_key = 'ア' || kana_key WHERE id = 3",  # found under another kana
    "INSERT INTO resident_summaries SELECT 'ン', birth_date, id, summary FROM resident_summaries WHERE id = 4",  # found twice
])
def test_verify_finds_search_summaries_out_of_step_with_the_residents(loaded, tamper):
    store = snapshot_store(loaded)
    from sync.register import connect_snapshot

    assert store.verify().ok
    conn = connect_snapshot(store.path_of(1), store.key)
    conn.execute(tamper)
    conn.commit()
    conn.close()
    report = store.verify()
    assert not report.ok and any("residents: the search summaries" in p and "are not keyed one to one" in p for p in report.problems), report.problems


def test_seal_only_resident_changes_are_visible_in_counts(config, store, tmp_path):
    residents = [make_resident(i) for i in range(5)]
    seals = [make_seal(i) for i in range(5)] + [make_seal(9, resident_code=residents[0]["resident_code"])]
    write_export(tmp_path / "e", residents, seals)
    assert run_sonae("sync", "full", "--from", str(tmp_path / "e")).returncode == 0
    with store.open_register() as register:
        assert register.meta.seals == 6
        assert [s["seal_number"] for s in register.seals_of(residents[0]["resident_code"])] == ["S00000000", "S00000009"]


def test_parsing_in_worker_processes_gives_the_same_generation(config, store, tmp_path):
    from fallback.mirror.syncing import upstream_public_key
    from sync.errors import ExportInvalid
    from sync.loader import SCRATCH_NAME, load_full
    from sync.upstream import DirectoryUpstream

    residents, seals = population(12000)  # several blocks per file
    write_export(tmp_path / "e", residents, seals)
    options = {"public_key": upstream_public_key(config), "municipality_code": "131113"}
    inline = load_full(DirectoryUpstream(tmp_path / "e"), store, workers=1, **options)
    pooled = load_full(DirectoryUpstream(tmp_path / "e"), store, workers=2, **options)
    metas = []
    for result in (inline, pooled):
        with store.open_register(result.generation) as register:
            metas.append(register.meta)
    assert (metas[0].residents, metas[0].residents_digest, metas[0].seals_digest) == (metas[1].residents, metas[1].residents_digest, metas[1].seals_digest)
    assert store.verify(pooled.generation).ok
    for result in (inline, pooled):  # the summaries of many blocks, merged into kana order
        assert_summaries_match_records(store, result.generation)
        assert not list(store.path_of(result.generation).parent.glob(f"{SCRATCH_NAME}*"))
    # A bad record found by a worker is reported with its line number.
    residents[11000]["birth_date"] = "2025-02-30"
    write_export(tmp_path / "bad", residents, seals)
    with pytest.raises(ExportInvalid, match=r"residents.ndjson.gz line 11,001: resident 20000011000\.birth_date"):
        load_full(DirectoryUpstream(tmp_path / "bad"), store, workers=2, **options)
    assert store.current() == pooled.generation


def test_a_parsing_worker_imports_the_contract_and_not_the_loader():
    # Each worker process counts in the load's peak memory: what it imports
    # beyond the parsing (the HTTP client, the store, the feed) is paid twice.
    import subprocess
    import sys

    probe = ("import sys, sync.parsing; "
             "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in ('requests', 'urllib3', 'sqlcipher3') "
             "or m in ('sync.loader', 'sync.store', 'sync.upstream', 'sync.changes', 'sync.register'))))")
    imported = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert imported == []


def parsing_processes_of_this_test() -> list[int]:
    """Pids of this process's children that are parsing processes."""
    import os
    from pathlib import Path

    children = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:
            children += (task / "children").read_text().split()
        except FileNotFoundError:  # the thread ended
            continue
    found = []
    for pid in children:
        try:
            if b"serve_blocks_from_argv" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(int(pid))
        except FileNotFoundError:
            continue
    return found


def first_parsing_processes(within_s: float = 30) -> list[int]:
    """Wait for a load in this process to start its parsing processes; their pids."""
    import time

    deadline = time.monotonic() + within_s
    while not (found := parsing_processes_of_this_test()):
        assert time.monotonic() < deadline, "no parsing process started"
        time.sleep(0.002)
    return found


def test_parsing_processes_answer_in_order_and_leave_nothing_behind(tmp_path):
    # No resource tracker, no semaphore, no child after stop: only the
    # processes and their pipes.
    import subprocess
    import sys

    probe = (
        "from sync.loader import parsing_for\n"
        "from multiprocessing import resource_tracker\n"
        "with parsing_for({'files': []}, 3) as parsing:\n"
        "    pending = [parsing.processes.submit('residents', 'r.ndjson', n, b'', False) for n in range(1, 8)]\n"
        "    print(all(p.result().rows == [] for p in pending))\n"
        "print(getattr(resource_tracker._resource_tracker, '_fd', None))\n"
        "import os; print(open(f'/proc/{os.getpid()}/task/{os.getpid()}/children').read().split())\n"
    )
    ran = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    assert ran.stdout.split("\n")[:3] == ["True", "None", "[]"]
    assert ran.stderr == ""


def test_a_parsing_process_found_dead_is_a_sync_error_in_words(tmp_path):
    # The out-of-memory killer's way: a worker gone between two blocks. The
    # load must end in the error the nightly job retries, told in words,
    # naming the signal. (A real worker, really gone.)
    import os
    import signal

    from sync import crypto
    from sync.errors import SyncError
    from sync.loader import SUMMARY_RUNS, Parsing, _load_file
    from sync.parsing import ParsingProcesses
    from sync.register import connect_snapshot
    from sync.schema import TABLES
    from sync.upstream import DirectoryUpstream

    residents, seals = population(3000)
    write_export(tmp_path / "e", residents, seals)
    upstream = DirectoryUpstream(tmp_path / "e")
    manifest = upstream.manifest()
    entry = next(file for file in manifest["files"] if file["kind"] == "residents")
    key = os.urandom(32)
    conn = connect_snapshot(tmp_path / "register.db", key, check_same_thread=False)
    conn.executescript(TABLES)
    scratch = crypto.connect(tmp_path / "scratch.db", key, check_same_thread=False)
    scratch.execute(SUMMARY_RUNS)
    processes = ParsingProcesses(2)
    try:
        # Waited for: on a busy machine /proc listed none the instant after they started (a CI run).
        (victim,) = first_parsing_processes()[:1]
        os.kill(victim, signal.SIGKILL)
        with pytest.raises(SyncError, match=r"^a parsing process stopped unexpectedly \(killed by SIGKILL\); look for out-of-memory kills \(dmesg\) and rerun$"):
            _load_file(conn, scratch, [], upstream.iter_file(manifest["export_id"], entry["name"]), entry, manifest["contract"], False,
                       Parsing(processes, 4), lambda: None)
    finally:
        processes.stop()
        conn.close()
        scratch.close()
    assert parsing_processes_of_this_test() == []


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.15, 0.25, 0.4])
def test_a_parsing_process_killed_at_any_moment_of_a_load_fails_it_and_never_hangs_it(config, store, tmp_path, delay):
    # Whatever the worker was doing — starting, reading a block, sending its
    # rows — the load either ends in words or, if the kill came too late to
    # matter, loads correctly; it never waits forever, and leaves no process.
    import os
    import signal
    import threading
    import time

    from fallback.mirror.syncing import upstream_public_key
    from sync.errors import SyncError
    from sync.loader import load_full
    from sync.upstream import DirectoryUpstream

    residents, seals = population(12000)
    write_export(tmp_path / "e", residents, seals)
    killed = []

    def kill_one() -> None:
        first_parsing_processes()
        time.sleep(delay)
        for pid in parsing_processes_of_this_test()[:1]:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    killer = threading.Thread(target=kill_one)
    killer.start()
    try:
        result = load_full(DirectoryUpstream(tmp_path / "e"), store, workers=2, public_key=upstream_public_key(config), municipality_code="131113")
    except SyncError as exc:
        assert re.fullmatch(r"a parsing process stopped unexpectedly \(killed by SIGKILL\); look for out-of-memory kills \(dmesg\) and rerun", str(exc))
        assert store.current_if_readable() is None  # nothing promoted
    else:
        assert result.residents == 12000 and store.verify(result.generation).ok
    killer.join()
    assert parsing_processes_of_this_test() == []
    if delay == 0.0:
        assert killed  # at the start of the load, the kill always found a worker


def test_a_stop_signal_ends_a_load_held_up_by_a_stopped_parsing_process(config, store, tmp_path, signal_handlers_restored):
    # A worker stopped (SIGSTOP) holds the load up: it waits for that
    # worker's rows. SIGTERM must still end it, at once and in words: the
    # stopped worker is killed, the thread inserting rows ends before its
    # connection is closed, and nothing is left behind.
    import os
    import signal
    import threading
    import time

    import click

    from fallback.mirror.sync_commands import StopSignals
    from fallback.mirror.syncing import upstream_public_key
    from sync.loader import load_full
    from sync.upstream import DirectoryUpstream

    residents, seals = population(12000)
    write_export(tmp_path / "e", residents, seals)
    held_up = []

    def stop_a_worker_then_the_load() -> None:
        workers = first_parsing_processes()
        os.kill(workers[0], signal.SIGSTOP)
        held_up.append(workers[0])
        time.sleep(1.0)  # long past the rest of the parsing: the load now waits for the stopped worker
        os.kill(os.getpid(), signal.SIGTERM)

    signaller = threading.Thread(target=stop_a_worker_then_the_load)
    started = time.monotonic()
    signaller.start()
    with pytest.raises(click.ClickException) as stopped, StopSignals().installed():
        load_full(DirectoryUpstream(tmp_path / "e"), store, workers=2, public_key=upstream_public_key(config), municipality_code="131113")
    signaller.join()
    assert held_up and time.monotonic() - started < 20
    assert stopped.value.exit_code == 143
    assert stopped.value.message.startswith("stopped by SIGTERM before finishing; nothing half-done was kept")
    assert parsing_processes_of_this_test() == []
    assert store.current_if_readable() is None and not list(store.directory.glob("*.tmp"))


def test_an_unreadable_current_generation_needs_the_operator_to_load_a_new_one(loaded, store, small_export):
    store.path_of(1).write_bytes(b"\x00" * 8192)  # destroyed
    refused = run_sonae("sync", "full", "--from", str(small_export))
    assert refused.returncode == 1
    assert "replay gate refused the export: the current generation cannot be read to compare the order of exports" in refused.stderr
    assert "rerun with --allow-older-export" in refused.stderr
    refused = run_sonae("sync", "full", "--from", str(small_export), "--allow-older-export")
    assert "record count gate refused the export: the current generation cannot be read to compare record counts" in refused.stderr
    assert "rerun with --allow-drop" in refused.stderr
    result = run_sonae("sync", "full", "--from", str(small_export), "--allow-older-export", "--allow-drop")
    assert result.returncode == 0, result.stderr
    assert_serving(loaded, 2, 30)

"""The change feed: applied page by page, idempotent, and refused whole when
it cannot be trusted (the data stays, a full export becomes due)."""

from __future__ import annotations

import datetime as dt
import re
import shutil
import threading

import pytest

from fallback.mirror.syncing import full_export_due, run_changes, run_full_sync
from sync.changes import apply_changes
from sync.errors import FeedBroken, UpstreamUnavailable
from sync.register import connect_snapshot
from tests.sync.conftest import assert_serving, assert_summaries_match_records, reload_config, run_sonae, sync_runs
from tests.sync.exports import after_export, change, jst_text, make_resident, make_seal, population, resident_code, write_export
from tests.sync.upstream_server import TOKEN, TestUpstream, client


def _held(store, code):
    with store.open_register() as register:
        return register.resident(code)


def test_changes_are_applied_and_as_of_moves(loaded, store, upstream):
    upstream.changes = [
        change(1001, make_resident(100, name="新井\u3000春", name_kana="アライ\u3000ハル")),
        change(1002, make_resident(3, version=2, address={"prefecture": "東京都", "city": "大田区", "town": "羽田一丁目", "banchi": "1番1号", "katagaki": None})),
        change(1003, make_seal(3, status="revoked", version=2), kind="seals"),
        change(1004, make_seal(6), kind="seals", op="delete"),
    ]
    upstream.as_of = after_export(hours=10, minutes=30)
    result = run_sonae("sync", "changes")
    assert result.returncode == 0, result.stderr
    assert f"4 change(s) applied, 0 skipped as not newer; seq 1,000 → 1,004; data as of {jst_text(upstream.as_of)}" in result.stdout
    with store.open_register() as register:
        meta = register.meta
        assert (meta.last_seq, meta.residents, meta.seals) == (1004, 31, 9)
        assert meta.as_of == dt.datetime.fromisoformat(upstream.as_of)
        assert register.search(kana="アライハル")[0]["resident_code"] == resident_code(100)
        assert register.search(address="羽田1-1-1")[0]["resident_code"] == resident_code(3)
        assert register.seal("S00000003")["status"] == "revoked"
        assert register.seal("S00000006") is None
        assert register.resident(resident_code(100))["individual_number"] is None  # dropped from changes too
    assert store.verify().ok  # digests were maintained incrementally
    run = sync_runs(reload_config())[-1]
    assert (run["kind"], run["outcome"], run["records"], run["detail"]["last_seq"]) == ("changes", "ok", 4, 1004)


def test_applying_is_idempotent(loaded, store, upstream):
    upstream.changes = [
        change(1001, make_resident(1)),  # version 1 is already held: skipped
        change(1002, make_resident(2, version=3, name="山田\u3000三郎")),
        change(1003, make_resident(2, version=2, name="山田\u3000二郎")),  # older than held: skipped
        change(1004, make_seal(900), kind="seals", op="delete"),  # not held: skipped
    ]
    first = run_changes(reload_config())
    assert (first.applied, first.skipped, first.last_seq) == (1, 3, 1004)
    assert _held(store, resident_code(2))["name"] == "山田\u3000三郎"
    digest_before = store.verify()
    second = run_changes(reload_config())
    assert (second.applied, second.skipped, second.last_seq) == (0, 0, 1004)
    assert store.verify().ok and digest_before.ok


def test_a_quiet_feed_still_moves_as_of(loaded, store, upstream):
    upstream.as_of = after_export(hours=13)
    result = run_changes(reload_config())
    assert (result.applied, result.as_of) == (0, dt.datetime.fromisoformat(upstream.as_of))
    with store.open_register() as register:
        assert register.meta.as_of == dt.datetime.fromisoformat(upstream.as_of)


def test_feed_is_paged_until_caught_up(loaded, store, upstream, monkeypatch):
    upstream.changes = [change(1001 + i, make_resident(200 + i)) for i in range(23)]
    monkeypatch.setenv("SONAE_SYNC_CHANGES_BATCH", "5")
    result = run_changes(reload_config())
    assert (result.applied, result.pages, result.last_seq) == (23, 5, 1023)
    assert store.verify().ok


def _gap():
    return [change(1001, make_resident(100)), change(1002, make_resident(101)), change(1004, make_resident(102))]


def _repeat():
    return [change(1001, make_resident(100)), change(1001, make_resident(101))]


def _malformed():
    bad = change(1002, make_resident(101))
    bad["op"] = "replace"
    return [change(1001, make_resident(100)), bad]


def _impossible_date():
    return [change(1001, make_resident(100)), change(1002, make_resident(101, birth_date="2025-02-30"))]


def _seal_of_unknown_resident():
    return [change(1001, make_resident(100)), change(1002, make_seal(777), kind="seals")]


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        (_gap, r"gap in the change feed: expected seq 1,003, got 1,004 \(1 missing\)"),
        (_repeat, r"seq 1,001 repeated \(expected 1,002\)"),
        (_malformed, r"malformed change after seq 1,001: change 1002: op must be upsert or delete"),
        (_impossible_date, r"malformed change after seq 1,001: resident 20000000101\.birth_date: '2025-02-30' is a date that cannot exist"),
        (_seal_of_unknown_resident, r"change 1,002: seal S00000777 points at resident 20000000777, who is not in the register"),
    ],
    ids=["gap", "repeated seq", "malformed", "impossible date", "seal of unknown resident"],
)
def test_broken_feed_keeps_the_data_and_makes_a_full_export_due(loaded, store, upstream, changes, reason):
    upstream.changes = changes()
    config = reload_config()
    with pytest.raises(FeedBroken, match=reason):
        run_changes(config)
    # Nothing of the broken page was applied.
    with store.open_register() as register:
        assert (register.meta.last_seq, register.meta.residents) == (1000, 30)
        assert register.resident(resident_code(100)) is None
    assert_serving(config, 1, 30)
    run = sync_runs(config)[-1]
    assert run["outcome"] == "refused" and run["detail"]["feed_broken"] is True
    assert full_export_due(config).startswith("the change feed broke at")
    # A successful full export clears it.
    run_full_sync(config)
    assert full_export_due(config) is None
    assert store.current() == 2


def test_feed_reset_upstream_is_broken(loaded, upstream, tmp_path):
    upstream.changes = [change(1001, make_resident(100))]
    run_changes(reload_config())
    upstream.changes = []  # the upstream now says its feed ends at the export's 1000
    with pytest.raises(FeedBroken, match="ends at seq 1,000, before seq 1,001 already applied: the feed was reset"):
        run_changes(reload_config())


def test_upstream_down_during_changes_is_a_failed_run_and_data_stays(loaded, upstream):
    upstream.fault = "error5xx"
    config = reload_config()
    with pytest.raises(UpstreamUnavailable, match=r"HTTP 503 maintenance: register under maintenance"):
        run_changes(config)
    run = sync_runs(config)[-1]
    assert run["outcome"] == "failed" and "HTTP 503" in run["error"]
    assert full_export_due(config) is None  # an outage is not a broken feed
    assert_serving(config, 1, 30)


def test_changes_need_a_snapshot(config, upstream):
    result = run_sonae("sync", "changes")
    assert result.returncode == 1
    assert result.stderr.strip() == "Error: no snapshot to apply changes to; run `sonae sync full` first"


def test_readers_never_see_half_applied_batches(loaded, store, upstream):
    page, pages = 100, 12
    upstream.changes = [change(1001 + i, make_resident(1000 + i)) for i in range(page * pages)]
    observed: set[tuple[int, int]] = set()
    problems: list[str] = []
    stop = threading.Event()

    def reader():
        conn = connect_snapshot(store.path_of(1), store.key, readonly=True)
        with store.open_register() as register:
            while not stop.is_set():
                rows, meta_rows, last_seq = conn.execute(
                    "SELECT (SELECT count(*) FROM residents), (SELECT value FROM meta WHERE key = 'residents'), "
                    "(SELECT value FROM meta WHERE key = 'last_seq')"
                ).fetchone()
                observed.add((rows, last_seq))
                if rows != meta_rows or rows - 30 != last_seq - 1000 or (last_seq - 1000) % page:
                    problems.append(f"rows {rows}, meta {meta_rows}, last_seq {last_seq}")
                with register.consistent_view():
                    seq = register.meta.last_seq
                    if seq > 1000 and register.resident(resident_code(1000 + seq - 1001)) is None:
                        problems.append(f"meta says seq {seq} but its resident is missing")
        conn.close()

    thread = threading.Thread(target=reader)
    thread.start()
    feed = client(upstream.url)
    try:
        result = apply_changes(feed, store, batch=page)
    finally:
        stop.set()
        thread.join()
        feed.close()
    assert result.applied == page * pages and not problems, problems[:5]
    assert len(observed) > 2, "the reader saw the data move while batches were applied"


def _stored_state(store, generation):
    """Every stored row (search columns without the id, and the record)
    and the meta figures of a generation."""
    conn = connect_snapshot(store.path_of(generation), store.key, readonly=True)
    try:
        residents = conn.execute(
            "SELECT resident_code, household_id, household_order, status, support_measure, kana_key, name_key, alias_key, alpha_key, "
            "birth_date, address_key, version, updated_at, rec.record FROM residents r JOIN resident_records rec ON rec.id = r.id ORDER BY resident_code"
        ).fetchall()
        seals = conn.execute(
            "SELECT seal_number, resident_code, status, version, rec.record FROM seals s JOIN seal_records rec ON rec.id = s.id ORDER BY seal_number"
        ).fetchall()
        meta = dict(conn.execute("SELECT key, value FROM meta WHERE key IN ('residents', 'seals', 'residents_digest', 'seals_digest', 'last_seq')"))
    finally:
        conn.close()
    return residents, seals, meta


def test_a_page_ends_where_its_changes_one_by_one_end(loaded, config, store, upstream, small_export):
    """A page is played through in memory and written once per key; the
    result must be exactly that of applying its changes one at a time."""
    moved = {"prefecture": "東京都", "city": "大田区", "town": "羽田一丁目", "banchi": "9番9号", "katagaki": None}
    upstream.changes = [
        change(1001, make_resident(100, name="新井\u3000春", name_kana="アライ\u3000ハル")),  # new resident …
        change(1002, make_resident(100, version=2, name="新井\u3000夏", name_kana="アライ\u3000ナツ")),  # … renamed in the same page
        change(1003, make_seal(100), kind="seals"),  # a seal of the resident who arrived in this page
        change(1004, make_resident(3, version=2, address=moved)),
        change(1005, make_resident(3, version=3, address={**moved, "banchi": "1番1号"})),
        change(1006, make_resident(3, version=2, address=moved)),  # older than what the page already holds: skipped
        change(1007, make_resident(4), op="delete"),  # removed and registered again
        change(1008, make_resident(4, name="伊藤\u3000健")),
        change(1009, make_resident(101)),  # arrives and leaves within the page
        change(1010, make_resident(101), op="delete"),
        change(1011, make_seal(9, status="revoked", version=2), kind="seals"),
        change(1012, make_seal(12), kind="seals", op="delete"),
        change(1013, make_seal(12, version=2), kind="seals"),
    ]
    one_by_one = apply_changes(client(upstream.url), store, batch=1)
    # generation 2: the same export, knowingly behind the feed generation 1 followed, to apply the same feed again
    run_full_sync(config, small_export, overrides={"allow-drop", "allow-older-export"})
    whole = apply_changes(client(upstream.url), store, batch=1000)
    assert (whole.generation, whole.pages, one_by_one.pages) == (2, 1, 13)
    assert (whole.applied, whole.skipped) == (one_by_one.applied, one_by_one.skipped) == (12, 1)
    assert _stored_state(store, 2) == _stored_state(store, 1)
    for generation in (1, 2):  # renamed (new kana key), moved, removed and registered again, arrived and left
        assert_summaries_match_records(store, generation)
    with store.open_register() as register:
        assert register.meta.residents == 31 and register.meta.seals == 11
        assert register.search(kana="アライナツ")[0]["name"] == "新井\u3000夏"
        assert register.search(kana="アライハル") == []  # the index entry of the first name is gone
        assert [r["resident_code"] for r in register.search(address="羽田1-1-1")] == [resident_code(3)]
        assert register.search(address="羽田1-9-9") == []
        assert register.resident(resident_code(101)) is None
        assert register.seal("S00000100")["resident_code"] == resident_code(100)
        assert register.seal("S00000012")["version"] == 2
    assert store.verify(1).ok and store.verify(2).ok


def test_a_seal_of_a_resident_removed_earlier_in_the_page_breaks_the_feed(loaded, store, upstream):
    upstream.changes = [change(1001, make_resident(3), op="delete"), change(1002, make_seal(3, version=2), kind="seals")]
    with pytest.raises(FeedBroken, match=r"change 1,002: seal S00000003 points at resident 20000000003, who is not in the register"):
        run_changes(reload_config())
    assert _held(store, resident_code(3)) is not None
    assert_serving(reload_config(), 1, 30)


def _residents_in_the_database_file(store, generation, tmp_path) -> int:
    """Residents in the database file alone, without its WAL."""
    copy = tmp_path / "without-wal.db"
    shutil.copyfile(store.path_of(generation), copy)
    conn = connect_snapshot(copy, store.key)
    try:
        return conn.execute("SELECT count(*) FROM residents").fetchone()[0]
    finally:
        conn.close()


def test_a_run_leaves_its_last_batch_in_the_wal_and_the_next_run_copies_it(loaded, store, upstream, tmp_path):
    """Batches commit into the WAL, where readers see them at once; copying
    the last one into the database file is left to the next run — also when
    the counter's readers keep the database open (closing the writer then
    does not checkpoint). A catch-up of several pages copies the WAL back
    after every `checkpoint_changes` or so, so the WAL never holds the backlog."""
    upstream.changes = [change(1001 + i, make_resident(200 + i)) for i in range(300)]
    with store.open_register() as register:
        apply_changes(client(upstream.url), store, batch=100, checkpoint_changes=100)
        assert register.meta.residents == 330
        assert _residents_in_the_database_file(store, 1, tmp_path) == 230
        result = apply_changes(client(upstream.url), store, batch=100)
        assert result.applied == 0
        assert _residents_in_the_database_file(store, 1, tmp_path) == 330
    assert store.verify().ok


@pytest.fixture
def larger_register(config, tmp_path, monkeypatch):
    """An appliance holding 3,000 residents and the upstream serving their
    export: a database some megabytes large, beside which a page of 100
    changes in the WAL is small (a 30-resident database is smaller than one
    page's WAL)."""
    directory = tmp_path / "export-larger"
    write_export(directory, *population(3000))
    server = TestUpstream(directory).start()
    monkeypatch.setenv("SONAE_UPSTREAM_URL", server.url)
    monkeypatch.setenv("SONAE_UPSTREAM_TOKEN", TOKEN)
    run_full_sync(reload_config(), directory, actor="test")
    yield server
    server.stop()


def test_a_catch_up_copies_the_wal_back_only_every_checkpoint_changes(larger_register, store, tmp_path):
    """Pages smaller than the checkpoint interval are not each copied back:
    three pages of 100 stay in the WAL under an interval of 250, and go
    into the file after the second of four pages under an interval of 200."""
    upstream = larger_register
    upstream.changes = [change(1001 + i, make_resident(200 + i, version=2)) for i in range(300)]
    with store.open_register():
        apply_changes(client(upstream.url), store, batch=100, checkpoint_changes=250)
        assert _versions_in_the_database_file(store, 1, tmp_path) == {1: 3000}
    upstream.changes += [change(1301 + i, make_resident(500 + i, version=2)) for i in range(400)]
    with store.open_register():
        apply_changes(client(upstream.url), store, batch=100, checkpoint_changes=200)
        # the run's start copied the first 300, its second page 200 more
        # (200 changes were still to come: more than one page)
        assert _versions_in_the_database_file(store, 1, tmp_path) == {1: 2500, 2: 500}
    assert store.verify().ok


def test_a_catch_up_leaves_the_copy_to_the_next_run_when_one_more_page_ends_it(larger_register, store, tmp_path):
    """After the first page of three the interval of 100 is reached and 200
    changes are still to come: copied. After the second, the last 100 fit
    one page of 100: the WAL keeps both pages, and the next run copies them
    (beside its first fetch)."""
    upstream = larger_register
    upstream.changes = [change(1001 + i, make_resident(200 + i, version=2)) for i in range(300)]
    with store.open_register():
        apply_changes(client(upstream.url), store, batch=100, checkpoint_changes=100)
        assert _versions_in_the_database_file(store, 1, tmp_path) == {1: 2900, 2: 100}
        apply_changes(client(upstream.url), store, batch=100, checkpoint_changes=100)
        assert _versions_in_the_database_file(store, 1, tmp_path) == {1: 2700, 2: 300}
    assert store.verify().ok


def test_a_catch_up_copies_the_wal_back_once_it_outgrows_a_quarter_of_the_database(loaded, store, upstream, tmp_path):
    """However large the checkpoint interval, a WAL larger than a quarter
    of the database is copied back before the next page: on a 30-resident
    database one page of 100 is already that, so the first two pages of
    three reach the file."""
    upstream.changes = [change(1001 + i, make_resident(200 + i)) for i in range(300)]
    with store.open_register():
        apply_changes(client(upstream.url), store, batch=100, checkpoint_changes=10_000)
        assert _residents_in_the_database_file(store, 1, tmp_path) == 230
    assert store.verify().ok


def _versions_in_the_database_file(store, generation, tmp_path) -> dict[int, int]:
    """Residents by version in the database file alone (without its WAL)."""
    copy = tmp_path / "database-file-versions.db"
    shutil.copyfile(store.path_of(generation), copy)
    conn = connect_snapshot(copy, store.key)
    try:
        return dict(conn.execute("SELECT version, count(*) FROM residents GROUP BY version").fetchall())
    finally:
        conn.close()


def _feed_applied(upstream, store) -> dt.datetime:
    """Generation 1 brought past its export by the feed; returns its as_of."""
    upstream.changes = [change(1001, make_resident(100, name="新井\u3000春", name_kana="アライ\u3000ハル"))]
    upstream.as_of = after_export(hours=10, minutes=30)
    assert run_sonae("sync", "changes").returncode == 0
    with store.open_register() as register:
        assert register.meta.last_seq == 1001
        return register.meta.as_of


def test_a_full_load_behind_the_feed_follows_it_before_it_is_promoted(loaded, config, store, upstream):
    served_as_of = _feed_applied(upstream, store)
    result = run_sonae("sync", "full")  # the same export, whose data is older than what the feed brought
    assert result.returncode == 0, result.stderr
    assert "catch-up on the change feed" in sync_runs(config)[-1]["detail"]["phases"]  # timed apart from the build
    # What the operator reads: the data time of the generation now serving, not the export's.
    from fallback.mirror.sync_commands import jst

    assert f"data as of {jst(served_as_of)} (export " in result.stdout
    assert re.search(r", then caught up on the change feed from seq 1,000 to 1,001 in \d+\.\d s\), loaded in", result.stdout), result.stdout
    assert store.current() == 2
    with store.open_register() as register:
        assert (register.meta.last_seq, register.meta.as_of) == (1001, served_as_of), "never moved back in time"
        assert register.resident(resident_code(100))["name"] == "新井\u3000春"
    assert store.verify().ok


def test_a_full_load_the_feed_cannot_bring_level_is_refused_and_the_current_generation_serves(loaded, store, upstream):
    served_as_of = _feed_applied(upstream, store)
    upstream.serve_page = lambda after, limit: {"not": "a signed page"}
    result = run_sonae("sync", "full")
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "replay gate refused the export: its data as of" in result.stderr
    assert "is behind generation 1, which serves data as of" in result.stderr and "(seq 1,001)" in result.stderr
    assert "the change feed could not catch it up" in result.stderr and "generation 1 keeps serving" in result.stderr
    assert store.current() == 1 and [g.number for g in store.generations()] == [1]
    with store.open_register() as register:
        assert register.meta.as_of == served_as_of
    # the operator may still choose the older data, knowingly
    assert run_sonae("sync", "full", "--allow-older-export").returncode == 0
    with store.open_register() as register:
        assert register.meta.last_seq == 1000 and register.meta.as_of < served_as_of


DIED = {"reason": "死亡", "occurred_on": "2026-11-02", "notified_on": "2026-11-03", "moved_to": None, "moved_to_confirmed": False, "confirmed_on": None}


def test_a_support_measure_protects_its_households_address_as_the_feed_moves_it(loaded, store, upstream):
    """Register.protected_households: a household with a member under a
    支援措置 (current or removed) — none in the export; one member put
    under it by the feed protects the household, its lifting frees it, and
    a removed member under it still protects the household."""
    households = sorted({make_resident(i)["household_id"] for i in range(30)})

    def protected() -> set[str]:
        with store.open_register() as register:
            return register.protected_households(households)

    assert protected() == set()
    upstream.changes = [change(1001, make_resident(4, version=2, support_measure=True)),
                        change(1002, make_resident(9, version=2, status="removed", support_measure=True, removal=DIED))]
    assert run_changes(reload_config()).applied == 2
    assert protected() == {make_resident(4)["household_id"], make_resident(9)["household_id"]}
    upstream.changes = [change(1003, make_resident(4, version=3, support_measure=False))]
    assert run_changes(reload_config()).applied == 1
    assert protected() == {make_resident(9)["household_id"]}


def test_an_address_search_counts_the_same_with_a_protected_household_first_in_its_range(loaded, store, upstream, monkeypatch):
    """西蒲田七丁目 holds households 0 (1番) and 6 (7番); the feed puts a member
    of household 0 under a 支援措置. Its members scan first and are left
    out after the register's LIMIT: the search asks again, so it still
    lists household 6 and says more matched — a list cut short and said to
    be complete had shown a protected household in the range."""
    from fallback.counter import lookup
    from fallback.ops import open_ops

    upstream.changes = [change(1001, make_resident(1, version=2, support_measure=True))]
    assert run_changes(reload_config()).applied == 1
    monkeypatch.setattr(lookup, "MAX_RESULTS", 1)
    conn = open_ops(reload_config())
    try:
        with store.open_register() as register:
            found = lookup.search(conn, register, lookup.Query(address="西蒲田七丁目"), {"address": "西蒲田七丁目"}, actor="clerk1",
                                  drill=False, flag_count=100, flag_window_minutes=10)
    finally:
        conn.close()
    codes = [summary["resident_code"] for summary in found.summaries()]
    assert len(codes) == 1 and codes[0] in {resident_code(i) for i in (18, 19, 20)} and found.truncated is True

"""Attacks on the mirror through its upstream (contract version 2, "Signatures,
ordering and time"): a fake upstream at the configured address, an old
export replayed, data dated in the future, a plain-http upstream, a version
1 feed, a hostile gzip file. Each is refused in one line naming the rule it
breaks, and the generation the counters read keeps serving what it held —
above all the 支援措置 flag the spoofed answers try to remove. Each rule is
also shown to let through what it must, at its boundary."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import re
import subprocess
import sys
import zlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fallback import recovery
from fallback.config import DEFAULTS
from fallback.mirror.registry import snapshot_store
from fallback.mirror.syncing import full_export_due, run_changes, run_full_sync
from fallback.ops import open_ops
from sync.errors import ExportInvalid, GateRefused
from tests.drills import scripted
from tests.support import now_jst, signed_lookup
from tests.sync.conftest import SONAE, audit_entries, reload_config, run_sonae, sync_runs
from tests.sync.exports import AS_OF, after_export, change, make_resident, population, resident_code, signed_page, write_export
from tests.sync.upstream_server import TOKEN, TestUpstream

PROTECTED = 9  # a resident under a support measure (支援措置): where her 転居先 must never reach
ANOTHER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


def protected_population() -> tuple[list[dict], list[dict]]:
    residents, seals = population(30)
    residents[PROTECTED] = make_resident(PROTECTED, support_measure=True)
    return residents, seals


@pytest.fixture
def held(config, tmp_path, monkeypatch):
    """An appliance holding generation 1 (an export with a 支援措置 resident),
    pointed at an upstream that the tests make answer as an attacker would."""
    export = tmp_path / "held-export"
    manifest = write_export(export, *protected_population())
    run_full_sync(config, export, actor="test")
    server = TestUpstream(export).start()
    monkeypatch.setenv("SONAE_UPSTREAM_URL", server.url)
    monkeypatch.setenv("SONAE_UPSTREAM_TOKEN", TOKEN)
    monkeypatch.setenv("SONAE_UPSTREAM_TIMEOUT_S", "2")
    yield reload_config(), server, manifest
    server.stop()


def lifting_the_support_measure(seq: int = 1001) -> dict:
    """The change an attacker wants applied: the flag gone, an address for anyone to print."""
    moved = {"prefecture": "東京都", "city": "大田区", "town": "羽田一丁目", "banchi": "9番9号", "katagaki": None}
    return change(seq, make_resident(PROTECTED, version=2, support_measure=False, address=moved))


def assert_the_old_data_serves(config) -> None:
    """Generation 1 is current, intact, and as it was loaded: the support
    measure still set, the feed position and data-as-of unmoved."""
    store = snapshot_store(config)
    assert store.current() == 1 and store.verify().ok
    with store.open_register() as register:
        meta = register.meta
        assert (meta.residents, meta.last_seq, meta.as_of) == (30, 1000, dt.datetime.fromisoformat(AS_OF))
        assert register.resident(resident_code(PROTECTED))["support_measure"] is True
        assert register.resident(resident_code(PROTECTED))["address"] == make_resident(PROTECTED)["address"]


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    (line,) = result.stderr.strip().splitlines()
    return line


# --- a spoofed change feed --------------------------------------------------------


def _unsigned(after, limit):
    page = signed_page(after, [lifting_the_support_measure()], 1001, after_export(hours=11))
    del page["signature"]
    return page


def _another_key(after, limit):
    return signed_page(after, [lifting_the_support_measure()], 1001, after_export(hours=11), key=ANOTHER_KEY)


def _another_after(after, limit):
    # A genuine, signed page — but the answer to another request.
    return signed_page(after - 1, [lifting_the_support_measure()], 1001, after_export(hours=11))


def _another_ward(after, limit):
    return signed_page(after, [lifting_the_support_measure()], 1001, after_export(hours=11), municipality_code="131121")


def _version_1(after, limit):
    return {"changes": [lifting_the_support_measure()], "last_seq": 1001, "as_of": after_export(hours=11)}


def _older_than_held(after, limit):
    return signed_page(after, [lifting_the_support_measure()], 1001, after_export(hours=-1))


SPOOFED_PAGES = {
    "unsigned": (_unsigned, r"signature rule: change-feed page is unsigned"),
    "signed with another key": (_another_key, r"signature rule: change-feed page signature does not verify against the configured upstream public key"),
    "for another after": (_another_after, r"echo rule: change-feed page answers after=999, not the after=1000 asked for"),
    "for another ward": (_another_ward, r"echo rule: change-feed page answers municipality_code='131121', not the municipality_code='131113'"),
    "version 1 (unsigned) feed": (_version_1, r"contract version rule: change-feed page has no contract version, this appliance reads contract 2: "
                                              r"a version 1 \(unsigned\) change feed is never applied"),
    "older than the data held": (_older_than_held, r"time rule: the change-feed page is as of .*, earlier than the data this appliance already holds"),
}


@pytest.mark.parametrize("case", list(SPOOFED_PAGES))
def test_a_spoofed_page_lifting_a_support_measure_is_no_answer(held, case):
    config, upstream, _ = held
    upstream.serve_page, rule = SPOOFED_PAGES[case]
    line = one_line_error(run_sonae("sync", "changes"))
    assert re.search(rule, line), line
    assert "counted as no answer" in line
    assert_the_old_data_serves(config)
    run = sync_runs(config)[-1]
    assert (run["kind"], run["outcome"]) == ("changes", "refused") and re.search(rule, run["error"])
    assert full_export_due(config) is None  # no answer is not a broken feed: nothing to reload


def test_the_genuine_page_is_applied(held):
    """The same change, signed by the upstream's key for the request made."""
    config, upstream, _ = held
    upstream.changes = [lifting_the_support_measure()]
    assert run_changes(config).applied == 1
    with snapshot_store(config).open_register() as register:
        assert register.resident(resident_code(PROTECTED))["support_measure"] is False


# --- data-as-of: not from the future, not older than what is held -----------------


@pytest.mark.parametrize(("ahead", "refused"), [(dt.timedelta(days=365), True), (dt.timedelta(minutes=6), True),
                                                 (dt.timedelta(minutes=4), False)], ids=["a year", "6 minutes", "4 minutes"])
def test_a_page_from_the_future_is_refused_beyond_five_minutes(held, ahead, refused):
    """A quiet page dated ahead would make stale data look fresh to every
    counter; within five minutes it is clock skew."""
    config, upstream, _ = held
    upstream.as_of = (now_jst() + ahead).isoformat()
    if not refused:
        assert run_changes(config).as_of == dt.datetime.fromisoformat(upstream.as_of)
        return
    line = one_line_error(run_sonae("sync", "changes"))
    assert re.search(r"time rule: the change-feed page is as of .*, .* ahead of this appliance's clock .*; more than 5 min ahead means "
                     r"this appliance's clock is behind \(check its time sync\) or the data is not what it claims", line), line
    assert_the_old_data_serves(config)


def test_a_page_as_old_as_the_data_held_is_applied(held):
    config, upstream, _ = held
    upstream.changes, upstream.as_of = [lifting_the_support_measure()], AS_OF
    assert run_changes(config).applied == 1


@pytest.mark.parametrize(("ahead", "refused"), [(dt.timedelta(days=1), True), (dt.timedelta(minutes=4), False)], ids=["a day", "4 minutes"])
def test_an_export_from_the_future_is_refused(held, tmp_path, ahead, refused):
    config, _, _ = held
    write_export(tmp_path / "future", *protected_population(), as_of=(now_jst() + ahead).isoformat(timespec="seconds"))
    result = run_sonae("sync", "full", "--from", str(tmp_path / "future"))
    if not refused:
        assert result.returncode == 0, result.stderr
        return
    line = one_line_error(result)
    assert re.search(r"^Error: manifest: time rule: the export is as of .*ahead of this appliance's clock.*export refused, the current generation "
                     r"keeps serving — if this appliance's clock is behind, correct it and rerun; otherwise ask the upstream vendor$", line), line
    assert_the_old_data_serves(config)


# --- a replayed export ------------------------------------------------------------------


def test_a_replayed_older_export_is_refused_unless_overridden_and_audited(held, tmp_path):
    """The export before the one held — genuine, signed, from before the
    support measure was set — would silently lift it."""
    config, _, manifest = held
    residents, seals = population(30)  # nobody protected yet
    write_export(tmp_path / "older", residents, seals, export_seq=manifest["export_seq"] - 1, as_of=after_export(days=-1))
    line = one_line_error(run_sonae("sync", "full", "--from", str(tmp_path / "older")))
    assert line == (
        f"Error: replay gate refused the export: export_seq {manifest['export_seq'] - 1:,} is lower than the {manifest['export_seq']:,} this appliance "
        f"holds (export {manifest['export_id']}); its as_of {after_export(days=-1)} is earlier than the held export's {AS_OF}: an older export would "
        "undo every change since, a support measure (支援措置) among them; if this is expected, rerun with --allow-older-export"
    )
    assert_the_old_data_serves(config)
    loaded = run_sonae("sync", "full", "--from", str(tmp_path / "older"), "--allow-older-export", "--actor", "it-kato")
    assert loaded.returncode == 0, loaded.stderr
    assert "overridden (audited): replay: export_seq" in loaded.stdout
    entry = audit_entries(config, "sync.override")[-1]
    assert entry["actor"] == "it-kato" and entry["detail"]["overrides"] == ["allow-older-export"] and entry["detail"]["outcome"] == "ok"


def test_a_replay_over_http_is_refused_too(held, tmp_path):
    config, upstream, manifest = held
    write_export(upstream.export_dir, *protected_population(), export_seq=manifest["export_seq"] - 1)
    with pytest.raises(GateRefused, match=r"replay gate refused the export: export_seq [\d,]+ is lower than"):
        run_full_sync(config)
    assert_the_old_data_serves(config)


def test_an_export_dated_before_the_held_one_is_a_replay_whatever_its_number(held, tmp_path):
    config, _, manifest = held
    write_export(tmp_path / "odd", *protected_population(), export_seq=manifest["export_seq"] + 1, as_of=after_export(seconds=-1))
    with pytest.raises(GateRefused, match=r"replay gate refused the export: its as_of .* is earlier than the held export's"):
        run_full_sync(config, tmp_path / "odd")
    assert_the_old_data_serves(config)


def test_one_export_seq_under_two_export_ids_is_never_loaded(held, tmp_path):
    config, _, manifest = held
    write_export(tmp_path / "twin", *protected_population(), export_seq=manifest["export_seq"], export_id="another-export")
    with pytest.raises(ExportInvalid, match=rf"order rule: export_seq {manifest['export_seq']:,} is the one this appliance holds, but under "
                                            rf"export_id 'another-export' instead of '{re.escape(manifest['export_id'])}'"):
        run_full_sync(config, tmp_path / "twin", overrides={"allow-older-export"})
    assert_the_old_data_serves(config)


def test_the_held_export_again_and_the_next_one_load(held, tmp_path):
    """The boundary: the same export (a rebuild) and export_seq + 1 load,
    and each generation records the export_seq it holds."""
    config, upstream, manifest = held
    assert run_full_sync(config).export_seq == manifest["export_seq"]  # the upstream serves the export held
    write_export(tmp_path / "next", *protected_population(), export_seq=manifest["export_seq"] + 1, as_of=AS_OF)
    assert run_full_sync(config, tmp_path / "next").generation == 3
    listing = run_sonae("snapshot", "list", "--json")
    assert [g["export_seq"] for g in json.loads(listing.stdout)] == [manifest["export_seq"]] * 2 + [manifest["export_seq"] + 1]
    assert sync_runs(config)[-1]["detail"]["export_seq"] == manifest["export_seq"] + 1


# --- version 1 exports ------------------------------------------------------------------


def _as_contract_1(manifest: dict) -> None:
    manifest["contract"] = 1
    del manifest["export_seq"]


def _contract_1_records() -> tuple[list[dict], list[dict]]:
    residents, seals = protected_population()
    for record in residents:
        for key in ("furigana", "former_surname_furigana", "remarks", "notified_reason"):
            del record[key]
    return residents, seals


def test_a_version_1_export_loads_only_from_a_directory_with_the_audited_override(config, tmp_path):
    write_export(tmp_path / "v1", *_contract_1_records(), edit_manifest=_as_contract_1)
    line = one_line_error(run_sonae("sync", "full", "--from", str(tmp_path / "v1")))
    assert line == ("Error: contract version gate refused the export: the export is contract 1: it has no export_seq, so the replay rule cannot "
                    "protect it, and its change feed is unsigned; if this is expected, rerun with --allow-contract-1")
    assert snapshot_store(config).current() is None
    loaded = run_sonae("sync", "full", "--from", str(tmp_path / "v1"), "--allow-contract-1", "--actor", "it-kato")
    assert loaded.returncode == 0, loaded.stderr
    assert "(export " in loaded.stdout and "contract 1, no export_seq" in loaded.stdout
    entry = audit_entries(config, "sync.override")[-1]
    assert entry["actor"] == "it-kato" and entry["detail"]["overrides"] == ["allow-contract-1"] and entry["detail"]["outcome"] == "ok"
    with snapshot_store(config).open_register() as register:
        assert (register.meta.contract, register.meta.export_seq) == (1, None)
        assert register.resident(resident_code(PROTECTED))["support_measure"] is True


def test_a_version_1_export_from_the_upstream_is_never_loaded(config, tmp_path, monkeypatch):
    write_export(tmp_path / "v1", *_contract_1_records(), edit_manifest=_as_contract_1)
    server = TestUpstream(tmp_path / "v1").start()
    try:
        monkeypatch.setenv("SONAE_UPSTREAM_URL", server.url)
        monkeypatch.setenv("SONAE_UPSTREAM_TOKEN", TOKEN)
        with pytest.raises(ExportInvalid, match=r"contract version rule: the upstream serves a contract 1 export"):
            run_full_sync(reload_config(), overrides={"allow-contract-1"})
    finally:
        server.stop()
    assert snapshot_store(config).current() is None
    usage = run_sonae("sync", "full", "--allow-contract-1")
    assert usage.returncode == 2 and "--allow-contract-1 needs --from DIR" in usage.stderr


# --- a spoofed resident look-up (recovery) ----------------------------------------------


def _plain_record(code):  # a version 1 answer: the record alone, unsigned
    return make_resident(PROTECTED, version=2, support_measure=False)


SPOOFED_LOOKUPS = {
    "unsigned record": (_plain_record, r"contract version rule: resident look-up has no contract version"),
    "signed with another key": (lambda code: signed_lookup(code, make_resident(PROTECTED, version=2), key=ANOTHER_KEY),
                                r"signature rule: resident look-up signature does not verify"),
    "for another resident": (lambda code: signed_lookup(resident_code(3), make_resident(3, version=2)),
                             r"echo rule: resident look-up answers resident_code='20000000003', not the resident_code='20000000009' asked for"),
    "from the future": (lambda code: signed_lookup(code, make_resident(PROTECTED, version=2), as_of=now_jst() + dt.timedelta(hours=1)),
                        r"time rule: the resident look-up is as of .* ahead of this appliance's clock"),
    "older than the snapshot": (lambda code: signed_lookup(code, make_resident(PROTECTED, version=2), as_of=dt.datetime.fromisoformat(after_export(hours=-1))),
                                r"time rule: the resident look-up is as of .*, earlier than the data this appliance already holds"),
}


def _issued_during_the_outage(config) -> None:
    conn = open_ops(config)
    try:
        scripted.request(conn, after_export(hours=9), subject=resident_code(PROTECTED), serial=900001,
                         printed=((resident_code(PROTECTED), 1, make_resident(PROTECTED)["updated_at"]),))
    finally:
        conn.close()


@pytest.mark.parametrize("case", list(SPOOFED_LOOKUPS))
def test_recovery_takes_a_spoofed_look_up_for_no_answer(held, case):
    """Reconciliation must judge certificates against what the upstream
    signed: a spoofed answer is no answer, and the check waits."""
    config, upstream, _ = held
    _issued_during_the_outage(config)
    upstream.serve_lookup, rule = SPOOFED_LOOKUPS[case]
    result = recovery.reconcile_once(config)
    assert (result.outcome, result.checked, result.pending) == ("upstream_unavailable", 0, 1)
    assert re.search(rule, result.error), result.error
    conn = open_ops(config)
    try:
        assert conn.execute("SELECT count(*) FROM recovery_checks").fetchone()[0] == 0
        assert conn.execute("SELECT outcome FROM recovery_attempts ORDER BY id DESC").fetchone()[0] == "upstream_unavailable"
    finally:
        conn.close()


def test_recovery_judges_on_the_signed_look_up(held):
    config, upstream, _ = held
    _issued_during_the_outage(config)
    upstream.residents[resident_code(PROTECTED)] = make_resident(PROTECTED)  # unchanged since
    result = recovery.reconcile_once(config)
    assert (result.outcome, result.checked) == ("done", 1)
    conn = open_ops(config)
    try:
        assert conn.execute("SELECT verdict FROM recovery_checks").fetchone()[0] == recovery.UNCHANGED
    finally:
        conn.close()


# --- a plain-http upstream ---------------------------------------------------------------


def test_a_plain_http_upstream_is_refused_unless_the_configuration_allows_it(held, monkeypatch):
    config, upstream, _ = held
    monkeypatch.setenv("SONAE_UPSTREAM_ALLOW_INSECURE_HTTP", "false")
    line = one_line_error(run_sonae("sync", "changes"))
    assert line == (f"Error: upstream.url {upstream.url} is plain http: refused, since anyone on the way could read the token and the register; "
                    "use the upstream's https:// address (upstream.allow_insecure_http = true is for the demo and tests only)")
    assert "plain http: refused" in one_line_error(run_sonae("sync", "full"))
    _issued_during_the_outage(config)
    result = recovery.reconcile_once(reload_config())
    assert result.outcome == "upstream_unavailable" and "plain http: refused" in result.error
    assert_the_old_data_serves(config)
    # https passes the rule (here nobody answers on it); the shipped default is https
    monkeypatch.setenv("SONAE_UPSTREAM_URL", upstream.url.replace("http://", "https://"))
    assert "plain http" not in one_line_error(run_sonae("sync", "changes"))
    assert DEFAULTS["upstream"]["url"].startswith("https://") and DEFAULTS["upstream"]["allow_insecure_http"] is False


# --- a hostile export file ----------------------------------------------------------------


def _inflating_to_one_line(files: dict[str, bytes]) -> None:
    """306 KB of gzip that inflates to 300 MB without a newline: the file
    that made the loader spend 39 s of CPU and 684 MB before its hash was
    checked."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = b"a" * (1 << 20)
    files["residents.ndjson.gz"] = b"".join([*(deflate.compress(block) for _ in range(300)), deflate.flush()])


def _wrong_hash(manifest: dict) -> None:
    manifest["files"][0]["sha256"] = "0" * 64


# Runs a command and reports its CPU seconds, peak RSS (KiB) and exit code on
# its last stderr line. A small launcher: a child's peak RSS counts from the
# size of the process it was forked from, and pytest's own would hide it.
MEASURING_LAUNCHER = ("import os, subprocess, sys; p = subprocess.Popen(sys.argv[1:]); _, status, use = os.wait4(p.pid, 0); "
                      "print(use.ru_utime + use.ru_stime, use.ru_maxrss, os.waitstatus_to_exitcode(status), file=sys.stderr)")


def _measured(args: list[str]) -> tuple[subprocess.CompletedProcess, float, float]:
    """Run a command; its CPU seconds and peak RSS in MB."""
    launched = subprocess.run([sys.executable, "-c", MEASURING_LAUNCHER, *args], capture_output=True, text=True, timeout=300)
    *lines, figures = launched.stderr.strip().splitlines()
    cpu_seconds, peak_kib, returncode = figures.split()
    return subprocess.CompletedProcess(args, int(returncode), launched.stdout, "\n".join(lines)), float(cpu_seconds), int(peak_kib) / 1024


@pytest.mark.parametrize(("edit_manifest", "reason"), [
    (_wrong_hash, r"residents.ndjson.gz: SHA-256 \w+ differs from the manifest's 0{64} \(altered or damaged\)"),
    (None, r"residents.ndjson.gz line 1: longer than the 65,536 bytes one record may take"),
], ids=["hash differs", "signed as it is"])
def test_a_small_gzip_inflating_to_one_huge_line_costs_little(held, tmp_path, edit_manifest, reason):
    config, _, _ = held
    write_export(tmp_path / "bomb", *population(30), edit_files=_inflating_to_one_line, edit_manifest=edit_manifest)
    assert 300_000 < (tmp_path / "bomb" / "residents.ndjson.gz").stat().st_size < 320_000
    result, cpu_seconds, peak_mb = _measured([SONAE, "sync", "full", "--from", str(tmp_path / "bomb")])
    line = one_line_error(result)
    assert re.search(reason, line), line
    assert cpu_seconds < 5 and peak_mb < 250, (cpu_seconds, peak_mb)
    assert_the_old_data_serves(config)


def test_the_bound_on_text_follows_the_record_count(held, tmp_path):
    """A file may inflate to (records + 1) × 64 KiB; one just within it loads."""
    config, _, _ = held
    residents, seals = protected_population()
    residents[1] = make_resident(1, remarks="備" * 21_000)  # a 63 KiB line: within one record's room

    def padded(files):
        text = gzip.decompress(files["residents.ndjson.gz"])
        files["residents.ndjson.gz"] = gzip.compress(text + b"\n" * (31 * 65536 - len(text) - 1), mtime=0)

    write_export(tmp_path / "full", residents, seals, edit_files=padded)
    assert run_full_sync(config, tmp_path / "full").generation == 2

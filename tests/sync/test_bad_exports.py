"""Bad input from upstream is refused with a clear reason, the refusal is
recorded, and the previous generation keeps serving."""

from __future__ import annotations

import gzip
import json
import re

import pytest

from fallback.mirror.syncing import run_full_sync
from sync.errors import ExportInvalid, GateRefused
from sync.loader import OVERRIDE_DROP
from tests.sync.conftest import assert_serving, audit_entries, run_sonae, sync_runs
from tests.sync.exports import make_resident, make_seal, population, write_export


def _truncate_residents(files):
    files["residents.ndjson.gz"] = files["residents.ndjson.gz"][:-20]


def _not_gzip(files):
    files["residents.ndjson.gz"] = b'{"resident_code": "20000000000"}\n'


def _residents_field(key, value):
    def edit(manifest):
        manifest["files"][0][key] = value(manifest["files"][0][key])

    return edit


def _delete_field(index, field):
    residents, seals = population(30)
    del residents[index][field]
    return residents, seals


def _with_resident(index, **changes):
    residents, seals = population(30)
    residents[index] = make_resident(index, **changes)
    return residents, seals


def _with_line(index, line):
    residents, seals = population(30)
    residents[index] = line
    return residents, seals


def _blank_lines(files):
    """30 records, and 3 MB of blank lines after them: more text than 31
    records may take (the per-record bound), though signed and intact."""
    files["residents.ndjson.gz"] = gzip.compress(gzip.decompress(files["residents.ndjson.gz"]) + b"\n" * (3 << 20), mtime=0)


def _v2_items_missing():
    residents, seals = population(30)
    del residents[2]["notified_reason"]
    return residents, seals


def _duplicate():
    residents, seals = population(30)
    return residents + [make_resident(4, name="別人\u3000です")], seals


def _unknown_seal_resident():
    residents, seals = population(30)
    return residents, seals + [make_seal(500)]


BAD_EXPORTS = {
    # name: (records, write_export options, exception, reason pattern)
    "bytes mismatch (short)": (None, {"edit_manifest": _residents_field("bytes", lambda b: b + 10)}, ExportInvalid, r"residents.ndjson.gz: [\d,]+ bytes, the manifest says"),
    "bytes mismatch (long)": (None, {"edit_manifest": _residents_field("bytes", lambda b: b - 10)}, ExportInvalid, r"more than the [\d,]+ bytes the manifest lists"),
    "sha mismatch": (None, {"edit_manifest": _residents_field("sha256", lambda s: "0" * 64)}, ExportInvalid, r"SHA-256 \w+ differs from the manifest's 0{64}"),
    "record count mismatch": (None, {"edit_manifest": _residents_field("records", lambda n: n + 1)}, ExportInvalid, r"30 records, the manifest says 31"),
    "truncated gzip": (None, {"edit_files": _truncate_residents}, ExportInvalid, r"gzip stream ends before its end marker \(truncated\)"),
    "not gzip": (None, {"edit_files": _not_gzip}, ExportInvalid, r"residents.ndjson.gz: not valid gzip"),
    "duplicate keys": (_duplicate, {}, ExportInvalid, r"duplicate resident_code 20000000004 \(2 rows\)"),
    "impossible date": (lambda: _with_resident(5, birth_date="2025-02-30"), {}, ExportInvalid, r"line 6: resident 20000000005\.birth_date: '2025-02-30' is a date that cannot exist"),
    "missing required field": (lambda: _delete_field(8, "name_kana"), {}, ExportInvalid, r"line 9: resident 20000000008: required field\(s\) missing: name_kana"),
    "malformed line": (lambda: _with_line(3, '{"resident_code": "2000'), {}, ExportInvalid, r"line 4: not a valid record in UTF-8 JSON"),
    "seal of unknown resident": (_unknown_seal_resident, {}, GateRefused, r"seal residents gate refused the export: 1 seal\(s\) point at residents not in the export \(e\.g\. S00000500 → 20000000500\); if this is expected, rerun with --allow-unknown-seal-residents"),
    "municipality mismatch": (None, {"municipality": {"code": "131121", "prefecture": "東京都", "name": "世田谷区"}}, GateRefused, r"municipality gate refused the export: the export is for municipality '131121', this appliance serves '131113'; if this is expected, rerun with --allow-municipality-mismatch"),
    "more text than its records may take": (None, {"edit_files": _blank_lines}, ExportInvalid,
                                            r"residents.ndjson.gz: decompresses to more than the 2,031,616 bytes its 30 records may take"),
    "a record longer than one may take": (lambda: _with_resident(3, remarks="備考" * 12000), {}, ExportInvalid,
                                          r"residents.ndjson.gz line 4: [\d,]+ bytes, more than the 65,536 one resident record may take"),
    "a contract 2 item missing": (_v2_items_missing, {}, ExportInvalid, r"line 3: resident 20000000002: contract 2 field\(s\) missing: notified_reason"),
    "furigana not in katakana": (lambda: _with_resident(6, furigana="やまだ\u3000たろう"), {}, ExportInvalid,
                                 r"line 7: resident 20000000006: furigana must be full-width katakana"),
    "an unconfirmed destination with a date": (
        lambda: _with_resident(7, status="removed", removal={"reason": "国内転出", "occurred_on": "2026-10-01", "notified_on": "2026-09-25",
                                                              "moved_to": "神奈川県横浜市港北区日吉本町一丁目2番3号", "moved_to_confirmed": False,
                                                              "confirmed_on": "2026-10-08"}),
        {}, ExportInvalid, r"line 8: resident 20000000007: removal.confirmed_on is set but moved_to_confirmed is false"),
    "count dropped": (lambda: population(20), {}, GateRefused, r"record count gate refused the export: residents 20 vs 30 \(-33\.3%\); seals 7 vs 10 \(-30\.0%\) exceeds the 5% limit of sync.max_drop_ratio; if this is expected, rerun with --allow-drop"),
}


@pytest.mark.parametrize("case", list(BAD_EXPORTS))
def test_bad_export_is_refused_and_the_previous_generation_serves(loaded, tmp_path, case):
    records, options, error, reason = BAD_EXPORTS[case]
    residents, seals = records() if records else population(30)
    write_export(tmp_path / "bad", residents, seals, export_id="bad-export", **options)
    with pytest.raises(error, match=reason):
        run_full_sync(loaded, tmp_path / "bad", actor="test")
    assert_serving(loaded, 1, 30)
    run = sync_runs(loaded)[-1]
    assert run["kind"] == "full" and run["outcome"] == "refused" and run["finished_at"]
    assert re.search(reason, run["error"])


def test_bad_signature_is_refused(loaded, tmp_path):
    residents, seals = population(30)
    write_export(tmp_path / "bad", residents, seals)
    manifest = json.loads((tmp_path / "bad" / "manifest.json").read_text())
    manifest["last_seq"] = 999999  # altered after signing
    (tmp_path / "bad" / "manifest.json").write_text(json.dumps(manifest))
    result = run_sonae("sync", "full", "--from", str(tmp_path / "bad"))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "Error: manifest: signature rule: manifest signature does not verify against the configured upstream public key "
        "(altered, or signed by another key); export refused, the current generation keeps serving "
        "— ask the upstream vendor for a corrected export"
    ]
    assert_serving(loaded, 1, 30)
    assert sync_runs(loaded)[-1]["outcome"] == "refused"


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("residents\x00.ndjson.gz", r"manifest file name 'residents\\x00.ndjson.gz' contains a NUL byte"),
        ("r" * 256 + ".ndjson.gz", r"manifest file name 'r{40}…' is 266 bytes long; a file name has at most 255"),
        ("住" * 86, r"is 258 bytes long; a file name has at most 255"),  # 86 characters, 3 bytes each in UTF-8
    ],
    ids=["NUL", "266 bytes", "258 bytes of UTF-8"],
)
def test_a_manifest_file_name_a_file_system_cannot_hold_is_one_line(loaded, tmp_path, name, reason):
    """Even signed by the upstream, a file name with a NUL byte or over 255
    bytes is refused in one line, never with a traceback."""

    def rename(manifest):
        manifest["files"][0]["name"] = name

    write_export(tmp_path / "odd", *population(30), edit_manifest=rename)
    result = run_sonae("sync", "full", "--from", str(tmp_path / "odd"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert re.search(reason, line) and "export refused, the current generation keeps serving" in line
    assert_serving(loaded, 1, 30)


def test_missing_manifest_is_refused(loaded, tmp_path):
    (tmp_path / "empty").mkdir()
    result = run_sonae("sync", "full", "--from", str(tmp_path / "empty"))
    assert result.returncode == 1 and "has no manifest.json" in result.stderr
    assert_serving(loaded, 1, 30)


def test_refusal_on_the_command_line_is_one_line(loaded, tmp_path):
    residents, seals = population(20)
    write_export(tmp_path / "halved", residents, seals)
    result = run_sonae("sync", "full", "--from", str(tmp_path / "halved"))
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert "residents 20 vs 30 (-33.3%)" in result.stderr and "--allow-drop" in result.stderr


def test_count_drop_override_loads_and_is_audited(loaded, tmp_path):
    residents, seals = population(20)
    write_export(tmp_path / "halved", residents, seals)
    result = run_sonae("sync", "full", "--from", str(tmp_path / "halved"), "--allow-drop", "--actor", "it-suzuki")
    assert result.returncode == 0, result.stderr
    assert "overridden (audited): record count: residents 20 vs 30 (-33.3%)" in result.stdout
    assert_serving(loaded, 2, 20)
    entry = audit_entries(loaded, "sync.override")[-1]
    assert entry["actor"] == "it-suzuki" and entry["target"] == "2"
    assert entry["detail"]["overrides"] == [OVERRIDE_DROP] and entry["detail"]["outcome"] == "ok"
    assert entry["detail"]["overridden"][0].startswith("record count: residents 20 vs 30")
    run = sync_runs(loaded)[-1]
    assert run["outcome"] == "ok" and run["generation"] == 2 and run["records"] == 27


def test_an_override_cannot_waive_an_integrity_failure(loaded, tmp_path):
    residents, seals = population(20)
    write_export(tmp_path / "bad", residents, seals, edit_manifest=_residents_field("sha256", lambda s: "0" * 64))
    result = run_sonae("sync", "full", "--from", str(tmp_path / "bad"), "--allow-drop", "--allow-unknown-seal-residents", "--allow-municipality-mismatch")
    assert result.returncode == 1 and "SHA-256" in result.stderr
    assert_serving(loaded, 1, 30)
    # The attempt to override is audited even though it failed.
    entry = audit_entries(loaded, "sync.override")[-1]
    assert entry["detail"]["outcome"] == "refused" and "SHA-256" in entry["detail"]["error"]


@pytest.mark.parametrize(
    ("flag", "records", "options"),
    [
        ("--allow-unknown-seal-residents", _unknown_seal_resident, {}),
        ("--allow-municipality-mismatch", lambda: population(30), {"municipality": {"code": "131121", "prefecture": "東京都", "name": "世田谷区"}}),
    ],
)
def test_other_overrides_load(loaded, store, tmp_path, flag, records, options):
    residents, seals = records()
    write_export(tmp_path / "odd", residents, seals, **options)
    result = run_sonae("sync", "full", "--from", str(tmp_path / "odd"), flag)
    assert result.returncode == 0, result.stderr
    assert "overridden (audited)" in result.stdout
    assert store.current() == 2


def test_a_damaged_file_is_blamed_on_its_checksum_not_on_a_record(loaded, tmp_path):
    residents, seals = population(3000)
    write_export(tmp_path / "bad", residents, seals)
    path = tmp_path / "bad" / "residents.ndjson.gz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # damaged after the manifest was signed
    path.write_bytes(bytes(data))
    with pytest.raises(ExportInvalid, match=r"^residents.ndjson.gz: SHA-256 \w+ differs from the manifest's \w+ \(altered or damaged\); export refused"):
        run_full_sync(loaded, tmp_path / "bad")
    assert_serving(loaded, 1, 30)

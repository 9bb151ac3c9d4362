"""Upstream data anomalies (sync.anomalies): each found by a real load, at
its boundary, counted in the run record and `sonae sync status`, kept in
the generation for the counter; a duplicate 宛名番号 gates the load."""

from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image

from fallback.mirror.syncing import run_full_sync
from sync.anomalies import KINDS
from sync.errors import GateRefused
from tests.support import example_records
from tests.sync.conftest import run_sonae, sync_runs
from tests.sync.exports import make_resident, make_seal, resident_code, write_export


def seal_png(shade: int) -> str:
    """A distinct 印影 per shade (the anomaly compares images)."""
    out = io.BytesIO()
    Image.new("L", (8, 8), shade).save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode("ascii")


def people(count: int, **changes_by_index) -> list[dict]:
    return [make_resident(i, **changes_by_index.get(f"r{i}", {})) for i in range(count)]


def _export(directory, residents, seals):
    write_export(directory, residents, seals)
    return directory


def anomalies_of(store, code: str) -> list[tuple[str, str]]:
    with store.open_register() as register:
        return register.anomalies(code)


def test_each_anomaly_is_found_at_its_boundary_and_counted(config, store, tmp_path):
    residents = people(8)
    birth = residents[0]["birth_date"]
    residents[1]["notified_on"] = "1939-12-31"  # before its birth (1941-02-02)
    residents[2]["notified_on"] = residents[2]["birth_date"]  # on the day of birth: possible (出生届 the same day)
    seals = [
        make_seal(0, registered_on=birth, image_png=seal_png(10)),  # on the holder's birth date
        make_seal(3, registered_on="1943-04-05", image_png=seal_png(20)),  # the day after its holder's birth (1943-04-04)
        make_seal(4, image_png=seal_png(30)),
        make_seal(5, image_png=seal_png(30)),  # the same 印影 as another person's
        make_seal(6, image_png=seal_png(40)),
        make_seal(6, seal_number="S99999906", status="revoked", image_png=seal_png(40)),  # the same person's own earlier seal
    ]
    assert residents[3]["birth_date"] == "1943-04-04"
    result = run_full_sync(config, _export(tmp_path / "export", residents, seals), actor="test")

    assert result.anomalies.counts == {"duplicate_atena_number": 0, "notified_before_birth": 1,
                                       "seal_registered_on_birth_date": 1, "shared_seal_image": 2}
    assert anomalies_of(store, resident_code(1)) == [("notified_before_birth", "1939-12-31")]
    assert anomalies_of(store, resident_code(0)) == [("seal_registered_on_birth_date", "S00000000")]
    assert anomalies_of(store, resident_code(4)) == [("shared_seal_image", "S00000004")]
    for untouched in (2, 3, 6, 7):
        assert anomalies_of(store, resident_code(untouched)) == []
    run = sync_runs(config)[-1]
    assert run["outcome"] == "ok"
    assert run["detail"]["anomalies"]["counts"]["shared_seal_image"] == 2
    # where the vendor finds them, without personal data: lines of the export's files
    assert run["detail"]["anomalies"]["positions"] == {"notified_before_birth": [2], "seal_registered_on_birth_date": [1],
                                                       "shared_seal_image": [3, 4]}
    assert resident_code(1) not in json.dumps(run["detail"]) and "1939-12-31" not in json.dumps(run["detail"])


def test_a_duplicate_atena_number_refuses_the_load_unless_overridden(config, store, tmp_path):
    run_full_sync(config, _export(tmp_path / "first", people(6), []), actor="test")
    residents = people(6)
    residents[4]["atena_number"] = residents[1]["atena_number"]
    with pytest.raises(GateRefused, match=r"duplicate atena_number gate refused the export: 2 resident\(s\) share a 宛名番号"):
        run_full_sync(config, _export(tmp_path / "second", residents, []), actor="test")
    assert store.current() == 1  # the previous generation keeps serving
    assert sync_runs(config)[-1]["outcome"] == "refused" and sync_runs(config)[-1]["detail"]["gate"] == "duplicate atena_number"

    result = run_full_sync(config, _export(tmp_path / "third", residents, []), {"allow-duplicate-atena"}, actor="test")
    assert store.current() == result.generation == 2
    assert result.anomalies.counts["duplicate_atena_number"] == 2
    assert any(waived.startswith("duplicate atena_number:") for waived in result.overridden)
    assert anomalies_of(store, resident_code(4)) == [("duplicate_atena_number", "A00000001")]


def test_distinct_atena_numbers_pass(config, store, tmp_path):
    result = run_full_sync(config, _export(tmp_path / "export", people(6), []), actor="test")
    assert result.anomalies.counts["duplicate_atena_number"] == 0 and store.current() == 1


def test_the_example_export_reports_its_own_anomalies(config, tmp_path):
    # The contract's example: 葛󠄂城 辻󠄂's seal registered on the day he was
    # born, and 山田 花子's revoked seal with 山田 太郎's 印影.
    result = run_full_sync(config, _export(tmp_path / "export", example_records("residents"), example_records("seals")), actor="test")
    assert result.anomalies.counts == {"duplicate_atena_number": 0, "notified_before_birth": 0,
                                       "seal_registered_on_birth_date": 1, "shared_seal_image": 2}
    seal_lines = {seal["seal_number"]: line for line, seal in enumerate(example_records("seals"), start=1)}
    assert result.anomalies.positions["seal_registered_on_birth_date"] == [seal_lines["S00000053"]]
    assert result.anomalies.positions["shared_seal_image"] == sorted([seal_lines["S00000011"], seal_lines["S99990001"]])


def test_sync_full_and_status_report_the_counts(config, tmp_path):
    residents = people(6)
    residents[2]["notified_on"] = "1900-01-01"
    directory = _export(tmp_path / "export", residents, [])
    full = run_sonae("sync", "full", "--from", str(directory))
    assert full.returncode == 0, full.stderr
    assert ("upstream data anomalies: duplicate_atena_number 0, notified_before_birth 1, seal_registered_on_birth_date 0, "
            "shared_seal_image 0 (e.g. notified_before_birth: residents file line 3)") in full.stdout
    assert resident_code(2) not in full.stdout + full.stderr and "1900-01-01" not in full.stdout + full.stderr
    status = run_sonae("sync", "status")
    assert "last full load (" in status.stdout and "notified_before_birth 1" in status.stdout
    reported = json.loads(run_sonae("sync", "status", "--json").stdout)["anomalies"]
    assert reported["counts"] == dict.fromkeys(KINDS, 0) | {"notified_before_birth": 1}


def test_the_duplicate_atena_override_is_a_command_flag(config, tmp_path):
    residents = people(6)
    residents[5]["atena_number"] = residents[0]["atena_number"]
    directory = _export(tmp_path / "export", residents, [])
    refused = run_sonae("sync", "full", "--from", str(directory))
    assert refused.returncode == 1 and "rerun with --allow-duplicate-atena" in refused.stderr
    assert run_sonae("sync", "full", "--from", str(directory), "--allow-duplicate-atena").returncode == 0

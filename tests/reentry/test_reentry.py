"""After recovery: the re-entry files (layout 1 and a ward's mapping), the
worklist and its ticks, the issuance history and the incident report's
section — from an outage the test plays through the real app. Example
register: 山田 household (太郎, 花子, 一郎), 葛󠄂城辻󠄂 (IVS), 佐藤美咲
(支援措置), 中村翔."""

from __future__ import annotations

import csv
import io
import re
import subprocess
from pathlib import Path

import pytest

from fallback import audit, reentry
from fallback.config import load_config
from fallback.ops import open_ops
from tests.conftest import write_config
from tests.support import PASSWORD, Staff, squeezed, text_of

ROOT = Path(__file__).resolve().parents[2]
YAMADA_TARO, YAMADA_HANAKO, KATSURAGI, SATO_SUPPORT, NAKAMURA = "10000000011", "10000000029", "10000000053", "10000000087", "10000000126"
BASE = {"notified_on": "R8.11.20", "notifier_relation": "self", "documents": "運転免許証"}
SELF_REQUEST = {"kind": "juminhyo", "requester_type": "self", "identity_document": "運転免許証"}


def file_filing(staff, code, kind, fields, **extra):
    data = {**BASE, "notifier_name": "届出　人", "resident_code": code, "kind": kind,
            **{f"{kind}:{key}": value for key, value in fields.items()}, **extra}
    response = staff.post("/filings/new", data)
    assert response.status_code == 302, text_of(response)[:500]
    return int(response.headers["Location"].rsplit("/", 1)[1])


def issue(staff, code, **fields):
    response = staff.api("POST", f"/api/v1/residents/{code}/certificates", json={**SELF_REQUEST, **fields})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


@pytest.fixture
def outage(appliance, login, downtime):
    """An outage: 届出 of four kinds (one a seal registration, one marked
    for manual entry, one typed like a formula), certificates to the
    person, to an agent and to a 支援措置 person, then recovery."""
    boss, clerk = downtime, login("clerk1")
    ids = {
        "tenshutsu": file_filing(boss, YAMADA_TARO, "tenshutsu", {"planned_move_out.date": "R8.12.1",
                                                                  "planned_move_out.moved_to": "横浜市中区"},
                                 members=[YAMADA_TARO, YAMADA_HANAKO], notifier_name="=HYPERLINK(\"http://x\")"),
        "tenkyo": file_filing(clerk, NAKAMURA, "tenkyo", {"address_since": "R8.11.18", "address.town": "西蒲田七丁目", "address.banchi": "49番1号"}),
        "tenkyo_manual": file_filing(clerk, KATSURAGI, "tenkyo", {"address_since": "R8.11.19", "address.town": "大森北一丁目",
                                                                  "address.banchi": "1番1号"}, manual_entry="1", note="方書が長い"),
        "inkan_toroku": file_filing(clerk, NAKAMURA, "inkan_toroku", {"method": "保証書"}),
    }
    issued = {
        "self": issue(clerk, NAKAMURA),
        "agent": issue(clerk, KATSURAGI, requester_type="agent", requester_name="代理　人", delegation_letter=True, copies=2),
        "support": issue(clerk, SATO_SUPPORT),
    }
    boss.post("/supervisor/mode", {"to_mode": "recovery", "reason": "上流が復旧"})
    return {"boss": boss, "clerk": clerk, "filings": ids, "issued": issued}


def incident_id(appliance) -> int:
    conn = open_ops(appliance.config["SONAE"])
    try:
        return conn.execute("SELECT min(id) FROM mode_changes").fetchone()[0]
    finally:
        conn.close()


def read_file(boss, appliance, kind: str) -> tuple[list[str], list[dict]]:
    """(the metadata line's cells, the rows keyed by heading)."""
    response = boss.get(f"/reentry/{incident_id(appliance)}/files/{kind}.csv")
    assert response.status_code == 200, text_of(response)[:300]
    text = response.get_data().decode("utf-8-sig")
    metadata, rest = text.split("\r\n", 1)
    return metadata.split(","), list(csv.DictReader(io.StringIO(rest)))


def test_each_importable_kind_has_its_file_one_row_per_person(appliance, outage):
    boss = outage["boss"]
    metadata, rows = read_file(boss, appliance, "tenshutsu")
    assert metadata[:3] == ["#sonae-reentry", "layout=1", "kind=tenshutsu"] and metadata[3] == "municipality=131113"
    assert metadata[-1] == "rows=2"
    assert [row["住民票コード"] for row in rows] == [YAMADA_TARO, YAMADA_HANAKO]
    assert {row["転出予定日"] for row in rows} == {"2026-12-01"} and rows[1]["氏名"] == "山田　花子"
    assert rows[0]["届出日"] == "2026-11-20" and rows[0]["受付番号"] == str(outage["filings"]["tenshutsu"])
    assert rows[0]["届出人"] == "'=HYPERLINK(\"http://x\")"  # neutralised, as every CSV export
    _, moves = read_file(boss, appliance, "tenkyo")
    assert [row["受付番号"] for row in moves] == [str(outage["filings"]["tenkyo"])]  # the manual one is on the worklist only
    assert moves[0]["新住所（町名・丁目）"] == "西蒲田七丁目" and moves[0]["転居日"] == "2026-11-18"
    metadata, nothing = read_file(boss, appliance, "tennyu")
    assert metadata[-1] == "rows=0" and nothing == []  # every file is written, empty ones with their header
    assert boss.get(f"/reentry/{incident_id(appliance)}/files/inkan_toroku.csv").status_code == 404  # not importable
    conn = open_ops(appliance.config["SONAE"])
    exported = [e["detail"] for e in audit.entries(conn, action="reentry.export.file")]
    assert [(d["kind"], d["rows"]) for d in exported] == [("tenshutsu", 2), ("tenkyo", 1), ("tennyu", 0)]


def test_what_cannot_be_imported_is_on_the_printed_worklist_and_ticked_off(appliance, outage, tmp_path):
    boss = outage["boss"]
    page = boss.get("/reentry/").get_data(as_text=True)
    listed = re.findall(r'id="work-(\d+)" data-done="(\d)"', page)
    assert listed == [(str(outage["filings"]["tenkyo_manual"]), "0"), (str(outage["filings"]["inkan_toroku"]), "0")]
    pdf = boss.get(f"/reentry/{incident_id(appliance)}/worklist.pdf")
    (tmp_path / "worklist.pdf").write_bytes(pdf.data)
    # in reading order (cell by cell): the layout text interleaves the table's wrapped cells
    text = squeezed(subprocess.run(["pdftotext", str(tmp_path / "worklist.pdf"), "-"], capture_output=True, text=True, check=True).stdout)
    assert "復旧後の手入力一覧" in text and "大森北一丁目" in text and "印鑑登録申請" in text and "保証書" in text
    filing = outage["filings"]["inkan_toroku"]
    assert boss.post(f"/reentry/ticks/{filing}", {"done": "1"}).status_code == 302
    assert f'id="work-{filing}" data-done="1"' in boss.get("/reentry/").get_data(as_text=True)
    assert boss.post(f"/reentry/ticks/{filing}", {"done": "0"}).status_code == 302  # withdrawn: a new row
    assert f'id="work-{filing}" data-done="0"' in boss.get("/reentry/").get_data(as_text=True)
    conn = open_ops(appliance.config["SONAE"])
    assert [e["detail"]["done"] for e in audit.entries(conn, action="reentry.tick")] == [True, False]
    assert [e["actor"] for e in audit.entries(conn, action="reentry.export.worklist")] == ["boss"]


def test_the_issuance_history_names_who_received_what_of_whom_for_the_notices(appliance, outage):
    response = outage["boss"].get(f"/reentry/{incident_id(appliance)}/issuance-history.csv")
    rows = list(csv.DictReader(io.StringIO(response.get_data().decode("utf-8-sig"))))
    assert [row["証明された方の住民票コード"] for row in rows] == [NAKAMURA, KATSURAGI, SATO_SUPPORT]
    agent = rows[1]
    assert (agent["請求者の区分"], agent["請求者の氏名"], agent["通数"], agent["本人通知の対象"]) == ("代理人（委任状あり）", "代理　人", "2", "対象")
    assert agent["発行番号"] == " ".join(str(c["serial"]) for c in outage["issued"]["agent"]["certificates"])
    assert [row["本人通知の対象"] for row in rows] == ["", "対象", ""] and [row["支援措置"] for row in rows] == ["", "", "対象"]
    assert all(row["データ時点"] and row["世代"] == "1" and row["交付した職員"] == "clerk1" for row in rows)
    conn = open_ops(appliance.config["SONAE"])
    (entry,) = audit.entries(conn, action="reentry.export.history")
    assert entry["detail"]["rows"] == 3 and entry["detail"]["for_notice"] == 1


def test_the_incident_report_counts_the_filings_holds_and_history(appliance, outage):
    report = outage["boss"].get(f"/recovery/incidents/{incident_id(appliance)}.md").get_data(as_text=True)
    section = report.split("## 窓口の届出・保留と交付の記録", 1)[1].split("\n## ", 1)[0]
    assert "| 転出届 | 1 | 2 | 1 | 0 |" in section and "| 転居届 | 2 | 2 | 1 | 1 |" in section and "| 印鑑登録申請 | 1 | 1 | 0 | 1 |" in section
    assert "合計 4件。手入力 2件のうち入力済み 0件" in section
    assert "| 転出届の受理 | 2 | 0 | 2 |" in section
    assert "証明書を交付した請求：3件（証明された方 3人分）" in section and "本人通知の対象（代理人・第三者への交付）：1人分" in section
    assert "支援措置の対象者が載った交付：1人分" in section


def test_exports_are_for_supervisors_and_not_made_in_downtime(appliance, login, downtime):
    assert login("clerk1").get("/reentry/").status_code == 403
    refused = downtime.get("/reentry/")
    assert refused.status_code == 409 and "ダウン対策モード中は作れません" in text_of(refused)
    downtime.post("/supervisor/mode", {"to_mode": "recovery", "reason": "上流が復旧"})
    assert downtime.get("/reentry/").status_code == 200
    assert login("clerk1").get(f"/reentry/{incident_id(appliance)}/issuance-history.csv").status_code == 403


# --- a ward's mapping ---------------------------------------------------------------------


def test_the_shipped_mapping_is_layout_1_as_built_in():
    shipped = (ROOT / "deploy" / "reentry-mapping.toml").read_text(encoding="utf-8")
    assert shipped.rstrip("\n") == reentry.default_mapping_toml().rstrip("\n")
    import tomllib

    assert reentry.parse_mapping(tomllib.loads(shipped), "shipped") == reentry.parse_mapping(reentry.default_mapping_values(), "shipped")


def test_a_wards_mapping_renames_reorders_and_leaves_out_columns_in_its_encoding(appliance, outage, tmp_path, loaded_env):
    mapping = tmp_path / "vendor.toml"
    mapping.write_text('''
layout_version = 1
encoding = "cp932"
date_format = "%Y%m%d"
metadata_line = false
[kinds.tenshutsu]
file = "IDO_TENSHUTSU.csv"
columns = [["resident_code", "JUMINHYO_CD"], ["planned_move_out.date", "IDO_YMD"], ["name", "SHIMEI"]]
''', encoding="utf-8")
    write_config(reentry={"mapping_file": str(mapping)})
    from fallback.app import create_app

    app = create_app(load_config())
    app.config["TESTING"] = True
    boss = Staff(app, "boss")
    response = boss.get(f"/reentry/{incident_id(appliance)}/files/tenshutsu.csv")
    assert response.headers["Content-Disposition"] == 'attachment; filename="IDO_TENSHUTSU.csv"'
    assert response.get_data().decode("cp932").splitlines() == [
        "JUMINHYO_CD,IDO_YMD,SHIMEI", f"{YAMADA_TARO},20261201,山田　太郎", f"{YAMADA_HANAKO},20261201,山田　花子"]


@pytest.mark.parametrize("text, problem", [
    ("layout_version = 2", "the mapping is for layout 2; this Sonae writes layout 1"),
    ('layout_version = 1\n[kinds.tenshutsu]\ncolumns = [["planned_move_out.dat", "X"]]',
     "[kinds.tenshutsu] has no column 'planned_move_out.dat'; did you mean 'planned_move_out.date'?"),
    ('layout_version = 1\n[kinds.tenkyo]\ncolumns = [["name", "X"], ["name_kana", "X"]]', "names a column or a heading twice"),
    ('layout_version = 1\nencoding = "latin-1"', "encoding 'latin-1' is not one of utf-8-sig, cp932"),
    ('layout_version = 1\n[kinds.idou]\nfile = "x.csv"', "[kinds.idou] is not a kind of 届出"),
])
def test_a_wrong_mapping_is_refused_in_one_line_naming_what_is_wrong(tmp_path, sonae_env, text, problem):
    mapping = tmp_path / "vendor.toml"
    mapping.write_text(text, encoding="utf-8")
    write_config(reentry={"mapping_file": str(mapping)})
    with pytest.raises(reentry.ReentryError) as raised:
        reentry.load_mapping(load_config())
    assert problem in raised.value.message and "\n" not in raised.value.message and str(mapping) in raised.value.message


def test_a_name_cp932_cannot_write_is_refused_by_name(appliance, login, downtime, tmp_path):
    file_filing(downtime, KATSURAGI, "tenkyo", {"address_since": "R8.11.19", "address.town": "大森北一丁目", "address.banchi": "1番1号"})
    downtime.post("/supervisor/mode", {"to_mode": "recovery", "reason": "上流が復旧"})
    mapping = tmp_path / "vendor.toml"
    mapping.write_text('layout_version = 1\nencoding = "cp932"\n', encoding="utf-8")
    write_config(reentry={"mapping_file": str(mapping)})
    from fallback.app import create_app

    app = create_app(load_config())
    app.config["TESTING"] = True
    response = Staff(app, "boss").get(f"/reentry/{incident_id(appliance)}/files/tenkyo.csv")
    assert response.status_code == 409 and "cp932 で書けない文字" in text_of(response) and "utf-8-sig" in text_of(response)


def test_a_supervisors_password_is_never_in_a_file(appliance, outage):
    for kind in ("tenshutsu", "tenkyo"):
        assert PASSWORD not in outage["boss"].get(f"/reentry/{incident_id(appliance)}/files/{kind}.csv").get_data(as_text=True)


def test_the_incident_report_is_written_whatever_the_mapping_file_says(appliance, outage, tmp_path):
    broken = tmp_path / "vendor.toml"
    broken.write_text("layout_version = 2\n", encoding="utf-8")
    write_config(reentry={"mapping_file": str(broken)})
    from fallback.app import create_app

    app = create_app(load_config())
    app.config["TESTING"] = True
    report = Staff(app, "boss").get(f"/recovery/incidents/{incident_id(appliance)}.md")
    assert report.status_code == 200
    section = report.get_data(as_text=True).split("## 窓口の届出・保留と交付の記録", 1)[1]
    assert "再入力のマッピングに誤りがあるため" in section and "layout 2" in section
    assert "| 印鑑登録申請 | 1 | 1 | 0 | 1 |" in section  # split by layout 1 as shipped

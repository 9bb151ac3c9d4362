"""The outage day, scripted, with nothing going wrong but the outage: every
figure of the incident report is checked against what the script did, the
alerts against the moments the upstream went down and came back, the
certificates against their PDFs — and no log file holds resident data.
The outage lasts a second day: the holds recorded and the 届出 taken change
what the counters issue, and after recovery the re-entry files, the
worklist, the issuance history and the holds reconciled are what the
script did, figure by figure."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import subprocess
import sys
from collections import Counter

import pytest
from PIL import Image

from fallback import filings, holds
from fallback.counter.issuance import KINDS
from fallback.demo.outage_day import CLERKS, SUPERVISOR, TERMINALS
from fallback.demo.site import DEMO_ACCOUNTS
from fallback.documents import format_minutes
from fallback.recovery import VERDICTS

from .conftest import (
    affected_lines,
    appliance_config,
    assert_report_matches_the_day,
    at_risk_rows,
    listed_at_risk_by_feed,
    minute,
    ops_rows,
    report_sections,
    run_day,
    tables,
)

OFFICE_OF = {clerk: terminal["office"] for clerk, terminal in zip(CLERKS, TERMINALS)}
# The report names staff as they know each other, never by login name.
NAME = {username: display for username, display, _ in DEMO_ACCOUNTS} | {"system": "監視（自動）"}
PROBE_INTERVAL_S = 1
LABELS = ("住民記録システム", "住基ネット連携", "夜間バッチ", "住民記録の読み出し確認")


@pytest.fixture(scope="module")
def day(tmp_path_factory):
    root = tmp_path_factory.mktemp("outage-day")
    return run_day(root / "site", screenshots=root / "screenshots")


@pytest.fixture(scope="module")
def report(day):
    return report_sections(day.report_markdown)


def minutes_of(*moments: dt.datetime, slack_s: float = 0) -> set[str]:
    """How the report may print a moment known to lie between the first and
    the last of `moments` (plus slack): every minute in that window."""
    start, end = min(moments), max(moments) + dt.timedelta(seconds=slack_s)
    found, at = set(), start
    while at <= end:
        found.add(minute(at))
        at += dt.timedelta(seconds=20)
    return found | {minute(end)}


def test_the_counters_did_what_the_day_asks(day):
    assert day.problems == []
    first = [i for i in day.issued if i.day == 1]
    assert {i.kind for i in first} == set(KINDS)
    assert sorted(r.rule for r in day.refused if r.day == 1) == ["seal_revoked", "support_measure", "third_party"]
    # the agent for a 支援措置 resident was refused outright: nothing issued for her
    protected = next(r.subject for r in day.refused if r.rule == "support_measure")
    assert protected not in {i.subject for i in day.issued}
    assert ops_rows(day, "SELECT count(*) FROM requests WHERE approved_by IS NOT NULL") == [(0,)]
    assert {d.kind for d in day.deferred} == {"tenkyo", "inkan_toroku", "certificate_mail"}
    serials = [s for i in day.issued for s in i.serials]
    assert len(serials) == len(set(serials)) == day.certificates == 10
    assert sum(len(i.serials) for i in first) == 7


def test_alerts_arrived_by_webhook_and_mail_when_the_upstream_went_down_and_came_back(day):
    opened, resolved = (b for b in day.alerts if b["key"] == "upstream.register")
    assert (opened["key"], opened["event"], opened["severity"]) == ("upstream.register", "opened", "critical")
    assert resolved["event"] == "resolved" and resolved["alert_id"] == opened["alert_id"]
    since = dt.datetime.fromisoformat(opened["since"])
    assert day.outage_started_at <= since <= day.outage_started_at + dt.timedelta(seconds=3 * PROBE_INTERVAL_S + 3)
    assert dt.datetime.fromisoformat(resolved["resolved_at"]) >= day.upstream_back_at
    assert "【障害】上流の住民記録システムが応答しません（Sonae 大田区）" in day.mails
    assert "【復旧】上流の住民記録システムが応答しません（解消）（Sonae 大田区）" in day.mails
    # every mode change was announced too, naming who made it
    notices = [b for b in day.alerts if b["key"].startswith("mode.")]
    assert [(n["event"], n["what"].split("が切り替えました")[0]) for n in notices] == [
        ("notice", "監視（自動）"), ("notice", SUPERVISOR), ("notice", SUPERVISOR), ("notice", SUPERVISOR)]


def test_overview_and_events_match_the_moments_of_the_day(day, report):
    overview = report["概要"]
    down, back = day.outage_started_at, day.upstream_back_at
    recovered_by = back + dt.timedelta(seconds=2 * PROBE_INTERVAL_S + 4)  # two good probes
    line = dict(item[2:].split("：", 1) for item in overview.splitlines())
    assert line["発生日時"] in minutes_of(down, slack_s=PROBE_INTERVAL_S + 2)
    assert line["復旧日時"] in minutes_of(back, recovered_by)
    lasted = {format_minutes(s / 60) for s in range(int((back - down).total_seconds()) - 3,
                                                      int((recovered_by - down).total_seconds()) + 2)}
    assert line["障害の期間"] in lasted
    declared, ended = line["ダウン対策モード"].split(" 〜 ")
    assert declared in minutes_of(*day.declared) and ended in minutes_of(*day.downtime_ended)
    assert line["通常運用に戻った日時"] in minutes_of(*day.standby)

    events = report["発生事象"]
    assert "クラウドの住民記録システムが応答しない。ベンダーに連絡済み。" in events
    rows = tables(events)[0]
    assert sorted(row["停止した部分"] for row in rows) == sorted(LABELS)
    outage_s = (back - down).total_seconds()
    for row in rows:
        assert row["最初の失敗"] in minutes_of(down, slack_s=PROBE_INTERVAL_S + 2)
        assert row["正常に戻った時刻"] in minutes_of(back, recovered_by)
        assert 3 <= int(row["失敗した確認"]) <= outage_s / PROBE_INTERVAL_S + 3, row


def test_the_timeline_names_who_did_what(day, report):
    rows = tables(report["経過"])[0]
    changes = [(row["出来事"], row["職員"]) for row in rows if "→" in row["出来事"]]
    expected = [
        ("通常（待機中） → 障害の疑い（自動検知: ", NAME["system"]),
        ("障害の疑い → ダウン対策モード（住民記録システム障害: ", NAME[SUPERVISOR]),
        ("ダウン対策モード → 復旧確認中（", NAME[SUPERVISOR]),
        ("復旧確認中 → 通常（待機中）（", NAME[SUPERVISOR]),
    ]
    assert len(changes) == len(expected)
    for (event, actor), (start, expected_actor) in zip(changes, expected):
        assert event.startswith(start) and actor == expected_actor, (event, actor)
    first_issues = {row["出来事"]: (row["職員"], row["時刻"]) for row in rows if row["出来事"].endswith("で最初の証明書を交付")}
    assert {event: clerk for event, (clerk, _) in first_issues.items()} == {
        f"{OFFICE_OF[clerk]}で最初の証明書を交付": NAME[clerk] for clerk in CLERKS}
    for _, at in first_issues.values():
        assert at in minutes_of(day.declared[1], day.downtime_ended[0])


def test_issued_refused_and_deferred_figures(day, report):
    assert_report_matches_the_day(day)
    issued, deferred, _ = tables(report["区の対応"])
    assert len(issued) == 6 and sum(int(row["枚数"]) for row in issued) == 10  # four types at three offices, over two days
    assert sum(int(row["連絡済み"]) for row in deferred) == 1  # the supervisor called one resident back


def test_the_certificates_at_risk_are_exactly_those_the_upstream_had_changed_before_issue(day, report):
    rows = at_risk_rows(report["区の対応"])
    assert rows  # the upstream stayed down all day: the changes made before issue put certificates at risk
    listed = listed_at_risk_by_feed(day)
    assert Counter(int(row["請求番号"]) for row in rows) == Counter(request for (request, _), at_risk in listed.items() if at_risk)
    by_request = {}
    for row in rows:
        by_request.setdefault(int(row["請求番号"]), []).append(row)
    issued_for = {i.subject: i for i in day.issued}
    changed_first = {c.resident_code: c.event for c in day.upstream_changes if c.before_issue}
    field_of = {"move": "住所", "name_change": "氏名", "death": "住民の状態", "seal_revoked": "印鑑登録"}
    action_of = {"move": "住所", "name_change": "氏名", "death": "死亡の届出が済んでいました", "seal_revoked": "印鑑登録証明書を回収"}
    for code, event in changed_first.items():
        item = issued_for[code]
        for row in by_request[item.request_id]:
            assert row["庁舎"] == item.office and row["種類"] == KINDS[item.kind] and row["状況"] == "未対応"
            assert row["判定"] in (VERDICTS["at_risk"], VERDICTS["uncertain"])
            assert field_of[event] in row["変わった事項"].split("、"), row
            assert action_of[event] in row["対応"], row
    household = next(i for i in day.issued if i.subject in changed_first and changed_first[i.subject] == "move")
    assert len(by_request[household.request_id]) >= 2  # every member of the household printed on it
    # a change made after issue: the certificate was right when issued
    after = next(c for c in day.upstream_changes if not c.before_issue)
    if sum(1 for change in day.feed_since_outage if change["key"] == after.resident_code) == 1:
        assert issued_for[after.resident_code].request_id not in by_request


def test_residents_affected_and_the_data_used(day, report):
    assert report["影響を受けた住民"].splitlines() == affected_lines(day) == [
        "- 影響を受けた住民：16人", "- うち証明書を請求した方：15人", "- うち後日対応で受け付けた方：3人"]
    generation, as_of = day.snapshot_at_outage
    assert tables(report["使用したデータの時点"])[0] == [
        {"データ時点": minute(as_of), "世代": str(generation), "請求件数": str(len(day.issued) + len(day.refused))}]
    assert report["住民へのお知らせ"] == "この期間に承認した住民向けのお知らせはありません。"


def test_the_report_pdf_says_the_same(day, tmp_path):
    path = tmp_path / "report.pdf"
    path.write_bytes(day.report_pdf)
    text = subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True, check=True).stdout
    assert "障害報告書（案）" in text and f"合計 {day.certificates}枚。お断りした請求 {len(day.refused)}件。" in text


def test_an_issued_certificate_is_the_record_as_it_stood_and_verifies(day, tmp_path):
    household = next(c for c in day.upstream_changes if c.before_issue and c.event == "move")
    item = next(i for i in day.issued if i.subject == household.resident_code)
    (pdf,) = ops_rows(day, "SELECT pdf FROM certificates WHERE scope = 'real' AND serial = ?", (item.serials[0],))[0]
    path = tmp_path / "certificate.pdf"
    path.write_bytes(pdf)
    text = subprocess.run(["pdftotext", str(path), "-"], capture_output=True, text=True, check=True).stdout.replace(" ", "")
    (printed,) = ops_rows(day, "SELECT printed_records FROM certificates WHERE scope = 'real' AND serial = ?", (item.serials[0],))[0]
    old_address = next(r["record"]["address"] for r in json.loads(printed)["residents"] if r["resident_code"] == item.subject)
    moved_to = next(c["record"]["address"] for c in day.feed_since_outage if c["kind"] == "residents" and c["key"] == item.subject)
    # the address before the move — the snapshot's, as the data-as-of line says — not the one after it
    assert old_address["town"] + old_address["banchi"] in text
    assert moved_to["town"] + moved_to["banchi"] not in text
    assert "障害対応システムにより" in text and "時点の住民記録に基づき交付" in text
    config = appliance_config(day)
    env = {"SONAE_HOME": str(config.home), "SONAE_CONFIG": str(day.root / "etc" / "sonae.toml"), "PATH": "/usr/bin:/bin"}
    verified = subprocess.run([sys.executable, "-m", "fallback.cli", "verify", str(path)], capture_output=True, text=True, env=env)
    assert verified.returncode == 0, verified.stderr


def test_the_day_ends_with_a_consistent_issuance_log(day):
    rows = ops_rows(day, "SELECT status, count(*) FROM certificates GROUP BY status")
    assert dict(rows) == {"rendered": day.certificates}
    issued_requests = {row[0] for row in ops_rows(day, "SELECT id FROM requests WHERE outcome = 'issued'")}
    assert issued_requests == {i.request_id for i in day.issued}
    audited = [json.loads(detail)["request"] for (detail,) in ops_rows(day, "SELECT detail FROM audit WHERE action = 'issue'")]
    assert sorted(audited) == sorted(issued_requests)


def test_screenshots_of_each_step_are_small(day):
    names = [path.stem for path in day.screenshots]
    assert names[:2] == ["it-dashboard-upstream-down", "supervisor-declares-downtime"]
    assert {"counter-search", "counter-resident", "counter-issued", "certificate", "counter-refused-support_measure",
            "counter-deferred", "recovery-at-risk", "incident-report", "filing-form", "filing-saved", "hold-recorded",
            "counter-refused-death_held", "counter-refused-seal_held", "reentry", "holds-list"} <= set(names)
    for path in day.screenshots:
        assert path.stat().st_size <= 150 * 1024, path
        if path.stem != "certificate":
            assert Image.open(path).size == (1200, 800), path


def test_no_resident_data_in_any_log_or_plain_file(day):
    """Names, addresses and birth dates of everyone the day touched — and
    the names and addresses of the whole register — appear in no log of the
    appliance and no plain-text file under SONAE_HOME (cloudsim, the
    upstream, is left out: it is the register)."""
    from fallback.mirror.registry import snapshot_store

    config = appliance_config(day)
    needles = set()

    def add(person: dict) -> None:
        needles.update({person["name"], person["name_kana"], person["birth_date"], person["address"]["town"] + person["address"]["banchi"]})

    # the records as the counters saw and printed them (before the upstream's changes came in) ...
    for (printed,) in ops_rows(day, "SELECT printed_records FROM certificates WHERE status = 'rendered'"):
        for resident in json.loads(printed)["residents"]:
            add(resident["record"])
    # ... and everyone in the register as it is now
    with snapshot_store(config).open_register() as register:
        for code, _ in register.printed_texts():
            add(register.resident(code))
    files = [p for p in (day.root / "logs").iterdir() if p.name != "cloudsim.log"]
    files += [p for p in config.home.rglob("*") if p.is_file() and is_plain_text(p)]
    assert files and any(p.name == "web.log" for p in files) and any(p.name == "worker.log" for p in files)
    for path in files:
        content = path.read_text(encoding="utf-8", errors="replace")
        leaked = sorted(needle for needle in needles if needle in content)
        assert not leaked, f"{path}: {leaked[:5]}"


def is_plain_text(path) -> bool:
    head = path.read_bytes()[:4096]
    return not head.startswith(b"SQLite format 3") and b"\0" not in head and not head.startswith(b"%PDF")


# --- the second day and after recovery ----------------------------------------------------


def held_rows(day) -> list[dict]:
    return [dict(zip(("id", "kind", "resident_code", "filing_id", "status", "recorded_by", "confirmed_by"), row)) for row in ops_rows(
        day, "SELECT id, kind, resident_code, filing_id, status, recorded_by, confirmed_by FROM holds WHERE scope = 'real' ORDER BY id")]


def test_the_second_days_holds_changed_what_the_counters_issued(day):
    second = [r.rule for r in day.refused if r.day == 2]
    assert sorted(second) == ["death_held", "hold_approval", "planned_move_out", "seal_held", "support_measure"]
    filed = {f.kind: f for f in day.filings}
    held = {h.kind: h.resident_code for h in day.holds}
    refused_subject = {r.rule: r.subject for r in day.refused if r.day == 2}
    assert refused_subject["seal_held"] == filed["inkan_haishi"].persons[0]
    assert refused_subject["support_measure"] == held["support_measure"] and refused_subject["hold_approval"] == held["court_police"]
    assert refused_subject["planned_move_out"] == filed["tenshutsu"].persons[0]
    # the one who moves out, once the move was explained; the head of the deceased's household, without them
    issued = {i.subject: i for i in day.issued if i.day == 2}
    assert filed["tenshutsu"].persons[0] in issued
    (flags,) = ops_rows(day, "SELECT flags FROM requests WHERE id = ?", (issued[filed["tenshutsu"].persons[0]].request_id,))[0]
    assert "planned_move_out" in json.loads(flags)
    head_request = issued[refused_subject["death_held"]].request_id
    (printed,) = ops_rows(day, "SELECT printed_records FROM certificates WHERE request_id = ? LIMIT 1", (head_request,))[0]
    assert filed["shibo"].persons[0] not in {r["resident_code"] for r in json.loads(printed)["residents"]}
    # every hold the script recorded or a 届出 created, and nothing else; a clerk's with the supervisor's confirmation
    rows = held_rows(day)
    expected = Counter([(kind, code) for f in day.filings for kind, code in zip(f.holds, f.persons)] + [(h.kind, h.resident_code) for h in day.holds])
    assert Counter((row["kind"], row["resident_code"]) for row in rows) == expected
    assert all(row["confirmed_by"] == SUPERVISOR for row in rows)
    assert {row["filing_id"] for row in rows if row["recorded_by"] == CLERKS[0]} == {f.id for f in day.filings if f.holds}


def reentry_file(day, kind: str) -> tuple[list[str], list[dict]]:
    text = day.reentry_files[kind].decode("utf-8-sig")
    metadata, rest = text.split("\r\n", 1)
    return metadata.split(","), list(csv.DictReader(io.StringIO(rest)))


def test_the_reentry_files_are_the_filings_taken_figure_by_figure(day):
    importable = set(filings.KINDS) - {"inkan_toroku"}  # the 印影 is on paper
    assert set(day.reentry_files) == importable
    for kind in importable:
        metadata, rows = reentry_file(day, kind)
        taken = [f for f in day.filings if f.kind == kind]
        assert metadata[2] == f"kind={kind}" and metadata[-1] == f"rows={sum(len(f.persons) for f in taken)}"
        assert [int(row["受付番号"]) for row in rows] == [f.id for f in taken for _ in f.persons]
        key = "氏名" if kind == "tennyu" else "住民票コード"
        assert [row[key] for row in rows] == [p for f in taken for p in f.persons]
    _, leaving = reentry_file(day, "tenshutsu")
    assert {row["転出先"] for row in leaving} == {"神奈川県横浜市中区日本大通1番地"}
    assert all(row["受付者"] == CLERKS[0] and row["確認した書類"] for row in leaving)


def test_the_worklist_is_what_cannot_be_imported_and_was_ticked_off(day, tmp_path):
    registration = next(f for f in day.filings if f.kind == "inkan_toroku")
    assert day.worklist == day.ticked == [registration.id]
    ticks = ops_rows(day, "SELECT filing_id, done, actor FROM reentry_ticks ORDER BY id")
    assert ticks == [(registration.id, 1, SUPERVISOR)]
    path = tmp_path / "worklist.pdf"
    path.write_bytes(day.worklist_pdf)
    text = subprocess.run(["pdftotext", str(path), "-"], capture_output=True, text=True, check=True).stdout.replace(" ", "")
    assert "復旧後の手入力一覧" in text and "印鑑登録申請" in text and registration.persons[0] in text.replace("\n", "")


def test_the_issuance_history_is_every_certificate_of_the_outage(day):
    rows = list(csv.DictReader(io.StringIO(day.issuance_history_csv)))
    printed = {request_id: [r["resident_code"] for r in json.loads(records)["residents"]] for request_id, records in ops_rows(
        day, "SELECT request_id, printed_records FROM certificates WHERE scope = 'real' AND copy_number = 1")}
    assert [(int(row["請求番号"]), row["証明された方の住民票コード"]) for row in rows] == [
        (i.request_id, code) for i in sorted(day.issued, key=lambda i: i.request_id) for code in printed[i.request_id]]
    for item in day.issued:
        for row in (r for r in rows if int(r["請求番号"]) == item.request_id):
            assert row["発行番号"] == " ".join(map(str, item.serials)) and row["交付した職員"] == item.clerk
    agent = next(i for i in day.issued if i.day == 2 and ops_rows(day, "SELECT requester_type FROM requests WHERE id = ?",
                                                                  (i.request_id,)) == [("agent",)])
    assert [int(row["請求番号"]) for row in rows if row["本人通知の対象"] == "対象"] == [agent.request_id]
    assert [row["窓口の保留"] for row in rows if row["窓口の保留"]] == ["転出届の受理"]


def test_the_holds_the_register_caught_up_with_were_reconciled_and_the_rest_hold(day):
    caught_up = {(change.resident_code, {"death": "death", "seal_revoked": "seal_lost"}[change.event]) for change in day.reentered}
    rows = held_rows(day)
    assert {(row["resident_code"], row["kind"]) for row in rows if row["status"] == "reconciled"} == caught_up
    assert sorted(day.reconciled_holds) == sorted(row["id"] for row in rows if row["status"] == "reconciled")
    assert all(row["status"] == "active" for row in rows if (row["resident_code"], row["kind"]) not in caught_up)


def test_the_report_counts_the_filings_holds_and_history(day, report):
    section = report["窓口の届出・保留と交付の記録"]
    taken, held = tables(section)[:2]
    assert {row["種類"]: (int(row["届出"]), int(row["人数"]), int(row["取込みファイル"]), int(row["手入力"])) for row in taken} == {
        filings.KINDS[f.kind]: (1, len(f.persons), int(f.kind != "inkan_toroku"), int(f.kind == "inkan_toroku")) for f in day.filings}
    assert f"合計 {len(day.filings)}件。手入力 {len(day.worklist)}件のうち入力済み {len(day.ticked)}件" in section
    rows = held_rows(day)
    assert {row["種類"]: (int(row["記録"]), int(row["照合済み"]), int(row["有効"])) for row in held} == {
        holds.KINDS[kind]: (sum(r["kind"] == kind for r in rows), sum(r["kind"] == kind and r["id"] in day.reconciled_holds for r in rows),
                            sum(r["kind"] == kind and r["id"] not in day.reconciled_holds for r in rows))
        for kind in {r["kind"] for r in rows}}
    persons = sum(1 for _ in csv.DictReader(io.StringIO(day.issuance_history_csv)))
    assert f"証明書を交付した請求：{len(day.issued)}件（証明された方 {persons}人分）" in section

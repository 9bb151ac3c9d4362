"""The incident report against a scripted outage (the January 2025 shape:
住基ネット link cut at 11:20, back the next morning), with a drill's records
in the same hours that must not appear."""

from __future__ import annotations

import pytest

from fallback import runbooks
from fallback.ops import Transaction, open_ops
from fallback.recovery import incident
from tests.support import pdf_text, text_of

from . import scripted

DAY1, DAY2 = "2025-01-06T", "2025-01-07T"
Z = ":00.000+09:00"
A, B, C = "10000000011", "10000000045", "10000000095"


def script_outage(conn, runbook_list):
    scripted.mode_change(conn, f"{DAY1}11:20{Z}", "standby", "suspect", "監視：住基ネット連携の応答なし", actor="system")
    scripted.mode_change(conn, f"{DAY1}11:25{Z}", "suspect", "downtime", "住基ネット連携障害: ベンダーに連絡済み")
    scripted.mode_change(conn, f"{DAY2}09:45{Z}", "downtime", "recovery", "住民記録システム復旧")
    scripted.mode_change(conn, f"{DAY2}11:00{Z}", "recovery", "standby", "復旧後の確認完了")
    for component, last_ok, failures, back in (
        ("juki_net", f"{DAY1}11:17:40.000+09:00", (f"{DAY1}11:18:00.000+09:00", f"{DAY1}11:18:20.000+09:00", f"{DAY2}09:40:00.000+09:00"), f"{DAY2}09:41:00.000+09:00"),
        ("register", f"{DAY1}11:18:40.000+09:00", (f"{DAY1}11:19:00.000+09:00", f"{DAY2}09:39:00.000+09:00"), f"{DAY2}09:40:20.000+09:00"),
    ):
        scripted.probe(conn, f"{DAY1}10:00{Z}", component, False)  # an earlier blip, before the last good probe
        scripted.probe(conn, last_ok, component, True)
        for at in failures:
            scripted.probe(conn, at, component, False)
        scripted.probe(conn, back, component, True)

    issued = scripted.request(conn, f"{DAY1}12:00{Z}", copies=2, serial=900001, subject=A)
    scripted.request(conn, f"{DAY1}13:00{Z}", kind="inkan", office="蒲田出張所", terminal="蒲田1", subject=B, serial=900003,
                     printed=((B, 1, "2026-11-20T10:00:00+09:00"),))
    scripted.request(conn, f"{DAY1}12:30{Z}", subject=C, outcome="refused", rule="removed_resident")
    scripted.deferred(conn, f"{DAY1}14:00{Z}", "tennyu", name="転入　予定", contact="090-1111-2222")
    scripted.deferred(conn, f"{DAY1}15:00{Z}", "certificate_mail", status="contacted", resident_code=A)
    book = next(b for b in runbook_list if b.slug == "01-shoki-taio")
    scripted.tick(conn, f"{DAY1}11:26{Z}", book, book.steps[3])

    # a drill that was running in the same hours: none of it may appear
    drill_id = scripted.drill(conn, title="訓練", started=f"{DAY1}09:00{Z}", ended=f"{DAY1}17:00{Z}")
    scripted.request(conn, f"{DAY1}12:10{Z}", scope="drill", drill_id=drill_id, serial=800001, subject="10000000126")
    scripted.deferred(conn, f"{DAY1}12:20{Z}", "tenkyo", scope="drill", drill_id=drill_id, name="訓練　太郎")
    scripted.tick(conn, f"{DAY1}12:30{Z}", book, book.steps[4], drill_id=drill_id)

    with Transaction(conn):
        conn.execute(
            "INSERT INTO recovery_checks (request_id, resident_code, checked_at, printed_version, printed_updated_at, upstream_version, "
            "upstream_updated_at, verdict, difference, action) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (issued, A, f"{DAY2}10:00{Z}", 1, "2026-11-20T10:00:00+09:00", 2, f"{DAY1}10:00{Z}", "at_risk",
             '[{"field": "住所", "key": "address", "printed": "東京都大田区西蒲田七丁目49番1号", "now": "東京都大田区蒲田五丁目1番1号"}]',
             "住所が変わっていました。請求者に連絡し、正しい内容の証明書を無料で交付し直して、先の証明書を回収してください。"),
        )
    return book


@pytest.fixture
def outage(sonae_env):
    conn = open_ops(sonae_env)
    runbook_list = runbooks.load_all(runbooks.runbook_dir(sonae_env))
    book = script_outage(conn, runbook_list)
    return conn, runbook_list, book


def test_the_incident_spans_from_leaving_standby_to_returning(outage):
    conn, _, _ = outage
    (found,) = incident.incidents(conn)
    assert (found.started_at, found.declared_at, found.downtime_ended_at, found.ended_at) == (
        f"{DAY1}11:20{Z}", f"{DAY1}11:25{Z}", f"{DAY2}09:45{Z}", f"{DAY2}11:00{Z}")


def test_the_facts_come_from_real_records_only(outage):
    conn, runbook_list, book = outage
    facts = incident.gather(conn, incident.incidents(conn)[0], runbook_list=runbook_list)
    assert facts.occurred_at == f"{DAY1}11:18:00.000+09:00"  # the first failed probe of the outage, not the earlier blip
    assert facts.recovered_at == f"{DAY2}09:41:00.000+09:00"  # the last component to answer again
    assert [(c.component, c.failures, c.back_at) for c in facts.components] == [
        ("juki_net", 3, f"{DAY2}09:41:00.000+09:00"), ("register", 2, f"{DAY2}09:40:20.000+09:00")]
    assert facts.issued == {("inkan", "蒲田出張所"): 1, ("juminhyo", "本庁"): 2}
    assert facts.refused == 1
    assert facts.deferred_by_kind == {"tennyu": {"open": 1}, "certificate_mail": {"contacted": 1}}
    assert (facts.requesters, facts.deferred_people, facts.residents_affected) == (3, 2, 4)
    assert facts.data_as_of == [("2025-01-05T23:00:00+09:00", 3, 3)]
    assert [a.request_id for a in facts.at_risk] == [1] and facts.at_risk[0].serials == [900001, 900002]
    assert [(t.runbook, t.step_id) for t in facts.ticks] == [("01-shoki-taio", book.steps[3].id)]
    whats = [e.what for e in facts.timeline]
    assert whats[0].startswith("通常（待機中） → 障害の疑い") and any("本庁で最初の証明書を交付" in w for w in whats)
    assert any(book.steps[3].text in w for w in whats) and not any(book.steps[4].text in w for w in whats)


def test_the_report_has_every_section_and_blank_ones_for_staff(outage, sonae_env):
    conn, runbook_list, _ = outage
    facts = incident.gather(conn, incident.incidents(conn)[0], runbook_list=runbook_list)
    text = incident.report_markdown(facts, sonae_env)
    for heading in ("概要", "発生事象", "経過", "区の対応", "影響を受けた住民", "使用したデータの時点", "障害原因", "再発防止策"):
        assert f"\n## {heading}\n" in text
    assert "- 発生日時：2025-01-06 11:18" in text and "- 復旧日時：2025-01-07 09:41" in text
    assert "- 障害の期間：22時間23分" in text
    assert "| 住基ネット連携 | 2025-01-06 11:18 | 2025-01-07 09:40 | 3 | 2025-01-07 09:41 |" in text
    assert "| 住民票の写し | 本庁 | 2 |" in text and "| 印鑑登録証明書 | 蒲田出張所 | 1 |" in text
    assert "合計 3枚。お断りした請求 1件。" in text
    assert "| 転入届 | 1 | 1 | 0 | 0 |" in text
    assert "- 影響を受けた住民：4人" in text
    assert "## 障害原因\n\n（記入してください）" in text
    assert "訓練" not in text.replace("年次訓練", "")  # nothing of the drill
    assert "090-" not in text  # contact details stay on the worklist


def test_a_variant_is_a_list_of_section_providers(outage, sonae_env):
    conn, runbook_list, _ = outage
    facts = incident.gather(conn, incident.incidents(conn)[0], runbook_list=runbook_list)
    incident.VARIANTS["test_notice"] = [incident.overview, lambda f, c: incident.Section("お知らせ", f"{f.residents_affected}人")]
    try:
        text = incident.report_markdown(facts, sonae_env, "test_notice")
    finally:
        del incident.VARIANTS["test_notice"]
    assert "## 概要" in text and "## お知らせ\n\n4人" in text and "## 区の対応" not in text


def test_page_pdf_and_markdown_export(appliance, login, tmp_path):
    conn = open_ops(appliance.config["SONAE"])
    script_outage(conn, runbooks.load_all(runbooks.runbook_dir(appliance.config["SONAE"])))
    boss = login("boss")
    assert "2025-01-07 11:00" in text_of(boss.get("/recovery/incidents"))
    page = boss.get("/recovery/incidents/1")
    assert page.status_code == 200 and "障害報告書（案）" in text_of(page) and "<td>住基ネット連携</td>" in page.get_data(as_text=True)
    markdown = boss.get("/recovery/incidents/1.md")
    assert markdown.mimetype == "text/markdown" and markdown.get_data(as_text=True).startswith("# 障害報告書（案）")
    pdf = "".join(pdf_text(boss.get("/recovery/incidents/1.pdf").data, tmp_path).split())
    assert "障害報告書（案）" in pdf and "発生日時：2025-01-0611:18" in pdf and "再発防止策" in pdf
    assert login("aud").get("/recovery/incidents/1").status_code == 200
    assert login("clerk1").get("/recovery/incidents/1").status_code == 403

"""The IT dashboard and the morning report, through the real app."""

from __future__ import annotations

import datetime as dt
import re
import signal

import pytest

from fallback.app import create_app
from fallback.mirror.syncing import SyncStopped, run_full_sync
from fallback.monitoring import run_alert_cycle, run_morning_report, run_probe_cycle
from fallback.ops import TOKYO, Transaction, now, open_ops
from fallback.staff import users
from tests.conftest import example_records, write_export
from tests.monitoring.conftest import sensitive_values
from tests.support import PASSWORD, Staff, text_of

ACCOUNTS = {"it1": "it", "boss": "supervisor", "clerk1": "clerk"}


@pytest.fixture
def app(loaded):
    conn = open_ops(loaded)
    for username, role in ACCOUNTS.items():
        users.add_user(conn, username, username, role, PASSWORD, actor="test")
    conn.close()
    application = create_app(loaded)
    application.config["TESTING"] = True
    return application


def test_it_sees_mode_upstream_snapshot_runs_disk_alerts_and_charts(app, loaded, upstream, clock):
    for _ in range(2):
        run_probe_cycle(loaded, at=clock.tick())
    upstream.components["juki_net"] = "down"
    for _ in range(3):
        run_probe_cycle(loaded, at=clock.tick())
    run_alert_cycle(loaded, at=clock.at)

    page = Staff(app, "it1").get("/monitor/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    text = text_of(page)
    assert "障害の疑い" in text
    assert "部分障害: 住基ネット連携が止まっています。" in text
    assert "住民記録システムは使えます" in text
    assert re.search(r'id="component-juki_net">\s*<td>住基ネット連携</td>\s*<td class="status-down">停止', html)
    assert re.search(r'id="component-register">\s*<td>住民記録システム</td>\s*<td class="status-ok">正常', html)
    assert "第1世代" in text and "データ時点" in text
    assert "次の全件取込" in text
    assert 'id="sync-runs"' in html and "全件" in text and "成功" in text
    assert "空き" in text and "GiB" in text
    assert "住基ネット連携が止まっています（部分障害）" in text  # the open alert
    assert "runbooks/03-bubun-shogai.md" in text
    assert html.count("<svg") >= 6  # a probe strip per component and the two charts
    assert "上流の応答時間" in html and "住民記録の写しの古さ" in html
    assert not re.search(r'(src|href)="https?://', html), "nothing is loaded from outside the appliance"
    assert not [v for v in sensitive_values() if v in text]


def test_record_counts_are_compared_with_the_previous_generation(app, loaded, tmp_path):
    residents = example_records("residents")
    newcomer = dict(residents[0], resident_code="99999999999", atena_number="A99999999", household_id="H-NEW", household_order=1)
    run_full_sync(loaded, source_dir=write_export(tmp_path / "next", residents + [newcomer], example_records("seals"), last_seq=2000))
    text = text_of(Staff(app, "it1").get("/monitor/"))
    assert "第2世代" in text
    assert f"住民 {len(residents) + 1}人（前世代比 +1）" in text
    assert f"印鑑登録 {len(example_records('seals'))}件（前世代比 +0）" in text


def test_the_dashboard_is_for_it_and_supervisors(app):
    assert Staff(app, "boss").get("/monitor/").status_code == 200
    assert Staff(app, "clerk1").get("/monitor/").status_code == 403
    assert app.test_client().get("/monitor/").status_code == 302  # to the login page


def test_the_morning_report_is_mailed_and_shown(app, loaded, smtp):
    at = now()
    yesterday = at.date() - dt.timedelta(days=1)
    start = dt.datetime.combine(yesterday, dt.time(), tzinfo=TOKYO)
    rows = []
    for minute in range(0, 24 * 60, 1):  # yesterday, probed every minute; the register down 10:00–10:30
        moment = start + dt.timedelta(minutes=minute)
        ok = not (10 * 60 <= minute < 10 * 60 + 30)
        rows.append((moment.isoformat(timespec="milliseconds"), "register", int(ok), "ok" if ok else "down", 30.0))
    conn = open_ops(loaded)
    with Transaction(conn):
        conn.executemany("INSERT INTO probes (at, component, ok, state, latency_ms) VALUES (?,?,?,?,?)", rows)
    conn.close()

    report = run_morning_report(loaded, at=at)
    assert report["healthy"] is True
    assert len(smtp.messages) == 1
    mail = smtp.messages[0]
    assert str(mail["Subject"]).startswith("【朝の報告】異常なし")
    body = mail.get_content()
    assert "■ 昨夜の全件取込: 成功" in body
    assert "■ データ時点:" in body and "第1世代" in body
    assert "■ 件数: 住民" in body
    assert "■ 拒否・失敗・中断した取込: なし" in body
    assert f"■ 昨日（{yesterday.isoformat()}）の上流の可用性" in body
    assert "住民記録システム: 97.917%（停止 30分0秒" in body  # 23.5 h of 24 h
    assert not [v for v in sensitive_values() if v in body]

    page = Staff(app, "it1").get("/monitor/morning")
    assert page.status_code == 200
    text = text_of(page)
    assert "異常なし" in text and "メールで送信しました" in text
    assert "97.917%" in text


def test_a_morning_with_a_warning_open_is_not_said_to_be_without_problems(app, loaded, smtp):
    """Warnings do not make the morning 要確認, but someone reading only the
    subject must not read 異常なし while one is open (a disk filling up)."""
    from fallback.monitoring import alerts

    conn = open_ops(loaded)
    with Transaction(conn):
        alerts._insert(conn, alerts.Condition("disk.low", alerts.WARNING, "ディスクの空きが少なくなっています", "空き 12%",
                                              now().isoformat(), "窓口は通常どおり使えます。", "09-disk-full"), now().isoformat())
    conn.close()
    report = run_morning_report(loaded, at=now())
    assert report["healthy"] is True
    assert str(smtp.messages[0]["Subject"]).startswith("【朝の報告】注意（警告1件）")
    assert "■ 総合判定: 注意（警告1件）" in smtp.messages[0].get_content()
    page = Staff(app, "it1").get("/monitor/morning").get_data(as_text=True)
    assert re.search(r'id="morning-verdict">注意（警告1件）<', page), page


def test_a_full_load_stopped_by_an_operator_is_reported_as_stopped_not_failed(app, loaded, tmp_path, smtp):
    """`systemctl stop sonae-worker` during the nightly load: IT reads that
    the load did not finish because someone stopped it, not that it failed."""
    def stop_at_once():
        raise SyncStopped(signal.SIGTERM)

    with pytest.raises(SyncStopped):
        run_full_sync(loaded, source_dir=write_export(tmp_path / "next", example_records("residents"), example_records("seals")),
                      stop_if_asked=stop_at_once)
    report = run_morning_report(loaded, at=now())
    assert report["healthy"] is False
    lines = smtp.messages[0].get_content().splitlines()
    assert any(line.startswith("■ 昨夜の全件取込: 中断（停止の操作による。完了していません）") for line in lines)
    problems = lines.index("■ 拒否・失敗・中断した取込: 1件")
    assert re.fullmatch(r"　- .+ 全件取込: 中断（停止の操作による。完了していません） stopped by SIGTERM before finishing; "
                        r"nothing half-done was kept and generation 1 kept serving", lines[problems + 1])
    dashboard = Staff(app, "it1").get("/monitor/").get_data(as_text=True)
    assert re.search(r'<span class="status-stopped">中断（停止の操作）</span>', dashboard)


def test_the_mail_lists_the_newest_problem_runs_and_says_how_many_it_left_out(app, loaded, smtp):
    at = now()
    conn = open_ops(loaded)
    with Transaction(conn):
        for minute in range(12):
            started = (at - dt.timedelta(hours=2) + dt.timedelta(minutes=minute)).isoformat(timespec="milliseconds")
            conn.execute("INSERT INTO sync_runs (kind, started_at, finished_at, outcome, error) VALUES ('changes', ?, ?, 'failed', ?)",
                         (started, started, f"run {minute}"))
    conn.close()
    run_morning_report(loaded, at=at)
    lines = smtp.messages[0].get_content().splitlines()
    heading = lines.index("■ 拒否・失敗・中断した取込: 12件（新しい10件。古い2件は監視画面の取込履歴）")
    assert [line.rsplit(" ", 1)[1] for line in lines[heading + 1:heading + 11]] == [str(minute) for minute in range(2, 12)]
    assert not lines[heading + 11].startswith("　- ")


def test_before_the_first_report_the_page_shows_a_preview(app):
    page = Staff(app, "it1").get("/monitor/morning")
    assert page.status_code == 200
    assert "下書き" in text_of(page)


def test_an_upstream_that_does_not_answer_is_not_taken_for_a_juki_net_or_batch_outage(app, loaded, upstream, clock):
    for _ in range(2):
        run_probe_cycle(loaded, at=clock.tick())
    upstream.fault = "500"  # the vendor's host answers nothing usable: nothing is known of 住基ネット or the batch
    for _ in range(3):
        run_probe_cycle(loaded, at=clock.tick())

    html = Staff(app, "it1").get("/monitor/").get_data(as_text=True)
    assert re.search(r'id="component-register">\s*<td>住民記録システム</td>\s*<td class="status-down">停止', html)
    for component in ("juki_net", "batch"):
        assert re.search(rf'id="component-{component}">\s*<td>[^<]+</td>\s*<td class="status-unknown">不明（上流に接続できない）', html), component

    boss = Staff(app, "boss")
    assert boss.post("/supervisor/mode", {"to_mode": "downtime", "reason": "住民記録システム障害"}).status_code == 302
    drafted = boss.post("/supervisor/notice/draft")
    assert drafted.status_code == 302
    version = drafted.headers["Location"].rstrip("/").rsplit("/", 1)[1]
    page = text_of(boss.get(f"/supervisor/notice/{version}"))
    sns = boss.get(f"/supervisor/notice/{version}/sns.txt").get_data(as_text=True)
    assert "住民記録システム" in page and "resident records system" in page and "住民の 記録の コンピューター" in page
    for text in (page, sns):
        for claim in ("住基ネット", "Juki-net", "夜間のデータ処理", "overnight", "夜の コンピューター"):
            assert claim not in text, claim
    assert "住民記録システム" in sns

"""Alerts, received by a real webhook receiver and a real SMTP server:
each detection, suppression of repeats, reminders, recovery, retries, and
no resident data in anything that leaves the box."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import signal

import pytest

from fallback import audit, modes
from fallback.mirror.syncing import SyncStopped, run_changes, run_full_sync
from fallback.monitoring import alerts, run_alert_cycle, run_probe_cycle
from fallback.ops import open_ops
from sync.errors import ExportInvalid, UpstreamUnavailable
from tests.conftest import example_records, write_export
from tests.monitoring.conftest import UPSTREAM_TOKEN, ops_rows, sensitive_values


def cycles(config, clock, count):
    for _ in range(count):
        run_probe_cycle(config, at=clock.tick())


def test_an_upstream_outage_is_alerted_once_reminded_and_its_recovery_announced(loaded, upstream, webhook, smtp, clock):
    cycles(loaded, clock, 2)
    assert run_alert_cycle(loaded, at=clock.at) == []
    assert webhook.bodies == [] and smtp.messages == []

    upstream.components["register"] = "down"
    outage_start = clock.at + clock.step
    cycles(loaded, clock, 3)
    sent = run_alert_cycle(loaded, at=clock.at)
    assert [(s.key, s.event) for s in sent] == [("upstream.register", "opened"), (sent[1].key, "notice")]
    assert all(d.ok for s in sent for d in s.deliveries)

    opened = webhook.bodies[0]
    assert (opened["key"], opened["event"], opened["severity"]) == ("upstream.register", "opened", "critical")
    assert dt.datetime.fromisoformat(opened["since"]) == outage_start
    assert opened["runbook"] == "runbooks/01-shoki-taio.md"
    assert "ダウン対策モード" in opened["still_works"] and "データ時点" in opened["still_works"]
    assert opened["mode"] == modes.LABELS[modes.SUSPECT]
    notice = webhook.bodies[1]
    assert notice["event"] == "notice" and "障害の疑い" in notice["title"]

    mail = smtp.messages[0]
    assert mail["To"] == "joho-seisaku@city.example.lg.jp"
    assert str(mail["Subject"]).startswith("【障害】上流の住民記録システムが応答しません")
    body = mail.get_content()
    for line in ("何が起きたか:", f"いつから: {outage_start:%Y-%m-%d %H:%M}", "まだ使えるもの:",
                 "開く手順書: runbooks/01-shoki-taio.md「障害発生時の初動（最初の15分）」", "現在の運用モード: 障害の疑い"):
        assert line in body

    # Still down: nothing new, however often the monitor looks.
    for _ in range(5):
        cycles(loaded, clock, 1)
        assert run_alert_cycle(loaded, at=clock.at) == []
    assert len(webhook.bodies) == 2 and len(smtp.messages) == 2

    # An hour on, one reminder.
    reminder_at = dt.datetime.fromisoformat(opened["at"]) + dt.timedelta(minutes=loaded["alerts"]["repeat_minutes"])
    assert [(s.key, s.event) for s in run_alert_cycle(loaded, at=reminder_at)] == [("upstream.register", "reminder")]
    assert str(smtp.messages[-1]["Subject"]).startswith("【継続中】")

    upstream.components["register"] = "ok"
    clock.at = reminder_at
    cycles(loaded, clock, 2)
    sent = run_alert_cycle(loaded, at=clock.at)
    assert ("upstream.register", "resolved") in [(s.key, s.event) for s in sent]
    resolved = next(b for b in webhook.bodies if b["event"] == "resolved")
    assert resolved["runbook"] == "runbooks/05-fukkyu-kakunin.md"
    assert "解消" in resolved["title"]
    assert any(s.startswith("【復旧】") for s in smtp.subjects())
    assert ops_rows(loaded, "SELECT count(*) FROM alerts WHERE key LIKE 'upstream.%' AND resolved_at IS NULL") == [(0,)]
    # the return to standby is announced too
    assert webhook.bodies[-1]["event"] == "notice" and "通常" in webhook.bodies[-1]["title"]


def test_a_partial_outage_says_what_still_works(config, upstream, webhook, clock):
    cycles(config, clock, 2)
    upstream.components["juki_net"] = "down"
    cycles(config, clock, 3)
    run_alert_cycle(config, at=clock.at)
    alert = next(b for b in webhook.bodies if b["key"] == "upstream.juki_net")
    assert alert["severity"] == "warning"
    assert "部分障害" in alert["title"]
    assert "住民記録システムは使えます" in alert["still_works"]
    assert alert["runbook"] == "runbooks/03-bubun-shogai.md"
    assert not [b for b in webhook.bodies if b["key"] == "upstream.register"]


def test_an_upstream_that_does_not_answer_at_all_is_one_alert_not_four(loaded, upstream, webhook, clock):
    cycles(loaded, clock, 2)
    upstream.components["juki_net"] = "down"
    cycles(loaded, clock, 3)
    run_alert_cycle(loaded, at=clock.at)
    assert webhook.events("upstream.") == [("upstream.juki_net", "opened")]

    upstream.fault = "500"  # now nothing answers: register, 住基ネット, batch and the read all fail
    cycles(loaded, clock, 3)
    run_alert_cycle(loaded, at=clock.at)
    assert webhook.events("upstream.") == [("upstream.juki_net", "opened"), ("upstream.register", "opened")], \
        "the partial outage stays open (it did not recover) and no further alerts are opened"
    full = webhook.bodies[-1]
    # the batch was fine when last heard of: a host that does not answer is not taken for a failed batch
    assert "住基ネット連携・住民記録の読み出し確認も異常です" in full["what"]
    assert "HTTP 500" in full["what"]


def test_the_webhook_is_retried_until_it_answers(loaded, webhook, smtp, clock):
    webhook.fail_next = 2
    conn = open_ops(loaded)
    modes.change(conn, modes.DOWNTIME, actor="boss", role="supervisor", reason="住民記録システム障害")
    conn.close()
    sent = run_alert_cycle(loaded, at=clock.tick())
    delivery = next(d for d in sent[0].deliveries if d.channel == "webhook")
    assert (delivery.ok, delivery.attempts) == (True, 3)
    assert webhook.attempts == 3 and len(webhook.bodies) == 1
    assert webhook.bodies[0]["runbook"] == "runbooks/02-downtime-madoguchi.md"
    assert "bossが切り替えました" in webhook.bodies[0]["what"]
    assert ops_rows(loaded, "SELECT channel, ok, attempts FROM alert_deliveries ORDER BY channel") == [("email", 1, 1), ("webhook", 1, 3)]


def test_a_dead_webhook_does_not_silence_the_mail(configure, smtp, clock):
    config = configure(ALERTS_WEBHOOK_URL="http://127.0.0.1:9/unreachable", ALERTS_WEBHOOK_RETRIES=1)
    conn = open_ops(config)
    modes.change(conn, modes.SUSPECT, actor="it1", role="it", reason="確認のため")
    conn.close()
    sent = run_alert_cycle(config, at=clock.tick())
    by_channel = {d.channel: d for s in sent for d in s.deliveries}
    assert by_channel["webhook"].ok is False and by_channel["webhook"].attempts == 2
    assert by_channel["email"].ok is True
    assert len(smtp.messages) == 2  # the mode notice, and the missing snapshot


def test_a_refused_full_export_is_alerted_without_resident_data(config, webhook, smtp, tmp_path, clock):
    residents = example_records("residents")
    broken = dict(residents[0], birth_date="1990-02-30")  # an impossible date in one record
    export = write_export(tmp_path / "bad", [broken] + residents[1:], example_records("seals"))
    with pytest.raises(ExportInvalid) as refusal:
        run_full_sync(config, source_dir=export)
    assert broken["resident_code"] in str(refusal.value), "the operator's message names the record…"
    assert ops_rows(config, "SELECT kind, outcome FROM sync_runs") == [("full", "refused")]

    run_alert_cycle(config, at=clock.tick())
    alert = next(b for b in webhook.bodies if b["key"] == "sync.full")
    assert "拒否" in alert["title"]
    assert alert["runbook"] == "runbooks/08-snapshot-restore.md"
    leaving = json.dumps(webhook.bodies, ensure_ascii=False) + "".join(smtp.bodies())
    assert broken["resident_code"] not in leaving, "…the alert that leaves the box does not"
    assert "1990-02-30" not in leaving
    assert not [v for v in sensitive_values() if v in leaving]


def test_a_full_load_stopped_by_an_operator_is_alerted_as_stopped_until_a_load_succeeds(loaded, webhook, tmp_path, clock):
    """`systemctl stop sonae-worker` mid-load left last night's copy in
    place: IT hears that the load was stopped, not that it failed, and the
    alert clears with the next load."""
    def stop_at_once():
        raise SyncStopped(signal.SIGTERM)

    export = write_export(tmp_path / "next", example_records("residents"), example_records("seals"))
    with pytest.raises(SyncStopped):
        run_full_sync(loaded, source_dir=export, stop_if_asked=stop_at_once)
    run_alert_cycle(loaded, at=clock.tick())
    alert = next(b for b in webhook.bodies if b["key"] == "sync.full")
    assert alert["title"] == "全件取込が中断されました（停止の操作による）"
    assert "理由: stopped by SIGTERM before finishing; nothing half-done was kept and generation 1 kept serving" in alert["what"]

    run_full_sync(loaded, source_dir=export)
    run_alert_cycle(loaded, at=clock.tick())
    assert ("sync.full", "resolved") in webhook.events("sync.")


def test_an_open_sync_alert_whose_situation_changes_says_so_at_once(loaded, webhook, tmp_path, clock):
    """Stopped by an operator, then refused for its data: the refusal is
    sent at once under its own title, not left behind 「中断」 until the
    alert resolves, and its count is of refusals only."""
    def stop_at_once():
        raise SyncStopped(signal.SIGTERM)

    residents = example_records("residents")
    with pytest.raises(SyncStopped):
        run_full_sync(loaded, source_dir=write_export(tmp_path / "next", residents, example_records("seals")), stop_if_asked=stop_at_once)
    run_alert_cycle(loaded, at=clock.tick())
    broken = write_export(tmp_path / "bad", [dict(residents[0], birth_date="1990-02-30")] + residents[1:], example_records("seals"))
    with pytest.raises(ExportInvalid):
        run_full_sync(loaded, source_dir=broken)
    run_alert_cycle(loaded, at=clock.tick())
    assert webhook.events("sync.") == [("sync.full", "opened"), ("sync.full", "changed")]
    changed = webhook.bodies[-1]
    assert changed["title"] == "全件取込が拒否されました（データの検査に不合格）"
    assert changed["what"].startswith("拒否されました（データの検査に不合格）。理由: ")  # one refusal, not "2回続けて"
    run_alert_cycle(loaded, at=clock.tick())
    assert webhook.events("sync.") == [("sync.full", "opened"), ("sync.full", "changed")], "said once"


def test_a_failed_change_pull_is_alerted_and_cleared_by_the_next_success(loaded, upstream, webhook, clock):
    with pytest.raises(UpstreamUnavailable):
        run_changes(loaded)  # the loopback upstream has no change feed: the pull fails
    assert ops_rows(loaded, "SELECT outcome FROM sync_runs WHERE kind = 'changes'") == [("failed",)]
    run_alert_cycle(loaded, at=clock.tick())
    assert ("sync.changes", "opened") in webhook.events("sync.")

    conn = open_ops(loaded)
    stamp = clock.tick().isoformat(timespec="milliseconds")
    conn.execute("INSERT INTO sync_runs (kind, started_at, finished_at, outcome, as_of) VALUES ('changes', ?, ?, 'ok', ?)",
                 (stamp, stamp, stamp))
    conn.close()
    run_alert_cycle(loaded, at=clock.tick())
    assert ("sync.changes", "resolved") in webhook.events("sync.")


def test_an_old_snapshot_is_alerted(config, webhook, tmp_path, clock):
    as_of = (clock.at - dt.timedelta(hours=30)).isoformat(timespec="seconds")
    run_full_sync(config, source_dir=write_export(tmp_path / "old", example_records("residents"), example_records("seals"), as_of=as_of))
    run_alert_cycle(config, at=clock.tick())
    alert = next(b for b in webhook.bodies if b["key"] == "snapshot.stale")
    assert "30時間" in alert["what"]
    assert not [b for b in webhook.bodies if b["key"] == "snapshot.expired"]


def test_a_stalled_change_feed_is_alerted(loaded, webhook, clock):
    later = clock.at + dt.timedelta(minutes=loaded["alerts"]["feed_stall_minutes"] + 1)
    run_alert_cycle(loaded, at=later)
    alert = next(b for b in webhook.bodies if b["key"] == "feed.stalled")
    assert alert["title"] == "差分取込が止まっています"  # the kind named as the report and the dashboard name it
    assert "最後に取込が成功したのは" in alert["what"]


def _free_percent(config) -> float:
    usage = shutil.disk_usage(config.home)
    return 100 * usage.free / usage.total


def test_low_disk_space_is_alerted_just_below_the_threshold(configure, webhook, clock):
    """The threshold is on the free share: 1 % above what is free alerts."""
    config = configure()
    config = configure(ALERTS_DISK_LOW_PERCENT=round(_free_percent(config) + 1, 2))
    run_alert_cycle(config, at=clock.tick())
    assert ("disk.low", "opened") in webhook.events("disk.")


def test_enough_disk_space_is_not_alerted_just_above_the_threshold(configure, webhook, clock):
    config = configure()
    config = configure(ALERTS_DISK_LOW_PERCENT=round(_free_percent(config) - 1, 2))
    run_alert_cycle(config, at=clock.tick())
    assert ("disk.low", "opened") not in webhook.events("disk.")


def test_a_missing_key_is_alerted_without_the_database_and_recorded_once_it_is_back(loaded, webhook, smtp, clock):
    key_file = loaded["security"]["key_file"]
    shutil.move(key_file, key_file + ".away")
    assert run_probe_cycle(loaded, at=clock.tick()) == {}, "without the key nothing can be probed into the database"
    sent = run_alert_cycle(loaded, at=clock.tick())
    assert [(s.key, s.event) for s in sent] == [("key.missing", "opened")]
    assert webhook.bodies[0]["runbook"] == "runbooks/07-kagi-kanri.md"
    assert "暗号鍵" in str(smtp.messages[0]["Subject"])
    assert run_alert_cycle(loaded, at=clock.tick()) == [], "repeats are suppressed without the database too"

    shutil.move(key_file + ".away", key_file)
    sent = run_alert_cycle(loaded, at=clock.tick())
    assert ("key.missing", "resolved") in [(s.key, s.event) for s in sent]
    assert ops_rows(loaded, "SELECT key, resolved_at IS NOT NULL FROM alerts WHERE key = 'key.missing'") == [("key.missing", 1)]


def test_a_damaged_snapshot_store_is_alerted_and_the_upstream_still_probed(loaded, webhook, clock):
    for pointer in ("CURRENT", "CURRENT.copy"):  # neither says which generation was current
        (loaded.snapshot_dir / pointer).write_text("not-a-generation")
    statuses = run_probe_cycle(loaded, at=clock.tick())
    assert statuses["register"].last_state == "ok" and "synthetic" not in statuses
    run_alert_cycle(loaded, at=clock.at)
    alert = next(b for b in webhook.bodies if b["key"] == "snapshot.unreadable")
    assert alert["severity"] == "critical" and "開けません" in alert["title"]


def test_a_broken_audit_chain_is_alerted(loaded, webhook, clock):
    conn = open_ops(loaded)
    first = audit.record(conn, "clerk1", "view", "00000000000", {"found": True})
    audit.record(conn, "clerk1", "view", "00000000001", {"found": True})
    conn.close()
    run_alert_cycle(loaded, at=clock.tick())
    assert not webhook.events("audit.")
    conn = open_ops(loaded)
    conn.execute("DROP TRIGGER audit_no_update")  # what someone holding the key would have to do
    conn.execute("UPDATE audit SET detail = '{\"found\":false}' WHERE id = ?", (first,))
    conn.close()
    run_alert_cycle(loaded, at=clock.tick())
    assert not webhook.events("audit."), "the full check runs every alerts.audit_verify_minutes, not every cycle"
    later = clock.at + dt.timedelta(minutes=loaded["alerts"]["audit_verify_minutes"])
    run_alert_cycle(loaded, at=later)
    alert = next(b for b in webhook.bodies if b["key"] == "audit.broken")
    assert alert["severity"] == "critical"
    assert "改ざん" in alert["title"]


def test_every_runbook_an_alert_names_exists_under_that_title():
    from fallback.config import load_config
    from fallback.runbooks import load, runbook_dir

    directory = runbook_dir(load_config(env={}))
    referenced = set(alerts.RUNBOOKS) | set(alerts.MODE_RUNBOOK.values())
    for slug in referenced:
        assert load(directory, slug).title == alerts.RUNBOOKS[slug], slug


def test_a_token_file_the_box_cannot_use_is_an_it_alert_about_the_box_not_an_upstream_outage(configure, fresh_example_export,
                                                                                               webhook, clock, tmp_path):
    token_file = tmp_path / "upstream.token"  # not there yet: what a rename or a wrong mount leaves
    config = configure(UPSTREAM_TOKEN="", UPSTREAM_TOKEN_FILE=token_file)
    run_full_sync(config, source_dir=fresh_example_export)
    for _ in range(4):  # more than probes.down_after
        assert run_probe_cycle(config, at=clock.tick()) == {}
    assert ops_rows(config, "SELECT count(*) FROM probes") == [(0,)], "no probe result: the upstream was never asked"
    sent = run_alert_cycle(config, at=clock.at)
    assert [(s.key, s.event) for s in sent] == [("upstream.setting", "opened")]
    opened = webhook.bodies[0]
    assert opened["title"] == "装置の設定のため上流を監視できません" and "障害ではなく" in opened["what"]
    assert str(token_file) in opened["what"] and opened["runbook"] == "runbooks/07-kagi-kanri.md"
    assert opened["mode"] == modes.LABELS[modes.STANDBY], "the mode stays: nothing says the upstream is down"

    token_file.write_text(UPSTREAM_TOKEN)
    statuses = run_probe_cycle(config, at=clock.tick())
    assert statuses["register"].last_state == "ok"
    sent = run_alert_cycle(config, at=clock.at)
    assert ("upstream.setting", "resolved") in [(s.key, s.event) for s in sent]

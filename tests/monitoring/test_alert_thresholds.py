"""The alerts' thresholds in-process, each in both directions at its
boundary: the snapshot's age against alerts.snapshot_max_age_hours and the
counter's hard limit, the free disk share against alerts.disk_low_percent,
and how often the audit chain is verified. The alert cycle end to end
(webhook, mail, reminders) is in test_alerts.py; these run in
milliseconds, so mutation testing (README "Mutation testing") can run
them once per mutant."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import shutil

import pytest

from fallback import audit, disk
from fallback.config import load_config
from fallback.monitoring import alerts, mirror
from fallback.ops import open_ops

AS_OF = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.timezone(dt.timedelta(hours=9)))


@pytest.fixture
def configure(sonae_env, monkeypatch):
    """The appliance's configuration with these [alerts]/[counter] settings."""
    def build(**settings):
        for name, value in settings.items():
            monkeypatch.setenv(f"SONAE_{name}", str(value))
        return load_config()

    return build


def facts(example_register) -> mirror.SnapshotFacts:
    return mirror.SnapshotFacts(dataclasses.replace(example_register.meta, as_of=AS_OF), None)


def well_formed(conditions: list[alerts.Condition]) -> list[alerts.Condition]:
    """Each alert tells IT in Japanese what happened, since when, what still
    works, and which runbook to open."""
    for c in conditions:
        assert c.title and c.title.isprintable() and not any(ch.isascii() for ch in c.title), c.title
        assert c.what.endswith("。") and c.still_works.endswith("。"), c
        assert c.runbook in alerts.RUNBOOKS and dt.datetime.fromisoformat(c.since), c
    return conditions


def snapshot_keys(config, example_register, age_hours: float) -> list[str]:
    at = AS_OF + dt.timedelta(hours=age_hours)
    return [c.key for c in well_formed(alerts.snapshot_conditions(config, facts(example_register), at))]


def test_a_snapshot_is_stale_just_past_its_maximum_age_and_expired_just_past_the_hard_limit(configure, example_register):
    config = configure(ALERTS_SNAPSHOT_MAX_AGE_HOURS=26, COUNTER_DATA_AGE_HARD_LIMIT_HOURS=72)
    assert snapshot_keys(config, example_register, 26) == []
    assert snapshot_keys(config, example_register, 26.01) == ["snapshot.stale"]
    assert snapshot_keys(config, example_register, 72) == ["snapshot.stale"]
    assert snapshot_keys(config, example_register, 72.01) == ["snapshot.stale", "snapshot.expired"]


def test_a_stale_snapshot_is_dated_from_when_it_crossed_each_limit(configure, example_register):
    config = configure(ALERTS_SNAPSHOT_MAX_AGE_HOURS=26, COUNTER_DATA_AGE_HARD_LIMIT_HOURS=72)
    stale, expired = well_formed(alerts.snapshot_conditions(config, facts(example_register), AS_OF + dt.timedelta(hours=100)))
    assert stale.since == "2026-12-02T11:00:00.000+09:00" and "データ時点は 2026-12-01 09:00（" in stale.what
    assert "基準の26時間を超えました" in stale.what
    assert expired.since == "2026-12-04T09:00:00.000+09:00" and "データ時点は 2026-12-01 09:00（" in expired.what
    assert "上限の72時間を超えました" in expired.what
    assert (stale.severity, expired.severity) == (alerts.WARNING, alerts.CRITICAL)


def test_no_snapshot_at_all_is_critical(configure):
    (missing,) = well_formed(alerts.snapshot_conditions(configure(), None, AS_OF))
    assert (missing.key, missing.severity, missing.since) == ("snapshot.missing", alerts.CRITICAL, AS_OF.isoformat(timespec="milliseconds"))


def free_percent(config) -> float:
    usage = shutil.disk_usage(config.home)
    return 100 * usage.free / usage.total


def test_low_disk_is_alerted_when_the_free_share_is_below_the_threshold_only(configure):
    """On the free share, not the used one: the thresholds sit 0.1 points
    either side of what is free."""
    config = configure()
    with open_ops(config) as conn:
        free = free_percent(config)
        below = well_formed(alerts.disk_conditions(conn, configure(ALERTS_DISK_LOW_PERCENT=round(free + 0.1, 4)), AS_OF))
        above = alerts.disk_conditions(conn, configure(ALERTS_DISK_LOW_PERCENT=round(free - 0.1, 4)), AS_OF)
    assert [c.key for c in below] == ["disk.low"] and [c.key for c in above] == []
    assert f"（{free:.1f}%）" in below[0].what and below[0].severity == alerts.WARNING
    gib = float(re.search(r"の空きは ([\d.]+) GiB", below[0].what)[1])
    assert abs(gib - shutil.disk_usage(config.home).free / 2**30) < 0.2


def test_a_released_disk_reserve_is_critical_until_the_reserve_is_made_again(configure):
    config = configure(ALERTS_DISK_LOW_PERCENT=0)  # the reserve alone (tests keep a 1 MB one)
    disk.keep_reserve(config)
    conn = open_ops(config)
    assert alerts.disk_conditions(conn, config, AS_OF) == []
    assert disk.release_reserve(config, "the alert cycle could not write the operational database")
    released_at = disk.reserve_state(config).released
    (released,) = well_formed(alerts.disk_conditions(conn, config, AS_OF))
    assert (released.key, released.severity, released.since) == ("disk.reserve_released", alerts.CRITICAL, released_at["at"])
    assert f"空きが{released_at['free_before'] / 2**20:.1f} MBまで減った" in released.what
    assert "予備の領域（1 MB）を解放しました（the alert cycle could not write the operational database）" in released.what
    assert "（1通あたり約72 KB）" in released.still_works  # 64 KB of PDF before the first certificate, 8 KB of rows
    free_mb, certificates = re.search(r"いまの空き (\d+) MB は、証明書およそ([\d,]+)通分", released.still_works).groups()
    assert abs(int(free_mb) - shutil.disk_usage(config.home).free / 2**20) < 200
    assert int(certificates.replace(",", "")) == pytest.approx(int(free_mb) * 1024 / 72, rel=0.01)
    disk.keep_reserve(config)
    assert alerts.disk_conditions(conn, config, AS_OF) == []
    conn.close()


def test_the_audit_chain_is_verified_again_only_once_its_interval_passed(configure):
    config = configure(ALERTS_AUDIT_VERIFY_MINUTES=60)
    conn = open_ops(config)
    audit.record(conn, "clerk1", "search", None, {"kana": "ヤマダ"})
    assert alerts.audit_conditions(conn, config, AS_OF) == []
    conn.execute("DROP TRIGGER audit_no_update")
    conn.execute("UPDATE audit SET detail = '{}' WHERE id = 1")  # tampered after the check
    assert alerts.audit_conditions(conn, config, AS_OF + dt.timedelta(minutes=59, seconds=59)) == []  # the verdict stands
    (broken,) = well_formed(alerts.audit_conditions(conn, config, AS_OF + dt.timedelta(minutes=60)))
    assert (broken.key, broken.severity, broken.since) == ("audit.broken", alerts.CRITICAL, (AS_OF + dt.timedelta(minutes=60)).isoformat(timespec="milliseconds"))
    assert "entry 1 was altered" in broken.what and "（0件目まで正常）" in broken.what
    (again,) = alerts.audit_conditions(conn, config, AS_OF + dt.timedelta(minutes=200))
    assert again.since == broken.since  # broken since the first check that found it
    conn.close()

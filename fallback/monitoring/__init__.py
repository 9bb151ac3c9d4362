"""Outage detection and IT monitoring: probes of the upstream, alerts, the
SLA and morning reports, and machine-readable health.

The worker runs three jobs; each is a plain function that tests (and an
operator) can call directly:

- run_probe_cycle(config)     every probes.interval_s
- run_alert_cycle(config)     every alerts.evaluate_interval_s
- run_morning_report(config)  daily at alerts.morning_report (Asia/Tokyo)
"""

from __future__ import annotations

from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from fallback.config import Config
from fallback.monitoring.alerts import run_alert_cycle
from fallback.monitoring.doctor import run_doctor_job
from fallback.monitoring.probes import run_probe_cycle
from fallback.monitoring.reports import run_morning_report
from fallback.ops import TOKYO, now

__all__ = ["register_monitoring_jobs", "run_alert_cycle", "run_morning_report", "run_probe_cycle"]


def register_monitoring_jobs(scheduler, config: Config) -> None:
    """Add the monitoring jobs to an APScheduler 3 scheduler. A job that is
    still running when its next turn comes is not started twice, and missed
    turns (the machine was asleep) collapse into one."""
    common = {"args": [config], "max_instances": 1, "coalesce": True, "replace_existing": True}
    scheduler.add_job(run_probe_cycle, IntervalTrigger(seconds=config["probes"]["interval_s"], timezone=TOKYO),
                      id="monitor-probes", name="上流の監視", next_run_time=now(), misfire_grace_time=None, **common)
    scheduler.add_job(run_alert_cycle, IntervalTrigger(seconds=config["alerts"]["evaluate_interval_s"], timezone=TOKYO),
                      id="monitor-alerts", name="警報の判定", next_run_time=now(), misfire_grace_time=None, **common)
    scheduler.add_job(run_doctor_job, IntervalTrigger(minutes=config["alerts"]["doctor_interval_minutes"], timezone=TOKYO),
                      id="monitor-doctor", name="初期設定の点検（sonae doctor）", next_run_time=now(), misfire_grace_time=None, **common)
    hour, minute = (int(part) for part in config["alerts"]["morning_report"].split(":"))
    scheduler.add_job(run_morning_report, CronTrigger(hour=hour, minute=minute, timezone=TOKYO),
                      id="monitor-morning-report", name="朝の報告", misfire_grace_time=3600, **common)

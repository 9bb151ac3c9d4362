"""The monitoring jobs in a real APScheduler: what the lead wires into
`sonae worker`."""

from __future__ import annotations

import time

from apscheduler.schedulers.background import BackgroundScheduler

from fallback.monitoring import register_monitoring_jobs, run_alert_cycle, run_morning_report, run_probe_cycle
from tests.monitoring.conftest import ops_rows


def test_the_jobs_are_scheduled_from_the_configuration(configure):
    config = configure(PROBES_INTERVAL_S=15, ALERTS_EVALUATE_INTERVAL_S=30, ALERTS_MORNING_REPORT="06:45")
    scheduler = BackgroundScheduler(timezone="Asia/Tokyo")
    register_monitoring_jobs(scheduler, config)
    jobs = {job.id: job for job in scheduler.get_jobs()}
    assert jobs["monitor-probes"].func is run_probe_cycle
    assert jobs["monitor-probes"].trigger.interval.total_seconds() == 15
    assert jobs["monitor-alerts"].func is run_alert_cycle
    assert jobs["monitor-alerts"].trigger.interval.total_seconds() == 30
    morning = jobs["monitor-morning-report"]
    assert morning.func is run_morning_report
    fields = {f.name: str(f) for f in morning.trigger.fields}
    assert (fields["hour"], fields["minute"], str(morning.trigger.timezone)) == ("6", "45", "Asia/Tokyo")
    assert all(job.max_instances == 1 and job.coalesce for job in jobs.values())


def test_a_running_scheduler_probes_and_evaluates_on_its_own(configure, upstream, webhook):
    config = configure(PROBES_INTERVAL_S=1, ALERTS_EVALUATE_INTERVAL_S=1)
    upstream.components["register"] = "down"
    scheduler = BackgroundScheduler(timezone="Asia/Tokyo")
    register_monitoring_jobs(scheduler, config)
    scheduler.start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and ("upstream.register", "opened") not in webhook.events():
            time.sleep(0.2)
    finally:
        scheduler.shutdown(wait=True)
    assert ops_rows(config, "SELECT count(*) >= 3 FROM probes WHERE component = 'register' AND ok = 0") == [(1,)]
    assert ("upstream.register", "opened") in webhook.events()

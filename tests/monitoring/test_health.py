"""/healthz, /readyz and /metrics: machine-readable, free of resident data,
and to the public no more than the outage notice says — /readyz's status
code and word, whether the counters work from the copy; reasons and
figures need alerts.metrics_token. The metrics pass `promtool check metrics`."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from pathlib import Path

import pytest

from fallback.app import create_app
from fallback.mirror.syncing import run_full_sync
from fallback.monitoring import run_alert_cycle, run_probe_cycle
from fallback.ops import Transaction, now_iso, open_ops
from tests.conftest import example_records, write_export
from tests.monitoring.conftest import sensitive_values

REPO = Path(__file__).resolve().parents[2]


def promtool() -> str:
    """promtool from `make promtool` (or the PATH). Its absence fails the
    test: an unchecked metrics format is not a pass."""
    local = REPO / ".venv" / "bin" / "promtool"
    found = str(local) if local.exists() else shutil.which("promtool")
    assert found, "promtool is missing: run `make promtool`"
    return found


TOKEN = "scrape-secret"
SCRAPER = {"Authorization": f"Bearer {TOKEN}"}


def client(config):
    app = create_app(config)
    app.config["TESTING"] = True
    return app.test_client()


@pytest.fixture
def scraped(configure):
    """An appliance whose monitoring has its token."""
    return configure(ALERTS_METRICS_TOKEN=TOKEN)


def issue(conn, scope: str, kind: str, copies: int) -> None:
    """Issuance records as the counter writes them (one request, one
    certificate row per copy)."""
    with Transaction(conn):
        request_id = conn.execute(
            "INSERT INTO requests (created_at, scope, drill_id, clerk, office, terminal, printer, kind, subject_code, requester_type, "
            "options, copies, fee_yen, outcome) VALUES (?, ?, ?, 'clerk1', '本庁', '本庁1', 'プリンタ001', ?, '00000000000', 'self', '{}', ?, 300, 'issued')",
            (now_iso(), scope, 1 if scope == "drill" else None, kind, copies),
        ).lastrowid
        base = conn.execute("SELECT coalesce(max(serial), 900000) FROM certificates").fetchone()[0]
        for copy in range(copies):
            conn.execute(
                "INSERT INTO certificates (serial, scope, request_id, copy_number, status, issued_at, resident_codes, printed_records) "
                "VALUES (?, ?, ?, ?, 'rendered', ?, '[]', '[]')",
                (base + copy + 1, scope, request_id, copy + 1, now_iso()),
            )


def test_healthz_is_public_and_says_alive(config):
    response = client(config).get("/healthz")
    assert response.status_code == 200
    assert response.get_json()["status"] == "alive"
    assert response.headers["Cache-Control"] == "no-store"


def test_readyz_needs_a_snapshot_and_the_key(scraped, fresh_example_export):
    config = scraped
    web = client(config)
    response = web.get("/readyz", headers=SCRAPER)
    assert response.status_code == 503
    assert response.get_json()["checks"]["snapshot"]["ok"] is False

    run_full_sync(config, source_dir=fresh_example_export)
    response = web.get("/readyz", headers=SCRAPER)
    body = response.get_json()
    assert response.status_code == 200, body
    assert body["status"] == "ready"
    assert body["checks"]["key"]["ok"] and body["checks"]["data_age"]["ok"]
    assert body["checks"]["snapshot"]["generation"] == 1


def test_readyz_refuses_data_older_than_the_hard_limit(configure, tmp_path):
    config = configure(COUNTER_DATA_AGE_HARD_LIMIT_HOURS=24, ALERTS_METRICS_TOKEN=TOKEN)
    old = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=30)).isoformat(timespec="seconds")
    run_full_sync(config, source_dir=write_export(tmp_path / "old", example_records("residents"), example_records("seals"), as_of=old))
    response = client(config).get("/readyz", headers=SCRAPER)
    assert response.status_code == 503
    body = response.get_json()
    assert body["checks"]["data_age"] == {"ok": False, "age_hours": pytest.approx(30, abs=0.1), "limit_hours": 24}
    assert body["status"] == "not_ready"


def test_readyz_tells_the_public_its_status_and_nothing_else(loaded, configure):
    public = client(loaded).get("/readyz")
    assert public.status_code == 200 and public.get_json() == {"status": "ready"}
    web = client(configure(ALERTS_METRICS_TOKEN=TOKEN))
    assert web.get("/readyz", headers={"Authorization": "Bearer wrong"}).get_json() == {"status": "ready"}
    full = web.get("/readyz", headers=SCRAPER).get_json()
    assert full["checks"]["snapshot"]["generation"] == 1 and "age_hours" in full["checks"]["data_age"]


def test_metrics_tell_the_public_only_what_the_notice_says(loaded, configure):
    text = client(loaded).get("/metrics").get_data(as_text=True)
    names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
    assert names == {"sonae_ready", "sonae_downtime"}
    assert "sonae_downtime 0.0" in text
    assert "sonae_snapshot_records" in client(configure(ALERTS_METRICS_TOKEN=TOKEN)).get("/metrics", headers=SCRAPER).get_data(as_text=True)


def test_metrics_pass_promtool_and_count_real_certificates_only(configure, fresh_example_export, upstream, clock):
    loaded = configure(ALERTS_METRICS_TOKEN=TOKEN)
    run_full_sync(loaded, source_dir=fresh_example_export)
    for _ in range(3):
        run_probe_cycle(loaded, at=clock.tick())
    upstream.components["juki_net"] = "down"
    for _ in range(3):
        run_probe_cycle(loaded, at=clock.tick())
    run_alert_cycle(loaded, at=clock.at)
    conn = open_ops(loaded)
    issue(conn, "real", "juminhyo", 2)
    issue(conn, "real", "inkan", 1)
    issue(conn, "drill", "juminhyo", 5)  # a drill never counts
    conn.close()

    response = client(loaded).get("/metrics", headers=SCRAPER)
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    text = response.get_data(as_text=True)
    checked = subprocess.run([promtool(), "check", "metrics"], input=text, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    for line in (
        'sonae_certificates_issued_total{kind="juminhyo"} 2.0',
        'sonae_certificates_issued_total{kind="inkan"} 1.0',
        'sonae_mode{mode="suspect"} 1.0',
        'sonae_upstream_up{component="juki_net"} 0.0',
        'sonae_upstream_up{component="register"} 1.0',
        'sonae_probe_results_total{component="juki_net",result="failed"} 3.0',
        'sonae_probe_results_total{component="register",result="ok"} 6.0',
        'sonae_sync_runs_total{kind="full",outcome="ok"} 1.0',
        'sonae_sync_duration_seconds_count{kind="full"} 1.0',
        'sonae_snapshot_present 1.0',
        'sonae_snapshot_records{kind="residents"}',
        'sonae_alerts_open{severity="warning"} 1.0',
        'sonae_ready 1.0',
        'sonae_key_loaded 1.0',
        'sonae_probe_latency_seconds{component="synthetic"}',
        'sonae_snapshot_age_seconds',
        'sonae_disk_free_bytes',
    ):
        assert line in text, line
    for code in (r["resident_code"] for r in example_records("residents")):
        assert code not in text
    assert not [v for v in sensitive_values() if v in text]


def test_metrics_beyond_the_public_ones_need_the_token(scraped):
    web = client(scraped)
    assert "sonae_key_loaded" not in web.get("/metrics").get_data(as_text=True)
    assert web.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert "sonae_key_loaded" in web.get("/metrics", headers=SCRAPER).get_data(as_text=True)


def test_without_the_key_the_appliance_is_alive_but_not_ready(loaded, configure):
    web = client(configure(ALERTS_METRICS_TOKEN=TOKEN))
    key_file = loaded["security"]["key_file"]
    shutil.move(key_file, key_file + ".away")
    try:
        assert web.get("/healthz").status_code == 200
        response = web.get("/readyz", headers=SCRAPER)
        assert response.status_code == 503
        assert response.get_json()["checks"]["key"] == {"ok": False, "detail": "暗号鍵を読み込めません"}
        assert web.get("/readyz").get_json() == {"status": "not_ready", "failing": ["key"]}
        metrics = web.get("/metrics", headers=SCRAPER)
        assert metrics.status_code == 200
        assert "sonae_key_loaded 0.0" in metrics.get_data(as_text=True)
        assert "sonae_ready 0.0" in metrics.get_data(as_text=True)
    finally:
        shutil.move(key_file + ".away", key_file)


def test_health_endpoints_reveal_no_resident_data(loaded, configure):
    web = client(configure(ALERTS_METRICS_TOKEN=TOKEN))
    bodies = "".join(web.get(path, headers=SCRAPER).get_data(as_text=True) for path in ("/healthz", "/readyz", "/metrics"))
    for code in (r["resident_code"] for r in example_records("residents")):
        assert code not in bodies
    assert not [v for v in sensitive_values() if v in bodies]

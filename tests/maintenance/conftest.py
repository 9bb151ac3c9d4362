"""Real parts for the maintenance calendar: the loaded appliance (example
register, one account per role), a real HTTP upstream serving a newer
export and a change (tests.sync.upstream_server), the webhook receiver and
SMTP server of the monitoring tests, and a private CUPS scheduler."""

from __future__ import annotations

import copy

import pytest

from tests.monitoring.conftest import smtp, webhook  # noqa: F401  (fixtures)
from tests.printing.cups_server import cups_server  # noqa: F401  (fixture)
from tests.support import example_records, now_jst, write_export
from tests.sync.exports import change
from tests.sync.upstream_server import TOKEN, TestUpstream

NEWCOMER = "10000000134"


@pytest.fixture
def upstream(tmp_path):
    """The vendor's register as it stands before the window: a newer full
    export than the appliance holds (one more resident) and one change after it."""
    residents, seals = example_records("residents"), example_records("seals")
    newcomer = copy.deepcopy(residents[-1])
    newcomer.update(resident_code=NEWCOMER, atena_number="A000000134", household_id="0000100011", name="新井　春",
                    name_kana="アライ　ハル", version=1)
    directory = write_export(tmp_path / "newer-export", [*residents, newcomer], seals)
    server = TestUpstream(directory, as_of=now_jst().isoformat(timespec="seconds")).start()
    moved = copy.deepcopy(residents[0])
    moved.update(version=moved["version"] + 1, updated_at=now_jst().isoformat(timespec="seconds"))
    server.changes = [change(1001, moved, at=now_jst().isoformat(timespec="seconds"))]
    yield server
    server.stop()


@pytest.fixture
def maintenance_env(monkeypatch, loaded_env, upstream, webhook, smtp):  # noqa: F811
    """The loaded appliance pointed at the upstream, the webhook and the mail server."""
    from fallback.config import load_config

    for name, value in {
        "SONAE_UPSTREAM_URL": upstream.url, "SONAE_UPSTREAM_TOKEN": TOKEN, "SONAE_UPSTREAM_TIMEOUT_S": "2.0",
        "SONAE_ALERTS_WEBHOOK_URL": webhook.url, "SONAE_ALERTS_SMTP_HOST": "127.0.0.1", "SONAE_ALERTS_SMTP_PORT": str(smtp.port),
        "SONAE_ALERTS_MAIL_TO": "joho-seisaku@city.example.lg.jp", "SONAE_ALERTS_WEBHOOK_RETRIES": "0",
    }.items():
        monkeypatch.setenv(name, value)
    return load_config()

"""An appliance with the example register loaded and one account per role,
served by the real Flask app over its test client."""

from __future__ import annotations

import re

import pytest

from fallback import users
from fallback.app import create_app
from fallback.ops import open_ops

PASSWORD = "correct-horse-battery"
ACCOUNTS = {"clerk1": "clerk", "clerk2": "clerk", "boss": "supervisor", "coord": "drill_coordinator", "it1": "it", "aud": "auditor"}


@pytest.fixture
def appliance(sonae_env, fresh_example_export):
    from fallback.syncing import run_full_sync

    run_full_sync(sonae_env, source_dir=fresh_example_export)
    conn = open_ops(sonae_env)
    for username, role in ACCOUNTS.items():
        users.add_user(conn, username, username, role, PASSWORD, actor="test")
    conn.close()
    app = create_app(sonae_env)
    app.config["TESTING"] = True
    return app


class Staff:
    """A logged-in browser-like client: keeps the cookie and the CSRF token."""

    def __init__(self, app, username, terminal="本庁1"):
        self.client = app.test_client()
        self.csrf = self.client.get("/api/v1/session").get_json()["csrf_token"]
        response = self.client.post("/login", data={"username": username, "password": PASSWORD, "terminal": terminal, "csrf_token": self.csrf})
        assert response.status_code == 302, response.get_data(as_text=True)
        self.csrf = self.client.get("/api/v1/session").get_json()["csrf_token"]

    def get(self, path, **kwargs):
        return self.client.get(path, **kwargs)

    def post(self, path, data=None, **kwargs):
        data = dict(data or {})
        data.setdefault("csrf_token", self.csrf)
        return self.client.post(path, data=data, **kwargs)

    def api(self, method, path, json=None):
        return self.client.open(path, method=method, json=json, headers={"X-CSRF-Token": self.csrf})


@pytest.fixture
def login(appliance):
    return lambda username, terminal="本庁1": Staff(appliance, username, terminal)


@pytest.fixture
def downtime(login):
    boss = login("boss")
    response = boss.post("/supervisor/mode", {"to_mode": "downtime", "reason": "住民記録システム障害"})
    assert response.status_code == 302
    return boss


def text_of(response) -> str:
    """The visible text of an HTML response (tags stripped)."""
    return re.sub(r"<[^>]+>", " ", response.get_data(as_text=True))

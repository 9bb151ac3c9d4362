"""The residents' side of an outage, tested on real parts: a real
operational database, the example register loaded through the real sync,
the Flask app over its test client, PDFs read back with pdftotext."""

from __future__ import annotations

import datetime as dt
import re
import subprocess

import pytest

from fallback import users
from fallback.ops import TOKYO, open_ops

PASSWORD = "correct-horse-battery"
ACCOUNTS = {"clerk1": "clerk", "boss": "supervisor", "boss2": "supervisor", "coord": "drill_coordinator", "aud": "auditor"}


@pytest.fixture
def ops(sonae_env):
    conn = open_ops(sonae_env)
    yield conn
    conn.close()


@pytest.fixture
def appliance(sonae_env, fresh_example_export):
    from fallback.app import create_app
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
        csrf = self.client.get("/api/v1/session").get_json()["csrf_token"]
        response = self.client.post("/login", data={"username": username, "password": PASSWORD, "terminal": terminal, "csrf_token": csrf})
        assert response.status_code == 302, response.get_data(as_text=True)
        self.csrf = self.client.get("/api/v1/session").get_json()["csrf_token"]

    def get(self, path, **kwargs):
        return self.client.get(path, **kwargs)

    def post(self, path, data=None, **kwargs):
        data = dict(data or {})
        data.setdefault("csrf_token", self.csrf)
        return self.client.post(path, data=data, **kwargs)


@pytest.fixture
def login(appliance):
    return lambda username, terminal="本庁1": Staff(appliance, username, terminal)


def pdf_text(pdf: bytes, tmp_path, name="document.pdf") -> str:
    assert pdf.startswith(b"%PDF")
    path = tmp_path / name
    path.write_bytes(pdf)
    return subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True, check=True).stdout


def squeezed(text: str) -> str:
    """Text without any whitespace: pdftotext spaces out wide layouts."""
    return re.sub(r"\s+", "", text)


def jst(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=TOKYO)

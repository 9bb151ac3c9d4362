"""A signing key the running appliance cannot use (readable by others, or
unreadable) is found by /readyz and refused at the counter before any
serial is taken; /verify tells the sender to come back, never a 500. With
the key usable, all three work (`sonae serve` refusing to start on it is
in tests/deploy/test_permissions.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fallback.keys import signing_key_status
from tests.fallback.test_verify_page import SELF_REQUEST, YAMADA_TARO, upload
from tests.support import Staff, text_of

TOKEN = {"Authorization": "Bearer metrics-secret"}


@pytest.fixture
def app(configure_app, login, downtime):
    return configure_app(alerts={"metrics_token": "metrics-secret"})


def signing_key_file() -> Path:
    return Path(os.environ["SONAE_SECURITY_SIGNING_KEY_FILE"])


def issued(app):
    return Staff(app, "clerk1").api("POST", f"/api/v1/residents/{YAMADA_TARO}/certificates", json=SELF_REQUEST)


def serials_handed_out(app) -> int:
    from fallback.ops import open_ops

    conn = open_ops(app.config["SONAE"])
    try:
        return conn.execute("SELECT count(*) FROM certificates").fetchone()[0]
    finally:
        conn.close()


def test_a_signing_key_readable_by_others_is_not_ready_and_refused_at_the_counter(app):
    signing_key_file().chmod(0o644)
    assert signing_key_status(app.config["SONAE"]) == (f"key file {signing_key_file()} is readable by others (mode 0644); "
                                                       f"run `chmod 600 {signing_key_file()}`")
    public = app.test_client().get("/readyz")
    assert public.status_code == 503 and public.get_json() == {"status": "not_ready", "failing": ["signing_key"]}
    check = app.test_client().get("/readyz", headers=TOKEN).get_json()["checks"]["signing_key"]
    assert check["ok"] is False and "mode 0644" in check["reason"]
    before = serials_handed_out(app)
    refused = issued(app)
    assert refused.status_code == 422 and refused.get_json()["rule"] == "signing_key", refused.get_json()
    assert "署名する鍵を読み込めません" in refused.get_json()["message"]
    assert serials_handed_out(app) == before  # no serial taken, nothing on record as issued


def test_with_the_signing_key_usable_readyz_is_ready_and_the_counter_issues(app):
    readyz = app.test_client().get("/readyz", headers=TOKEN)
    assert readyz.status_code == 200, readyz.get_json()
    assert readyz.get_json()["checks"]["signing_key"] == {"ok": True, "detail": "証明書の署名鍵を読み込めます"}
    assert issued(app).status_code == 201


def test_verify_without_a_usable_signing_key_says_come_back_not_500(app):
    pdf = Staff(app, "clerk1").get(issued(app).get_json()["certificates"][0]["pdf"]).data
    signing_key_file().chmod(0o640)
    response = upload(app, pdf)
    assert response.status_code == 503 and "ただいま証明書を確認できません" in text_of(response)
    signing_key_file().chmod(0o600)
    assert upload(app, pdf).status_code == 200

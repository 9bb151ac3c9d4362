"""The JSON API's login takes its terminal from the client's registration
by a supervisor at /terminal, as the HTML login does: a client that only
names a terminal opens no counter and issues nothing under its serials."""

from __future__ import annotations

from fallback.ops import open_ops
from tests.support import PASSWORD

YAMADA_TARO = "10000000011"
ISSUE = {"kind": "juminhyo", "requester_type": "self", "identity_document": "運転免許証", "copies": 1, "acknowledge_move_out": True}


def api_login(client, body: dict):
    csrf = client.get("/api/v1/session").get_json()["csrf_token"]
    return client.post("/api/v1/session", json=body, headers={"X-CSRF-Token": csrf})


def certificates(appliance) -> int:
    conn = open_ops(appliance.config["SONAE"])
    try:
        return conn.execute("SELECT count(*) FROM certificates").fetchone()[0]
    finally:
        conn.close()


def test_naming_a_terminal_from_an_unregistered_client_is_refused(appliance, downtime):
    client = appliance.test_client()
    refused = api_login(client, {"username": "clerk1", "password": PASSWORD, "terminal": "本庁1"})
    assert refused.status_code == 400
    assert refused.get_json()["error"] == "terminal_not_registered"
    assert "登録されていない" in refused.get_json()["message"] and "/terminal" in refused.get_json()["message"]
    assert client.get("/api/v1/session").get_json()["authenticated"] is False

    # Without naming one the clerk is logged in, as at the HTML login, but the counter stays closed.
    logged_in = api_login(client, {"username": "clerk1", "password": PASSWORD})
    assert logged_in.status_code == 201 and not logged_in.get_json()["terminal"]
    csrf = logged_in.get_json()["csrf_token"]
    assert client.get("/api/v1/status").get_json()["counter"]["open"] is False
    issued = client.post(f"/api/v1/residents/{YAMADA_TARO}/certificates", json=ISSUE, headers={"X-CSRF-Token": csrf})
    assert issued.status_code == 423 and "登録されていません" in issued.get_json()["message"]
    assert certificates(appliance) == 0


def test_a_client_a_supervisor_registered_at_terminal_works_that_counter(appliance, downtime):
    client = appliance.test_client()
    csrf = client.get("/api/v1/session").get_json()["csrf_token"]
    registered = client.post("/terminal", data={"terminal": "本庁1", "username": "boss", "password": PASSWORD, "csrf_token": csrf})
    assert registered.status_code == 302

    logged_in = api_login(client, {"username": "clerk1", "password": PASSWORD, "terminal": "本庁1"})
    assert logged_in.status_code == 201 and logged_in.get_json()["terminal"] == "本庁1"
    assert client.get("/api/v1/status").get_json()["counter"]["open"] is True
    issued = client.post(f"/api/v1/residents/{YAMADA_TARO}/certificates", json=ISSUE,
                         headers={"X-CSRF-Token": logged_in.get_json()["csrf_token"]})
    assert issued.status_code == 201, issued.get_json()
    assert certificates(appliance) == 1

"""The audit anchor: an operational database that lost its newest entries
(its WAL, or a restore from an older copy) is detected, and no serial that
was handed out is ever issued again."""

from __future__ import annotations

import json

from fallback import anchor, audit
from fallback.app import create_app
from fallback.ops import now, open_ops
from tests.support import Staff, sonae

YAMADA_TARO = "10000000011"
# Issued more than once to the same person on purpose: the same-day repeat is confirmed.
SELF_REQUEST = {"kind": "juminhyo", "requester_type": "self", "identity_document": "運転免許証", "copies": 1, "confirm_repeat": True}


def issue(clerk) -> int:
    response = clerk.api("POST", f"/api/v1/residents/{YAMADA_TARO}/certificates", json=SELF_REQUEST)
    assert response.status_code == 201, response.get_json()
    return response.get_json()["certificates"][0]["serial"]


def close_connections(app) -> None:
    local = app.extensions["sonae_connections"]
    if getattr(local, "ops", None) is not None:
        local.ops.close()
        local.ops = None


def test_every_issuance_anchors_the_chain_head_and_highest_serial(appliance, login, downtime):
    config = appliance.config["SONAE"]
    serial = issue(login("clerk1"))
    held = anchor.read_anchor(config)
    conn = open_ops(config)
    newest = conn.execute("SELECT max(id) FROM audit").fetchone()[0]
    assert held.serials == {"real:1": serial}  # box 1's highest: each box of a pair has its own range
    # the issuance's own entry, which its commit made durable: a later search's entry may not be
    assert held.entries == conn.execute("SELECT id FROM audit WHERE action = 'issue'").fetchone()[0]
    assert held.entries <= newest and anchor.problems(conn, held) == []
    assert sonae("audit", "verify").returncode == 0


def test_a_database_restored_without_its_newest_entries_is_caught_and_no_serial_is_reused(appliance, login, downtime):
    config = appliance.config["SONAE"]
    first = issue(login("clerk1"))
    close_connections(appliance)
    conn = open_ops(config)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    older_copy = config.ops_db_path.read_bytes()  # a backup taken now, before the next issuance

    second = issue(login("clerk1"))
    assert second == first + 1
    close_connections(appliance)
    for suffix in ("-wal", "-shm"):
        config.ops_db_path.with_name(config.ops_db_path.name + suffix).unlink(missing_ok=True)
    config.ops_db_path.write_bytes(older_copy)  # the restore: the chain is shorter and still verifies on its own

    assert audit.verify_chain(open_ops(config)).ok
    verified = sonae("audit", "verify")
    assert verified.returncode == 1 and "entries are lost" in verified.stderr and len(verified.stderr.strip().splitlines()) == 1
    ops_check = sonae("ops", "verify")
    assert ops_check.returncode == 1 and f"up to {second}" in ops_check.stderr

    app = create_app(config)
    app.config["TESTING"] = True
    third = issue(Staff(app, "clerk1"))
    assert third == second + 1, "a serial handed out before the restore was issued again"
    entry = next(audit.entries(open_ops(config), action="audit.anchor_superseded"))
    # logins after the restore wrote new entries over the lost ones' numbers
    assert "entries were lost and others written since" in entry["detail"]["problems"][0]
    assert list(config.ops_db_path.parent.glob("audit-anchor.json.superseded-*"))


def test_an_altered_anchor_is_refused(appliance, login, downtime):
    config = appliance.config["SONAE"]
    issue(login("clerk1"))
    path = anchor.anchor_path(config)
    stored = json.loads(path.read_text())
    stored["serials"]["real:1"] -= 1
    path.write_text(json.dumps(stored))
    result = sonae("audit", "verify")
    assert result.returncode == 1 and "not written by this appliance's key" in result.stderr


def test_alerts_carry_the_chain_head(appliance, login, downtime):
    from fallback.monitoring import alerts

    config = appliance.config["SONAE"]
    serial = issue(login("clerk1"))
    head = anchor.head_of(open_ops(config))
    since = "2026-12-05T10:00:00+09:00"
    alert = alerts.Alert(1, "upstream.register", alerts.CRITICAL, "t", "w", "s", "01-shoki-taio", since, since, since, None, 1)
    message = alerts.build_message(config, alert, alerts.OPENED, "通常", now(), head)
    assert f"監査ログ {head.entries}件" in message.text and f"real:1 {serial}" in message.text
    assert message.payload["audit_head"] == {"entries": head.entries, "hash": head.head, "serials": {"real:1": serial}}

"""Real parts for the monitoring tests: a small HTTP upstream with fault
switches, a webhook receiver, an SMTP server (aiosmtpd) — all on loopback —
and a configured appliance pointing at them."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.controller import Controller
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fallback.config import load_config
from fallback.ops import TOKYO, open_ops
from tests.conftest import example_records
from tests.support import signed_lookup

UPSTREAM_TOKEN = "probe-test-token"


def _serve(handler_class) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_class)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class FakeUpstream:
    """The upstream's health and resident endpoints, with switches: the
    components it reports, and a fault ("timeout", "500", "malformed") that
    replaces every answer, or "wrong_key": look-ups signed by another key."""

    def __init__(self):
        self.components = {"register": "ok", "juki_net": "ok", "batch": "done"}
        self.health_as_of = lambda: dt.datetime.now(TOKYO)  # what /v1/health says the time is
        self.fault: str | None = None
        self.timeout_delay_s = 5.0
        self.residents = {r["resident_code"]: r for r in example_records("residents")}
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status: int, body: bytes, content_type: str = "application/json"):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                if self.headers.get("Authorization") != f"Bearer {UPSTREAM_TOKEN}":
                    return self._send(401, b'{"error": "unauthorized", "message": "bad token"}')
                if upstream.fault == "timeout":
                    time.sleep(upstream.timeout_delay_s)
                elif upstream.fault == "500":
                    return self._send(500, b'{"error": "internal", "message": "vendor server error"}')
                elif upstream.fault == "malformed":
                    return self._send(200, b"<html>maintenance</html>", "text/html")
                if self.path == "/v1/health":
                    down = [c for c, v in upstream.components.items() if v in ("down", "failed")]
                    body = {"status": "down" if upstream.components["register"] == "down" else ("degraded" if down else "ok"),
                            "components": dict(upstream.components), "as_of": upstream.health_as_of().isoformat()}
                    return self._send(200, json.dumps(body).encode())
                if self.path.startswith("/v1/residents/"):
                    code = self.path.rsplit("/", 1)[1]
                    key = {"key": Ed25519PrivateKey.generate()} if upstream.fault == "wrong_key" else {}
                    return self._send(200, json.dumps(signed_lookup(code, upstream.residents.get(code), **key), ensure_ascii=False).encode())
                return self._send(404, b'{"error": "not_found", "message": "no such path"}')

        self.server = _serve(Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class WebhookReceiver:
    """Collects the JSON bodies POSTed to it; answers 500 to the first
    `fail_next` requests."""

    def __init__(self):
        self.bodies: list[dict] = []
        self.attempts = 0
        self.fail_next = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length).decode("utf-8"))
                receiver.attempts += 1
                if receiver.fail_next > 0:
                    receiver.fail_next -= 1
                    self.send_response(500)
                    self.end_headers()
                    return
                receiver.bodies.append(body)
                self.send_response(204)
                self.end_headers()

        self.server = _serve(Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/sonae"

    def events(self, key_prefix: str = "") -> list[tuple[str, str]]:
        return [(b["key"], b["event"]) for b in self.bodies if b["key"].startswith(key_prefix)]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class MailCollector:
    """An aiosmtpd handler keeping every message it receives, parsed."""

    def __init__(self):
        self.messages: list = []
        self.port = _free_port()

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 OK"

    def subjects(self) -> list[str]:
        return [str(m["Subject"]) for m in self.messages]

    def bodies(self) -> list[str]:
        return [m.get_content() for m in self.messages]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def upstream():
    server = FakeUpstream()
    yield server
    server.close()


@pytest.fixture
def webhook():
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


@pytest.fixture
def smtp():
    collector = MailCollector()
    controller = Controller(collector, hostname="127.0.0.1", port=collector.port, ready_timeout=60)  # aiosmtpd waits 5 s by default: a busy machine takes longer
    controller.start()
    yield collector
    controller.stop()


@pytest.fixture
def configure(sonae_env, monkeypatch, upstream, webhook, smtp):
    """Point the appliance at the loopback upstream, webhook and SMTP server;
    `configure(KEY=value, ...)` adds SONAE_* overrides and returns the Config."""
    base = {
        "SONAE_UPSTREAM_URL": upstream.url,
        "SONAE_UPSTREAM_TOKEN": UPSTREAM_TOKEN,
        "SONAE_PROBES_TIMEOUT_S": "3",  # a busy test machine can stall an answer a second; the timeout fault waits longer (timeout_delay_s)
        "SONAE_ALERTS_WEBHOOK_URL": webhook.url,
        "SONAE_ALERTS_SMTP_HOST": "127.0.0.1",
        "SONAE_ALERTS_SMTP_PORT": str(smtp.port),
        "SONAE_ALERTS_MAIL_TO": "joho-seisaku@city.example.lg.jp",
        # The test machine's own free share decides nothing: a full build
        # disk opened disk.low in every test that counts alerts. The tests
        # of that alert set the limit around the share they find.
        "SONAE_ALERTS_DISK_LOW_PERCENT": "0",
    }

    def make(**overrides):
        for name, value in {**base, **{f"SONAE_{k}": str(v) for k, v in overrides.items()}}.items():
            monkeypatch.setenv(name, value)
        return load_config()

    return make


@pytest.fixture
def config(configure):
    return configure()


@pytest.fixture
def loaded(config, fresh_example_export):
    """The configured appliance with the example register as its snapshot."""
    from fallback.mirror.syncing import run_full_sync

    run_full_sync(config, source_dir=fresh_example_export)
    return config


class Clock:
    """Probe times: starts now and moves on one probe interval per tick."""

    def __init__(self, start: dt.datetime, step_s: float = 20):
        self.at, self.step = start, dt.timedelta(seconds=step_s)

    def tick(self) -> dt.datetime:
        self.at += self.step
        return self.at


@pytest.fixture
def clock():
    return Clock(dt.datetime.now(TOKYO).replace(microsecond=0))


def ops_rows(config, sql: str, params=()) -> list[tuple]:
    conn = open_ops(config)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


SENSITIVE_FIELDS = ("name", "name_kana", "birth_date", "head_name")


def sensitive_values() -> list[str]:
    """Names, kana, birth dates and street addresses of the example register:
    none of them may appear in a probe row, an alert, a log or a metric."""
    values = []
    for record in example_records("residents"):
        values += [record[f] for f in SENSITIVE_FIELDS if record.get(f)]
        values.append(record["address"]["town"] + record["address"]["banchi"])
    return values

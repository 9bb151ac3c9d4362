"""A small real HTTP upstream for the sync tests: serves an export directory,
a list of changes as signed pages and signed resident look-ups the way
contract version 2 describes, on loopback, with switchable faults.
(cloudsim is the full stand-in; this one lets the sync tests control every
byte — `serve_page` and `serve_lookup` may be replaced to answer with
anything, as a spoofed upstream would.)"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

from sync.contract import public_key_from_b64
from sync.upstream import HttpUpstream, UpstreamTrust
from tests.support import EXAMPLE_PUBLIC_KEY, MUNICIPALITY, signed_lookup
from tests.sync.exports import after_export, signed_page

TOKEN = "test-token"
FAULTS = ("error5xx", "slow", "malformed", "drop_mid_file")
TRUST = UpstreamTrust(public_key_from_b64(EXAMPLE_PUBLIC_KEY), MUNICIPALITY["code"])


def client(url: str, token: str = TOKEN, timeout: float = 10.0) -> HttpUpstream:
    """The sync client as the appliance configures it for the test key."""
    return HttpUpstream(url, token, trust=TRUST, timeout=timeout)


class TestUpstream:
    __test__ = False  # a server, not a test class

    def __init__(self, export_dir: Path, *, as_of: str | None = None):
        self.export_dir = Path(export_dir)
        self.changes: list[dict] = []
        self.as_of = as_of or after_export(hours=11)
        self.residents: dict[str, dict] = {}  # what a look-up finds
        self.seals: dict[str, list[dict]] = {}  # by resident code
        self.serve_page: Callable[[int, int], dict] = self.page
        self.serve_lookup: Callable[[str], dict] = self.lookup
        self.fault: str | None = None
        self.slow_seconds = 3.0
        self.requests: list[tuple[str, dict]] = []  # (path, headers) of every request
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        # stop() waits for serve_forever's next poll (0.5 s by default), and
        # most sync tests stop a server.
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> TestUpstream:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def last_seq(self) -> int:
        return self.changes[-1]["seq"] if self.changes else json.loads((self.export_dir / "manifest.json").read_text())["last_seq"]

    def page(self, after: int, limit: int) -> dict:
        """The signed page a genuine upstream answers."""
        return signed_page(after, [c for c in self.changes if c["seq"] > after][:limit], self.last_seq(), self.as_of)

    def lookup(self, resident_code: str) -> dict:
        """The signed look-up a genuine upstream answers."""
        return signed_lookup(resident_code, self.residents.get(resident_code), self.seals.get(resident_code, []))

    def _handler(self):
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status: int, body: bytes, content_type: str = "application/json", headers: dict | None = None):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def _json(self, status: int, obj) -> None:
                self._send(status, json.dumps(obj, ensure_ascii=False).encode("utf-8"))

            def do_GET(self):
                url = urlparse(self.path)
                upstream.requests.append((url.path, dict(self.headers)))
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    return self._json(401, {"error": "unauthorized", "message": "bad token"})
                if upstream.fault == "error5xx":
                    return self._json(503, {"error": "maintenance", "message": "register under maintenance"})
                if upstream.fault == "slow":
                    time.sleep(upstream.slow_seconds)
                if upstream.fault == "malformed":
                    return self._send(200, b"<html>proxy error</html>", "text/html")
                parts = url.path.strip("/").split("/")
                if url.path == "/v1/health":
                    return self._json(200, {"status": "ok", "components": {"register": "ok", "juki_net": "ok", "batch": "done"}, "as_of": upstream.as_of})
                if url.path == "/v1/exports/latest":
                    return self._send(200, (upstream.export_dir / "manifest.json").read_bytes())
                if len(parts) == 5 and parts[:2] == ["v1", "exports"] and parts[3] == "files":
                    return self._file(parts[4])
                if url.path == "/v1/changes":
                    query = parse_qs(url.query)
                    return self._json(200, upstream.serve_page(int(query["after"][0]), int(query["limit"][0])))
                if len(parts) == 3 and parts[:2] == ["v1", "residents"]:
                    return self._json(200, upstream.serve_lookup(unquote(parts[2])))
                return self._json(404, {"error": "not_found", "message": url.path})

            def _file(self, name: str):
                data = (upstream.export_dir / name).read_bytes()
                start = 0
                if "Range" in self.headers:
                    start = int(self.headers["Range"].removeprefix("bytes=").split("-")[0])
                    body = data[start:]
                    return self._send(206, body, "application/gzip", {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"})
                if upstream.fault == "drop_mid_file":
                    # Promise the whole file, send half, hang up (once).
                    upstream.fault = None
                    self.send_response(200)
                    self.send_header("Content-Type", "application/gzip")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                return self._send(200, data, "application/gzip")

        return Handler

"""cloudsim's two HTTP faces on loopback: the contract port the appliance pulls
from, and the admin port that tests and drills use to publish exports, make
changes and switch faults.

The contract port serves contract version 2: the manifest, every page of
changes and every resident look-up are signed with the register's key, and
echo what was asked.

Both are threaded werkzeug servers. The contract port can be closed and
reopened at runtime: the `down` fault makes connections truly refused, not
answered with an error.
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import orjson
from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from cloudsim import exports
from cloudsim.changes import ChangeFeed, EventRefused, ResidentNotFound
from cloudsim.faults import FaultSwitches, UnknownFault
from cloudsim.register import Register, as_of_now, now_jst
from sync.contract import CONTRACT_VERSION, sign


class Simulation(Protocol):
    """What the two HTTP faces need of a running simulation. `cloudsim.sim`
    builds the simulation on top of these faces, so they know it only by
    this shape and the import goes one way."""

    register: Register
    token: str
    feed: ChangeFeed
    faults: FaultSwitches
    contract: Listener

    def status(self) -> dict: ...

    def publish(self) -> dict: ...

    def resident_now(self, code: str) -> tuple[dict | None, list[dict]]: ...


HOST = "127.0.0.1"
FILE_BLOCK = 256 * 1024
MAX_CHANGES_LIMIT = 10_000
DEFAULT_CHANGES_LIMIT = 1_000


class QuietHandler(WSGIRequestHandler):
    """No access log line per request (a sync run makes thousands)."""

    def log_request(self, code="-", size="-") -> None:
        pass


class Listener:
    """One loopback port serving a WSGI app, which can be closed (connections
    refused) and opened again on the same port."""

    def __init__(self, app, port: int):
        self.app = app
        self.port = port
        self.generation = 0  # bumped on close: streams of an older generation stop
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def open(self) -> None:
        with self._lock:
            if self._server is not None:
                return
            listening = socket.create_server((HOST, self.port))  # sets SO_REUSEADDR
            try:
                self.port = listening.getsockname()[1]
                server = make_server(HOST, self.port, self.app, threaded=True, request_handler=QuietHandler,
                                     fd=listening.fileno())
            finally:
                listening.close()  # the server holds its own duplicate
            self._server = server
            self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                            name=f"cloudsim:{self.port}", daemon=True)
            self._thread.start()

    def close(self) -> None:
        with self._lock:
            server, thread = self._server, self._thread
            if server is None:
                return
            self._server = self._thread = None
            self.generation += 1
            server.shutdown()
            server.server_close()
            thread.join()


def error(http_status: int, code: str, message: str, extra: dict | None = None) -> Response:
    """The contract's error answer; `extra` adds fields (a 503 health keeps its body)."""
    response = jsonify({"error": code, "message": message, **(extra or {})})
    response.status_code = http_status
    return response


def bearer_token_matches(token: str) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), token.encode())


def unauthorized() -> Response:
    response = error(401, "unauthorized", "a valid `Authorization: Bearer <token>` header is required")
    response.headers["WWW-Authenticate"] = 'Bearer realm="cloudsim"'
    return response


def json_errors(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        return error(exc.code or 500, (exc.name or "error").lower().replace(" ", "_"), exc.description or exc.name)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        app.logger.exception("cloudsim: unexpected error")
        return error(500, "internal_error", f"{type(exc).__name__}: {exc}")


# --- the contract port ----------------------------------------------------------


def health_body(sim: Simulation) -> dict:
    faults = sim.faults
    register = "down" if faults.active("error5xx") else "ok"
    juki_net = "down" if faults.active("juki_net_down") else "ok"
    batch = "running" if faults.active("batch_stuck") or sim.register.publishing.is_set() else "done"
    status = "down" if register == "down" else "degraded" if juki_net == "down" or batch != "done" else "ok"
    return {"status": status, "components": {"register": register, "juki_net": juki_net, "batch": batch},
            "as_of": now_jst().isoformat()}


def as_served(sim: Simulation, signed: dict) -> dict:
    """A signed body as the contract port serves it: with the bad_signature
    fault, its signature altered."""
    if not sim.faults.active("bad_signature"):
        return signed
    signature = bytearray(base64.b64decode(signed["signature"]))
    signature[0] ^= 0xFF  # still 64 bytes of base64: only verification can tell
    return {**signed, "signature": base64.b64encode(bytes(signature)).decode("ascii")}


def signed_response(sim: Simulation, body: dict) -> Response:
    return Response(orjson.dumps(as_served(sim, sign(body, sim.register.private_key))), mimetype="application/json")


def file_stream(path: Path, start: int, stop: int, flip_at: int | None, still_serving: Callable[[], bool]) -> Iterator[bytes]:
    """Bytes [start, stop) of the file, with the byte at `flip_at` inverted;
    ends early when the port closes (the client sees the connection drop)."""
    with open(path, "rb") as handle:
        handle.seek(start)
        position = start
        while position < stop and still_serving():
            block = bytearray(handle.read(min(FILE_BLOCK, stop - position)))
            if not block:
                return
            if flip_at is not None and position <= flip_at < position + len(block):
                block[flip_at - position] ^= 0xFF
            position += len(block)
            yield bytes(block)


def contract_app(sim: Simulation) -> Flask:
    app = Flask("cloudsim.contract")
    json_errors(app)

    @app.before_request
    def gate():
        slow = sim.faults.active("slow")
        if slow:
            time.sleep(slow.seconds)
        if sim.faults.active("error5xx"):
            extra = health_body(sim) if request.path == "/v1/health" else {}
            return error(503, "service_unavailable", "the register is not answering (fault error5xx)", extra)
        if not bearer_token_matches(sim.token):
            return unauthorized()
        return None

    @app.get("/v1/health")
    def health():
        return jsonify(health_body(sim))

    @app.get("/v1/exports/latest")
    def latest():
        return jsonify(as_served(sim, sim.register.latest_manifest()))

    @app.get("/v1/exports/<export_id>/files/<name>")
    def export_file(export_id: str, name: str):
        directory = sim.register.export_directory(export_id)
        if directory is None:
            return error(404, "export_not_found", f"there is no export {export_id!r}")
        if name not in {entry["name"] for entry in exports.read_manifest(directory)["files"]}:
            return error(404, "file_not_found", f"export {export_id} has no file {name!r}")
        return serve_file(sim, directory / name)

    @app.get("/v1/changes")
    def changes():
        try:
            after = int(request.args.get("after", 0))
            limit = int(request.args.get("limit", DEFAULT_CHANGES_LIMIT))
        except ValueError:
            return error(400, "bad_request", "after and limit must be integers")
        if after < 0 or not 1 <= limit <= MAX_CHANGES_LIMIT:
            return error(400, "bad_request", f"after must be >= 0 and limit between 1 and {MAX_CHANGES_LIMIT}")
        lines, last_seq = sim.feed.page(after, limit)
        if sim.faults.active("feed_gap"):
            lines = lines[1:]  # the first change of the page goes missing (and the upstream signs the page so)
        return signed_response(sim, {
            "contract": CONTRACT_VERSION, "municipality_code": sim.register.spec.municipality_code, "after": after,
            "changes": [orjson.loads(line) for line in lines], "last_seq": last_seq, "as_of": as_of_now(),
        })

    @app.get("/v1/residents/<code>")
    def resident(code: str):
        """The person as they are now, or null for a code the register does not know."""
        record, seals = sim.resident_now(code)
        return signed_response(sim, {
            "contract": CONTRACT_VERSION, "municipality_code": sim.register.spec.municipality_code, "resident_code": code,
            "resident": record, "seals": seals, "as_of": as_of_now(),
        })

    return app


def serve_file(sim: Simulation, path: Path) -> Response:
    size = path.stat().st_size
    length = size // 2 if sim.faults.active("truncated_file") else size
    flip_at = size // 2 if sim.faults.active("bytes_mismatch") else None
    start, stop, status = 0, length, 200
    wanted = request.range
    if wanted is not None and len(wanted.ranges) == 1:  # several ranges: the whole file (allowed)
        span = wanted.range_for_length(length)
        if span is None:
            response = error(416, "range_not_satisfiable", f"the file has {length} bytes")
            response.headers["Content-Range"] = f"bytes */{length}"
            return response
        (start, stop), status = span, 206
    generation = sim.contract.generation
    response = Response(
        file_stream(path, start, stop, flip_at, lambda: sim.contract.generation == generation),
        status=status,
        mimetype="application/gzip",
        direct_passthrough=True,
    )
    response.headers["Content-Length"] = str(stop - start)
    response.headers["Accept-Ranges"] = "bytes"
    if status == 206:
        response.headers["Content-Range"] = f"bytes {start}-{stop - 1}/{length}"
    return response


# --- the admin port ---------------------------------------------------------------


def admin_app(sim: Simulation) -> Flask:
    app = Flask("cloudsim.admin")
    json_errors(app)

    @app.before_request
    def gate():
        return None if bearer_token_matches(sim.token) else unauthorized()

    @app.get("/admin/status")
    def status():
        return jsonify(sim.status())

    @app.get("/admin/faults")
    def faults():
        return jsonify(sim.faults.as_json())

    @app.put("/admin/faults/<name>")
    def set_fault(name: str):
        body = request.get_json(silent=True) or {}
        try:
            seconds = _optional_float(body, "seconds")
            duration = _optional_float(body, "duration")
            sim.faults.set(name, seconds=seconds, duration=duration)
        except UnknownFault as exc:
            return error(404, "unknown_fault", str(exc))
        except ValueError as exc:
            return error(400, "bad_request", str(exc))
        return jsonify(sim.faults.as_json())

    @app.delete("/admin/faults/<name>")
    def clear_fault(name: str):
        try:
            sim.faults.clear(name)
        except UnknownFault as exc:
            return error(404, "unknown_fault", str(exc))
        return jsonify(sim.faults.as_json())

    @app.delete("/admin/faults")
    def clear_all_faults():
        sim.faults.clear()
        return jsonify(sim.faults.as_json())

    @app.post("/admin/exports")
    def publish():
        return jsonify(sim.publish())

    @app.post("/admin/changes")
    def make_changes():
        body = request.get_json(silent=True) or {}
        events = body.get("events", 1)
        if not isinstance(events, int) or not 1 <= events <= 100_000:
            return error(400, "bad_request", "events must be an integer between 1 and 100000")
        made = sim.feed.make(events)
        return jsonify({"changes": made, "last_seq": sim.status()["last_seq"]})

    @app.post("/admin/residents/<code>/events")
    def resident_event(code: str):
        body = request.get_json(silent=True) or {}
        try:
            changes = sim.feed.make_for(code, str(body.get("event", "")))
        except ResidentNotFound as exc:
            return error(404, "resident_not_found", str(exc))
        except EventRefused as exc:
            return error(409, "event_refused", str(exc))
        return jsonify({"changes": changes, "last_seq": changes[-1]["seq"]})

    return app


def _optional_float(body: dict, key: str) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"{key} must be a positive number of seconds")
    return float(value)


def write_ready_file(path: Path, info: dict) -> None:
    """`info` (which holds the bearer token) for its starter's eyes only."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.touch(mode=0o600)
    temporary.chmod(0o600)
    temporary.write_text(json.dumps(info, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, path)

"""Helpers shared by the tests of every area: signed (contract version 2)
exports, change pages and look-ups built from the example register, and a
logged-in staff client for the Flask app."""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import hashlib
import itertools
import json
import os
import re
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

FIXTURES = Path(__file__).parent / "fixtures"
EXAMPLE_EXPORT = FIXTURES / "example-export"  # the contract's example export (version 2), as published
EXAMPLE_CHANGES_PAGE = FIXTURES / "export-changes-page.json"  # the contract's signed page following it
EXAMPLE_LOOKUP = FIXTURES / "export-resident-lookup.json"  # and its signed look-up
EXAMPLE_PUBLIC_KEY = (FIXTURES / "example-export-public-key.txt").read_text().strip()
# The example's private key is 32 zero bytes (a published test key, never for
# production), so tests can sign what they build from its records.
TEST_PRIVATE_KEY = Ed25519PrivateKey.from_private_bytes(bytes(32))
MUNICIPALITY = {"code": "131113", "prefecture": "東京都", "name": "大田区"}
JST = dt.timezone(dt.timedelta(hours=9))
# Each export a test writes comes after the ones written before it, as the
# upstream's exports do (the appliance refuses an older one).
_export_seqs = itertools.count(1207)


def next_export_seq() -> int:
    return next(_export_seqs)

PASSWORD = "correct-horse-battery"
# One account per role (two clerks, two supervisors for approval cases).
ACCOUNTS = {"clerk1": "clerk", "clerk2": "clerk", "boss": "supervisor", "boss2": "supervisor",
            "coord": "drill_coordinator", "it1": "it", "aud": "auditor"}


def write_key(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    path.chmod(0o600)
    return path


def example_records(kind: str) -> list[dict]:
    with gzip.open(EXAMPLE_EXPORT / f"{kind}.ndjson.gz", "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def now_jst() -> dt.datetime:
    return dt.datetime.now(JST)


def write_export(directory: Path, residents: list[dict], seals: list[dict], *, as_of: str | None = None,
                 last_seq: int = 1000, municipality_code: str = "131113", export_seq: int | None = None,
                 export_id: str | None = None) -> Path:
    """Write a signed export (manifest + gzip NDJSON) the way upstream does;
    as of now and numbered after every export written before, unless said."""
    from sync.contract import sign

    directory.mkdir(parents=True, exist_ok=True)
    as_of = as_of or now_jst().isoformat(timespec="seconds")
    export_seq = next_export_seq() if export_seq is None else export_seq
    files = []
    for kind, records in (("residents", residents), ("seals", seals)):
        path = directory / f"{kind}.ndjson.gz"
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        data = path.read_bytes()
        files.append({"name": path.name, "kind": kind, "records": len(records), "bytes": len(data),
                      "sha256": hashlib.sha256(data).hexdigest()})
    manifest = {
        "contract": 2, "export_seq": export_seq, "export_id": export_id or f"{as_of}-{export_seq:04d}", "as_of": as_of,
        "last_seq": last_seq, "municipality": {**MUNICIPALITY, "code": municipality_code}, "files": files,
    }
    signed = sign(manifest, TEST_PRIVATE_KEY)
    (directory / "manifest.json").write_text(json.dumps(signed, ensure_ascii=False, indent=2), encoding="utf-8")
    return directory


def signed_lookup(resident_code: str, resident: dict | None, seals: list[dict] = (), *, as_of: dt.datetime | None = None,
                  key: Ed25519PrivateKey = TEST_PRIVATE_KEY) -> dict:
    """A resident look-up as the upstream answers it (signed with `key`)."""
    from sync.contract import sign

    return sign({"contract": 2, "municipality_code": MUNICIPALITY["code"], "resident_code": resident_code, "resident": resident,
                 "seals": list(seals), "as_of": (as_of or now_jst()).isoformat()}, key)


def register_terminal(app, client, terminal: str) -> None:
    """Register a test client's "PC" as `terminal`, as a supervisor does at
    /terminal (fallback.staff.terminals): the login then uses it."""
    from fallback.ops import open_ops
    from fallback.staff import terminals

    conn = open_ops(app.config["SONAE"])
    try:
        cookie = terminals.register(conn, app.config["SONAE"], app.secret_key, terminal, supervisor="boss", remote=None)
    finally:
        conn.close()
    client.set_cookie(terminals.COOKIE_NAME, cookie)


def register_terminal_over_http(http, base: str, terminal: str = "本庁1", *, supervisor: str = "boss",
                                password: str = PASSWORD) -> None:
    """Register the client behind `http` (a requests.Session) as `terminal`
    through a running server, as a supervisor does at /terminal: the
    session keeps the signed cookie, so its API logins work that counter."""
    csrf = http.get(f"{base}/api/v1/session", timeout=10).json()["csrf_token"]
    answer = http.post(f"{base}/terminal", data={"terminal": terminal, "username": supervisor, "password": password,
                                                 "csrf_token": csrf}, allow_redirects=False, timeout=30)
    assert answer.status_code == 302, answer.text


class Staff:
    """A logged-in browser-like client on a PC registered as `terminal`
    (None: an unregistered PC): keeps the cookies and the CSRF token."""

    def __init__(self, app, username, terminal="本庁1"):
        self.client = app.test_client()
        if terminal is not None:
            register_terminal(app, self.client, terminal)
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


def certificates(appliance) -> int:
    """How many certificates `appliance` (a Flask app) has recorded."""
    from fallback.ops import open_ops

    conn = open_ops(appliance.config["SONAE"])
    try:
        return conn.execute("SELECT count(*) FROM certificates").fetchone()[0]
    finally:
        conn.close()


def text_of(response) -> str:
    """The visible text of an HTML response (tags stripped)."""
    return re.sub(r"<[^>]+>", " ", response.get_data(as_text=True))


def pdf_text(pdf: bytes, tmp_path, name: str = "document.pdf") -> str:
    """What a reader of the PDF sees: pdftotext's layout text."""
    import subprocess

    assert pdf.startswith(b"%PDF"), "not a PDF"
    path = tmp_path / name
    path.write_bytes(pdf)
    return subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True, check=True).stdout


def squeezed(text: str) -> str:
    """Text without any whitespace: pdftotext spaces out letter-spaced
    headings and wide layouts."""
    return re.sub(r"\s+", "", text)


@contextmanager
def served(app, **options):
    """`app` under a real waitress server on a free loopback port; yields
    the server. Stopped from inside its own loop: closing its sockets from
    this thread would leave the loop polling descriptors that the next
    test's files may reuse (and write HTTP into an encrypted database)."""
    import threading
    import warnings

    import waitress.server

    server = waitress.server.create_server(app, host="127.0.0.1", port=0, **{"threads": 8, **options})
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.task_dispatcher.shutdown()
        if not server.trigger._closed:
            server.trigger.pull_trigger(lambda: [channel.close() for channel in list(server._map.values())])
        else:
            # The loop's own trigger was already closed (seen once in the
            # parallel run; its cause not found), so the loop cannot be
            # woken, and writing to its old descriptor could write into
            # whatever file has that number now: the loop is emptied
            # instead, ends within its poll timeout, and only then are its
            # sockets closed from here.
            warnings.warn("the test server's trigger was closed before the server was stopped", stacklevel=1)
            channels = list(server._map.values())
            server._map.clear()
            thread.join(10)
            if not thread.is_alive():
                for channel in channels:
                    channel.close()
        thread.join(10)
        assert not thread.is_alive(), "the test server's loop did not stop"


def sonae(*args: str, env: dict | None = None, input: str | None = None, cwd=None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`sonae ARGS` in a process of its own, as an operator types it: the
    tests' environment (plus `env`), its output captured as text."""
    return subprocess.run([sys.executable, "-m", "fallback.cli", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, input=input, cwd=cwd)

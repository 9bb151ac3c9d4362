"""The security rules tried from outside, as an attacker on the ward's
network would: a plain HTTP client against the live server (waitress), no
test client, no shortcuts. Missing and forged CSRF tokens, a cookie stolen
after logout and after the idle timeout, a clerk calling the supervisor's,
IT's and the auditor's endpoints, a password guessed from another PC (it
slows the guesser, never locks the supervisor out), a username of 900 KB,
another clerk's certificates by serial number — and the public pages,
which must show no resident data."""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess

import pytest
import requests

from fallback.counter.openapi import OPENAPI
from fallback.ops import open_ops
from tests.browser.conftest import live_url  # noqa: F401  (fixture)
from tests.support import ACCOUNTS, PASSWORD, example_records, register_terminal_over_http, served

YAMADA_TARO = "10000000011"
ISSUE = {"kind": "juminhyo", "requester_type": "self", "identity_document": "運転免許証", "copies": 1, "acknowledge_move_out": True}


class Client:
    """A browser-less client: a cookie jar and, once logged in, the CSRF token."""

    def __init__(self, base_url: str, terminal: str | None = "本庁1"):
        """`terminal`: the counter terminal a supervisor registered this
        client as (None: a client nobody registered)."""
        self.base_url = base_url
        self.http = requests.Session()
        if terminal is not None:
            register_terminal_over_http(self.http, base_url, terminal)
        self.csrf = self.http.get(f"{base_url}/api/v1/session", timeout=10).json()["csrf_token"]

    def login(self, username: str, password: str = PASSWORD) -> requests.Response:
        answer = self.http.post(f"{self.base_url}/api/v1/session", json={"username": username, "password": password},
                                headers={"X-CSRF-Token": self.csrf}, timeout=10)
        if answer.status_code == 201:
            self.csrf = answer.json()["csrf_token"]
        return answer

    def call(self, method: str, path: str, *, csrf: str | None = "session", **kwargs) -> requests.Response:
        headers = kwargs.pop("headers", {})
        if csrf is not None:
            headers["X-CSRF-Token"] = self.csrf if csrf == "session" else csrf
        return self.http.request(method, self.base_url + path, headers=headers, timeout=30, allow_redirects=False, **kwargs)


@pytest.fixture
def server(live_url, appliance):  # noqa: F811
    """The live server in downtime, as during an outage."""
    boss = Client(live_url)
    assert boss.login("boss").status_code == 201
    assert boss.call("POST", "/api/v1/mode", json={"to_mode": "downtime", "reason": "住民記録システム障害"}).status_code == 200
    return live_url, appliance.config["SONAE"]


def ops_count(config, sql: str, params=()) -> int:
    conn = open_ops(config)
    try:
        return conn.execute(sql, params).fetchone()[0]
    finally:
        conn.close()


def test_unsafe_requests_need_the_sessions_own_csrf_token(server):
    base_url, config = server
    clerk, other = Client(base_url), Client(base_url)
    assert clerk.login("clerk1").status_code == 201 and other.login("clerk2").status_code == 201
    for token in (None, "", "forged-" + "x" * 40, other.csrf):
        answer = clerk.call("POST", f"/api/v1/residents/{YAMADA_TARO}/certificates", json=ISSUE, csrf=token)
        assert answer.status_code == 400 and answer.json()["error"] == "csrf", token
        form = clerk.call("POST", f"/counter/resident/{YAMADA_TARO}/issue", csrf=None,
                          data={**ISSUE, **({"csrf_token": token} if token is not None else {})})
        assert form.status_code == 400 and "送信を受け付けられません" in form.text
    assert ops_count(config, "SELECT count(*) FROM requests") == 0  # nothing was issued or even recorded
    # a logout is unsafe too: without the token the session stays
    assert clerk.call("DELETE", "/api/v1/session", csrf=None).status_code == 400
    assert clerk.call("GET", "/api/v1/status").status_code == 200
    assert clerk.call("POST", f"/api/v1/residents/{YAMADA_TARO}/certificates", json=ISSUE).status_code == 201


def stolen(base_url: str, victim: Client) -> Client:
    """A second client carrying a copy of the victim's cookie (and its CSRF token)."""
    thief = Client(base_url, terminal=None)
    thief.http.cookies.clear()
    thief.http.cookies.update(victim.http.cookies)
    thief.csrf = victim.csrf
    return thief


def test_a_cookie_stolen_before_logout_is_worthless_after_it(server):
    base_url, _ = server
    clerk = Client(base_url)
    clerk.login("clerk1")
    thief = stolen(base_url, clerk)
    assert thief.call("GET", f"/api/v1/residents/{YAMADA_TARO}").status_code == 200  # the cookie works while the session lives
    assert clerk.call("DELETE", "/api/v1/session").status_code == 204
    assert thief.call("GET", f"/api/v1/residents/{YAMADA_TARO}").status_code == 401
    assert thief.call("POST", f"/api/v1/residents/{YAMADA_TARO}/certificates", json=ISSUE).status_code == 401
    page = thief.call("GET", f"/counter/resident/{YAMADA_TARO}")
    assert page.status_code == 302 and page.headers["Location"].startswith("/login")


def test_a_cookie_stolen_from_an_idle_counter_is_worthless_after_the_timeout(server):
    base_url, config = server
    clerk = Client(base_url)
    clerk.login("clerk1")
    thief = stolen(base_url, clerk)
    # the counter PC has stood idle past the timeout
    idle = config["security"]["session_idle_minutes"] + 1
    conn = open_ops(config)
    try:
        conn.execute("UPDATE sessions SET last_seen = ? WHERE username = 'clerk1' AND ended_at IS NULL",
                      ((dt.datetime.now(dt.UTC) - dt.timedelta(minutes=idle)).astimezone().isoformat(timespec="milliseconds"),))
    finally:
        conn.close()
    page = thief.call("GET", "/counter/")
    assert page.status_code == 302 and "expired=1" in page.headers["Location"]
    assert thief.call("GET", f"/api/v1/residents/{YAMADA_TARO}").status_code == 401
    assert clerk.call("GET", "/api/v1/status").status_code == 401  # the session is over for its owner too
    assert ops_count(config, "SELECT count(*) FROM sessions WHERE username = 'clerk1' AND end_reason = 'idle timeout'") == 1


def url_for_rule(rule) -> str:
    """A concrete URL for a route, with a placeholder for each argument."""
    return re.sub(r"<(?:(\w+):)?(\w+)>", lambda m: "1" if m.group(1) in ("int",) else "x", rule.rule)


@pytest.mark.parametrize("role", ["clerk", "drill_coordinator", "auditor", "it"])
def test_a_role_cannot_call_any_endpoint_meant_for_others(server, appliance, role):  # noqa: F811
    """Every route restricted to roles (Flask's URL map, so a new route is
    checked too), called by an account without one of them: 403 for every
    method, and nothing changes."""
    base_url, config = server
    username = next(name for name, account_role in ACCOUNTS.items() if account_role == role)
    client = Client(base_url)
    client.login(username)
    audit_before = ops_count(config, "SELECT count(*) FROM audit")
    checked = 0
    for rule in appliance.url_map.iter_rules():
        view = appliance.view_functions[rule.endpoint]
        allowed = getattr(view, "sonae_roles", None)
        if allowed is None or role in allowed:
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            answer = client.call(method, url_for_rule(rule), data={"csrf_token": client.csrf})
            assert answer.status_code == 403, (method, rule.rule, answer.status_code)
            checked += 1
    assert checked >= 10
    assert ops_count(config, "SELECT count(*) FROM audit") == audit_before  # no look-up, no change
    assert ops_count(config, "SELECT count(*) FROM mode_changes") == 1


@pytest.fixture
def behind_proxy(configure_app):
    """The live server as deployed behind a reverse proxy on the same
    machine (web.trusted_proxy): each client is told apart by the
    X-Forwarded-For the proxy sets, as on the ward's network."""
    from fallback.serve import waitress_options

    app = configure_app(web={"trusted_proxy": "127.0.0.1"})
    config = app.config["SONAE"]
    with served(app, **waitress_options(config)) as server:
        yield f"http://127.0.0.1:{server.effective_port}", config


def from_host(base_url: str, address: str) -> Client:
    client = Client.__new__(Client)
    client.base_url = base_url
    client.http = requests.Session()
    client.http.headers["X-Forwarded-For"] = address
    client.csrf = client.http.get(f"{base_url}/api/v1/session", timeout=10).json()["csrf_token"]
    return client


def test_guessing_a_password_slows_the_guesser_and_never_locks_the_supervisor_out(behind_proxy):
    base_url, config = behind_proxy
    assert from_host(base_url, "10.0.0.10").login("boss").status_code == 201  # the supervisor's PC
    attacker = from_host(base_url, "10.0.0.66")
    free = config["security"]["login_free_failures"]
    for guess in range(free):
        answer = attacker.login("boss", f"guess-{guess:04d}-wrong")
        assert answer.status_code == 401 and "ユーザー名またはパスワードが違います" in answer.json()["message"]
    slowed = attacker.login("boss", PASSWORD)  # the right password: not even checked while the guesser waits
    assert slowed.status_code == 429 and int(slowed.headers["Retry-After"]) >= 1
    form = attacker.call("POST", "/login", csrf=None, data={"username": "boss", "password": PASSWORD, "terminal": "本庁1",
                                                            "csrf_token": attacker.csrf})
    assert form.status_code == 429 and "秒待って" in form.text
    assert ops_count(config, "SELECT count(*) FROM audit WHERE action = 'login.failed' AND actor = 'boss'") == free
    assert ops_count(config, "SELECT count(*) FROM audit WHERE action = 'login.throttled'") == 1
    # the supervisor at their own PC, and anyone else's account, are not affected
    assert from_host(base_url, "10.0.0.10").login("boss").status_code == 201
    assert from_host(base_url, "10.0.0.11").login("clerk1").status_code == 201


def test_a_huge_username_is_refused_before_it_is_stored(server):
    base_url, config = server
    audit_bytes = "SELECT count(*) + coalesce(sum(length(actor) + length(detail) + length(coalesce(target, ''))), 0) FROM audit"
    before = ops_count(config, audit_bytes)
    attacker = Client(base_url, terminal=None)
    huge = "x" * 900_000
    assert attacker.login(huge, "x").status_code == 413
    form = attacker.call("POST", "/login", csrf=None, data={"username": huge, "password": "x", "terminal": "本庁1",
                                                            "csrf_token": attacker.csrf})
    assert form.status_code == 413
    assert ops_count(config, audit_bytes) == before


def test_walking_serial_numbers_finds_nothing_and_is_logged(server):
    base_url, config = server
    clerk, walker = Client(base_url), Client(base_url)
    clerk.login("clerk1")
    walker.login("clerk2")
    issued = clerk.call("POST", f"/api/v1/residents/{YAMADA_TARO}/certificates", json=ISSUE)
    assert issued.status_code == 201
    serial = issued.json()["certificates"][0]["serial"]
    answers = [walker.call("GET", f"/api/v1/certificates/real/{number}.pdf") for number in range(serial - 2, serial + 3)]
    assert [a.status_code for a in answers] == [404, 404, 403, 404, 404]
    assert all(a.headers["Content-Type"].startswith("application/json") for a in answers)
    assert ops_count(config, "SELECT count(*) FROM audit WHERE action = 'records.denied' AND actor = 'clerk2'") == 1
    assert ops_count(config, "SELECT count(*) FROM audit WHERE action = 'certificate.open'") == 0


def test_public_pages_show_no_resident_data(server, appliance, tmp_path):  # noqa: F811
    base_url, _ = server
    clerk = Client(base_url)
    clerk.login("clerk1")
    issued = clerk.call("POST", f"/api/v1/residents/{YAMADA_TARO}/certificates", json=ISSUE)
    assert issued.status_code == 201
    pdf = clerk.call("GET", issued.json()["certificates"][0]["pdf"]).content
    secrets = set()
    for record in example_records("residents"):
        secrets |= {record["name"], record["name_kana"], record["birth_date"], record["address"]["town"] + record["address"]["banchi"]}
        if record.get("alias"):
            secrets.add(record["alias"])
    anonymous = Client(base_url, terminal=None)
    pages = {}
    for rule in appliance.url_map.iter_rules():
        if getattr(appliance.view_functions[rule.endpoint], "sonae_public", False) and "GET" in rule.methods:
            pages[rule.rule] = anonymous.call("GET", url_for_rule(rule))
    pages["/verify/ (a real certificate)"] = anonymous.call("POST", "/verify/", files={"file": ("c.pdf", pdf, "application/pdf")})
    pages["/login (a failed login)"] = anonymous.call("POST", "/login", csrf=None, data={
        "username": "clerk1", "password": "wrong-password", "terminal": "本庁1", "csrf_token": anonymous.csrf})
    assert {"/notice", "/notice/waits.json", "/verify/", "/healthz", "/readyz", "/metrics", "/login", "/api/v1/openapi.json",
            "/api/v1/session"} <= set(pages)
    assert "このPDFは交付したファイルと同一で、記載はすべて署名された内容と一致します" in pages["/verify/ (a real certificate)"].text  # the page did its work
    # /verify shows the uploaded certificate's own content, and nothing more.
    # -layout keeps each printed line whole: in reading order pdftotext may put
    # a name's surname and given name lines apart.
    printed = "".join(subprocess.run(["pdftotext", "-layout", "-", "-"], input=pdf, capture_output=True, check=True).stdout.decode().split())
    # The API document's own example of a date (1975-06-15) happens to be a
    # birth date of the example register: it is written there by hand.
    secrets -= {secret for secret in secrets if secret in json.dumps(OPENAPI, ensure_ascii=False)}
    for path, answer in pages.items():
        assert answer.status_code < 500, path
        shown = secrets - {secret for secret in secrets if "".join(secret.split()) in printed} if path.startswith("/verify/ (") else secrets
        leaked = sorted(secret for secret in shown if secret in answer.text)
        assert not leaked, f"{path}: {leaked}"

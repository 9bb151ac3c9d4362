"""Logins that cannot be used against the ward: failures slow a source and
an account down instead of locking anyone out, an unknown username takes
as long as a known one, a mistyped approval at a counter never touches the
supervisor's login, `next` leads only to this site, sessions end on a
password reset and after a fixed lifetime, common passwords are refused,
and nothing a visitor types is stored unbounded."""

from __future__ import annotations

import datetime as dt
import re
import statistics
import time

import pytest

from fallback import audit
from fallback.ops import now, open_ops
from fallback.staff import users
from tests.support import PASSWORD, Staff, text_of

SATO_SUPPORT = "10000000087"
OUTSIDER, BOSS_PC, NEW_PC = "10.20.0.66", "10.20.0.10", "10.20.0.77"


def form_login(appliance, username, password, remote, **query):
    client = appliance.test_client()
    client.environ_base["REMOTE_ADDR"] = remote
    csrf = client.get("/api/v1/session").get_json()["csrf_token"]
    path = "/login" + ("?" + "&".join(f"next={value}" for value in query.values()) if query else "")
    return client.post(path, data={"username": username, "password": password, "terminal": "本庁1", "csrf_token": csrf})


def failures(appliance, sql="SELECT count(*) FROM login_failures", params=()):
    conn = open_ops(appliance.config["SONAE"])
    try:
        return conn.execute(sql, params).fetchone()[0]
    finally:
        conn.close()


def age_failures(appliance, seconds: float) -> None:
    """As if `seconds` had passed since every recorded failure."""
    conn = open_ops(appliance.config["SONAE"])
    try:
        for row_id, at in conn.execute("SELECT id, at FROM login_failures").fetchall():
            earlier = (dt.datetime.fromisoformat(at) - dt.timedelta(seconds=seconds)).isoformat(timespec="milliseconds")
            conn.execute("UPDATE login_failures SET at = ? WHERE id = ?", (earlier, row_id))
    finally:
        conn.close()


# --- the throttle -----------------------------------------------------------------


@pytest.mark.parametrize("failures_so_far, seconds_since, wait", [
    (4, 0.0, 0.0),      # within the free failures: no wait
    (5, 0.0, 1.0),      # the first slowed attempt waits 1 s after the latest failure
    (5, 1.0, 0.0),      # ... and is allowed once that second has passed
    (6, 0.5, 1.5),      # doubling: 2 s
    (20, 0.0, 300.0),   # capped at login_max_delay_s
])
def test_each_failure_past_the_free_ones_doubles_the_wait(failures_so_far, seconds_since, wait):
    throttle = users.LoginThrottle(free_failures=5, window=dt.timedelta(minutes=15), max_delay_s=300, trusted_days=90)
    at = now()
    latest = (at - dt.timedelta(seconds=seconds_since)).isoformat(timespec="milliseconds")
    assert throttle.wait_seconds(failures_so_far, latest, at) == pytest.approx(wait, abs=0.01)


def test_guessing_slows_the_guesser_and_never_locks_the_supervisor_out(appliance):
    assert form_login(appliance, "boss", PASSWORD, BOSS_PC).status_code == 302  # the supervisor's own PC
    free = appliance.config["SONAE"]["security"]["login_free_failures"]
    for guess in range(free):
        answer = form_login(appliance, "boss", f"guess-{guess:04d}", OUTSIDER)
        assert answer.status_code == 401 and "ユーザー名またはパスワードが違います" in text_of(answer)
    slowed = form_login(appliance, "boss", PASSWORD, OUTSIDER)  # the right password, but not checked now
    assert slowed.status_code == 429 and int(slowed.headers["Retry-After"]) >= 1 and "秒待って" in text_of(slowed)
    # from another PC nobody has used for this account, the account's failures slow down too ...
    assert form_login(appliance, "boss", PASSWORD, NEW_PC).status_code == 429
    # ... but never at the supervisor's own PC, and never another account
    assert form_login(appliance, "boss", PASSWORD, BOSS_PC).status_code == 302
    assert form_login(appliance, "clerk1", PASSWORD, NEW_PC).status_code == 302
    # a refused attempt is not a failure: the delay does not grow while the guesser waits
    assert failures(appliance) == free
    age_failures(appliance, 1.5)
    assert form_login(appliance, "boss", "guess-again", OUTSIDER).status_code == 401  # one more guess after the wait
    assert form_login(appliance, "boss", "guess-again", OUTSIDER).status_code == 429  # and now 2 s


def test_failures_outside_the_window_count_for_nothing(appliance):
    security = appliance.config["SONAE"]["security"]
    for guess in range(security["login_free_failures"] + 3):
        form_login(appliance, "clerk2", f"guess-{guess}", OUTSIDER)
    assert form_login(appliance, "clerk2", PASSWORD, OUTSIDER).status_code == 429
    age_failures(appliance, security["login_failure_window_minutes"] * 60 + 1)
    assert form_login(appliance, "clerk2", PASSWORD, OUTSIDER).status_code == 302


def test_a_waiting_source_fills_no_log(appliance):
    """However often it retries while it waits, one audit entry per wait."""
    for guess in range(appliance.config["SONAE"]["security"]["login_free_failures"]):
        form_login(appliance, "clerk1", f"guess-{guess}", OUTSIDER)
    for _ in range(20):
        assert form_login(appliance, "clerk1", PASSWORD, OUTSIDER).status_code == 429
    assert failures(appliance, "SELECT count(*) FROM audit WHERE action = 'login.throttled'") == 1


def test_the_api_says_how_long_to_wait(appliance):
    client = appliance.test_client()
    client.environ_base["REMOTE_ADDR"] = OUTSIDER
    csrf = client.get("/api/v1/session").get_json()["csrf_token"]
    for guess in range(appliance.config["SONAE"]["security"]["login_free_failures"]):
        answer = client.post("/api/v1/session", json={"username": "boss", "password": f"g-{guess}"},
                             headers={"X-CSRF-Token": csrf})
        assert answer.status_code == 401
    slowed = client.post("/api/v1/session", json={"username": "boss", "password": PASSWORD},
                         headers={"X-CSRF-Token": csrf})
    assert slowed.status_code == 429 and slowed.get_json()["error"] == "login_throttled"
    assert slowed.get_json()["retry_after"] == int(slowed.headers["Retry-After"]) >= 1


def test_an_unknown_username_answers_in_the_same_time_as_a_known_one(appliance):
    """Each attempt from its own source, so no throttle answers early. The
    cost is this thread's CPU time (the request runs in it), taken in turns,
    so that other work on the machine weighs on neither side: it is the
    password hash an unknown name must not skip."""
    def timed(username, index):
        started = time.thread_time()
        assert form_login(appliance, username, "wrong-password", f"10.30.{index}.1").status_code == 401
        return time.thread_time() - started

    turns = [(timed("boss", i), timed(f"nobody{i}", 100 + i)) for i in range(5)]
    known, unknown = [k for k, _ in turns], [u for _, u in turns]
    assert statistics.median(unknown) > 0.5 * statistics.median(known), (known, unknown)
    assert statistics.median(known) > 0.5 * statistics.median(unknown), (known, unknown)


def test_a_failed_approval_at_a_counter_never_slows_the_supervisors_login(appliance, configure_app, downtime):
    clerk = Staff(configure_app(counter={"support_measure_approvable": ["household"]}), "clerk1")
    free = appliance.config["SONAE"]["security"]["login_free_failures"]
    body = {"kind": "juminhyo", "requester_type": "household", "requester_name": "佐藤　一郎", "identity_document": "運転免許証",
            "approver": "boss"}
    for attempt in range(free):
        answer = clerk.api("POST", f"/api/v1/residents/{SATO_SUPPORT}/certificates", json={**body, "approver_password": f"typo-{attempt}"})
        assert answer.status_code == 422 and answer.get_json()["rule"] == "approval_failed"
    # the counter's own approvals slow down (nobody guesses a password at a counter) ...
    slowed = clerk.api("POST", f"/api/v1/residents/{SATO_SUPPORT}/certificates", json={**body, "approver_password": PASSWORD})
    assert slowed.status_code == 422 and "秒待って" in slowed.get_json()["message"]
    # ... the supervisor's login does not, from anywhere
    assert failures(appliance) == 0
    assert form_login(appliance, "boss", PASSWORD, NEW_PC).status_code == 302


# --- where a login leads --------------------------------------------------------------


@pytest.mark.parametrize("target", [
    "//evil.example", "/%09/evil.example", "/%0a/evil.example", "/%5Cevil.example", "/%5C%5Cevil.example",
    "https://evil.example/", "javascript:alert(1)", "/%20/evil.example", "evil.example", "%2F%2Fevil.example",
])
def test_login_never_leads_to_another_site(appliance, target):
    answer = form_login(appliance, "clerk1", PASSWORD, "10.40.0.1", next=target)
    assert answer.status_code == 302
    assert answer.headers["Location"] == "/counter/"


def test_login_leads_back_to_the_page_asked_for(appliance):
    answer = form_login(appliance, "clerk1", PASSWORD, "10.40.0.1", next="/counter/deferred?resident_code=1")
    assert answer.headers["Location"] == "/counter/deferred?resident_code=1"


# --- sessions and passwords --------------------------------------------------------------


def test_a_password_reset_ends_every_session_of_the_account(appliance, login):
    clerk = login("clerk1")
    other_desk = login("clerk1", terminal="本庁2")
    colleague = login("clerk2")
    conn = open_ops(appliance.config["SONAE"])
    users.reset_password(conn, "clerk1", "a-new-long-passphrase", actor="cli:it")
    for desk in (clerk, other_desk):
        answer = desk.get("/counter/")
        assert answer.status_code == 302 and "/login" in answer.headers["Location"]
    assert colleague.get("/api/v1/status").status_code == 200
    ended = [e["detail"]["reason"] for e in audit.entries(conn, action="session.end", actor="clerk1")]
    assert ended == ["password reset", "password reset"]


def test_a_session_ends_a_fixed_time_after_login_however_busy(appliance, login):
    clerk = login("clerk1")
    hours = appliance.config["SONAE"]["security"]["session_absolute_hours"]
    conn = open_ops(appliance.config["SONAE"])
    just_inside = (now() - dt.timedelta(hours=hours) + dt.timedelta(minutes=1)).isoformat(timespec="milliseconds")
    conn.execute("UPDATE sessions SET created_at = ?", (just_inside,))
    assert clerk.get("/api/v1/status").status_code == 200
    past = (now() - dt.timedelta(hours=hours, minutes=1)).isoformat(timespec="milliseconds")
    conn.execute("UPDATE sessions SET created_at = ?", (past,))  # last_seen is fresh: the clerk was busy
    answer = clerk.get("/counter/")
    assert answer.status_code == 302 and "expired=1" in answer.headers["Location"]
    assert conn.execute("SELECT end_reason FROM sessions").fetchall() == [("absolute lifetime",)]


@pytest.mark.parametrize("password, problem", [
    ("1q2w3e4r5t", "common"),           # on the list
    ("QWERTYUIOP", "common"),           # on the list, in any case
    ("short-one", "at least 10"),       # 9 characters
    ("newclerk-2026!", "username"),     # contains the username
])
def test_weak_passwords_are_refused(sonae_env, password, problem):
    conn = open_ops(sonae_env)
    with pytest.raises(users.UserError, match=problem):
        users.add_user(conn, "newclerk", "新人", "clerk", password, actor="test")
    assert users.add_user(conn, "newclerk", "新人", "clerk", "tsukimi-dango-42", actor="test").username == "newclerk"
    with pytest.raises(users.UserError, match="common"):
        users.reset_password(conn, "newclerk", "1q2w3e4r5t", actor="test")


# --- bounded input -------------------------------------------------------------------------


def test_a_huge_username_is_not_stored(appliance):
    """900 KB: refused by the body limit on a form and by the API document
    on JSON; nothing of it reaches the append-only audit."""
    conn = open_ops(appliance.config["SONAE"])
    audit_before = conn.execute("SELECT count(*), coalesce(sum(length(detail) + length(actor) + length(coalesce(target, ''))), 0) FROM audit").fetchone()
    huge = "x" * 900_000
    assert form_login(appliance, huge, "whatever", "10.50.0.1").status_code == 413
    client = appliance.test_client()
    csrf = client.get("/api/v1/session").get_json()["csrf_token"]
    answer = client.post("/api/v1/session", json={"username": huge, "password": "x"}, headers={"X-CSRF-Token": csrf})
    assert answer.status_code == 413 and answer.get_json()["error"] == "too_large"
    answer = client.post("/api/v1/session", json={"username": "x" * 30_000, "password": "x"}, headers={"X-CSRF-Token": csrf})
    assert answer.status_code == 400 and "username" in answer.get_json()["message"]
    assert conn.execute("SELECT count(*), coalesce(sum(length(detail) + length(actor) + length(coalesce(target, ''))), 0) FROM audit").fetchone() == audit_before


def test_a_long_username_in_a_form_is_stored_as_a_bounded_fingerprint(appliance):
    assert form_login(appliance, "y" * 30_000, "whatever", "10.50.0.2").status_code == 401
    conn = open_ops(appliance.config["SONAE"])
    (entry,) = audit.entries(conn, action="login.failed")
    assert entry["actor"] == entry["target"] and entry["actor"].startswith(users.UNKNOWN_NAME_MARKER)
    assert entry["detail"] == {"remote": "10.50.0.2"}
    assert conn.execute("SELECT max(length(username)) FROM login_failures").fetchone()[0] < users.MAX_USERNAME_LENGTH


# --- what the audit log keeps of a typed name ---------------------------------------


def audit_text(appliance) -> str:
    """Everything the append-only audit table holds, as one text."""
    conn = open_ops(appliance.config["SONAE"])
    try:
        return "\n".join("\t".join(str(cell) for cell in row) for row in conn.execute("SELECT * FROM audit"))
    finally:
        conn.close()


def test_a_password_typed_as_the_username_is_never_kept(appliance, login):
    """Typed into the wrong field, a password would stay in the hash-chained
    log for ever: a name no account has is kept as a keyed fingerprint,
    the same for the same text, so repeated attempts still correlate."""
    typed = "Tsukimi-Dango-Secret-42"
    for remote in ("10.50.1.1", "10.50.1.2"):
        assert form_login(appliance, typed, PASSWORD, remote).status_code == 401
    client = appliance.test_client()
    csrf = client.get("/api/v1/session").get_json()["csrf_token"]
    answer = client.post("/api/v1/session", json={"username": typed, "password": PASSWORD},
                         headers={"X-CSRF-Token": csrf})
    assert answer.status_code == 401
    assert form_login(appliance, "clerk1", "guess-0001", "10.50.1.3").status_code == 401  # an account's failure names it
    conn = open_ops(appliance.config["SONAE"])
    failed = [(entry["actor"], entry["target"]) for entry in audit.entries(conn, action="login.failed")]
    marker = failed[0][0]
    assert marker.startswith(users.UNKNOWN_NAME_MARKER) and failed == [(marker, marker)] * 3 + [("clerk1", "clerk1")]
    assert typed not in audit_text(appliance) and typed.lower() not in audit_text(appliance).lower()
    exported = login("aud").get("/audit/export.csv").get_data(as_text=True)
    assert marker in exported and "clerk1" in exported and typed not in exported
    assert typed not in "".join(row[0] for row in conn.execute("SELECT username FROM login_failures"))


def test_a_mistyped_name_is_still_throttled_as_one_name(appliance):
    free = appliance.config["SONAE"]["security"]["login_free_failures"]
    for attempt in range(free):
        assert form_login(appliance, "no-such-clerk", f"guess-{attempt}", f"10.50.2.{attempt + 1}").status_code == 401
    assert form_login(appliance, "no-such-clerk", "guess-again", "10.50.2.99").status_code == 429  # the name waits, from anywhere
    assert form_login(appliance, "no-such-clerk2", "guess-again", "10.50.2.98").status_code == 401  # another name does not


def test_a_password_typed_as_the_approver_is_never_kept(appliance, configure_app, downtime):
    clerk = Staff(configure_app(counter={"support_measure_approvable": ["household"]}), "clerk1")
    body = {"kind": "juminhyo", "requester_type": "household", "requester_name": "佐藤　一郎", "identity_document": "運転免許証",
            "approver": "Tsukimi-Dango-Secret-42", "approver_password": PASSWORD}
    answer = clerk.api("POST", f"/api/v1/residents/{SATO_SUPPORT}/certificates", json=body)
    assert answer.status_code == 422 and answer.get_json()["rule"] == "approval_failed"
    conn = open_ops(appliance.config["SONAE"])
    (entry,) = audit.entries(conn, action="approval.failed")
    assert entry["detail"]["approver"].startswith(users.UNKNOWN_NAME_MARKER)
    assert "Tsukimi-Dango-Secret-42" not in audit_text(appliance)


def test_an_answer_that_shows_no_form_sets_no_session_cookie(appliance):
    """A form's token lives in the session cookie it was made with. An
    answer that shows no form (the favicon's 404, a health check) made one
    of its own, and arriving late it replaced the form's: the login was
    refused as 「送信を受け付けられません」 (browser tests in CI)."""
    client = appliance.test_client()
    for path in ("/favicon.ico", "/healthz", "/no-such-page"):
        answer = client.get(path)
        assert "sonae_session" not in answer.headers.get("Set-Cookie", ""), path
    page = client.get("/login")
    assert "sonae_session" in page.headers["Set-Cookie"]  # the login form's token, in the cookie it comes with
    client.get("/favicon.ico")
    answer = client.post("/login", data={"username": "clerk1", "password": PASSWORD, "csrf_token": _form_token(page)})
    assert answer.status_code == 302  # the favicon's answer left the form's cookie as it was


def _form_token(page) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True)).group(1)

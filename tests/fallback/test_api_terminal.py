"""The JSON API's login takes its terminal from the client's registration
by a supervisor at /terminal, as the HTML login does: a client that only
names a terminal opens no counter and issues nothing under its serials."""

from __future__ import annotations

from fallback.ops import open_ops
from fallback.staff import terminals
from tests.support import PASSWORD, certificates, sonae

YAMADA_TARO = "10000000011"
ISSUE = {"kind": "juminhyo", "requester_type": "self", "identity_document": "運転免許証", "copies": 1, "acknowledge_move_out": True}


def api_login(client, body: dict):
    csrf = client.get("/api/v1/session").get_json()["csrf_token"]
    return client.post("/api/v1/session", json=body, headers={"X-CSRF-Token": csrf})


def test_naming_a_terminal_from_an_unregistered_client_is_refused(appliance, downtime):
    client = appliance.test_client()
    refused = api_login(client, {"username": "clerk1", "password": PASSWORD, "terminal": "本庁1"})
    assert refused.status_code == 403
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


def register_at_terminal(client, terminal: str):
    csrf = client.get("/api/v1/session").get_json()["csrf_token"]
    registered = client.post("/terminal", data={"terminal": terminal, "username": "boss", "password": PASSWORD, "csrf_token": csrf})
    assert registered.status_code == 302
    return client.get_cookie(terminals.COOKIE_NAME).value


def counter_open_with(appliance, cookie: str) -> bool:
    """Whether a client carrying only `cookie` (copied off a PC) opens a counter."""
    client = appliance.test_client()
    client.set_cookie(terminals.COOKIE_NAME, cookie)
    logged_in = api_login(client, {"username": "clerk2", "password": PASSWORD})
    assert logged_in.status_code == 201
    return client.get("/api/v1/status").get_json()["counter"]["open"]


def test_a_pc_registered_again_withdraws_the_registration_it_carried(appliance, downtime):
    """An outside tester copied a PC's cookie, had the PC registered as
    another terminal, and still opened the first terminal's counter with the copy."""
    pc = appliance.test_client()
    first = register_at_terminal(pc, "本庁1")
    assert counter_open_with(appliance, first)
    second = register_at_terminal(pc, "本庁2")
    assert second != first
    assert not counter_open_with(appliance, first)
    refused = api_login(appliance.test_client(), {"username": "clerk2", "password": PASSWORD, "terminal": "本庁1"})
    assert refused.status_code == 403 and refused.get_json()["error"] == "terminal_not_registered"  # naming it does not bring it back
    assert counter_open_with(appliance, second)


def test_withdrawing_a_terminal_closes_every_pc_registered_as_it(appliance, downtime):
    def listed() -> list[str]:
        return [line.split("\t")[0] for line in sonae("terminal", "list").stdout.splitlines()]

    before = listed()
    one, other, elsewhere = appliance.test_client(), appliance.test_client(), appliance.test_client()
    copies = [register_at_terminal(one, "本庁1"), register_at_terminal(other, "本庁1"), register_at_terminal(elsewhere, "本庁2")]
    assert listed() == sorted([*before, "本庁1", "本庁1", "本庁2"])
    blank = sonae("terminal", "withdraw", "本庁1", "--reason", "   ")
    assert blank.returncode == 1 and "say why in --reason" in blank.stderr and listed() == sorted([*before, "本庁1", "本庁1", "本庁2"])
    withdrawn = sonae("terminal", "withdraw", "本庁1", "--reason", "端末PC紛失", "--actor", "it-oncall")
    count = before.count("本庁1") + 2
    assert withdrawn.returncode == 0 and f"withdrew {count} registration(s) as 本庁1" in withdrawn.stdout, withdrawn.stderr
    assert "本庁1" not in listed()
    assert [counter_open_with(appliance, cookie) for cookie in copies] == [False, False, True]
    again = sonae("terminal", "withdraw", "本庁1", "--reason", "x")
    assert again.returncode == 1 and "no PC is registered as terminal '本庁1'" in again.stderr
    conn = open_ops(appliance.config["SONAE"])
    try:
        entry = conn.execute("SELECT actor, target, detail FROM audit WHERE action = 'terminal.withdraw'").fetchall()
    finally:
        conn.close()
    assert entry == [("it-oncall", "本庁1", f'{{"reason":"端末PC紛失","registrations":{count}}}')]
    for terminal in sorted(set(listed())):
        sonae("terminal", "withdraw", terminal, "--reason", "端末PC交換")
    empty = sonae("terminal", "list")  # none left: said on stderr, with what to do
    assert empty.returncode == 0 and empty.stdout == ""
    assert empty.stderr.strip() == ("no PC is registered as a counter terminal: a supervisor registers each counter PC at "
                                    "/terminal (its counter stays closed until then)")
    assert register_at_terminal(one, "本庁1") and counter_open_with(appliance, one.get_cookie(terminals.COOKIE_NAME).value)


def test_registrations_made_before_they_were_kept_stay_valid(tmp_path, monkeypatch):
    """Migration 12 takes each PC's registration from its audit entry: an
    upgrade closes no counter."""
    from fallback import audit, ops
    from sync import crypto

    conn = crypto.connect(tmp_path / "ops.db", b"k" * 32)
    conn.isolation_level = None
    with monkeypatch.context() as before:
        before.setattr(ops, "MIGRATIONS", ops.MIGRATIONS[:11])  # the ops database as the previous release left it
        ops.migrate(conn)
    audit.record(conn, "boss", "terminal.register", "本庁1", {"device": "old-device", "office": "本庁", "printer": "p1", "remote": None})
    assert ops.migrate(conn) == len(ops.MIGRATIONS)  # 12 and every later one
    assert conn.execute("SELECT device, terminal, registered_by FROM terminal_registrations WHERE withdrawn_at IS NULL").fetchall() == [
        ("old-device", "本庁1", "boss")]


def test_withdrawing_a_registration_ends_the_sessions_opened_under_it(appliance, downtime):
    """A third tester logged in with a copied cookie before the terminal was
    withdrawn and went on issuing until the session timed out."""
    pc, copier = appliance.test_client(), appliance.test_client()
    copier.set_cookie(terminals.COOKIE_NAME, register_at_terminal(pc, "本庁1"))
    on_copy = api_login(copier, {"username": "clerk2", "password": PASSWORD})
    assert on_copy.status_code == 201 and on_copy.get_json()["terminal"] == "本庁1"
    register_at_terminal(pc, "本庁2")  # the PC registered again: the copy's registration is withdrawn…
    assert copier.get("/api/v1/session").get_json()["authenticated"] is False  # … and its session with it
    issued = copier.post(f"/api/v1/residents/{YAMADA_TARO}/certificates", json=ISSUE,
                         headers={"X-CSRF-Token": on_copy.get_json()["csrf_token"]})
    assert issued.status_code in (400, 401) and certificates(appliance) == 0

    on_pc = api_login(pc, {"username": "clerk1", "password": PASSWORD})
    assert on_pc.status_code == 201 and on_pc.get_json()["terminal"] == "本庁2"
    assert sonae("terminal", "withdraw", "本庁2", "--reason", "端末PC紛失").returncode == 0
    assert pc.get("/api/v1/session").get_json()["authenticated"] is False


def test_a_pc_registered_again_keeps_the_session_of_whoever_is_logged_in_on_it(appliance, downtime):
    pc = appliance.test_client()
    register_at_terminal(pc, "本庁1")
    assert api_login(pc, {"username": "clerk1", "password": PASSWORD}).status_code == 201
    register_at_terminal(pc, "本庁2")
    assert pc.get("/api/v1/session").get_json()["terminal"] == "本庁2"  # moved, not ended
    assert sonae("terminal", "withdraw", "本庁2", "--reason", "端末PC交換").returncode == 0
    assert pc.get("/api/v1/session").get_json()["authenticated"] is False  # its new registration's session ends with it


def audited(appliance, action: str) -> list[tuple[str, str]]:
    conn = open_ops(appliance.config["SONAE"])
    try:
        return conn.execute("SELECT actor, target FROM audit WHERE action = ? ORDER BY id", (action,)).fetchall()
    finally:
        conn.close()


def test_a_session_copied_to_another_pc_opens_nothing_there(appliance, downtime):
    """The session cookie of a clerk at 本庁1 carried to a PC without that
    registration (none, or 本庁2's) searches and issues nothing; the
    attempt is audited, and the clerk at 本庁1 works on."""
    clerk = appliance.test_client()
    register_at_terminal(clerk, "本庁1")
    logged_in = api_login(clerk, {"username": "clerk1", "password": PASSWORD, "terminal": "本庁1"})
    csrf = logged_in.get_json()["csrf_token"]
    session_cookie = clerk.get_cookie("sonae_session").value

    elsewhere = appliance.test_client()
    other_registration = register_at_terminal(appliance.test_client(), "本庁2")
    for terminal_cookie in (None, other_registration):
        elsewhere.delete_cookie(terminals.COOKIE_NAME)
        if terminal_cookie:
            elsewhere.set_cookie(terminals.COOKIE_NAME, terminal_cookie)
        elsewhere.set_cookie("sonae_session", session_cookie)
        search = elsewhere.get("/api/v1/residents?kana=ヤマダ")
        assert search.status_code == 403 and search.get_json()["error"] == "terminal_mismatch"
        assert "本庁1" in search.get_json()["message"] and "ログインし直して" in search.get_json()["message"]
        elsewhere.set_cookie("sonae_session", session_cookie)
        issued = elsewhere.post(f"/api/v1/residents/{YAMADA_TARO}/certificates", json=ISSUE, headers={"X-CSRF-Token": csrf})
        assert issued.status_code == 403 and issued.get_json()["error"] == "terminal_mismatch"
        elsewhere.set_cookie("sonae_session", session_cookie)
        assert "この端末では使えないログイン" in elsewhere.get(f"/counter/resident/{YAMADA_TARO}").get_data(as_text=True)
    assert certificates(appliance) == 0
    assert audited(appliance, "session.elsewhere") == [("clerk1", "本庁1")] * 6

    assert clerk.get("/api/v1/residents?kana=ヤマダ").status_code == 200
    assert clerk.post(f"/api/v1/residents/{YAMADA_TARO}/certificates", json=ISSUE, headers={"X-CSRF-Token": csrf}).status_code == 201

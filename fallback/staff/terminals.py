"""Counter PCs bound to their terminal, once.

Which terminal a PC is decides the office, the printer and the 発行番号
every certificate carries. Picked from a list at every login, it was wrong
whenever the first entry was left; so a supervisor registers each PC once
(/terminal, with their own password), and the PC keeps a signed, HttpOnly
cookie naming its terminal. Every login on that PC uses it, and every
screen shows it. Registering again moves the PC to another terminal.

The cookie proves only which terminal the PC was registered as; it logs
nobody in. It is signed with the app's session secret (another salt), so
it cannot be edited, and it is refused if its terminal is no longer
configured. Every registration is audited and kept (terminal_registrations):
a PC registered again withdraws the registration it carried, and `sonae
terminal withdraw` withdraws every PC of a terminal (a PC lost or replaced,
a cookie copied off a PC), so a copied cookie does not open a counter for
ever.
"""

from __future__ import annotations

import datetime as dt
import secrets

from itsdangerous import BadSignature, URLSafeSerializer

from fallback import audit
from fallback.config import Config
from fallback.errors import Forbidden, SonaeError
from fallback.ops import Transaction, now_iso
from fallback.staff import sessions

COOKIE_NAME = "sonae_terminal"
# Browsers keep a cookie at most 400 days; each login on the PC renews it.
COOKIE_MAX_AGE = dt.timedelta(days=400)
_SALT = "sonae-terminal-binding"


class NotRegistered(Forbidden):
    """An API login naming a terminal this client is not registered as:
    naming it is not registering it."""

    code = "terminal_not_registered"

    def __init__(self, terminal: str):
        super().__init__(
            f"この端末（クライアント）は窓口の端末「{terminal}」として登録されていないため、ログインしていません。"
            "係長が /terminal でこの端末を登録してから、その登録（Cookie sonae_terminal）を付けてログインしてください。"
            "窓口を使わない場合は terminal を指定せずにログインしてください。")


class RegisteredElsewhere(Forbidden):
    """A login on a registered PC naming another terminal."""

    code = "terminal_mismatch"

    def __init__(self, registered: str):
        super().__init__(f"この端末は「{registered}」として登録されています。別の端末としてはログインできません。")


def configured(config: Config, terminal_id: str) -> dict | None:
    return next((t for t in config["counter"]["terminals"] if t["id"] == terminal_id), None)


def _serializer(secret: bytes | str) -> URLSafeSerializer:
    return URLSafeSerializer(secret, salt=_SALT)


def register(conn, config: Config, secret: bytes | str, terminal_id: str, *, supervisor: str, remote: str | None,
             previous_cookie: str | None = None, keep_session: str | None = None) -> str:
    """Bind a PC to `terminal_id`; returns the cookie value to set on it.
    The registration the PC carried (`previous_cookie`) is withdrawn, with
    the sessions opened under it but `keep_session` (the PC's own, which
    moves): a copy of that cookie no longer opens a counter, nor keeps one
    open."""
    terminal = configured(config, terminal_id)
    if terminal is None:
        raise ValueError(f"unknown terminal {terminal_id!r}")
    device = secrets.token_urlsafe(12)
    previous = device_of(secret, previous_cookie)
    with Transaction(conn):
        conn.execute("INSERT INTO terminal_registrations (device, terminal, registered_at, registered_by) VALUES (?, ?, ?, ?)",
                     (device, terminal_id, now_iso(), supervisor))
        detail = {"device": device, "office": terminal["office"], "printer": terminal["printer"], "remote": remote}
        if previous is not None and _withdraw(conn, "device = ?", previous, by=supervisor, why="registered again", keep=keep_session):
            detail["replaces"] = previous
        audit.append(conn, supervisor, "terminal.register", terminal_id, detail)
    return _serializer(secret).dumps({"terminal": terminal_id, "device": device})


def withdraw(conn, terminal_id: str, *, actor: str, reason: str) -> int:
    """Withdraw every PC's registration as `terminal_id`, ending the
    sessions opened under them; how many there were. Each PC then logs in
    with its counter closed until a supervisor registers it again."""
    if not reason.strip():
        raise SonaeError("say why in --reason (e.g. 端末PC紛失): the audit keeps it")
    with Transaction(conn):
        count = len(_withdraw(conn, "terminal = ?", terminal_id, by=actor, why=reason))
        if count == 0:
            raise SonaeError(f"no PC is registered as terminal {terminal_id!r} (`sonae terminal list` shows those that are)")
        audit.append(conn, actor, "terminal.withdraw", terminal_id, {"registrations": count, "reason": reason})
    return count


def registrations(conn) -> list[dict]:
    """Every registration still in force, by terminal, oldest first."""
    rows = conn.execute("SELECT terminal, registered_at, registered_by FROM terminal_registrations "
                        "WHERE withdrawn_at IS NULL ORDER BY terminal, registered_at")
    return [{"terminal": terminal, "registered_at": at, "registered_by": by} for terminal, at, by in rows]


def _withdraw(conn, where: str, value: str, *, by: str, why: str, keep: str | None = None) -> list[str]:
    """Withdraw the registrations in force `where`, and end the sessions
    opened under them (but `keep`); the devices withdrawn."""
    devices = [device for (device,) in conn.execute(
        f"SELECT device FROM terminal_registrations WHERE {where} AND withdrawn_at IS NULL", (value,))]
    conn.executemany("UPDATE terminal_registrations SET withdrawn_at = ?, withdrawn_by = ?, withdrawn_why = ? WHERE device = ?",
                     [(now_iso(), by, why, device) for device in devices])
    sessions.end_at_devices(conn, devices, f"terminal registration withdrawn ({why})", keep=keep)
    return devices


def device_of(secret: bytes | str, cookie: str | None) -> str | None:
    """The registration a PC's cookie carries, if this appliance signed it."""
    if not cookie:
        return None
    try:
        payload = _serializer(secret).loads(cookie)
    except BadSignature:
        return None
    if not isinstance(payload, dict) or not isinstance(payload.get("device"), str):
        return None
    return payload["device"]


def bound(conn, config: Config, secret: bytes | str, cookie: str | None) -> dict | None:
    """The configured terminal a PC's cookie names, or None (no cookie, a
    cookie not signed by this appliance, a registration withdrawn, or a
    terminal no longer configured)."""
    device = device_of(secret, cookie)
    if device is None:
        return None
    row = conn.execute("SELECT terminal FROM terminal_registrations WHERE device = ? AND withdrawn_at IS NULL", (device,)).fetchone()
    terminal = None if row is None else configured(config, row[0])
    return None if terminal is None else {**terminal, "device": device}

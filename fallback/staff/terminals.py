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
configured. Every registration is audited.
"""

from __future__ import annotations

import datetime as dt
import secrets

from itsdangerous import BadSignature, URLSafeSerializer

from fallback import audit
from fallback.config import Config
from fallback.errors import SonaeError

COOKIE_NAME = "sonae_terminal"
# Browsers keep a cookie at most 400 days; each login on the PC renews it.
COOKIE_MAX_AGE = dt.timedelta(days=400)
_SALT = "sonae-terminal-binding"


class NotRegistered(SonaeError):
    """An API login naming a terminal from a client no supervisor
    registered: naming it is not registering it."""

    code = "terminal_not_registered"

    def __init__(self, terminal: str):
        super().__init__(
            f"この端末（クライアント）は窓口の端末「{terminal}」として登録されていないため、ログインしていません。"
            "係長が /terminal でこの端末を登録してから、その登録（Cookie sonae_terminal）を付けてログインしてください。"
            "窓口を使わない場合は terminal を指定せずにログインしてください。")


def configured(config: Config, terminal_id: str) -> dict | None:
    return next((t for t in config["counter"]["terminals"] if t["id"] == terminal_id), None)


def _serializer(secret: bytes | str) -> URLSafeSerializer:
    return URLSafeSerializer(secret, salt=_SALT)


def register(conn, config: Config, secret: bytes | str, terminal_id: str, *, supervisor: str, remote: str | None) -> str:
    """Bind a PC to `terminal_id`; returns the cookie value to set on it."""
    terminal = configured(config, terminal_id)
    if terminal is None:
        raise ValueError(f"unknown terminal {terminal_id!r}")
    device = secrets.token_urlsafe(12)
    audit.record(conn, supervisor, "terminal.register", terminal_id,
                 {"device": device, "office": terminal["office"], "printer": terminal["printer"], "remote": remote})
    return _serializer(secret).dumps({"terminal": terminal_id, "device": device})


def bound(config: Config, secret: bytes | str, cookie: str | None) -> dict | None:
    """The configured terminal a PC's cookie names, or None (no cookie, a
    cookie not signed by this appliance, or a terminal no longer configured)."""
    if not cookie:
        return None
    try:
        payload = _serializer(secret).loads(cookie)
    except BadSignature:
        return None
    if not isinstance(payload, dict) or not isinstance(payload.get("terminal"), str):
        return None
    return configured(config, payload["terminal"])

"""Local staff accounts.

Passwords are hashed with Argon2id (argon2-cffi defaults) and must be at
least MIN_PASSWORD_LENGTH characters and not one of the common passwords
in common-passwords.txt.

Failed logins slow down, they never lock (see LoginThrottle): a hard lock
after a few failures is a lock anyone can set, and an outsider could keep
the only supervisor out in the middle of an outage. An unknown username
costs the same Argon2 work as a known one, so the answer's time does not
tell which accounts exist.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from fallback import audit
from fallback.errors import SonaeError
from fallback.ops import Transaction, now, now_iso
from fallback.staff import sessions

ROLES = {
    "clerk": "窓口職員",
    "supervisor": "係長",
    "drill_coordinator": "訓練担当",
    "it": "情報政策課",
    "auditor": "監査担当",
}
SYSTEM_DISPLAY_NAME = "監視（自動）"  # the worker's probes and jobs act as "system"
MIN_PASSWORD_LENGTH = 10
MAX_USERNAME_LENGTH = 64
# What stands for a typed name that no account has; no username can contain
# a colon, so the marker is never mistaken for an account.
UNKNOWN_NAME_MARKER = "unknown:"
MAX_DISPLAY_NAME_LENGTH = 100
COMMON_PASSWORDS = Path(__file__).with_name("common-passwords.txt")

_hasher = PasswordHasher()
# Verified against when the username is unknown or disabled, so that every
# answer costs one Argon2 verification.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class UserError(SonaeError):
    """A user operation that cannot be done; the message says why."""


class LoginRefused(SonaeError):
    """Wrong credentials or a disabled account (message is safe to show: it
    never says which of user or password was wrong)."""

    status = 401
    code = "login_refused"
    title = "ログインできません"


class LoginThrottled(LoginRefused):
    """Too many recent failures from this source or on this account: the
    attempt was not even checked. `retry_after` is in whole seconds."""

    status = 429
    code = "login_throttled"

    def __init__(self, retry_after: int):
        super().__init__(f"ログインの失敗が続いたため、{retry_after}秒待ってからやり直してください。"
                         "急ぐときは、いつも使っている端末からログインするか、情報政策課に連絡してください。")
        self.retry_after = retry_after

    def details(self) -> dict:
        return {"retry_after": self.retry_after}

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


@dataclass(frozen=True)
class User:
    username: str
    display_name: str
    role: str
    disabled: bool

    @property
    def role_label(self) -> str:
        return ROLES[self.role]


@dataclass(frozen=True)
class LoginThrottle:
    """After `free_failures` failures within `window`, each further attempt
    waits twice as long as the one before (1 s, 2 s, 4 s …, at most
    `max_delay_s`) after the latest failure. Counted per source (any
    account) and per account; a source that logged in to the account within
    `trusted_days` is exempt from the account's count, so failures from
    elsewhere never keep its owner out."""

    free_failures: int
    window: dt.timedelta
    max_delay_s: float
    trusted_days: int

    @classmethod
    def from_config(cls, security: dict) -> LoginThrottle:
        return cls(security["login_free_failures"], dt.timedelta(minutes=security["login_failure_window_minutes"]),
                   float(security["login_max_delay_s"]), security["login_trusted_source_days"])

    def wait_seconds(self, failures: int, latest: str | None, at: dt.datetime) -> float:
        """How long from `at` until the next attempt may be checked, given
        `failures` within the window, the latest at `latest`."""
        if failures < self.free_failures or latest is None:
            return 0.0
        delay = min(self.max_delay_s, 2.0 ** (failures - self.free_failures))
        return max(0.0, (dt.datetime.fromisoformat(latest) + dt.timedelta(seconds=delay) - at).total_seconds())


@cache
def _common_passwords() -> frozenset[str]:
    lines = COMMON_PASSWORDS.read_text(encoding="utf-8").splitlines()
    return frozenset(line.strip().lower() for line in lines if line.strip() and not line.startswith("#"))


def password_problem(password: str, username: str = "") -> str | None:
    """Why a password cannot be used, or None."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"password must be at least {MIN_PASSWORD_LENGTH} characters"
    if password.lower() in _common_passwords():
        return "password is one of the most common passwords; choose another"
    if username and username.lower() in password.lower():
        return "password must not contain the username"
    return None


def _check_password(password: str, username: str) -> None:
    problem = password_problem(password, username)
    if problem:
        raise UserError(problem)


def add_user(conn, username: str, display_name: str, role: str, password: str, *, actor: str) -> User:
    if role not in ROLES:
        raise UserError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
    if not username or not username.isascii() or not username.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise UserError("username must be ASCII letters, digits, '-', '_' or '.'")
    if len(username) > MAX_USERNAME_LENGTH:
        raise UserError(f"username must be at most {MAX_USERNAME_LENGTH} characters")
    if not display_name.strip() or len(display_name) > MAX_DISPLAY_NAME_LENGTH:
        raise UserError(f"display name must be 1 to {MAX_DISPLAY_NAME_LENGTH} characters")
    _check_password(password, username)
    with Transaction(conn):
        if conn.execute("SELECT 1 FROM users WHERE username = ?", (username,)).fetchone():
            raise UserError(f"user {username} already exists; use `sonae user reset` to set a new password")
        stamp = now_iso()
        conn.execute(
            "INSERT INTO users (username, display_name, role, password_hash, disabled, created_at, password_changed_at) VALUES (?,?,?,?,0,?,?)",
            (username, display_name, role, _hasher.hash(password), stamp, stamp),
        )
        audit.append(conn, actor, "user.add", username, {"role": role})
    return User(username, display_name, role, False)


def set_disabled(conn, username: str, disabled: bool, *, actor: str) -> None:
    with Transaction(conn):
        if conn.execute("UPDATE users SET disabled = ? WHERE username = ?", (int(disabled), username)).rowcount == 0:
            raise UserError(f"no user {username}")
        audit.append(conn, actor, "user.disable" if disabled else "user.enable", username, {})


def reset_password(conn, username: str, password: str, *, actor: str) -> None:
    """Set a new password; every open session of the account ends with it
    (whoever learnt the old password may be logged in)."""
    _check_password(password, username)
    with Transaction(conn):
        changed = conn.execute(
            "UPDATE users SET password_hash = ?, password_changed_at = ? WHERE username = ?",
            (_hasher.hash(password), now_iso(), username),
        ).rowcount
        if changed == 0:
            raise UserError(f"no user {username}")
        conn.execute("DELETE FROM login_failures WHERE username = ?", (username,))
        audit.append(conn, actor, "user.reset", username, {})
        sessions.end_all(conn, username, "password reset")


def get_user(conn, username: str) -> User | None:
    row = conn.execute("SELECT username, display_name, role, disabled FROM users WHERE username = ?", (username,)).fetchone()
    return User(row[0], row[1], row[2], bool(row[3])) if row else None


def display_names(conn) -> dict[str, str]:
    """username -> the name staff know each other by (screens and reports
    show it, never the login name)."""
    return dict(conn.execute("SELECT username, display_name FROM users"))


def display_name(conn, username: str) -> str:
    """The display name of an account; "system" is the appliance itself,
    and a name no account has (a deleted one) is shown as it is."""
    if username == "system":
        return SYSTEM_DISPLAY_NAME
    row = conn.execute("SELECT display_name FROM users WHERE username = ?", (username,)).fetchone()
    return row[0] if row else username


def list_users(conn) -> list[User]:
    return [User(r[0], r[1], r[2], bool(r[3])) for r in conn.execute("SELECT username, display_name, role, disabled FROM users ORDER BY username")]


def password_matches(conn, username: str, password: str) -> User | None:
    """The active user whose password this is, or None. Costs one Argon2
    verification whether or not the account exists. Records nothing: the
    caller audits and counts (a login, or an approval at a counter)."""
    row = None
    if len(username) <= MAX_USERNAME_LENGTH:
        row = conn.execute("SELECT password_hash, disabled FROM users WHERE username = ?", (username,)).fetchone()
    try:
        ok = _hasher.verify(row[0] if row else _DUMMY_HASH, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        ok = False
    return get_user(conn, username) if ok and row and not row[1] else None


def recorded_name(conn, typed: str, name_key: bytes) -> str:
    """What the audit log and the login throttle keep of a name typed at a
    login or an approval: the name itself when an account has it, else the
    marker and a short keyed fingerprint. A name no account has is often a
    password typed into the wrong field, and the append-only log could never
    forget it; the fingerprint still ties repeated attempts with one string
    together, and without the key (fallback.keys.login_name_key) guesses
    cannot be tested against it."""
    if len(typed) <= MAX_USERNAME_LENGTH and conn.execute("SELECT 1 FROM users WHERE username = ?", (typed,)).fetchone():
        return typed
    digest = hmac.new(name_key, typed.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
    return UNKNOWN_NAME_MARKER + digest[:16]


def _login_wait(conn, username: str, remote: str | None, throttle: LoginThrottle, at: dt.datetime) -> float:
    since = (at - throttle.window).isoformat(timespec="milliseconds")
    by_source = conn.execute("SELECT count(*), max(at) FROM login_failures WHERE remote IS ? AND at >= ?", (remote, since)).fetchone()
    wait = throttle.wait_seconds(by_source[0], by_source[1], at)
    trusted_since = (at - dt.timedelta(days=throttle.trusted_days)).isoformat(timespec="milliseconds")
    trusted = conn.execute("SELECT 1 FROM sessions WHERE username = ? AND remote IS ? AND created_at >= ? LIMIT 1",
                           (username, remote, trusted_since)).fetchone()
    if not trusted:
        by_account = conn.execute("SELECT count(*), max(at) FROM login_failures WHERE username = ? AND at >= ?", (username, since)).fetchone()
        wait = max(wait, throttle.wait_seconds(by_account[0], by_account[1], at))
    return wait


def _audit_throttled(conn, username: str, remote: str | None, wait: float, at: dt.datetime) -> None:
    """One audit entry per source while it waits out one delay, however
    many attempts it makes meanwhile: refused attempts must not grow the
    append-only log without bound."""
    latest = conn.execute("SELECT max(at) FROM login_failures WHERE remote IS ? OR username = ?", (remote, username)).fetchone()[0]
    already = conn.execute(
        "SELECT 1 FROM audit WHERE at >= ? AND action = 'login.throttled' AND json_extract(detail, '$.remote') IS ? LIMIT 1",
        (latest or at.isoformat(timespec="milliseconds"), remote),
    ).fetchone()
    if not already:
        audit.record(conn, username, "login.throttled", username, {"remote": remote, "wait_s": round(wait)})


def authenticate(conn, username: str, password: str, *, throttle: LoginThrottle, name_key: bytes,
                 remote: str | None = None) -> User:
    """Return the user, or raise LoginRefused (LoginThrottled while the
    source or the account must wait). Every checked attempt is audited,
    under `recorded_name` (`name_key`: fallback.keys.login_name_key)."""
    stored_name = recorded_name(conn, username, name_key)
    at = now()
    wait = _login_wait(conn, stored_name, remote, throttle, at)
    if wait > 0:
        _audit_throttled(conn, stored_name, remote, wait, at)
        raise LoginThrottled(max(1, round(wait + 0.5)))
    user = password_matches(conn, username, password)
    with Transaction(conn):
        if user is None:
            conn.execute("INSERT INTO login_failures (username, remote, at) VALUES (?,?,?)", (stored_name, remote, now_iso()))
            # Failures older than the window count for nothing: keep the table that small.
            conn.execute("DELETE FROM login_failures WHERE at < ?", ((at - throttle.window).isoformat(timespec="milliseconds"),))
            audit.append(conn, stored_name, "login.failed", stored_name, {"remote": remote})
        else:
            conn.execute("DELETE FROM login_failures WHERE username = ? AND remote IS ?", (username, remote))
            audit.append(conn, username, "login", username, {"remote": remote})
    if user is None:
        raise LoginRefused("ユーザー名またはパスワードが違います。")
    return user

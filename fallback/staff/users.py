"""Local staff accounts.

Passwords are hashed with Argon2id (argon2-cffi defaults). Failed logins are
rate-limited per account: after `login_max_failures` failures within
`login_lockout_minutes`, the account refuses even the right password until
the window passes — and says so, so a clerk knows to wait or call a
supervisor rather than keep guessing.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from fallback import audit
from fallback.ops import Transaction, now, now_iso

ROLES = {
    "clerk": "窓口職員",
    "supervisor": "係長",
    "drill_coordinator": "訓練担当",
    "it": "情報政策課",
    "auditor": "監査担当",
}
MIN_PASSWORD_LENGTH = 10

_hasher = PasswordHasher()


class UserError(Exception):
    """A user operation that cannot be done; the message says why."""


class LoginRefused(Exception):
    """Wrong credentials, a disabled account or a lockout (message is safe to
    show: it never says which of user or password was wrong)."""


@dataclass(frozen=True)
class User:
    username: str
    display_name: str
    role: str
    disabled: bool

    @property
    def role_label(self) -> str:
        return ROLES[self.role]


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"password must be at least {MIN_PASSWORD_LENGTH} characters")


def add_user(conn, username: str, display_name: str, role: str, password: str, *, actor: str) -> User:
    if role not in ROLES:
        raise UserError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
    if not username or not username.isascii() or not username.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise UserError("username must be ASCII letters, digits, '-', '_' or '.'")
    _check_password(password)
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
    _check_password(password)
    with Transaction(conn):
        changed = conn.execute(
            "UPDATE users SET password_hash = ?, password_changed_at = ? WHERE username = ?",
            (_hasher.hash(password), now_iso(), username),
        ).rowcount
        if changed == 0:
            raise UserError(f"no user {username}")
        conn.execute("DELETE FROM login_failures WHERE username = ?", (username,))
        audit.append(conn, actor, "user.reset", username, {})


def get_user(conn, username: str) -> User | None:
    row = conn.execute("SELECT username, display_name, role, disabled FROM users WHERE username = ?", (username,)).fetchone()
    return User(row[0], row[1], row[2], bool(row[3])) if row else None


def list_users(conn) -> list[User]:
    return [User(r[0], r[1], r[2], bool(r[3])) for r in conn.execute("SELECT username, display_name, role, disabled FROM users ORDER BY username")]


def authenticate(conn, username: str, password: str, *, max_failures: int, lockout_minutes: int, remote: str | None = None) -> User:
    """Return the user, or raise LoginRefused. Every attempt is audited."""
    window_start = (now() - dt.timedelta(minutes=lockout_minutes)).isoformat(timespec="milliseconds")
    failures = conn.execute(
        "SELECT count(*) FROM login_failures WHERE username = ? AND at >= ?", (username, window_start)
    ).fetchone()[0]
    if failures >= max_failures:
        audit.record(conn, username, "login.locked", username, {"remote": remote})
        raise LoginRefused(f"ログインの失敗が続いたため、{lockout_minutes}分間ロックされています。係長に連絡してください。")
    row = conn.execute("SELECT password_hash, disabled FROM users WHERE username = ?", (username,)).fetchone()
    ok = False
    if row and not row[1]:
        try:
            ok = _hasher.verify(row[0], password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            ok = False
    with Transaction(conn):
        if not ok:
            conn.execute("INSERT INTO login_failures (username, remote, at) VALUES (?,?,?)", (username, remote, now_iso()))
            audit.append(conn, username, "login.failed", username, {"remote": remote})
        else:
            conn.execute("DELETE FROM login_failures WHERE username = ?", (username,))
            audit.append(conn, username, "login", username, {"remote": remote})
    if not ok:
        raise LoginRefused("ユーザー名またはパスワードが違います。")
    return get_user(conn, username)

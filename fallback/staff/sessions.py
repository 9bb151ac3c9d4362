"""Server-side staff sessions.

The signed cookie carries only a random session id and the CSRF token; the
session row holds who is logged in at which terminal and printer (the
発行番号 needs both) and when it was last used. An idle session is ended on
the server, so a cookie copied from a counter PC is worthless after the
timeout or a logout; every session also ends a fixed time after its login
(however busy), and all of an account's sessions end when its password is
reset.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass

from fallback import audit
from fallback.ops import Transaction, now, now_iso

# Writing last_seen on every request would make every page view a disk
# sync; a minute's resolution is plenty for a 20-minute idle timeout.
TOUCH_EVERY = dt.timedelta(seconds=60)


@dataclass(frozen=True)
class StaffSession:
    id: str
    username: str
    role: str
    terminal: str
    office: str
    printer: str
    last_seen: str
    device: str | None = None  # the PC's registration it was opened on (fallback.staff.terminals)


def start(conn, *, username: str, role: str, terminal: str, office: str, printer: str, remote: str | None,
          device: str | None = None) -> StaffSession:
    """`device`: the PC's registration (fallback.staff.terminals), whose
    withdrawal ends the session."""
    session_id = secrets.token_urlsafe(32)
    stamp = now_iso()
    with Transaction(conn):
        conn.execute(
            "INSERT INTO sessions (id, username, role, terminal, office, printer, remote, created_at, last_seen, device) "
            "VALUES (?,?,?,?,?,?,?,?,?,?)",
            (session_id, username, role, terminal, office, printer, remote, stamp, stamp, device),
        )
        audit.append(conn, username, "session.start", terminal, {"office": office, "printer": printer, "remote": remote})
    return StaffSession(session_id, username, role, terminal, office, printer, stamp, device)


def start_at(conn, *, username: str, role: str, terminal: dict | None, remote: str | None) -> StaffSession:
    """Start a session at a configured terminal, or at none (a PC no
    supervisor registered: the counter stays closed there)."""
    return start(conn, username=username, role=role, terminal=terminal["id"] if terminal else "",
                 office=terminal["office"] if terminal else "", printer=terminal["printer"] if terminal else "", remote=remote,
                 device=terminal.get("device") if terminal else None)


def resume(conn, session_id: str, *, idle_minutes: int, absolute_hours: float,
           touch: bool = True) -> tuple[StaffSession | None, str | None]:
    """Return (session, None) for a live session, or (None, why) — why is
    "expired" when it just timed out, so the login page can say so.
    `touch=False` for a screen's own polling, which is not the staff
    member's activity: an unattended open screen still times out."""
    row = conn.execute(
        "SELECT s.id, s.username, s.role, s.terminal, s.office, s.printer, s.last_seen, s.ended_at, u.disabled, s.created_at, s.device "
        "FROM sessions s JOIN users u ON u.username = s.username WHERE s.id = ?",
        (session_id,),
    ).fetchone()
    if row is None or row[7] is not None:
        return None, None
    if row[8]:
        end(conn, session_id, "account disabled")
        return None, None
    last_seen = dt.datetime.fromisoformat(row[6])
    current = now()
    if current - dt.datetime.fromisoformat(row[9]) > dt.timedelta(hours=absolute_hours):
        end(conn, session_id, "absolute lifetime")
        return None, "expired"
    if current - last_seen > dt.timedelta(minutes=idle_minutes):
        end(conn, session_id, "idle timeout")
        return None, "expired"
    if touch and current - last_seen > TOUCH_EVERY:
        conn.execute("UPDATE sessions SET last_seen = ? WHERE id = ?", (current.isoformat(timespec="milliseconds"), session_id))
    return StaffSession(*row[:7], row[10]), None


def move_to_terminal(conn, session_id: str, terminal: dict) -> None:
    """The PC of an open session was just registered to `terminal`: the
    session works there from now on (its next certificates print it)."""
    with Transaction(conn):
        row = conn.execute("SELECT username FROM sessions WHERE id = ? AND ended_at IS NULL", (session_id,)).fetchone()
        if row is None:
            return
        conn.execute("UPDATE sessions SET terminal = ?, office = ?, printer = ?, device = ? WHERE id = ?",
                     (terminal["id"], terminal["office"], terminal["printer"], terminal.get("device"), session_id))
        audit.append(conn, row[0], "session.terminal", terminal["id"], {"office": terminal["office"], "printer": terminal["printer"]})


def end(conn, session_id: str, reason: str) -> None:
    with Transaction(conn):
        row = conn.execute("SELECT username, terminal FROM sessions WHERE id = ? AND ended_at IS NULL", (session_id,)).fetchone()
        if row is None:
            return
        conn.execute("UPDATE sessions SET ended_at = ?, end_reason = ? WHERE id = ?", (now_iso(), reason, session_id))
        audit.append(conn, row[0], "session.end", row[1], {"reason": reason})


def end_at_devices(conn, devices: list[str], reason: str, *, keep: str | None = None) -> int:
    """End every open session opened on the PCs `devices` (their terminal
    registrations, just withdrawn) but `keep`, inside the caller's
    transaction; returns how many."""
    open_sessions = [row for device in devices for row in conn.execute(
        "SELECT id, username, terminal FROM sessions WHERE device = ? AND ended_at IS NULL", (device,)) if row[0] != keep]
    stamp = now_iso()
    for session_id, username, terminal in open_sessions:
        conn.execute("UPDATE sessions SET ended_at = ?, end_reason = ? WHERE id = ?", (stamp, reason, session_id))
        audit.append(conn, username, "session.end", terminal, {"reason": reason})
    return len(open_sessions)


def end_all(conn, username: str, reason: str) -> int:
    """End every open session of an account, inside the caller's
    transaction (with the change that makes them invalid); returns how many."""
    open_sessions = conn.execute("SELECT id, terminal FROM sessions WHERE username = ? AND ended_at IS NULL", (username,)).fetchall()
    stamp = now_iso()
    for session_id, terminal in open_sessions:
        conn.execute("UPDATE sessions SET ended_at = ?, end_reason = ? WHERE id = ?", (stamp, reason, session_id))
        audit.append(conn, username, "session.end", terminal, {"reason": reason})
    return len(open_sessions)

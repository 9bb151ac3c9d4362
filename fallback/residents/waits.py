"""How long a resident arriving now can expect to spend at each office's
counters, estimated from Sonae's own records of the last half hour or so.

Sonae does not see the queue (the ticket machines that count it are cloud
systems too), so the estimate comes from what it does record:

- handling time: for each request, from the clerk's first search or record
  view after their previous request, to the moment its certificate was
  printed (the request time itself for a refusal);
- load: requests per minute at the office, and the number of counters
  (terminals) that served them.

Treating the office as c counters with random arrivals (the M/M/c queue,
Erlang's C formula) gives the expected wait before a counter is free; the
figure shown is that wait plus the handling time, rounded up to 5 minutes.
When the counters are busy back to back (utilisation at or above
SATURATION), the records cannot tell how long the queue has grown: the
estimate is then the model's wait at SATURATION, shown as "at least".

Only real records count (never a drill's), and only while in downtime: in
any other mode the counters are not issuing from Sonae and it knows nothing
about their queues. Fewer than [notice] wait_min_requests requests in the
window is "no estimate", said as such.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

from fallback import modes
from fallback.config import Config
from fallback.ops import now

SATURATION = 0.95
ROUND_TO_MINUTES = 5
# A search this long before a request belongs to an earlier, abandoned
# enquiry, not to the handling of this one.
MAX_HANDLING = dt.timedelta(minutes=30)


@dataclass(frozen=True)
class OfficeWait:
    office: str
    minutes: int | None  # None: no estimate
    at_least: bool  # counters saturated: the real wait is likely longer
    requests: int
    counters: int
    handling_minutes: float | None

    def public(self) -> dict:
        """What may leave the building: the office's name and minutes."""
        return {"office": self.office, "minutes": self.minutes, "at_least": self.at_least}


def offices(config: Config) -> list[str]:
    """The offices with counters, in configuration order."""
    seen: list[str] = []
    for terminal in config["counter"]["terminals"]:
        if terminal["office"] not in seen:
            seen.append(terminal["office"])
    return seen


def erlang_c_wait(counters: int, offered_load: float, handling: float) -> float:
    """Expected wait in the queue (same unit as `handling`) for an M/M/c
    queue with `counters` servers and offered load a = λ·handling < c."""
    if offered_load <= 0:
        return 0.0
    term, below = 1.0, 0.0
    for k in range(counters):
        below += term
        term *= offered_load / (k + 1)
    # term is now a^c / c!
    waiting = term * counters / (counters - offered_load)
    probability_wait = waiting / (below + waiting)
    return probability_wait * handling / (counters - offered_load)


def estimate_waits(conn, config: Config, *, at: dt.datetime | None = None) -> list[OfficeWait]:
    at = at or now()
    if modes.current(conn).mode != modes.DOWNTIME:
        return [OfficeWait(office, None, False, 0, 0, None) for office in offices(config)]
    policy = config["notice"]
    window = dt.timedelta(minutes=policy["wait_window_minutes"])
    return [_estimate(conn, office, at, window, policy["wait_min_requests"]) for office in offices(config)]


def _estimate(conn, office: str, at: dt.datetime, window: dt.timedelta, min_requests: int) -> OfficeWait:
    since = (at - window).isoformat(timespec="milliseconds")
    until = at.isoformat(timespec="milliseconds")
    rows = conn.execute(
        "SELECT id, created_at, clerk, terminal FROM requests WHERE scope = 'real' AND office = ? AND created_at >= ? "
        "AND created_at <= ? ORDER BY created_at",
        (office, since, until),
    ).fetchall()
    counters = len({terminal for _, _, _, terminal in rows})
    if len(rows) < max(min_requests, 1):
        return OfficeWait(office, None, False, len(rows), counters, None)
    handling = sum(_handling_minutes(conn, request_id, created_at, clerk) for request_id, created_at, clerk, _ in rows) / len(rows)
    offered_load = len(rows) / (window.total_seconds() / 60) * handling
    at_least = offered_load >= SATURATION * counters
    queue = erlang_c_wait(counters, min(offered_load, SATURATION * counters), handling)
    minutes = max(ROUND_TO_MINUTES, math.ceil((queue + handling) / ROUND_TO_MINUTES) * ROUND_TO_MINUTES)
    return OfficeWait(office, minutes, at_least, len(rows), counters, handling)


def _handling_minutes(conn, request_id: int, created_at: str, clerk: str) -> float:
    created = dt.datetime.fromisoformat(created_at)
    previous = conn.execute("SELECT max(created_at) FROM requests WHERE clerk = ? AND created_at < ?", (clerk, created_at)).fetchone()[0]
    floor = max(filter(None, (previous, (created - MAX_HANDLING).isoformat(timespec="milliseconds"))))
    started = conn.execute(
        "SELECT min(at) FROM audit WHERE actor = ? AND action IN ('search', 'view') AND drill = 0 AND at > ? AND at <= ?",
        (clerk, floor, created_at),
    ).fetchone()[0]
    printed = conn.execute("SELECT max(rendered_at) FROM certificates WHERE request_id = ?", (request_id,)).fetchone()[0]
    start = dt.datetime.fromisoformat(started) if started else created
    end = dt.datetime.fromisoformat(printed) if printed else created
    return max((end - start).total_seconds(), 0.0) / 60

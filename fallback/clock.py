"""Is this appliance's clock plausible? What it knows to compare it with.

Every certificate prints its 交付日 and a 発行番号 from this clock, the data
age is judged by it, and reconciliation places each issue in time with it.
In the fault campaign a clock two days behind printed 「令和8年12月3日」 on
certificates whose data was as of 12月5日, and nothing refused. So before
each issuance, in /readyz, in the alert cycle and in the banner the clock
is compared with:

- the data-as-of time of the snapshot: more than TOLERANCE ahead of the
  clock, either the clock is behind or the data is not what it claims
  (DECISIONS: one message naming both);
- the upstream's clock, read by every probe (its /v1/health `as_of` and its
  HTTP `Date`; both must disagree): the offset is stored with the kernel's
  boot time, so a clock moved after the last reading is noticed too, while
  the upstream is down (the upstream's time now ≈ its time then + the time
  since by the boot clock, which nobody sets);
- the newest certificate: issued more than TOLERANCE "after now", the clock
  went backwards (unless a reading in this boot shows the clock right now:
  then it was the earlier clock that was ahead);
- NTP, where the OS reports it (`timedatectl`): reported, never a reason to
  refuse on its own — an outage may cut the box off its NTP server too.

TOLERANCE is the contract's own: an as_of more than 5 minutes ahead is refused.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from fallback import ops
from fallback.ops import Transaction

TOLERANCE = dt.timedelta(minutes=5)
READINGS_KEPT = dt.timedelta(days=60)  # reconciliation looks back to the outage's certificates
NTP_CACHE_S = 60.0
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")

AS_OF, DATE = "as_of", "date"


@dataclass(frozen=True)
class Reading:
    """The upstream's clock as one answer showed it."""

    at: dt.datetime  # this clock when the answer came
    offset: dt.timedelta  # the upstream's time minus this clock's
    source: str  # AS_OF (/v1/health's as_of) or DATE (the HTTP Date header)
    boot_id: str
    boottime_s: float  # CLOCK_BOOTTIME when the answer came


@dataclass(frozen=True)
class Doubt:
    key: str  # "data_as_of", "upstream", "last_certificate"
    detail: str  # Japanese: what disagrees with the clock, by how much


_boot_id: str | None = None


def boot_id() -> str:
    """This boot's id, read once per process (a process lives within one
    boot, and every page's banner asks); "" while it cannot be read."""
    global _boot_id
    if _boot_id is None:
        try:
            _boot_id = BOOT_ID.read_text(encoding="ascii").strip()
        except OSError:
            return ""
    return _boot_id


def boottime() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def record_reading(conn, upstream_at: dt.datetime, source: str, at: dt.datetime) -> Reading:
    """Keep what one upstream answer said the time was (`at`: this clock when
    it came). Old readings are pruned."""
    reading = Reading(at, upstream_at - at, source, boot_id(), boottime())
    with Transaction(conn):
        conn.execute(
            "INSERT INTO clock_readings (at, offset_s, source, boot_id, boottime_s) VALUES (?, ?, ?, ?, ?)",
            (at.isoformat(timespec="milliseconds"), reading.offset.total_seconds(), source, reading.boot_id, reading.boottime_s),
        )
        conn.execute("DELETE FROM clock_readings WHERE at < ?", ((at - READINGS_KEPT).isoformat(timespec="milliseconds"),))
    return reading


def _readings(conn, where: str, params: tuple = ()) -> list[Reading]:
    rows = conn.execute(f"SELECT at, offset_s, source, boot_id, boottime_s FROM clock_readings {where}", params).fetchall()
    return [Reading(dt.datetime.fromisoformat(at), dt.timedelta(seconds=offset), source, boot, boottime_s)
            for at, offset, source, boot, boottime_s in rows]


def offset_now(conn, at: dt.datetime) -> tuple[dt.timedelta, Reading] | None:
    """The upstream's time minus this clock's at `at`, projected from the
    newest reading of each source taken in this boot by the boot clock;
    None without such a reading. Of the two sources the one closer to this
    clock counts: the clock is doubted only when both disagree with it (a
    vendor whose health `as_of` is its data's time, or a proxy's `Date`,
    must not stop the counters on its own)."""
    this_boot = boot_id()
    newest = [r for source in (AS_OF, DATE) for r in _readings(conn, "WHERE source = ? ORDER BY id DESC LIMIT 1", (source,))
              if r.boot_id == this_boot]  # the sources alternate: each query reads a row or two from the end
    if not newest:
        return None
    now_boot = boottime()
    projected = [(r.offset + dt.timedelta(seconds=now_boot - r.boottime_s) - (at - r.at), r) for r in newest]
    return min(projected, key=lambda pair: abs(pair[0]))


def offset_around(conn, moment: dt.datetime) -> dt.timedelta:
    """How far behind this clock may have been at `moment` (one of its own
    times), for reconciliation: the largest offset of the last reading at or
    before it and the first one after, never less than zero. The clock that
    stamped an issue is only known from readings on either side of it."""
    stamp = moment.isoformat(timespec="milliseconds")
    around = (_readings(conn, "WHERE at <= ? ORDER BY at DESC LIMIT 2", (stamp,))
              + _readings(conn, "WHERE at > ? ORDER BY at LIMIT 2", (stamp,)))
    return max([dt.timedelta(0), *(r.offset for r in around)])


def _hours(delta: dt.timedelta) -> str:
    minutes = round(abs(delta).total_seconds() / 60)
    if minutes < 120:
        return f"{minutes}分"
    hours = minutes // 60
    return f"{hours}時間" if hours < 24 else f"{hours // 24}日{hours % 24}時間"


def _jst(moment: dt.datetime) -> str:
    return moment.astimezone(ops.TOKYO).strftime("%Y-%m-%d %H:%M")


def doubts(conn, *, data_as_of: dt.datetime | None, at: dt.datetime | None = None) -> list[Doubt]:
    """What disagrees with this clock now (empty: nothing does)."""
    at = at or ops.now()
    found = []
    if data_as_of is not None and data_as_of - at > TOLERANCE:
        found.append(Doubt("data_as_of", (
            f"住民記録の写しのデータ時点（{_jst(data_as_of)}）が、この装置の時計（{_jst(at)}）より{_hours(data_as_of - at)}先です。"
            "装置の時計が遅れているか、写しのデータが表示どおりの時点のものではありません")))
    projected = offset_now(conn, at)
    if projected is not None and abs(projected[0]) > TOLERANCE:
        offset, reading = projected
        way = "遅れて" if offset > dt.timedelta(0) else "進んで"
        source = "応答の時刻（as_of）" if reading.source == AS_OF else "応答の日時（Date）"
        found.append(Doubt("upstream", f"上流の{source}と比べて、この装置の時計が{_hours(offset)}{way}います"))
    newest = conn.execute("SELECT issued_at FROM certificates ORDER BY rowid DESC LIMIT 1").fetchone()
    if newest is not None:
        issued = dt.datetime.fromisoformat(newest[0])
        confirmed_now = projected is not None and abs(projected[0]) <= TOLERANCE
        if issued - at > TOLERANCE and not confirmed_now:
            found.append(Doubt("last_certificate", (
                f"最後に交付した証明書の交付時刻（{_jst(issued)}）が、この装置の時計（{_jst(at)}）より{_hours(issued - at)}後です。"
                "時計が戻されたおそれがあります")))
    return found


def refusal_message(found: list[Doubt]) -> str:
    """The clerk's message when issuance refuses: what disagrees, and what to check."""
    return (
        "この装置の時計が正しくないおそれがあるため、証明書は交付されていません（" + "。".join(d.detail for d in found) + "）。"
        "交付日と発行番号がこの時計で印字されるためです。情報政策課に、装置の時計（timedatectl で時刻とNTPの同期）を"
        "確かめてもらってください。直るまでは後日交付として受け付けてください。"
    )


def warning_message(found: list[Doubt]) -> str:
    """The banner's and the alert's words."""
    return "この装置の時計が正しくないおそれがあります: " + "。".join(d.detail for d in found) + "。"


_ntp_cache: dict[str, tuple[float, str | None, str]] = {}


def ntp_status(timedatectl: str = "timedatectl") -> tuple[str | None, str]:
    """("yes" | "no", "") as the OS reports NTP synchronisation, or (None,
    why it cannot tell: no timedatectl, no systemd in a container). Asked at
    most once a minute per process."""
    held = _ntp_cache.get(timedatectl)
    if held and time.monotonic() - held[0] < NTP_CACHE_S:
        return held[1], held[2]
    try:
        asked = subprocess.run([timedatectl, "show", "-p", "NTPSynchronized", "--value"], capture_output=True, text=True, timeout=10)
    except (FileNotFoundError, PermissionError, subprocess.TimeoutExpired) as exc:
        asked, why = None, "timedatectl is not installed" if isinstance(exc, FileNotFoundError) else str(exc)
    else:
        why = "" if asked.returncode == 0 else ((asked.stderr.strip().splitlines() or ["no answer"])[-1])
    answer = asked.stdout.strip() if asked is not None and asked.returncode == 0 else ""
    status = answer if answer in ("yes", "no") else None
    if status is None and not why:
        why = f"timedatectl answered {answer!r}"
    _ntp_cache[timedatectl] = (time.monotonic(), status, why)
    return status, why

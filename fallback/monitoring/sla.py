"""The upstream's availability, measured by the appliance independently of
the vendor, against the contract's threshold.

Each probe result stands for the time until the next probe — but for at
most MAX_SAMPLE_SPAN_INTERVALS probe intervals. Beyond that the appliance
itself was not probing (switched off, worker stopped), and that time is
*unknown*, never counted as up. Because unknown time could have been either,
the verdict is a range:

- lower bound  = up / period            (all unknown time was down)
- upper bound  = (up + unknown) / period (all unknown time was up)
- measured     = up / (up + down)        (only the time actually observed)

The contract is met when even the lower bound reaches the threshold, missed
when even the upper bound falls short, and otherwise cannot be decided from
the measurements — the report says so rather than guessing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from fallback.config import Config
from fallback.monitoring.probes import COMPONENT_LABELS, COMPONENTS
from fallback.ops import TOKYO

UP, DOWN, UNKNOWN = "up", "down", "unknown"
MET, MISSED, UNDETERMINED = "met", "missed", "undetermined"
VERDICT_LABELS = {MET: "達成", MISSED: "未達", UNDETERMINED: "判定できません（不明な時間があるため）"}
# A probe result covers the time to the next probe, up to this many intervals;
# one or two late or lost probes are not a gap, a longer silence is.
MAX_SAMPLE_SPAN_INTERVALS = 3


@dataclass(frozen=True)
class Interval:
    start: dt.datetime
    end: dt.datetime
    state: str

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()


@dataclass(frozen=True)
class Availability:
    component: str
    start: dt.datetime
    end: dt.datetime
    intervals: tuple[Interval, ...]  # consecutive, covering [start, end), merged by state

    @property
    def label(self) -> str:
        return COMPONENT_LABELS[self.component]

    def _seconds(self, state: str) -> float:
        return sum(i.seconds for i in self.intervals if i.state == state)

    @property
    def up_s(self) -> float:
        return self._seconds(UP)

    @property
    def down_s(self) -> float:
        return self._seconds(DOWN)

    @property
    def unknown_s(self) -> float:
        return self._seconds(UNKNOWN)

    @property
    def period_s(self) -> float:
        return (self.end - self.start).total_seconds()

    @property
    def measured_percent(self) -> float | None:
        observed = self.up_s + self.down_s
        return 100.0 * self.up_s / observed if observed else None

    @property
    def lower_percent(self) -> float | None:
        return 100.0 * self.up_s / self.period_s if self.period_s else None

    @property
    def upper_percent(self) -> float | None:
        return 100.0 * (self.up_s + self.unknown_s) / self.period_s if self.period_s else None

    def verdict(self, threshold_percent: float) -> str:
        if self.period_s <= 0:
            return UNDETERMINED
        if self.lower_percent >= threshold_percent:
            return MET
        if self.upper_percent < threshold_percent:
            return MISSED
        return UNDETERMINED

    @property
    def downtime(self) -> list[Interval]:
        return [i for i in self.intervals if i.state == DOWN]

    @property
    def gaps(self) -> list[Interval]:
        return [i for i in self.intervals if i.state == UNKNOWN]


def availability(component: str, samples: Sequence[tuple[dt.datetime, bool]], start: dt.datetime, end: dt.datetime,
                 max_span: dt.timedelta) -> Availability:
    """Classify [start, end) as up, down or unknown from time-ordered probe
    samples (a sample shortly before `start` may be included: it covers the
    period's first moments)."""
    pieces: list[Interval] = []

    def add(a: dt.datetime, b: dt.datetime, state: str) -> None:
        if b <= a:
            return
        if pieces and pieces[-1].state == state and pieces[-1].end == a:
            pieces[-1] = Interval(pieces[-1].start, b, state)
        else:
            pieces.append(Interval(a, b, state))

    cursor = start
    for index, (moment, ok) in enumerate(samples):
        following = samples[index + 1][0] if index + 1 < len(samples) else None
        cover_end = min(moment + max_span, following or moment + max_span, end)
        cover_start = max(moment, start)
        if cover_end <= cover_start:
            continue
        add(cursor, cover_start, UNKNOWN)
        add(max(cover_start, cursor), cover_end, UP if ok else DOWN)
        cursor = max(cursor, cover_end)
    add(cursor, end, UNKNOWN)
    return Availability(component, start, end, tuple(pieces))


def max_sample_span(config: Config) -> dt.timedelta:
    return dt.timedelta(seconds=config["probes"]["interval_s"] * MAX_SAMPLE_SPAN_INTERVALS)


def component_availability(conn, config: Config, component: str, start: dt.datetime, end: dt.datetime) -> Availability:
    span = max_sample_span(config)
    rows = conn.execute(
        "SELECT at, ok FROM probes WHERE component = ? AND at >= ? AND at < ? ORDER BY at",
        (component, (start - span).isoformat(timespec="milliseconds"), end.isoformat(timespec="milliseconds")),
    ).fetchall()
    samples = [(dt.datetime.fromisoformat(at), bool(ok)) for at, ok in rows]
    return availability(component, samples, start, end, span)


def month_bounds(year: int, month: int) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime(year, month, 1, tzinfo=TOKYO)
    end = dt.datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=TOKYO)
    return start, end


@dataclass(frozen=True)
class SlaReport:
    year: int
    month: int
    start: dt.datetime
    end: dt.datetime  # the month's end, or the report time for the current month
    complete: bool  # False while the month is still running
    threshold_percent: float
    components: tuple[Availability, ...]
    generated_at: dt.datetime

    def verdict(self, availability_row: Availability) -> str:
        return availability_row.verdict(self.threshold_percent)


def monthly_report(conn, config: Config, year: int, month: int, at: dt.datetime) -> SlaReport:
    """The month's availability per component, up to `at` if the month is
    not over (a month that has not started is an error)."""
    start, month_end = month_bounds(year, month)
    if start > at:
        raise ValueError(f"{year}年{month}月はまだ始まっていません。")
    end = min(month_end, at)
    rows = tuple(component_availability(conn, config, c, start, end) for c in COMPONENTS)
    return SlaReport(year, month, start, end, end == month_end, config["sla"]["threshold_percent"], rows, at)


def day_availability(conn, config: Config, day: dt.date) -> tuple[Availability, ...]:
    start = dt.datetime.combine(day, dt.time(), tzinfo=TOKYO)
    return tuple(component_availability(conn, config, c, start, start + dt.timedelta(days=1)) for c in COMPONENTS)

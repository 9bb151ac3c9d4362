"""Fault switches for tests and drills, settable while the simulator runs.

A switch is on until cleared, or for a given number of seconds. Switching one
on or off notifies a listener, which is how `down` closes and reopens the
listening socket and how `halved_export` publishes its short export.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

FAULTS = {
    "down": "the whole service is down: connections to the contract port are refused",
    "slow": "every contract request waits `seconds` (default 5) before it is answered",
    "error5xx": "every contract request answers 503; health reports the register down",
    "juki_net_down": "health reports the 住基ネット link down (status degraded); everything else works",
    "batch_stuck": "health reports the overnight batch as still running",
    "truncated_file": "export files are served cut short (and shorter than the manifest says)",
    "bytes_mismatch": "export files are served with one byte changed (sha256 differs from the manifest)",
    "bad_signature": "the manifest, change pages and resident look-ups are served with signatures that do not verify",
    "feed_gap": "the change feed leaves out one seq from every page",
    "halved_export": "a new export with about half the residents is published (correctly signed) and served",
}
DEFAULT_SLOW_SECONDS = 5.0


class UnknownFault(KeyError):
    def __str__(self) -> str:
        return f"unknown fault {self.args[0]!r}; known: {', '.join(FAULTS)}"


@dataclass(frozen=True)
class Fault:
    name: str
    seconds: float | None  # the delay of `slow`
    until: float | None  # time.time() when it switches itself off; None: until cleared

    def as_json(self) -> dict:
        return {"name": self.name, "seconds": self.seconds, "until": self.until, "description": FAULTS[self.name]}


class FaultSwitches:
    def __init__(self, on_change: Callable[[str, bool], None] = lambda name, active: None):
        self._on_change = on_change
        self._active: dict[str, Fault] = {}
        self._timers: dict[str, threading.Timer] = {}
        self._lock = threading.Lock()

    def set(self, name: str, seconds: float | None = None, duration: float | None = None) -> Fault:
        if name not in FAULTS:
            raise UnknownFault(name)
        if name == "slow" and seconds is None:
            seconds = DEFAULT_SLOW_SECONDS
        fault = Fault(name, seconds, time.time() + duration if duration else None)
        with self._lock:
            was_active = name in self._active
            self._active[name] = fault
            self._cancel_timer(name)
            if duration:
                timer = threading.Timer(duration, self.clear, args=(name,))
                timer.daemon = True
                self._timers[name] = timer
                timer.start()
        if not was_active:
            self._on_change(name, True)
        return fault

    def clear(self, name: str | None = None) -> list[str]:
        """Switch off one fault, or all of them; returns those switched off."""
        if name is not None and name not in FAULTS:
            raise UnknownFault(name)
        with self._lock:
            names = [name] if name is not None else list(self._active)
            cleared = [n for n in names if self._active.pop(n, None) is not None]
            for n in names:
                self._cancel_timer(n)
        for n in cleared:
            self._on_change(n, False)
        return cleared

    def active(self, name: str) -> Fault | None:
        return self._active.get(name)

    def as_json(self) -> dict:
        return {"active": {name: fault.as_json() for name, fault in sorted(self._active.items())}, "known": FAULTS}

    def _cancel_timer(self, name: str) -> None:
        timer = self._timers.pop(name, None)
        if timer is not None:
            timer.cancel()

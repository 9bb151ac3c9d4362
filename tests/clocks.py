"""The appliance's clock, moved for a test. fallback.ops.now is the
appliance's clock; modules that took it by name (`from fallback.ops import
now`) get the moved one too, so a test moves every reader of the clock at
once — and only the appliance's: the upstream's clock stays right."""

from __future__ import annotations

import datetime as dt
import sys

import pytest


def set_clock_off(monkeypatch: pytest.MonkeyPatch, delta: dt.timedelta) -> None:
    """From now on the appliance's clock reads `delta` from the true time
    (negative: behind). Undone with the test's monkeypatch."""
    from fallback import ops

    current = ops.now  # read once: fallback.ops itself is among the modules moved below
    true_now = getattr(current, "true_now", current)

    def moved() -> dt.datetime:
        return true_now() + delta

    moved.true_now = true_now
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] == "fallback" and getattr(module, "now", None) in (current, true_now):
            monkeypatch.setattr(module, "now", moved)

"""What `sonae serve` and `sonae worker` write to their log: the
appliance's own lines stamped in Japan time, and not the scheduler's or
the font subsetter's routine chatter, which buried them (≈ 29,000 lines a
day from apscheduler alone)."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.deploy.conftest import ROOT


def service_log(*lines: tuple[str, str, str]) -> list[str]:
    """stderr of a process that set up the services' logging, then logged
    (logger, level, message) each."""
    code = "import logging; from fallback.cli_support import configure_logging; configure_logging()\n" + "".join(
        f"logging.getLogger({name!r}).log(logging.{level}, {message!r})\n" for name, level, message in lines)
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stderr.splitlines()


def test_routine_scheduler_and_subsetter_lines_are_left_out():
    assert service_log(("apscheduler.executors.default", "INFO", 'Running job "probe_upstream"'),
                       ("fontTools.subset", "INFO", "Glyph names: ['uni4E00']")) == []


def test_their_warnings_and_the_appliances_own_lines_are_kept_in_japan_time():
    lines = service_log(("apscheduler.scheduler", "WARNING", "Run time of job was missed by 0:00:31"),
                        ("fallback.mirror", "INFO", "generation 2 is current"))
    assert len(lines) == 2
    assert all(re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+09:00 ", line) for line in lines), lines
    assert lines[0].endswith("WARNING apscheduler.scheduler: Run time of job was missed by 0:00:31")
    assert lines[1].endswith("INFO fallback.mirror: generation 2 is current")

"""`sonae demo outage` stopped by SIGTERM (`kill`, a container stopping)
says so in one line and leaves none of its servers behind: a day that ends
early must never read like a silent crash."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

from tests.demo.test_ports import free_pair


def test_sigterm_stops_the_outage_day_saying_why_and_its_servers_with_it(tmp_path):
    web, upstream = free_pair(), free_pair()
    day = subprocess.Popen([sys.executable, "-m", "fallback.cli", "demo", "outage", "--dir", str(tmp_path / "day"),
                            "--residents", "300", "--port", str(web), "--upstream-port", str(upstream)],
                           stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        said = ""
        deadline = time.monotonic() + 120
        while "loading the full export" not in said:  # cloudsim is serving
            assert time.monotonic() < deadline and day.poll() is None, said
            said += day.stderr.readline()
        day.send_signal(signal.SIGTERM)
        assert day.wait(60) == 1
    finally:
        if day.poll() is None:
            os.killpg(day.pid, signal.SIGKILL)
    said += day.stderr.read()
    assert said.strip().endswith("the outage day was stopped by SIGTERM; its servers are stopped too")
    assert "Traceback" not in said
    # cloudsim (its contract and admin ports) and the appliance answer no more
    for port in (upstream, upstream + 1, web):
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still answers"

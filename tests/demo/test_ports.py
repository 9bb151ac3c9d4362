"""The demo refuses a port another program listens on, and only that: a
connection an earlier run left in TIME_WAIT (`make demo` plays the outage
day on the same ports just before) does not stop it."""

from __future__ import annotations

import socket

import click
import pytest

from fallback.demo.outage_day import free_ports
from fallback.demo.site import DemoSite


def site_on(port: int, tmp_path) -> DemoSite:
    return DemoSite(tmp_path, residents=100, seed=1, web_port=port, upstream_port=free_pair())


def free_pair() -> int:
    """A port whose next one is free too (cloudsim and its admin port), below
    the ephemeral range (fallback.demo.outage_day)."""
    return free_ports(1, width=2)[0]


def test_a_port_another_program_listens_on_is_refused_in_one_line(tmp_path):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(click.ClickException) as refused:
            site_on(port, tmp_path).check_ports()
    assert refused.value.message.startswith(f"port {port} (the counter app, --port) is already in use by another program")


def test_a_connection_left_in_time_wait_is_no_program(tmp_path):
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        served, _ = listener.accept()
        served.close()  # the server's side closes first: it is the one left in TIME_WAIT
        client.close()
    site_on(port, tmp_path).check_ports()  # no refusal

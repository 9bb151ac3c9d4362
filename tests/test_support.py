"""The suite's own helpers (tests/support.py)."""

from __future__ import annotations

import threading

import pytest
import requests
from flask import Flask

from tests.support import served


def app() -> Flask:
    application = Flask(__name__)
    application.add_url_rule("/", "index", lambda: "ok")
    return application


def test_a_served_app_answers_and_its_loop_stops_with_the_block():
    with served(app()) as server:
        assert requests.get(f"http://127.0.0.1:{server.effective_port}/", timeout=5).text == "ok"
        loop = next(t for t in threading.enumerate() if getattr(t, "_target", None) == server.run)
    assert not loop.is_alive() and not server._map
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{server.effective_port}/", timeout=5)


def test_a_server_whose_trigger_is_already_closed_still_stops():
    with pytest.warns(UserWarning, match="trigger was closed before the server was stopped"), served(app()) as server:
        assert requests.get(f"http://127.0.0.1:{server.effective_port}/", timeout=5).text == "ok"
        loop = next(t for t in threading.enumerate() if getattr(t, "_target", None) == server.run)
        server.trigger.close()
    assert not loop.is_alive() and not server._map
    with pytest.raises(requests.ConnectionError):  # its port closed once the loop had ended
        requests.get(f"http://127.0.0.1:{server.effective_port}/", timeout=5)

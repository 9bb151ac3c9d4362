"""The residents' side of an outage, tested on real parts: a real
operational database, the example register loaded through the real sync,
the Flask app over its test client, PDFs read back with pdftotext."""

from __future__ import annotations

import datetime as dt

import pytest

from fallback.ops import TOKYO, open_ops


@pytest.fixture
def ops(sonae_env):
    conn = open_ops(sonae_env)
    yield conn
    conn.close()


def jst(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=TOKYO)

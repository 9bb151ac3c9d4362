"""Fixtures shared by every area's tests."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
EXAMPLE_EXPORT = FIXTURES / "example-export"
EXAMPLE_PUBLIC_KEY = (FIXTURES / "example-export-public-key.txt").read_text().strip()


def write_key(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def sonae_env(tmp_path, monkeypatch):
    """A configured appliance home with keys outside it, as on a real box:
    returns the loaded Config."""
    from fallback.config import load_config

    home = tmp_path / "home"
    etc = tmp_path / "etc"
    home.mkdir()
    monkeypatch.setenv("SONAE_HOME", str(home))
    monkeypatch.setenv("SONAE_CONFIG", str(etc / "sonae.toml"))
    monkeypatch.setenv("SONAE_SECURITY_KEY_FILE", str(write_key(etc / "master.key")))
    monkeypatch.setenv("SONAE_SECURITY_SIGNING_KEY_FILE", str(write_key(etc / "signing.key")))
    monkeypatch.setenv("SONAE_SECURITY_SECRET_KEY_FILE", str(etc / "session.key"))
    monkeypatch.setenv("SONAE_UPSTREAM_PUBLIC_KEY", EXAMPLE_PUBLIC_KEY)
    return load_config()

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


# --- signed exports for tests ------------------------------------------------
# The example export's private key is 32 zero bytes (a published test key), so
# tests can re-sign exports built from its records, e.g. with a fresh as_of.

def example_records(kind: str) -> list[dict]:
    import gzip
    import json

    with gzip.open(EXAMPLE_EXPORT / f"{kind}.ndjson.gz", "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def write_export(directory: Path, residents: list[dict], seals: list[dict], *, as_of: str | None = None,
                 last_seq: int = 1000, municipality_code: str = "131113", export_id: str | None = None) -> Path:
    """Write a signed export (manifest + gzip NDJSON) the way upstream does."""
    import datetime as dt
    import gzip
    import hashlib
    import json

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from sync.contract import sign_manifest

    directory.mkdir(parents=True, exist_ok=True)
    as_of = as_of or dt.datetime.now(dt.timezone(dt.timedelta(hours=9))).isoformat(timespec="seconds")
    files = []
    for kind, records in (("residents", residents), ("seals", seals)):
        path = directory / f"{kind}.ndjson.gz"
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        data = path.read_bytes()
        files.append({"name": path.name, "kind": kind, "records": len(records), "bytes": len(data),
                      "sha256": hashlib.sha256(data).hexdigest()})
    manifest = {
        "contract": 1, "export_id": export_id or f"{as_of}-test", "as_of": as_of, "last_seq": last_seq,
        "municipality": {"code": municipality_code, "prefecture": "東京都", "name": "大田区"}, "files": files,
    }
    signed = sign_manifest(manifest, Ed25519PrivateKey.from_private_bytes(bytes(32)))
    (directory / "manifest.json").write_text(json.dumps(signed, ensure_ascii=False, indent=2), encoding="utf-8")
    return directory


@pytest.fixture
def fresh_example_export(tmp_path) -> Path:
    """The example register, re-signed with a data-as-of of now."""
    return write_export(tmp_path / "export", example_records("residents"), example_records("seals"))

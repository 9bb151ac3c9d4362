"""Fixtures for the printing tests: example records, a fixed signing key,
a font cache, a Certificate builder with the fixed issue stamp, and a
private CUPS scheduler."""

from __future__ import annotations

import copy
import gzip
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from printing.model import SPECIMEN_SEAL_IMAGE, Certificate, IssueStamp, PrintSettings
from tests.printing.cups_server import cups_server  # noqa: F401  (fixture)
from tests.printing.support import make_stamp

EXAMPLE_EXPORT = Path(__file__).resolve().parents[1] / "fixtures" / "example-export"


def _records(kind: str) -> list[dict]:
    with gzip.open(EXAMPLE_EXPORT / f"{kind}.ndjson.gz", "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


@pytest.fixture(scope="session")
def _residents() -> dict[str, dict]:
    return {record["resident_code"]: record for record in _records("residents")}


@pytest.fixture
def residents(_residents) -> dict[str, dict]:
    """Example RESIDENT records by resident code (a fresh copy per test, so
    a test may edit one)."""
    return copy.deepcopy(_residents)


@pytest.fixture(scope="session")
def seals() -> dict[str, dict]:
    return {record["resident_code"]: record for record in _records("seals")}


@pytest.fixture(scope="session")
def signing_key() -> Ed25519PrivateKey:
    # Fixed, so that golden pages (which show the QR code) are reproducible.
    return Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


@pytest.fixture(scope="session")
def font_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("font-cache")


@pytest.fixture(scope="session")
def settings(font_cache) -> PrintSettings:
    """The printing defaults with the synthetic 見本 電子公印 (a real
    certificate is never printed without a 電子公印)."""
    return PrintSettings(official_seal_image=SPECIMEN_SEAL_IMAGE, font_cache_dir=font_cache)


@pytest.fixture
def certificate(settings):
    """Build a Certificate with the fixed stamp: certificate(kind, residents, **fields)."""

    def build(kind: str, people: list[dict], *, stamp: IssueStamp | None = None, **fields) -> Certificate:
        return Certificate(kind=kind, residents=people, stamp=stamp or make_stamp(), settings=fields.pop("settings", settings), **fields)

    return build



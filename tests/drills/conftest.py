"""Drill, runbook, recovery and incident tests run against the same real
appliance as the counter tests (example register, one account per role)."""

from __future__ import annotations

import subprocess

from tests.fallback.conftest import PASSWORD, Staff, appliance, downtime, login, text_of  # noqa: F401  (fixtures)


def pdf_text(pdf: bytes, tmp_path, name: str = "doc.pdf") -> str:
    path = tmp_path / name
    path.write_bytes(pdf)
    return subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True, check=True).stdout

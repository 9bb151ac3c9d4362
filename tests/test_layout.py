"""The project's shape: package boundaries as the design fixes them, and an
appliance image whose COPY sources exist (no Docker engine runs in CI)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("fallback", "sync", "printing", "cloudsim")

# package -> the project modules it may import (by top-level name, or exact module)
ALLOWED = {
    "sync": set(),
    "printing": set(),
    "fallback": {"sync", "printing"},
    "cloudsim": {"sync.contract"},
}


def project_imports(package: str) -> set[str]:
    found = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                if name.split(".")[0] in PACKAGES and name.split(".")[0] != package:
                    found.add(name)
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_package_imports_only_what_the_design_allows(package):
    allowed = ALLOWED[package]
    wrong = {name for name in project_imports(package) if name not in allowed and name.split(".")[0] not in allowed}
    assert not wrong, f"{package} must not import {sorted(wrong)}"


def test_nothing_imports_cloudsim():
    for package in ("fallback", "sync", "printing"):
        assert not {n for n in project_imports(package) if n.startswith("cloudsim")}


def test_dockerfile_copies_what_exists():
    dockerfile = (ROOT / "Dockerfile").read_text()
    sources = []
    for line in dockerfile.splitlines():
        match = re.match(r"^COPY\s+(?!--from)(.+)\s+\S+$", line.strip())
        if match:
            sources += match.group(1).split()
    assert sources, "the Dockerfile copies nothing"
    missing = [s for s in sources if not (ROOT / s).exists()]
    assert not missing, f"COPY sources missing: {missing}"
    assert re.search(r"^USER\s+(?!root)\S+", dockerfile, re.M), "the image must run as a non-root user"
    assert 'VOLUME ["/var/lib/sonae"]' in dockerfile
    assert re.search(r'^CMD \["sonae", "serve"', dockerfile, re.M)


def test_readme_has_exactly_two_setup_commands():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Two commands", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    commands = [line for line in block.splitlines() if line.strip() and not line.strip().startswith("#")]
    assert [c.split("#")[0].strip() for c in commands] == ["make demo", "make test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci

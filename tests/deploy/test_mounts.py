"""The one probe for "can this process mount a tmpfs": the small-disk tests
skip with the mount's own words where it cannot, and run where it can."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.conftest import as_uid
from tests.mounts import tmpfs_refusal

ROOT = Path(__file__).resolve().parents[2]
DISK_FULL_TESTS = "tests/sync/test_disk_full.py"


def pytest_in(*prefix: str) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", DISK_FULL_TESTS],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_a_process_that_may_not_mount_skips_saying_what_mount_said():
    # A user namespace makes this process root inside but without the right
    # to mount: what a container without CAP_SYS_ADMIN is.
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "true"], capture_output=True, text=True)
    if probe.returncode:
        pytest.skip(f"unshare cannot make a user namespace here: {probe.stderr.strip()}")
    run = pytest_in("unshare", "--user", "--map-root-user")
    assert "3 skipped" in run.stdout, run.stdout + run.stderr
    reasons = [line for line in run.stdout.splitlines() if line.startswith("SKIPPED")]
    assert len(reasons) == 3
    assert all("cannot mount a tmpfs: mount refused a tmpfs here" in r and "permission denied" in r for r in reasons), reasons


def test_a_process_that_is_not_root_is_told_so():
    said = subprocess.run([*as_uid(65534), sys.executable, "-c",
                           "from tests.mounts import tmpfs_refusal; print(tmpfs_refusal())"],
                          cwd=ROOT, capture_output=True, text=True, check=True)
    assert said.stdout.strip() == "mounting a tmpfs needs root; this process runs as uid 65534"


def test_where_a_tmpfs_mounts_the_disk_full_faults_run():
    if reason := tmpfs_refusal():
        pytest.skip(f"cannot mount a tmpfs: {reason}")
    run = pytest_in()
    assert "3 passed" in run.stdout and "skipped" not in run.stdout, run.stdout + run.stderr

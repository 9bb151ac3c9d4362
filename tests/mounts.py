"""Can this process mount a tmpfs? The small-disk tests need one, and root
may not mount in a container or on many CI runners. One probe for every
such test: it says why it skipped, in the mount's own words, and where
mounting works the tests run."""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@functools.cache
def tmpfs_refusal() -> str | None:
    """None when a tmpfs can be mounted here, else why not."""
    if os.geteuid() != 0:
        return f"mounting a tmpfs needs root; this process runs as uid {os.geteuid()}"
    with tempfile.TemporaryDirectory(prefix="sonae-tmpfs-probe-") as directory:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", directory], capture_output=True, text=True)
        if mounted.returncode:
            said = " ".join((mounted.stderr or mounted.stdout).split())
            return f"mount refused a tmpfs here (a container without CAP_SYS_ADMIN?): {said}"
        subprocess.run(["umount", directory], check=True)
    return None


def require_tmpfs() -> None:
    """Skip the calling test, saying why, unless a tmpfs can be mounted."""
    if reason := tmpfs_refusal():
        pytest.skip(f"cannot mount a tmpfs: {reason}")


@contextlib.contextmanager
def mounted_tmpfs(mount_point: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted at `mount_point` (made here) with mount's `options`,
    unmounted after: call require_tmpfs() first."""
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount_point)], check=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)

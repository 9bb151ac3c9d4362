"""Fixtures for the deployment tests: a box laid out as a ward installs it
(keys in etc/, state in home/) in a folder an unprivileged uid can reach,
and a way to run `sonae` as that uid, as the services run."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import EXAMPLE_PUBLIC_KEY, write_key

ROOT = Path(__file__).resolve().parents[2]
APPLIANCE_UID = 65534  # nobody: a uid that owns nothing of the test's


def as_uid(uid: int) -> list[str]:
    """The command prefix that runs a program as `uid`, with no groups."""
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]


@pytest.fixture(scope="session", autouse=True)
def checkout_reachable_by_other_uids():
    """These tests run Python from this checkout's venv as another uid. A
    clone in a folder only root may enter — root's home, mode 0700, where
    a fresh machine's clone usually lies — would give that uid 'permission
    denied' on Python itself: for the session every uid may pass through
    (search, not list) the folders above the checkout and the interpreter,
    then their modes are put back. `make test` runs several pytest
    processes at once: the first to arrive opens the folders, the last to
    leave puts them back (a state file beside the checkout names the
    processes in between; one that died no longer counts)."""
    if os.geteuid() != 0:
        yield
        return
    with _reachable_state() as state:
        if not state["users"]:
            if not state["opened"]:  # else a process died before putting them back: its list still holds their modes
                above = {folder for path in (ROOT, Path(sys.prefix), Path(sys.executable).resolve(), Path(sys.base_prefix).resolve())
                         for folder in path.parents}
                state["opened"] = [(str(folder), folder.stat().st_mode) for folder in sorted(above)
                                   if not folder.stat().st_mode & stat.S_IXOTH]
            for folder, mode in state["opened"]:
                Path(folder).chmod(stat.S_IMODE(mode) | stat.S_IXOTH)
        state["users"].append(os.getpid())
    try:
        yield
    finally:
        with _reachable_state() as state:
            state["users"].remove(os.getpid())
            if not state["users"]:
                for folder, mode in state["opened"]:
                    Path(folder).chmod(stat.S_IMODE(mode))
                state["opened"] = []


@contextmanager
def _reachable_state():
    """The shared state of checkout_reachable_by_other_uids, under a lock;
    processes that are gone are dropped from it."""
    path = ROOT / ".pytest-reachable.json"
    with open(path.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state = json.loads(path.read_text()) if path.exists() else {"users": [], "opened": []}
        state["users"] = [pid for pid in state["users"] if Path(f"/proc/{pid}").exists()]
        yield state
        path.write_text(json.dumps(state))


@dataclass
class Box:
    root: Path

    @property
    def etc(self) -> Path:
        return self.root / "etc"

    @property
    def home(self) -> Path:
        return self.root / "home"

    def env(self) -> dict[str, str]:
        return {**os.environ, "SONAE_HOME": str(self.home), "SONAE_CONFIG": str(self.etc / "sonae.toml"),
                "SONAE_SECURITY_KEY_FILE": str(self.etc / "master.key"),
                "SONAE_SECURITY_SIGNING_KEY_FILE": str(self.etc / "signing.key"),
                "SONAE_SECURITY_SECRET_KEY_FILE": str(self.etc / "session.key"),
                "SONAE_UPSTREAM_PUBLIC_KEY": EXAMPLE_PUBLIC_KEY}

    def sonae(self, *args: str, uid: int | None = APPLIANCE_UID, timeout: float = 60) -> subprocess.CompletedProcess:
        """`sonae ARGS` as `uid` (None: as this process)."""
        drop = [] if uid is None else as_uid(uid)
        return subprocess.run([*drop, sys.executable, "-m", "fallback.cli", *args], cwd=ROOT, env=self.env(),
                              capture_output=True, text=True, timeout=timeout)

    def give(self, path: Path, uid: int = APPLIANCE_UID) -> None:
        for item in [path, *path.rglob("*")] if path.is_dir() else [path]:
            os.chown(item, uid, uid)


@pytest.fixture
def box():
    """etc/ with a master and a signing key, an empty home/, all owned by
    root; the folder itself open to every uid (pytest's tmp_path is not)."""
    if os.geteuid() != 0:
        pytest.skip("the permission tests hand files to another uid: they run as root (as CI does)")
    root = Path(tempfile.mkdtemp(prefix="sonae-box-"))
    root.chmod(0o755)
    box = Box(root)
    box.etc.mkdir(mode=0o755)
    box.home.mkdir(mode=0o700)
    write_key(box.etc / "master.key")
    write_key(box.etc / "signing.key")
    yield box
    shutil.rmtree(root)


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """The refusal: exit status 1 and exactly one line on stderr, no traceback."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]

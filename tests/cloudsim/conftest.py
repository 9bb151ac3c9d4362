"""One synthetic register generated per test session (20,000 residents, on
both cores), and simulators serving copies of it on free loopback ports."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest

from cloudsim.sim import CloudSim, start_cloudsim

RESIDENTS = 20_000
SEED = 20261124
REGISTER_DATE = dt.date(2026, 11, 24)
TOKEN = "test-token-cloudsim"


@pytest.fixture(scope="session")
def generated_state(tmp_path_factory) -> Path:
    """A state directory holding the generated register and its first export."""
    state = tmp_path_factory.mktemp("cloudsim-state")
    start_cloudsim(state, residents=RESIDENTS, seed=SEED, register_date=REGISTER_DATE, token=TOKEN).stop()
    return state


def serve_copy(generated_state: Path, directory: Path, **options) -> CloudSim:
    """A simulator on its own copy of the generated state (reused, not
    regenerated: starting takes well under a second)."""
    shutil.copytree(generated_state, directory)
    return start_cloudsim(directory, residents=RESIDENTS, seed=SEED, register_date=REGISTER_DATE, token=TOKEN, **options)


@pytest.fixture(scope="module")
def sim(generated_state, tmp_path_factory):
    running = serve_copy(generated_state, tmp_path_factory.mktemp("sim") / "state")
    yield running
    running.stop()

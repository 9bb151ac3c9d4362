"""Running independent jobs on all cores, results in job order."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

J = TypeVar("J")
R = TypeVar("R")


def default_workers() -> int:
    return os.cpu_count() or 1


def ordered_map(function: Callable[[J], R], jobs: Sequence[J], workers: int) -> Iterator[R]:
    """`map(function, jobs)` on up to `workers` processes. Processes are
    spawned, not forked: the server calls this while its threads hold locks
    that a forked child would inherit held."""
    if workers <= 1 or len(jobs) <= 1:
        yield from map(function, jobs)
        return
    context = multiprocessing.get_context("spawn")
    with context.Pool(min(workers, len(jobs))) as pool:
        yield from pool.imap(function, jobs)

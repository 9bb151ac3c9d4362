"""The OS page cache of a snapshot's files, set before a timed run so that
the state a figure was taken in is chosen, not left to whatever ran before.

Both work on the named files only (posix_fadvise, plain reads): nothing of
anyone else's is evicted and no root is needed."""

from __future__ import annotations

import os
from pathlib import Path

READ_BLOCK = 8 << 20


def _files(directory: Path) -> list[Path]:
    return [path for path in directory.iterdir() if path.is_file()]


def evict(directory: Path) -> int:
    """Drop the files in `directory` (a generation: the database and its WAL)
    from the page cache (dirty pages are written first: those are not
    dropped), as after a reboot or on a register larger than the memory.
    Returns the bytes evicted."""
    evicted = 0
    for path in _files(directory):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            evicted += os.fstat(fd).st_size
        finally:
            os.close(fd)
    return evicted


def read_through(directory: Path) -> int:
    """Read the files in `directory` once, end to end, so that they are in
    the page cache, as on an appliance with the memory to hold its
    snapshot. Returns the bytes read."""
    read = 0
    for path in _files(directory):
        with open(path, "rb", buffering=0) as file:
            while block := file.read(READ_BLOCK):
                read += len(block)
    return read

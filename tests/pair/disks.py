"""Copies of the active box's disk taken while it issues, as the standby
finds the disk after a power cut.

**Block-level** (where this process may use loop devices and mount):
the active's state lives on an ext4 filesystem on a loop device, whose
backing file lies on an XFS filesystem with reflinks. A copy is a reflink
of that backing file (the FICLONE ioctl): XFS takes the file's I/O lock,
waits for direct I/O in flight and clones the extents, all in well under
a millisecond, while the appliance goes on writing. So the copy holds
exactly the blocks the loop device had been given at one instant — what
a device-mapper snapshot of the device would hold — and not what ext4 and
SQLite still kept in memory: writes not yet sent to the device (ext4's
dirty pages, a WAL frame committed without a disk sync) are lost, as in
a power cut. Nothing is frozen (no fsfreeze, no sync): mounting the copy
replays ext4's journal, opening ops.db replays SQLite's WAL. The copy is
kinder than a power cut in one way only: a drive loses what its volatile
cache held, whereas the loop device has none (nor has a dm snapshot).

**kill -9 then copy** (elsewhere): the active is SIGKILLed and its state
directory copied. Everything the process had handed to the kernel is in
the copy, so it shows that the files are consistent wherever the process
stops, but not that what was acknowledged had reached the disk (a missing
fsync passes). README "The pair" says the same.
"""

from __future__ import annotations

import fcntl
import functools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

FICLONE = 0x40049409  # linux/fs.h: _IOW(0x94, 9, int)
BLOCK_LEVEL = "block-level copies (reflinks of the loop device's backing file on XFS)"
KILL_AND_COPY = "kill -9 then copy"


def _run(*command: str) -> str:
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip()


@functools.cache
def block_copy_refusal() -> str | None:
    """None when block-level copies can be taken here, else why not, in the
    words of whatever refused."""
    if os.geteuid() != 0:
        return f"loop devices and mounts need root; this process runs as uid {os.geteuid()}"
    missing = [tool for tool in ("losetup", "mount", "umount", "mkfs.xfs", "mkfs.ext4") if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not installed (make test installs xfsprogs)"
    with tempfile.TemporaryDirectory(prefix="sonae-block-probe-") as directory:
        try:
            with Disk(Path(directory), size_mb=16) as disk:
                disk.copy("probe")
        except (subprocess.CalledProcessError, OSError) as exc:
            said = getattr(exc, "stderr", None) or str(exc)
            return f"{' '.join(str(said).split())}"
    return None


class Disk:
    """The active box's disk: ext4 on a loop device backed by a file on an
    XFS (reflinks); `copy` takes an instant block-level copy of it,
    `attach` mounts a copy the way the standby mounts the disk it takes
    over. Everything is undone on close."""

    def __init__(self, root: Path, *, size_mb: int = 512):
        self.root = root
        self.outer = root / "xfs"
        self.mount_point = root / "active"
        self._undo: list[list[str]] = []  # run last first on close
        self.size_mb = size_mb

    def __enter__(self) -> Disk:
        try:
            self._open()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _open(self) -> None:
        image = self.root / "xfs.img"
        with open(image, "wb") as out:  # sparse; mkfs.xfs wants 300 MB at least
            out.truncate(2 * self.size_mb * 1024 * 1024 + 320 * 1024 * 1024)
        _run("mkfs.xfs", "-q", "-m", "reflink=1", str(image))
        self.outer.mkdir()
        self._mount(image, self.outer)
        backing = self.outer / "disk.img"
        with open(backing, "wb") as out:
            out.truncate(self.size_mb * 1024 * 1024)
        _run("mkfs.ext4", "-q", "-F", str(backing))
        self.device = _run("losetup", "--find", "--show", str(backing))
        self._undo.append(["losetup", "--detach", self.device])
        self.mount_point.mkdir()
        _run("mount", self.device, str(self.mount_point))
        self._undo.append(["umount", str(self.mount_point)])
        self.backing = backing

    def _mount(self, image: Path, mount_point: Path) -> None:
        _run("mount", "-o", "loop", str(image), str(mount_point))  # the loop device goes with the mount
        self._undo.append(["umount", str(mount_point)])

    def copy(self, name: str) -> Path:
        """The device's blocks at this instant, as a new image file."""
        image = self.outer / f"{name}.img"
        source = os.open(self.backing, os.O_RDONLY)
        try:
            target = os.open(image, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                fcntl.ioctl(target, FICLONE, source)
            finally:
                os.close(target)
        finally:
            os.close(source)
        return image

    def attach(self, image: Path) -> Path:
        """Mount a copy (ext4 replays its journal here); returns where."""
        mount_point = self.root / image.stem
        mount_point.mkdir()
        self._mount(image, mount_point)
        return mount_point

    def written(self) -> tuple[int, int]:
        """Bytes written to the device and flushes asked of it, so far."""
        fields = Path(f"/sys/block/{Path(self.device).name}/stat").read_text().split()
        return int(fields[6]) * 512, int(fields[15]) if len(fields) > 15 else 0

    def close(self) -> None:
        while self._undo:
            command = self._undo.pop()
            if subprocess.run(command, capture_output=True).returncode and command[0] == "umount":
                subprocess.run(["umount", "--lazy", command[1]], capture_output=True)  # still busy: detach it anyway

"""Permission and ownership problems in one line.

A key mounted for another uid, a configuration folder owned by root, a
state volume the appliance cannot write: each is told as the path that
stands in the way, its owner and mode, and the uid the appliance runs as —
never as a traceback, and never as damage that would send an operator into
a restore.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from pathlib import Path


def _user(uid: int) -> str:
    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


def _group(gid: int) -> str:
    try:
        return f"gid {gid} ({grp.getgrgid(gid).gr_name})"
    except KeyError:
        return f"gid {gid}"


def running_as() -> str:
    return _user(os.geteuid())


def owner_and_mode(path: Path) -> str:
    """"owner uid 0 (root), gid 0 (root), mode 0700"."""
    info = path.stat()
    return f"owner {_user(info.st_uid)}, {_group(info.st_gid)}, mode {stat.S_IMODE(info.st_mode):04o}"


def _refused(path: Path, wanted: int) -> bool:
    return not os.access(path, wanted)


def blocking_path(path: str | os.PathLike, *, write: bool = False) -> Path | None:
    """The path that keeps this process from reading (or writing) `path`:
    a folder on the way it may not enter, the file itself, or — for a file
    still to be created — the folder it would be created in. None when
    nothing does."""
    target = Path(os.path.abspath(path))
    for folder in reversed(target.parents):
        if not folder.exists():
            # what is missing would be created in the last folder that exists
            return folder.parent if write and _refused(folder.parent, os.W_OK | os.X_OK) else None
        if _refused(folder, os.X_OK):
            return folder
    if target.exists():
        if target.is_dir():
            wanted = os.R_OK | os.X_OK | (os.W_OK if write else 0)
        else:
            wanted = os.R_OK | (os.W_OK if write else 0)
        return target if _refused(target, wanted) else None
    return target.parent if write and _refused(target.parent, os.W_OK | os.X_OK) else None


def permission_message(path: str | os.PathLike, *, write: bool = False) -> str:
    """One line naming the path in the way, its owner and mode, and who
    Sonae runs as. `path` is what was being used; the path in the way may be
    a folder above it."""
    wanted = Path(os.path.abspath(path))
    culprit = blocking_path(wanted, write=write) or wanted
    verb = "write" if write else "read"
    subject = str(culprit) if culprit == wanted else f"{culprit} (on the way to {wanted})"
    how = owner_and_mode(culprit) if culprit.exists() else "which does not exist"
    return (f"permission denied: Sonae cannot {verb} {subject}, {how}; Sonae runs as {running_as()}: "
            f"give that uid access (chown or chmod), or run Sonae as the owner")


def state_problem(home: Path) -> str | None:
    """The first path under SONAE_HOME that the appliance cannot read and
    write, as a one-line message; None when the whole state directory is
    usable. Checked before calling a database error damage."""
    if not home.exists():
        culprit = blocking_path(home, write=True)
        return permission_message(home, write=True) if culprit else None
    if blocking_path(home, write=True):
        return permission_message(home, write=True)
    for folder, folders, files in os.walk(home):
        for name in sorted(folders) + sorted(files):
            path = Path(folder) / name
            if blocking_path(path, write=True):
                return permission_message(path, write=True)
    return None

"""The appliance's refusals, one family, and how each face tells them.

A refusal is a SonaeError. It carries what every reader needs: `message`
in Japanese for staff (the HTML page, the JSON API's `message`, and on the
page the `links` that take the reader on), `reason`
a one-line cause for the command line and the logs (the message itself
unless a type says otherwise), and for the web its HTTP `status`, its JSON
`code` and the page it is shown on. Each face maps them once: the app's one
error handler (fallback.app: a JSON error under /api/, a page elsewhere)
and the `sonae` command's one line (fallback.cli).

The disk failing under a database is named as what it is, never as a
wrong key or damage: `storage_fault` turns SQLite's and the OS's words
for a full disk, an I/O error or a held lock into a StorageFault (503),
which the API answers as `{"error": "storage", ...}` like any refusal.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

from fallback.access import permission_message, state_problem
from sync.crypto import DatabaseError, DiskError


class SonaeError(Exception):
    """A refusal the appliance explains. Subclasses set the class
    attributes; `details()` adds JSON fields, `headers()` HTTP headers."""

    status = 400
    code = "bad_request"
    title = "操作を受け付けられません"  # the heading of its HTML page
    template = "error.html"  # rendered with title and message
    chrome = True  # the page has the screens' banner and menu (which read the databases)

    def __init__(self, message: str, *, reason: str | None = None):
        super().__init__(message)
        self.message = message
        self.reason = reason or message

    def details(self) -> dict:
        return {}

    def headers(self) -> dict[str, str]:
        return {}

    def links(self) -> list[tuple[str, dict, str]]:
        """(endpoint, its values, label) of the pages that answer what the
        refusal leaves open, shown as links on its HTML page."""
        return []


class InternalFault(SonaeError):
    """What the web answers for a failure nobody foresaw (a bug, or a
    database changed under the running server)."""

    status = 500
    code = "internal"
    title = "装置の内部でエラーが起きました"
    template = "internal_error.html"
    chrome = False  # the banner reads the databases, which may be what failed


INTERNAL_FAULT_MESSAGE = ("装置の内部でエラーが起きたため、この操作が記録されたかどうか確かめられません。"
                          "画面を開き直して確かめてから、もう一度操作してください。"
                          "続けて起きるときは紙の手順に切り替え、情報政策課に連絡してください。")


class KeyUnusable(SonaeError):
    """A key file the running server cannot use any more (`sonae serve`
    refuses to start without it): the web's answer to a KeyFileError,
    whose one line is the `reason`, never shown to the public."""

    status = 503
    code = "key"
    title = "装置の鍵を読み込めません"


KEY_UNUSABLE_MESSAGE = ("装置の鍵を読み込めないため、この操作は行われていません。"
                        "窓口は紙の手順に切り替え、情報政策課に連絡してください。")


class NotFound(SonaeError):
    status = 404
    code = "not_found"
    title = "見つかりません"


class Forbidden(SonaeError):
    status = 403
    code = "forbidden"
    title = "権限がありません"


# What SQLite (sqlite3_errmsg) and the OS say when the disk under a
# database fails, as opposed to its key or its content. A full disk shows
# as either "full" or "io": SQLITE_FULL where a write found no room,
# SQLITE_IOERR where SQLite could not even size its WAL index at open.
_SQLITE_FAULTS = (("database or disk is full", "full"), ("disk I/O error", "io"), ("database is locked", "busy"))
_OS_FAULTS = {errno.ENOSPC: "full", errno.EDQUOT: "full", errno.EIO: "io", errno.EROFS: "readonly"}
# Less free space than this on the disk of an I/O error: it is the full disk.
_NEARLY_FULL_BYTES = 1024 * 1024


class StorageFault(SonaeError):
    """The disk under the appliance's state failed: full, an I/O error, or
    a database held by another process. Nothing was done; `reason` names
    the fault in one line."""

    status = 503
    code = "storage"
    title = "装置の記録を読み書きできません"
    template = "storage_error.html"
    chrome = False  # the banner reads the databases whose disk just failed

    def details(self) -> dict:
        return {"cause": self.reason}


def permission_fault(exc: BaseException, home: Path) -> StorageFault | None:
    """The StorageFault for a state directory (or a file in it) this uid
    may not read or write — chowned to root under a running server, a
    restore run as root — named with its owner and mode; None otherwise."""
    problem = state_problem(home) if isinstance(exc, (PermissionError, DatabaseError)) else None
    if problem is None and isinstance(exc, PermissionError) and exc.filename is not None:
        problem = permission_message(exc.filename)
    if problem is None:
        return None
    return StorageFault(
        "装置の記録を読み書きする権限がなくなっています。この操作は行われていません。"
        "窓口は紙の手順に切り替え、情報政策課に連絡してください。",
        reason=problem,
    )


def _free_space(where: Path) -> tuple[int, str]:
    """(free bytes, "N MB free of M MB in DIR") of the disk holding `where`."""
    folder = where if where.is_dir() else where.parent
    try:
        usage = shutil.disk_usage(folder)
    except OSError:
        return -1, f"free space unknown in {folder}"
    return usage.free, f"{usage.free / 1e6:,.1f} MB free of {usage.total / 1e6:,.1f} MB in {folder}"


def _disk_full(said: str, figures: str) -> StorageFault:
    return StorageFault(
        "装置のディスクがいっぱいで、記録を読み書きできません。この操作は行われていません。"
        "窓口は紙の手順（手順書「システムが全く使えない場合」）に切り替え、情報政策課に連絡してください。",
        reason=f"the disk is full ({said}; {figures}): free space under SONAE_HOME "
               "(`sonae snapshot list`, then fewer sync.keep_generations) or grow the disk, then retry",
    )


def _fault_of(exc: BaseException) -> tuple[str, str] | None:
    """("full" | "io" | "readonly" | "busy", what was said) when `exc` is the disk's doing."""
    if isinstance(exc, DatabaseError):
        said = str(exc)
        return next(((kind, said) for words, kind in _SQLITE_FAULTS if words in said), None)
    if isinstance(exc, OSError) and exc.errno in _OS_FAULTS:
        return _OS_FAULTS[exc.errno], f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
    return None


def storage_fault(exc: BaseException, where: Path) -> StorageFault | None:
    """The StorageFault `exc` stands for, or None when it is not the disk's
    doing. `where`: the state directory (or file) whose disk to describe,
    unless the error names its own file."""
    fault = _fault_of(exc)
    if fault is None:
        return None
    kind, said = fault
    if kind == "busy":
        return StorageFault(
            "装置の記録が別の処理で使用中です。少し待ってから、もう一度操作してください。",
            reason=f"a database is locked by another process ({said}); retry in a moment, "
                   "and if it lasts, look for a stuck `sonae` process",
        )
    if kind == "readonly":  # a mount option, not a failing disk
        return StorageFault(
            "装置の記録を書き込む場所が読み取り専用になっています。この操作は行われていません。"
            "窓口は紙の手順に切り替え、情報政策課に連絡してください。",
            reason=f"read-only file system: cannot write {getattr(exc, 'filename', None) or where} (mounted read-only? compose mounts /etc/sonae read-only: "
                   "write keys with a writable mount, README \"Deploying with Docker\")",
        )
    free, figures = _free_space(Path(exc.path) if isinstance(exc, DiskError) else where)
    if kind == "full":
        return _disk_full(said, figures)
    if 0 <= free < _NEARLY_FULL_BYTES:
        return _disk_full(f"I/O error: {said}", figures)
    return StorageFault(
        "装置のディスクの読み書きに失敗しました（I/Oエラー）。この操作は行われていません。"
        "窓口は紙の手順に切り替え、情報政策課に連絡してください。",
        reason=f"I/O error on the disk under SONAE_HOME ({said}; {figures}): check the disk "
               "(dmesg, smartctl), then `sonae ops verify` and `sonae snapshot verify`",
    )

"""The counter app's door into the mirrored register: the current snapshot
generation, opened read-only.

Each server thread keeps its reader open (see fallback.db) and reopens it
when the CURRENT generation changes — a full load or a rollback is seen by
the next request. Change-feed updates need no reopening: a reader sees each
committed batch whole at its next query (WAL)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from flask import current_app, g

from fallback.config import Config
from fallback.db import EXTENSION, get_ops
from fallback.keys import snapshot_key
from fallback.mirror import availability
from fallback.ops import now
from sync import crypto
from sync.errors import SyncError
from sync.store import SnapshotStore


def snapshot_store(config: Config) -> SnapshotStore:
    return SnapshotStore(config.snapshot_dir, snapshot_key(config))


def get_register():
    """The current generation's Register, or None when no snapshot has been
    loaded yet or it cannot be opened (`register_problem()` says why).
    Checked against CURRENT once per request."""
    local = current_app.extensions[EXTENSION]
    if g.get("register_checked"):
        return getattr(local, "register", None)
    g.register_checked = True
    store = getattr(local, "store", None)
    if store is None:
        store = local.store = snapshot_store(current_app.config["SONAE"])
    register = getattr(local, "register", None)
    try:
        current = store.current()
        if register is not None and register.generation != current:
            register.close()
            register = None
        if register is None and current is not None:
            register = availability.WatchedRegister(store.open_register(current), _record_read_error)
    except (SyncError, crypto.WrongKeyError, crypto.DatabaseError, OSError) as exc:
        # A damaged pointer or generation: every page says so (the banner),
        # none answers 500.
        if register is not None:
            register.close()
        register = None
        g.register_problem = exc
    local.register = register
    return register


def register_problem() -> Exception | None:
    """Why get_register() gave None in this request (None: nothing loaded yet)."""
    get_register()
    return g.get("register_problem")


def _record_read_error(generation: int, exc: Exception) -> None:
    availability.record(get_ops(), generation, exc)


def format_age(hours: float) -> str:
    """The age of data as staff read it: 分 under an hour, 時間 under two days, then 日."""
    if hours < 1:
        return f"{max(int(hours * 60), 0)}分"
    if hours < 48:
        return f"{int(hours)}時間{int(hours * 60) % 60}分"
    return f"{int(hours // 24)}日{int(hours % 24)}時間"


@dataclass(frozen=True)
class SnapshotSummary:
    generation: int
    as_of: dt.datetime
    age_hours: float
    residents: int
    seals: int


def snapshot_summary(config: Config) -> SnapshotSummary | None:
    register = get_register()
    if register is None:
        return None
    meta = register.meta
    return SnapshotSummary(
        generation=meta.generation,
        as_of=meta.as_of,
        age_hours=(now() - meta.as_of).total_seconds() / 3600,
        residents=meta.residents,
        seals=meta.seals,
    )

"""The counter app's door into a register: the current snapshot generation
of the real register, or of a drill's synthetic one, opened read-only.

Each server thread keeps its readers open (see fallback.db) and reopens one
when its store's CURRENT generation changes — a full load or a rollback is
seen by the next request. Change-feed updates need no reopening: a reader
sees each committed batch whole at its next query (WAL).

`register_for(scope)` is the one place where a counter's scope picks its
register: the real one for real work, the drill's own for a drill."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from flask import current_app, g

from fallback.config import Config
from fallback.db import EXTENSION, get_ops
from fallback.keys import drill_snapshot_key, snapshot_key
from fallback.mirror import availability
from fallback.ops import now
from sync import crypto
from sync.errors import SyncError
from sync.register import Register
from sync.store import SnapshotStore


def snapshot_store(config: Config) -> SnapshotStore:
    return SnapshotStore(config.snapshot_dir, snapshot_key(config))


def drill_snapshot_store(config: Config, drill_id: int) -> SnapshotStore:
    """A drill's own store of its synthetic register (fallback.drills.register
    loads it), apart from the real snapshots and under its own key."""
    return SnapshotStore(config.drill_snapshot_dir / f"drill-{drill_id:06d}", drill_snapshot_key(config))


def drill_snapshot_stores(config: Config) -> list[SnapshotStore]:
    """Every drill's store (for `sonae key rotate`)."""
    directory = config.drill_snapshot_dir
    if not directory.exists():
        return []
    return [drill_snapshot_store(config, int(entry.name.removeprefix("drill-")))
            for entry in sorted(directory.iterdir()) if re.fullmatch(r"drill-\d{6,}", entry.name)]


def register_for(scope) -> Register | None:
    """The register a counter working in `scope` (fallback.counter.issuance.Scope)
    searches, views and issues from: the real register for the real scope,
    the drill's synthetic register for a drill — never the real one. None
    when that register has not been loaded."""
    if scope.is_drill:
        return _current_register("drill_register", scope.drill_id,
                                 lambda: drill_snapshot_store(current_app.config["SONAE"], scope.drill_id))
    return get_register()


def get_register() -> Register | None:
    """The real register's current generation, or None when no snapshot has
    been loaded yet or it cannot be opened (`register_problem()` says why).
    Checked against CURRENT once per request."""
    return _current_register("register", None, lambda: snapshot_store(current_app.config["SONAE"]))


def register_problem() -> Exception | None:
    """Why get_register() gave None in this request (None: nothing loaded yet)."""
    get_register()
    return g.get("register_problems", {}).get("register")


def _record_read_error(generation: int, exc: Exception) -> None:
    availability.record(get_ops(), generation, exc)


def _current_register(slot: str, owner: int | None, make_store) -> Register | None:
    """This thread's reader in `slot` (the real register's, or drill
    `owner`'s), checked once per request: reopened when the store's CURRENT
    names another generation or the slot held another drill's register."""
    local = current_app.extensions[EXTENSION]
    checked = g.setdefault("register_checked", {})
    if slot in checked and checked[slot] == owner:
        return getattr(local, slot, None)
    checked[slot] = owner
    stores = getattr(local, "stores", None)
    if stores is None:
        stores = local.stores = {}
    store = stores.get((slot, owner))
    if store is None:
        store = stores[(slot, owner)] = make_store()
    register, held_by = getattr(local, slot, None), getattr(local, f"{slot}_owner", None)
    try:
        current = store.current()
        if register is not None and (register.generation != current or held_by != owner):
            register.close()
            register = None
        if register is None and current is not None:
            register = store.open_register(current)
            if owner is None:  # the real register's read errors count toward readiness; a drill's do not
                register = availability.WatchedRegister(register, _record_read_error)
    except (SyncError, crypto.WrongKeyError, crypto.DatabaseError, OSError) as exc:
        # A damaged pointer or generation: every page says so (the banner),
        # none answers 500.
        if register is not None:
            register.close()
        register = None
        g.setdefault("register_problems", {})[slot] = exc
    setattr(local, slot, register)
    setattr(local, f"{slot}_owner", owner)
    return register


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
    """The real register's generation, as-of and size."""
    return register_summary(get_register())


def register_summary(register: Register | None) -> SnapshotSummary | None:
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

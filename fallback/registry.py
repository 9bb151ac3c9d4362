"""The counter app's door into the mirrored register: the current snapshot
generation, opened read-only, at most once per request."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from flask import current_app, g

from fallback.config import Config
from fallback.keys import snapshot_key
from fallback.ops import now
from sync.store import SnapshotStore


def snapshot_store(config: Config) -> SnapshotStore:
    return SnapshotStore(config.snapshot_dir, snapshot_key(config))


def get_register():
    """The current generation's Register for this request, or None when no
    snapshot has been loaded yet."""
    if "register" not in g:
        store = snapshot_store(current_app.config["SONAE"])
        g.register = store.open_register() if store.current() is not None else None
    return g.register


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

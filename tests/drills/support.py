"""Reading a drill's synthetic register in tests: the same finders the
personas use pick a resident for each case, so a test names people by what
they are, not by codes it cannot know (each drill draws a new seed)."""

from __future__ import annotations

import datetime as dt
import random

from fallback import drills
from fallback.drills import personas
from fallback.mirror.registry import drill_snapshot_store
from fallback.ops import open_ops

SELF_REQUEST = {"kind": "juminhyo", "requester_type": "self", "identity_document": "運転免許証"}


def start_drill(config, scenario="full_outage", participants=("clerk1",)) -> int:
    """A drill planned for now and started, through the service."""
    conn = open_ops(config)
    try:
        start = dt.datetime.now(dt.timezone(dt.timedelta(hours=9)))
        drill_id = drills.create(conn, scenario=scenario, title="", description="", planned_start=start.isoformat(),
                                 planned_end=(start + dt.timedelta(hours=2)).isoformat(), participants=list(participants),
                                 terminals=[], actor="coord")
        drills.start(conn, config, drill_id, actor="coord", current_mode="standby")
        return drill_id
    finally:
        conn.close()


def drill_register(config, drill_id):
    """The drill's register, read-only (close it, or use `with`)."""
    return drill_snapshot_store(config, drill_id).open_register()


def case_codes(config, drill_id) -> dict[str, str | None]:
    """A resident code of the drill register for each persona case."""
    store = drill_snapshot_store(config, drill_id)
    return personas.find_cases(store.path_of(store.current()), store.key, random.Random(0))

"""A drill's own register: synthetic residents drawn by the same model as
cloudsim's (sync.synthetic), loaded through the real loader into the drill's
own encrypted store (fallback.mirror.registry.drill_snapshot_store), never
beside the real register's generations.

The people are fixed by the drill's seed and register date, so loading the
register again (at the drill's first start, to date it afresh) gives the
same people, and the personas chosen before stay valid. Their 住民票コード
start at 9 (FIRST_ORDINAL): no code of a real or demo register is one of
them, so a real code typed at a drill counter finds nobody.
"""

from __future__ import annotations

import datetime as dt
import random
from collections import Counter
from dataclasses import dataclass

from fallback.config import Config
from fallback.mirror.registry import drill_snapshot_store
from sync.loader import LoadResult, load_full
from sync.synthetic.export import MemoryExport
from sync.synthetic.synth import RegisterSpec, Synth

RESIDENTS = 2_000  # enough for every persona case and a realistic search, loaded in about a second
FIRST_ORDINAL = 8_000_000_000  # 住民票コード 9000000001x …, 宛名番号 A8000000001 …
LARGEST_HOUSEHOLD = 6  # the persona case of a household of six (two sheets of 世帯連記式)
MAX_EXTRA_RESIDENTS = RESIDENTS  # drawn beyond RESIDENTS at most, until a household of six appears


@dataclass(frozen=True)
class DrillRegisterPlan:
    """What fixes a drill register's people; recorded with the drill."""

    seed: int
    register_date: dt.date  # the last day the synthetic register has events on


def spec(config: Config, plan: DrillRegisterPlan) -> RegisterSpec:
    """The ward's own code and names (and its 町丁目 where the generator
    ships them, else the default ward's)."""
    municipality = config["municipality"]
    return RegisterSpec(residents=RESIDENTS, seed=plan.seed, register_date=plan.register_date,
                        municipality_code=municipality["code"], prefecture=municipality["prefecture"], city=municipality["name"])


def records(register_spec: RegisterSpec) -> tuple[list[dict], list[dict]]:
    """The residents and seals of one drill register, every persona case
    among them (fallback.drills.personas)."""
    rng = random.Random(f"drill/{register_spec.seed}")
    synth = Synth(register_spec, rng, items_rng=random.Random(f"drill/{register_spec.seed}/contract-2"))
    residents: list[dict] = []
    seals: list[dict] = []
    ordinal = FIRST_ORDINAL
    while len(residents) < register_spec.residents or (
            not _has_household_of(residents, LARGEST_HOUSEHOLD) and len(residents) < register_spec.residents + MAX_EXTRA_RESIDENTS):
        household, its_seals = synth.household(ordinal, LARGEST_HOUSEHOLD)
        residents += household
        seals += its_seals
        ordinal += len(household)
    _with_every_rare_case(residents, synth, rng)
    return residents, seals


def _has_household_of(residents: list[dict], size: int) -> bool:
    sizes = Counter(r["household_id"] for r in residents if r["status"] == "active")
    return size in sizes.values()


def _with_every_rare_case(residents: list[dict], synth: Synth, rng: random.Random) -> None:
    """The model makes a 支援措置 household about once in 1,700 households
    and a planned move-out once in 250; a drill register of 2,000 people
    needs one of each, so a plain household is given each where the draw
    made none."""
    households: dict[str, list[dict]] = {}
    for resident in residents:
        households.setdefault(resident["household_id"], []).append(resident)
    plain = [members for members in households.values()
             if all(m["status"] == "active" and m["foreign"] is None and m["planned_move_out"] is None and not m["support_measure"]
                    for m in members) and len(members) < LARGEST_HOUSEHOLD]
    rng.shuffle(plain)
    # An active one: the drill's 支援措置 persona is looked for among current residents
    # (a register whose only protected people had moved away gave the drill none).
    if not any(r["support_measure"] and r["status"] == "active" for r in residents):
        for member in plain.pop():
            member["support_measure"] = True
    if not any(r["planned_move_out"] for r in residents):
        planned = {"date": (synth.today + dt.timedelta(days=rng.randint(1, 14))).isoformat(), "moved_to": synth.place_address()}
        for member in plain.pop():
            member["planned_move_out"] = planned


def load(config: Config, drill_id: int, plan: DrillRegisterPlan, *, as_of: dt.datetime) -> LoadResult:
    """Load the drill's register, dated `as_of`, as a new generation of the
    drill's store (the one before is pruned). Raises what load_full raises."""
    register_spec = spec(config, plan)
    residents, seals = records(register_spec)
    store = drill_snapshot_store(config, drill_id)
    export = MemoryExport(residents, seals, municipality=register_spec.municipality, as_of=as_of.isoformat(timespec="seconds"),
                          export_seq=max(store.generation_numbers(), default=0) + 1,
                          description=f"synthetic drill register (drill {drill_id}, seed {plan.seed})")
    return load_full(export, store, public_key=export.public_key, municipality_code=register_spec.municipality_code, keep=1)


def loaded(config: Config, drill_id: int) -> bool:
    return drill_snapshot_store(config, drill_id).current_if_readable() is not None

"""Generating a whole register into the state database, on all cores.

The register is cut into chunks of a fixed number of residents; each chunk
has its own random stream derived from the seed and the chunk number, so the
result does not depend on how many processes share the work.
"""

from __future__ import annotations

import random
from pathlib import Path

from cloudsim import store
from cloudsim.parallel import ordered_map
from sync.synthetic import codes
from sync.synthetic.synth import RegisterSpec, Synth, encode

CHUNK_RESIDENTS = 10_000


def chunk_count(residents: int) -> int:
    return -(-residents // CHUNK_RESIDENTS)


def generate_chunk(spec: RegisterSpec, chunk: int) -> tuple[list[tuple], list[tuple]]:
    """Store rows for the residents of one chunk and their seals."""
    rng = random.Random(f"cloudsim/{spec.seed}/{chunk}")
    synth = Synth(spec, rng, items_rng=random.Random(f"cloudsim/{spec.seed}/{chunk}/contract-2"))
    end = min(spec.residents, (chunk + 1) * CHUNK_RESIDENTS)
    ordinal = chunk * CHUNK_RESIDENTS
    resident_rows, seal_rows = [], []
    while ordinal < end:
        residents, seals = synth.household(ordinal, end - ordinal)
        for resident in residents:
            resident_rows.append((ordinal, resident["household_id"], resident["status"], encode(resident)))
            ordinal += 1
        for seal in seals:
            owner = codes.ordinal_of_resident_code(seal["resident_code"])
            seal_rows.append((codes.seal_ordinal(seal["seal_number"]), owner, seal["status"], encode(seal)))
    return resident_rows, seal_rows


def _load_chunk(job: tuple[Path, RegisterSpec, int]) -> int:
    path, spec, chunk = job
    residents, seals = generate_chunk(spec, chunk)
    store.insert_rows(path, residents, seals)
    return len(residents)


def generate_register(path: Path, spec: RegisterSpec, workers: int) -> None:
    """A new register database at `path` holding the register `spec` describes."""
    store.create(path)
    jobs = [(path, spec, chunk) for chunk in range(chunk_count(spec.residents))]
    loaded = sum(ordered_map(_load_chunk, jobs, workers))
    connection = store.connect(path)
    try:
        with connection:
            store.finish_bulk_load(connection)
    finally:
        connection.close()
    if loaded != spec.residents:
        raise RuntimeError(f"generated {loaded} residents instead of {spec.residents}")

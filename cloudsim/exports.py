"""Full exports: gzip NDJSON files plus a signed manifest, as the contract
lays them out (the same layout serves HTTP and dropped directories)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloudsim import store
from cloudsim.gzjoin import GzipAssembler, Piece, deflate_lines
from cloudsim.parallel import ordered_map
from sync.contract import CONTRACT_VERSION, sign

FILES = (("residents.ndjson.gz", "residents"), ("seals.ndjson.gz", "seals"))
# Ordinals per compression job. Seal ordinals are twice as sparse as
# residents' (two numbers are reserved per person).
SPAN = {"residents": 20_000, "seals": 40_000}
# A halved export keeps every other resident and those residents' seals.
HALVED_FILTER = {"residents": "AND ordinal % 2 = 0", "seals": "AND resident_ordinal % 2 = 0"}
MANIFEST = "manifest.json"


def _compress_range(job: tuple[str, str, int, int, str]) -> Piece:
    path, table, low, high, where = job
    connection = store.connect(path, readonly=True)
    try:
        return deflate_lines(store.record_lines(connection, table, low, high, where))
    finally:
        connection.close()


def _jobs(db_path: Path, halved: bool) -> list[tuple[str, str, int, int, str]]:
    connection = store.connect(db_path, readonly=True)
    try:
        jobs = []
        for _, kind in FILES:
            bound = store.ordinal_bound(connection, kind)
            where = HALVED_FILTER[kind] if halved else ""
            starts = range(0, bound, SPAN[kind]) or [0]
            jobs += [(str(db_path), kind, low, low + SPAN[kind], where) for low in starts]
        return jobs
    finally:
        connection.close()


def write_files(db_path: Path, directory: Path, workers: int, halved: bool = False) -> list[dict]:
    """Write both export files of the register in `db_path`; return their
    manifest entries."""
    jobs = _jobs(db_path, halved)
    if len(jobs) <= len(FILES):
        workers = 1  # one job per file: starting processes would cost more than it saves
    handles = {kind: open(directory / name, "wb") for name, kind in FILES}
    try:
        assemblers = {kind: GzipAssembler(handle) for kind, handle in handles.items()}
        for job, piece in zip(jobs, ordered_map(_compress_range, jobs, workers)):
            assemblers[job[1]].add(piece)
        for assembler in assemblers.values():
            assembler.finish()
    finally:
        for handle in handles.values():
            handle.close()
    return [
        {"name": name, "kind": kind, "records": assemblers[kind].lines, "bytes": assemblers[kind].bytes,
         "sha256": assemblers[kind].sha256.hexdigest()}
        for name, kind in FILES
    ]


def write_export(
    db_path: Path,
    exports_dir: Path,
    *,
    export_id: str,
    export_seq: int,
    as_of: str,
    last_seq: int,
    municipality: dict,
    private_key: Ed25519PrivateKey,
    workers: int,
    halved: bool = False,
) -> dict:
    """Write one export into exports_dir/<export_id>/ and return its signed
    manifest (`export_seq`: one more than the export before). The directory
    appears complete or not at all."""
    partial = exports_dir / f".partial-{export_id}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    files = write_files(db_path, partial, workers, halved)
    manifest = {
        "contract": CONTRACT_VERSION,
        "export_seq": export_seq,
        "export_id": export_id,
        "municipality": municipality,
        "as_of": as_of,
        "last_seq": last_seq,
        "files": files,
    }
    signed = sign(manifest, private_key)
    write_manifest(partial, signed)
    os.rename(partial, exports_dir / export_id)
    return signed


def write_manifest(directory: Path, manifest: dict) -> None:
    temporary = directory / (MANIFEST + ".tmp")
    temporary.write_text(json.dumps(manifest, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, directory / MANIFEST)


def read_manifest(directory: Path) -> dict:
    return json.loads((directory / MANIFEST).read_text(encoding="utf-8"))

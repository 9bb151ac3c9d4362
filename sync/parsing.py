"""The work a full load's parsing processes do: validate a block of export
lines against the contract and turn it into rows (sync.loader sends the
blocks, and inserts what comes back).

Kept apart from sync.loader so that a worker process imports only this and
what it needs — the contract, the schema's row builders, the anomaly facts
— and not the loader's HTTP client, store and feed: each worker then
starts at about half the memory, which the load's peak counts twice.
"""

from __future__ import annotations

import ctypes
import os
import signal
from dataclasses import dataclass

import orjson

from sync.anomalies import record_facts
from sync.contract import CONTRACT_VERSION, MAX_SEAL_IMAGE_BYTES, VALIDATORS, ContractError
from sync.errors import ExportInvalid
from sync.schema import ROW_BUILDERS, blank_individual_number, record_digest, record_text, summary_key, summary_text

PR_SET_PDEATHSIG = 1  # linux/prctl.h
# The most one record's line may take, newline included: 64 KiB for a
# resident (a real one takes about 1 KiB); for a seal, its image at the
# contract's limit in base64 and 4 KiB for the rest. A file may decompress
# to its record count, plus one for blank lines, times this.
MAX_RECORD_BYTES = {"residents": 64 << 10, "seals": (MAX_SEAL_IMAGE_BYTES + 2) // 3 * 4 + (4 << 10)}


@dataclass(frozen=True)
class ParsedBlock:
    rows: list[tuple]  # search rows, each starting with its id: the line number
    rewritten: dict[int, bytes]  # line number → the record as Sonae stores it, where that differs from the line
    digest: int
    summaries: list[tuple]  # residents: (kana_key, birth_date, id, summary), sorted
    facts: list[tuple]  # one per record, for sync.anomalies
    findings: list[tuple]  # anomalies of single records (sync.anomalies)


def parse_block(kind: str, name: str, first_line: int, block: bytes, mirror_individual_number: bool,
                contract: int = CONTRACT_VERSION) -> ParsedBlock:
    """Validate a block of NDJSON lines (records of that contract version)
    and turn them into rows. A pure function of its arguments, so it can run
    in a worker process. A row's id is its line number in the file. The
    lines themselves are not sent back (the caller has the block): only
    those stored otherwise."""
    validate = VALIDATORS[kind]
    build_row = ROW_BUILDERS[kind]
    max_bytes = MAX_RECORD_BYTES[kind]
    rows, rewritten, summaries, facts, findings, digest = [], {}, [], [], [], 0
    for number, line in enumerate(block.split(b"\n"), start=first_line):
        if not line.strip():
            continue  # blank lines hold no record; the record count still has to match
        if len(line) >= max_bytes:
            raise ExportInvalid(f"{name} line {number:,}: {len(line):,} bytes, more than the {max_bytes:,} one {kind[:-1]} record may take")
        try:
            record = orjson.loads(line)
            validate(record, contract)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:  # ContractError is a ValueError
            problem = exc if isinstance(exc, ContractError) else f"not a valid record in UTF-8 JSON ({type(exc).__name__})"
            raise ExportInvalid(f"{name} line {number:,}: {problem}") from None
        if kind == "residents" and blank_individual_number(record, mirror_individual_number):
            line = rewritten[number] = record_text(record).encode("utf-8")
        digest += record_digest(line)
        row = build_row(number, record)
        rows.append(row)
        if kind == "residents":
            summaries.append((*summary_key(row), summary_text(record)))
        fact, found = record_facts(kind, record)
        facts.append(fact)
        findings += found
    summaries.sort()
    return ParsedBlock(rows, rewritten, digest, summaries, facts, findings)


def die_with_parent(parent_pid: int) -> None:
    """Worker start-up: ask Linux to SIGKILL this process when its parent
    dies (PR_SET_PDEATHSIG), so a killed load leaves no workers behind —
    they hold their own task queue open and would otherwise wait forever."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)

"""Upstream data anomalies found while a full export loads.

Four things the standard's data should never show, reported by every full
load with their counts (the run record, `sonae sync status`, the IT
dashboard) and kept in the generation (`anomalies`) so that the counter
warns on an affected record:

- duplicate_atena_number: two residents share a 宛名番号. The standard
  gives each person one 宛名番号, so this cannot happen in a sound export:
  it is the one anomaly that gates the load (override: allow-duplicate-atena).
- notified_before_birth: a 届出日 before the person was born.
- seal_registered_on_birth_date: a seal registered on its holder's birth
  date (no one registers a seal at birth; typically a migrated record
  whose registration date was unknown).
- shared_seal_image: one 印影 registered for different people.

The last three are reported, not refused: the record may still be right in
every item a certificate prints, and the clerk decides at the counter.

How they are found without holding the register in memory: while the
export is parsed (in worker processes), each record yields a small fact —
a resident's 宛名番号, a seal's holder, registration date and image digest
— and a per-record finding (a 届出日 before birth); the loader's inserter
writes them into the scratch database beside the new generation (encrypted
with the same key, deleted after the load). After the load, SQL over those
facts — attached to the new generation, whose residents carry the birth
dates — finds the rest. Only the anomalies themselves are kept.

The findings describe the export as loaded; a record the change feed
updates later keeps its finding until the next full load.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sync.errors import GateRefused

DUPLICATE_ATENA = "duplicate_atena_number"
NOTIFIED_BEFORE_BIRTH = "notified_before_birth"
SEAL_ON_BIRTH_DATE = "seal_registered_on_birth_date"
SHARED_SEAL_IMAGE = "shared_seal_image"
KINDS = (DUPLICATE_ATENA, NOTIFIED_BEFORE_BIRTH, SEAL_ON_BIRTH_DATE, SHARED_SEAL_IMAGE)
OVERRIDE_DUPLICATE_ATENA = "allow-duplicate-atena"

# In the scratch database of a load.
FACT_TABLES = """
CREATE TABLE resident_facts (resident_code TEXT NOT NULL, atena_number TEXT NOT NULL);
CREATE TABLE seal_facts (seal_number TEXT NOT NULL, resident_code TEXT NOT NULL, registered_on TEXT NOT NULL, image_digest BLOB NOT NULL);
CREATE TABLE record_findings (kind TEXT NOT NULL, resident_code TEXT NOT NULL, detail TEXT NOT NULL);
"""
FACT_INSERTS = {
    "residents": "INSERT INTO resident_facts (resident_code, atena_number) VALUES (?, ?)",
    "seals": "INSERT INTO seal_facts (seal_number, resident_code, registered_on, image_digest) VALUES (?, ?, ?, ?)",
}
FINDING_INSERT = "INSERT INTO record_findings (kind, resident_code, detail) VALUES (?, ?, ?)"

# In the generation: one row per affected record; `detail` names the
# 宛名番号 or the seal concerned.
ANOMALY_TABLE = """
CREATE TABLE anomalies (kind TEXT NOT NULL, resident_code TEXT NOT NULL, detail TEXT NOT NULL);
CREATE INDEX anomalies_resident ON anomalies(resident_code);
"""
_FIND = (
    "INSERT INTO anomalies SELECT kind, resident_code, detail FROM facts.record_findings",
    f"INSERT INTO anomalies SELECT '{DUPLICATE_ATENA}', f.resident_code, f.atena_number FROM facts.resident_facts f "
    "WHERE f.atena_number IN (SELECT atena_number FROM facts.resident_facts GROUP BY atena_number HAVING count(*) > 1)",
    f"INSERT INTO anomalies SELECT '{SEAL_ON_BIRTH_DATE}', s.resident_code, s.seal_number FROM facts.seal_facts s "
    "JOIN main.residents r ON r.resident_code = s.resident_code WHERE s.registered_on = r.birth_date",
    f"INSERT INTO anomalies SELECT '{SHARED_SEAL_IMAGE}', s.resident_code, s.seal_number FROM facts.seal_facts s "
    "WHERE s.image_digest IN (SELECT image_digest FROM facts.seal_facts GROUP BY image_digest HAVING count(DISTINCT resident_code) > 1)",
)


def record_facts(kind: str, record: dict) -> tuple[tuple, list[tuple]]:
    """A validated record's fact row for its FACT_INSERTS statement, and
    its own findings (rows for FINDING_INSERT). Pure: runs in the parsing
    workers."""
    if kind == "residents":
        findings = []
        if record["notified_on"] < record["birth_date"]:  # ISO dates compare as text
            findings.append((NOTIFIED_BEFORE_BIRTH, record["resident_code"], record["notified_on"]))
        return (record["resident_code"], record["atena_number"]), findings
    digest = hashlib.blake2b(record["image_png"].encode("ascii"), digest_size=16).digest()
    return (record["seal_number"], record["resident_code"], record["registered_on"], digest), []


# The export file in which each kind's affected records are found.
FILE_OF = {DUPLICATE_ATENA: "residents", NOTIFIED_BEFORE_BIRTH: "residents",
           SEAL_ON_BIRTH_DATE: "seals", SHARED_SEAL_IMAGE: "seals"}


@dataclass(frozen=True)
class AnomalyReport:
    """What a load reports to IT and the vendor: counts, and where a few
    affected records are in the export (their line numbers in the file of
    FILE_OF[kind]) — never a 住民票コード, a date or a seal number: IT
    sees no resident data, and the vendor finds the records by line."""

    counts: dict[str, int]  # kind -> affected records, every kind listed
    positions: dict[str, list[int]]  # kind -> the first few line numbers in its file

    def figures(self) -> dict:
        """For the run record."""
        return {"counts": self.counts, "positions": self.positions}


EXAMPLES_PER_KIND = 5


def positions_text(kind: str, lines: list[int]) -> str:
    """Where a kind's examples are, for a log line or the command line."""
    return f"{FILE_OF[kind]} file line{'s' if len(lines) > 1 else ''} {', '.join(f'{line:,}' for line in lines)}"


def find_anomalies(conn, scratch_path: Path, key: bytes) -> AnomalyReport:
    """Fill the generation's `anomalies` table from the load's facts (in the
    scratch database at `scratch_path`, same key) and return the counts."""
    conn.executescript(ANOMALY_TABLE)
    conn.execute("ATTACH DATABASE ? AS facts KEY ?", (str(scratch_path), f"x'{key.hex()}'"))
    try:
        for statement in _FIND:
            conn.execute(statement)
        conn.commit()
    finally:
        conn.execute("DETACH DATABASE facts")
    return read_report(conn)


# A row's id is its line number in its export file (sync.parsing.parse_block).
_POSITIONS = {
    "residents": "SELECT DISTINCT r.id FROM anomalies a JOIN residents r ON r.resident_code = a.resident_code "
                 "WHERE a.kind = ? ORDER BY r.id LIMIT ?",
    "seals": "SELECT DISTINCT s.id FROM anomalies a JOIN seals s ON s.seal_number = a.detail WHERE a.kind = ? ORDER BY s.id LIMIT ?",
}


def read_report(conn) -> AnomalyReport:
    """The report of a generation just loaded (its row ids are still the
    export's line numbers)."""
    counts = dict.fromkeys(KINDS, 0)
    counts.update(conn.execute("SELECT kind, count(*) FROM anomalies GROUP BY kind"))
    positions = {kind: [row[0] for row in conn.execute(_POSITIONS[FILE_OF[kind]], (kind, EXAMPLES_PER_KIND))]
                 for kind in KINDS if counts[kind]}
    return AnomalyReport(counts, positions)


def check_duplicate_atena(report: AnomalyReport) -> GateRefused | None:
    """The gate: two residents under one 宛名番号 is impossible in a sound export."""
    count = report.counts[DUPLICATE_ATENA]
    if not count:
        return None
    return GateRefused(
        "duplicate atena_number",
        f"{count:,} resident(s) share a 宛名番号 with another (e.g. {positions_text(DUPLICATE_ATENA, report.positions[DUPLICATE_ATENA][:3])}); "
        "the standard gives each person one",
        f"--{OVERRIDE_DUPLICATE_ATENA}",
    )


def anomalies_of(conn, resident_code: str) -> Iterator[tuple[str, str]]:
    """(kind, detail) of every anomaly the load found on this resident."""
    yield from conn.execute("SELECT kind, detail FROM anomalies WHERE resident_code = ? ORDER BY kind, detail", (resident_code,))

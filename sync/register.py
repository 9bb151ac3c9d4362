"""Read-only view of one snapshot generation — the counter app's only way
into the mirrored register.

Opening is cheap (a raw key, no PBKDF2: about a millisecond), so the web
server opens one Register per request or per thread; a Register (like its
SQLite connection) must not be shared between threads. Every search is a
single SQL statement, so it reads one consistent state even while the change
feed commits a batch; `consistent_view()` extends that to several calls
(e.g. a record and the data-as-of time printed with it).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sync import crypto
from sync.anomalies import anomalies_of
from sync.errors import SnapshotOutdated
from sync.normalize import PREFIX_END, address_key, kana_key, name_key
from sync.schema import ADDRESS_AFTER_TOWN, PAGE_HMAC, SCHEMA_VERSION

DB_NAME = "register.db"

# Every string of a RESIDENT that a certificate prints (printing.content):
# names and their 振り仮名, 筆頭者, 本籍, the addresses, a removed resident's
# 転出先, a planned one, and 備考.
PRINTED_FIELDS = (
    "$.name", "$.name_kana", "$.furigana", "$.alias", "$.name_alphabet", "$.former_surname", "$.former_surname_furigana",
    "$.head_name", "$.hitto", "$.honseki", "$.previous_address", "$.address.prefecture", "$.address.city", "$.address.town",
    "$.address.banchi", "$.address.katagaki", "$.removal.moved_to", "$.planned_move_out.moved_to", "$.remarks",
)


@dataclass(frozen=True)
class SnapshotMeta:
    """What a generation knows about itself."""

    generation: int
    export_id: str
    export_seq: int | None  # the upstream's sequence number of that export (None: a contract 1 export)
    contract: int  # the contract version of that export
    municipality_code: str
    municipality_prefecture: str
    municipality_name: str
    as_of: dt.datetime  # upstream time the data is consistent with (export or last change applied)
    export_as_of: dt.datetime  # as_of of the full export the generation was built from
    last_seq: int  # change-feed position
    loaded_at: dt.datetime
    source: str
    residents: int
    seals: int
    residents_digest: str
    seals_digest: str
    individual_number_mirrored: bool

    def age(self, now: dt.datetime | None = None) -> dt.timedelta:
        return (now or dt.datetime.now(dt.UTC)) - self.as_of


def read_meta(conn, generation: int) -> SnapshotMeta:
    values = dict(conn.execute("SELECT key, value FROM meta"))
    return SnapshotMeta(
        generation=generation,
        export_id=values["export_id"],
        export_seq=None if values.get("export_seq") is None else int(values["export_seq"]),
        contract=int(values["contract"]),
        municipality_code=values["municipality_code"],
        municipality_prefecture=values["municipality_prefecture"],
        municipality_name=values["municipality_name"],
        as_of=dt.datetime.fromisoformat(values["as_of"]),
        export_as_of=dt.datetime.fromisoformat(values["export_as_of"]),
        last_seq=int(values["last_seq"]),
        loaded_at=dt.datetime.fromisoformat(values["loaded_at"]),
        source=values["source"],
        residents=int(values["residents"]),
        seals=int(values["seals"]),
        residents_digest=values["residents_digest"],
        seals_digest=values["seals_digest"],
        individual_number_mirrored=bool(values["individual_number_mirrored"]),
    )


def check_schema(conn, generation: int) -> None:
    """Refuse a generation built by a Sonae whose snapshot layout differs."""
    found = _layout(conn)
    if found != SCHEMA_VERSION:
        conn.close()
        raise outdated(generation, found)


def _layout(conn) -> int:
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else 0


def outdated(generation: int, found: int) -> SnapshotOutdated:
    return SnapshotOutdated(f"generation {generation} has snapshot layout {found}, this Sonae reads layout {SCHEMA_VERSION} "
                            "(it was built before an upgrade); run `sonae sync full` to build a current generation")


def connect_snapshot(path: str | Path, key: bytes, *, readonly: bool = False, check_same_thread: bool = True):
    """Open (or create) a snapshot database with this layout's cipher
    settings (sync.schema.PAGE_HMAC). Raises crypto.WrongKeyError for a file
    that does not open with them — another key, or an older layout's file
    (open_generation tells the two apart)."""
    return crypto.connect(path, key, readonly=readonly, check_same_thread=check_same_thread, page_hmac=PAGE_HMAC)


def connect_any_layout(path: str | Path, key: bytes):
    """A read-only connection to a generation of this or an older layout
    (before layout 4, SQLCipher's default cipher settings): for reading the
    meta of a generation an upgrade left behind, which the next full load's
    gates compare the export with. WrongKeyError if neither opens it."""
    try:
        return connect_snapshot(path, key, readonly=True)
    except crypto.WrongKeyError:
        return crypto.connect(path, key, readonly=True)


def open_generation(path: str | Path, key: bytes, generation: int, *, readonly: bool = True):
    """A connection to a generation of this layout; one of another layout
    is refused by name (SnapshotOutdated: a full load builds a current one),
    also when its cipher settings keep it from opening with this layout's."""
    try:
        conn = connect_snapshot(path, key, readonly=readonly)
    except crypto.WrongKeyError:
        older = older_layout(path, key)
        if older is None:
            raise
        raise outdated(generation, older) from None
    check_schema(conn, generation)
    return conn


def older_layout(path: str | Path, key: bytes) -> int | None:
    """The layout of a file written with an older layout's cipher settings
    (SQLCipher's defaults) that opens with this key; None otherwise."""
    try:
        conn = crypto.connect(path, key, readonly=True)
    except (crypto.WrongKeyError, crypto.DatabaseError):
        return None
    try:
        return _layout(conn)
    except crypto.DatabaseError:
        return None
    finally:
        conn.close()


@dataclass(frozen=True)
class Household:
    """A 世帯: current members in household order, and former members
    (除票) of the same household separately."""

    household_id: str
    active: list[dict]
    removed: list[dict]


class Register:
    def __init__(self, path: str | Path, key: bytes, generation: int):
        self.path = Path(path)
        self.generation = generation
        self._conn = open_generation(self.path, key, generation)
        self._conn.isolation_level = None
        self._conn.execute("PRAGMA query_only = ON")

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Register:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextlib.contextmanager
    def consistent_view(self) -> Iterator[Register]:
        """Everything read inside the block comes from one committed state."""
        self._conn.execute("BEGIN")
        try:
            yield self
        finally:
            self._conn.execute("COMMIT")

    @property
    def meta(self) -> SnapshotMeta:
        """Read fresh on every access: the change feed moves as_of forward."""
        return read_meta(self._conn, self.generation)

    def age(self, now: dt.datetime | None = None) -> dt.timedelta:
        """How old the data is: now minus the as_of of the last applied state."""
        return self.meta.age(now)

    # --- search -----------------------------------------------------------

    def search(
        self,
        *,
        kana: str | None = None,
        name: str | None = None,
        birth_date: str | dt.date | None = None,
        address: str | None = None,
        resident_code: str | None = None,
        protected_codes: frozenset[str] = frozenset(),
        limit: int = 50,
    ) -> list[dict]:
        """Residents (current and removed) matching every criterion given:
        kana — prefix of the フリガナ; name — prefix of the name, the 通称 or
        the alphabet name; birth_date — exact; address — prefix of 町字+番地
        (the ward's own prefecture and city may be typed or left out);
        resident_code — exact. Returns the summaries (sync.schema.
        resident_summary) of at most `limit` residents (ask for limit + 1 to
        learn whether there are more), ordered by kana and birth date. Each
        criterion is an index range scan."""
        return [json.loads(text) for text in self.search_texts(kana=kana, name=name, birth_date=birth_date, address=address,
                                                                resident_code=resident_code, protected_codes=protected_codes,
                                                                limit=limit)]

    def search_texts(self, **criteria) -> list[str]:
        """`search`, with each summary as the JSON text stored: for a caller
        that passes the results on unparsed (the API)."""
        sql, params = self._search_sql(**criteria)
        rows = self._conn.execute(sql, params).fetchall()
        rows.sort()
        return [row[2] for row in rows]

    def query_plan(self, **criteria) -> list[str]:
        """SQLite's plan for `search(**criteria)` (tests and benchmarks check
        that every criterion is answered from an index)."""
        sql, params = self._search_sql(**criteria)
        return [row[3] for row in self._conn.execute("EXPLAIN QUERY PLAN " + sql, params)]

    def _search_sql(self, *, kana=None, name=None, birth_date=None, address=None, resident_code=None,
                    protected_codes=frozenset(), limit=50) -> tuple[str, list]:
        """One statement. Each criterion is a range or equality on an indexed
        column; the matches' (kana_key, birth_date, id) come from the index
        and their summaries from resident_summaries, whose key they are — so
        a result list is read from a few neighbouring pages. CROSS JOIN keeps
        the matches as the outer loop."""
        clauses: list[str] = []
        params: list[object] = []
        if kana is not None:
            kana_prefix = _required(kana_key(kana), "kana")
            clauses.append("r.kana_key >= ? AND r.kana_key < ?")
            params += [kana_prefix, kana_prefix + PREFIX_END]
        if birth_date is not None:
            clauses.append("r.birth_date = ?")
            params.append(birth_date.isoformat() if isinstance(birth_date, dt.date) else str(birth_date).strip())
        if address is not None:
            address_prefix = _required(self._address_query_key(address), "address")
            clauses.append("r.address_key >= ? AND r.address_key < ?")
            params += [address_prefix, address_prefix + PREFIX_END]
            clauses.append("r.support_measure = 0")
            if protected_codes:
                # By id (the rowid, in every index) rather than by code: the
                # town + kana search then still reads no table row.
                clauses.append(f"r.id NOT IN (SELECT id FROM residents WHERE resident_code IN ({', '.join('?' * len(protected_codes))}))")
                params += sorted(protected_codes)
        if resident_code is not None:
            clauses.append("r.resident_code = ?")
            params.append(resident_code.strip())
        limit = max(0, limit)
        summaries = ("SELECT s.kana_key, s.birth_date, s.summary FROM {outer} CROSS JOIN resident_summaries s "
                     "WHERE s.kana_key = {alias}.kana_key AND s.birth_date = {alias}.birth_date AND s.id = {alias}.id")
        if name is not None:
            return self._name_search_sql(name, clauses, params, limit, summaries)
        if not clauses:
            raise ValueError("search needs at least one criterion (kana, name, birth_date, address or resident_code)")
        if kana is not None and address is not None:
            # The same condition on the address, as residents_town holds it (the town, then what follows it).
            clauses[clauses.index("r.address_key >= ? AND r.address_key < ?")] = (
                f"r.town_key || {ADDRESS_AFTER_TOWN} >= ? AND r.town_key || {ADDRESS_AFTER_TOWN} < ?")
            return self._town_search_sql(address_prefix, clauses, params, limit, summaries)
        sql = summaries.format(outer="residents r", alias="r") + f" AND {' AND '.join(clauses)} LIMIT ?"
        return sql, [*params, limit]

    @staticmethod
    def _name_search_sql(name: str, clauses: list[str], params: list, limit: int, summaries: str) -> tuple[str, list]:
        """A name is looked up in three columns (name, 通称, alphabet name):
        as three LIMITed index scans joined by UNION rather than an OR,
        which would collect every match of a short prefix first."""
        key = _required(name_key(name), "name")
        branches, branch_params = [], []
        for column in ("name_key", "alias_key", "alpha_key"):
            branches.append("SELECT * FROM (SELECT r.kana_key, r.birth_date, r.id FROM residents r "
                            f"WHERE {' AND '.join([f'r.{column} >= ? AND r.{column} < ?', *clauses])} LIMIT ?)")
            branch_params += [key, key + PREFIX_END, *params, limit]
        sql = f"WITH hits(kana_key, birth_date, id) AS ({' UNION '.join(branches)}) " + summaries.format(outer="hits", alias="hits") + " LIMIT ?"
        return sql, [*branch_params, limit]

    @staticmethod
    def _town_search_sql(address_prefix: str, clauses: list[str], params: list, limit: int, summaries: str) -> tuple[str, list]:
        """Kana with an address: every row whose address key starts with
        the query's has a town key (sync.schema.town_key) that either starts
        with the query (a town, or part of a name shared by several towns)
        or begins it (the query goes on into the 番地). Those towns are found
        in the index — the first by a range, the next by seeking past each,
        the others among the query's own prefixes — and each is one range of
        residents_town on town and kana."""
        prefixes = [address_prefix[:end] for end in range(1, len(address_prefix) + 1)]
        sql = (
            "WITH RECURSIVE towns(town_key) AS ("
            "SELECT min(town_key) FROM residents WHERE town_key >= ? AND town_key < ? "
            "UNION ALL SELECT (SELECT min(town_key) FROM residents WHERE town_key > towns.town_key AND town_key < ?) "
            "FROM towns WHERE towns.town_key IS NOT NULL), "
            f"candidates(town_key) AS (SELECT town_key FROM towns WHERE town_key IS NOT NULL UNION VALUES {', '.join(['(?)'] * len(prefixes))}) "
            + summaries.format(outer="candidates CROSS JOIN residents r", alias="r")
            + f" AND r.town_key = candidates.town_key AND {' AND '.join(clauses)} LIMIT ?"
        )
        return sql, [address_prefix, address_prefix + PREFIX_END, address_prefix + PREFIX_END, *prefixes, *params, limit]

    def _address_query_key(self, address: str) -> str:
        """The query's address key without the ward's own prefecture and city,
        which the stored keys leave out."""
        key = address_key(address)
        meta = self.meta
        for leading in (address_key(meta.municipality_prefecture), address_key(meta.municipality_name)):
            if leading and key.startswith(leading):
                key = key[len(leading):]
        return key

    # --- lookups ----------------------------------------------------------

    def resident(self, resident_code: str) -> dict | None:
        row = self._conn.execute(
            "SELECT rec.record FROM residents r JOIN resident_records rec ON rec.id = r.id WHERE r.resident_code = ?",
            (resident_code,),
        ).fetchone()
        return json.loads(row[0]) if row else None

    def household(self, household_id: str) -> Household:
        active, removed = [], []
        for status, text in self._conn.execute(
            "SELECT r.status, rec.record FROM residents r JOIN resident_records rec ON rec.id = r.id "
            "WHERE r.household_id = ? ORDER BY r.household_order, r.resident_code",
            (household_id,),
        ):
            (active if status == "active" else removed).append(json.loads(text))
        return Household(household_id, active, removed)

    def protected_households(self, household_ids) -> set[str]:
        """Those of `household_ids` with a member (current or removed) under
        a 支援措置: the household's address is theirs, so every member's is
        protected as theirs is."""
        ids = sorted(set(household_ids))
        if not ids:
            return set()
        rows = self._conn.execute(
            f"SELECT DISTINCT household_id FROM residents INDEXED BY residents_protected "
            f"WHERE support_measure = 1 AND household_id IN ({', '.join('?' * len(ids))})", ids)
        return {household_id for (household_id,) in rows}

    def seals_of(self, resident_code: str) -> list[dict]:
        """Every seal registration of a resident, active and revoked."""
        return [
            json.loads(text)
            for (text,) in self._conn.execute(
                "SELECT rec.record FROM seals s JOIN seal_records rec ON rec.id = s.id WHERE s.resident_code = ? ORDER BY s.seal_number",
                (resident_code,),
            )
        ]

    def printed_texts(self) -> Iterator[tuple[str, str]]:
        """(resident_code, text) for every resident, current and removed,
        where text holds the strings a certificate prints of them
        (PRINTED_FIELDS present), one per line. Streamed from one
        consistent state; the fields are picked out by SQLite's JSON
        functions, which is quicker than a Python dict per record when the
        whole register is read."""
        fields = ", ".join(f"json_extract(record, '{path}')" for path in PRINTED_FIELDS)
        yield from self._conn.execute(f"SELECT json_extract(record, '$.resident_code'), concat_ws(char(10), {fields}) FROM resident_records")

    def anomalies(self, resident_code: str) -> list[tuple[str, str]]:
        """(kind, detail) of the upstream data anomalies the full load found
        on this resident (sync.anomalies)."""
        return list(anomalies_of(self._conn, resident_code))

    def seal(self, seal_number: str) -> dict | None:
        row = self._conn.execute(
            "SELECT rec.record FROM seals s JOIN seal_records rec ON rec.id = s.id WHERE s.seal_number = ?",
            (seal_number,),
        ).fetchone()
        return json.loads(row[0]) if row else None


def _required(key: str, criterion: str) -> str:
    if not key:
        raise ValueError(f"the {criterion} criterion is empty after normalisation; type at least one character")
    return key

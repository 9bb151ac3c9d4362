"""Finding residents: query parsing, the audited search and record view,
and the flag for a clerk paging through many residents.

Every search is audited with its query and the residents it showed, and
every record view with the resident code — in the encrypted operational
database, never in a log file. A result list shows a 支援措置 (DV等)
resident without their address or household (whose head's row would show
it): finding the person at the counter needs the name and birth date, and
the address is what the measure protects. An address criterion never
matches them (sync.register.Register.search), so a search cannot be used
to test guesses of it either.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass

from fallback import audit
from fallback.errors import SonaeError
from fallback.ops import Transaction, now
from printing.wareki import parse_date_input

MAX_RESULTS = 50
MAX_QUERY_LENGTH = 100  # per field; the API document says the same
# Summaries are stored as compact JSON (sync.schema.summary_text), so a
# protected resident's summary contains exactly this text.
_SUPPORT_MEASURE = '"support_measure":true'
_RESIDENT_CODE = re.compile(r'"resident_code":"([^"]*)"')
_HOUSEHOLD_ID = re.compile(r'"household_id":"([^"]*)"')


class QueryError(SonaeError):
    """A search the clerk must correct; the message says how."""

    code = "bad_query"


@dataclass(frozen=True)
class Query:
    kana: str = ""
    name: str = ""
    birth: str = ""
    address: str = ""
    code: str = ""

    @property
    def empty(self) -> bool:
        return not any((self.kana, self.name, self.birth, self.address, self.code))

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v}


def parse_query(args, eras) -> tuple[Query, dict]:
    """Turn form/API arguments into Register.search keyword arguments."""
    query = Query(**{k: (args.get(k) or "").strip() for k in ("kana", "name", "birth", "address", "code")})
    if any(len(value) > MAX_QUERY_LENGTH for value in query.as_dict().values()):
        raise QueryError(f"検索の条件が長すぎます（各欄{MAX_QUERY_LENGTH}文字まで）。")
    if query.empty:
        raise QueryError("カナ・氏名・生年月日・住所・住民票コードのいずれかを入力してください。")
    criteria: dict = {}
    if query.kana:
        criteria["kana"] = query.kana
    if query.name:
        criteria["name"] = query.name
    if query.address:
        criteria["address"] = query.address
    if query.code:
        code = query.code.translate(str.maketrans("０１２３４５６７８９", "0123456789")).replace("-", "")
        if not (code.isdigit() and len(code) == 11):
            raise QueryError("住民票コードは11桁の数字です。")
        criteria["resident_code"] = code
    if query.birth:
        try:
            criteria["birth_date"] = parse_date_input(query.birth, eras)
        except ValueError as exc:
            raise QueryError(f"生年月日を読み取れません: {exc}") from exc
    if set(criteria) == {"address"} and len(query.address) < 3:
        raise QueryError("住所だけで検索するときは、町名を3文字以上入力してください。")
    return query, criteria


@dataclass(frozen=True)
class Found:
    """What a search found: the summaries of at most MAX_RESULTS residents
    (sync.schema.resident_summary) as the JSON texts the snapshot stores,
    and whether more matched."""

    texts: list[str]
    truncated: bool

    def summaries(self) -> list[dict]:
        return [json.loads(text) for text in self.texts]

    def json_array(self) -> str:
        """The summaries as a JSON array, without parsing them."""
        return "[" + ",".join(self.texts) + "]"


# What a 支援措置 resident's row leaves out (null): the address, and the
# household that links them to a head (or another member) whose row shows it.
WITHHELD_FIELDS = ("address", "household_id", "head_name", "relationship")


def withheld(summary: dict) -> dict:
    """A 支援措置 resident's summary (sync.schema.resident_summary) without
    what the measure protects."""
    return {**summary, **dict.fromkeys(WITHHELD_FIELDS)}


def as_listed(text: str, protected_households: set[str] = frozenset()) -> str:
    """A stored summary as a result list may show it: a 支援措置 resident's
    is withheld, and so is a member's of their household, whose address is
    theirs (as the member's record withholds it). Others pass through
    unparsed."""
    if _SUPPORT_MEASURE not in text and _household(text) not in protected_households:
        return text
    return json.dumps(withheld(json.loads(text)), ensure_ascii=False, separators=(",", ":"))


def _household(text: str) -> str | None:
    match = _HOUSEHOLD_ID.search(text)
    return match.group(1) if match else None


def _listed_results(register, criteria: dict) -> list[str]:
    """Up to MAX_RESULTS + 1 rows as the list shows them (listed). A search
    by address leaves out a protected household's members after the
    register's LIMIT: it asks again for as many more as it left out, so
    neither the count nor "more results" changes with a protected household
    in the range (a shorter list said to be complete had shown one there)."""
    wanted = asked = MAX_RESULTS + 1
    while True:
        texts = register.search_texts(**criteria, limit=asked)
        shown = listed(register, texts, by_address="address" in criteria)
        if len(shown) >= wanted or len(texts) < asked:
            return shown[:wanted]
        asked += wanted - len(shown)


def listed(register, texts: list[str], *, by_address: bool) -> list[str]:
    """A search's summaries as its result list shows them (as_listed). A
    search by address finds no member of a household with someone under a
    支援措置 — the register leaves out that person, this their household —
    so a guess of the protected address cannot be tested with it."""
    protected = register.protected_households(filter(None, map(_household, texts)))
    if by_address:
        texts = [text for text in texts if _household(text) not in protected]
    return [as_listed(text, protected) for text in texts]


def search(conn, register, query: Query, criteria: dict, *, actor: str, drill: bool, flag_count: int, flag_window_minutes: int) -> Found:
    try:
        texts = _listed_results(register, criteria)
    except ValueError:  # a criterion of punctuation only ("・", "ー") leaves nothing to search for
        raise QueryError("検索の条件が記号だけです。氏名・カナ・住所は文字で入力してください。") from None
    shown = texts[:MAX_RESULTS]
    codes = [match.group(1) for text in shown if (match := _RESIDENT_CODE.search(text))]
    audit.record(conn, actor, "search", None, {"query": query.as_dict(), "results": len(texts), "residents": codes},
                 drill=drill, durable=False)
    if codes:
        flag_bulk_viewing(conn, actor, flag_count=flag_count, window=dt.timedelta(minutes=flag_window_minutes), drill=drill)
    return Found(shown, len(texts) > MAX_RESULTS)


def view_resident(conn, register, code: str, *, actor: str, drill: bool, flag_count: int, flag_window_minutes: int,
                  household: Iterable[str] = ()) -> dict | None:
    """Look a resident up by code: audited, found or not, and counted
    towards the bulk-viewing flag. `household`: the codes of the members
    the record shows beside them (name, birth date, address each), named in
    the entry and counted as seen too."""
    resident = register.resident(code)
    detail: dict = {"found": resident is not None}
    if others := sorted(set(household) - {code}):
        detail["household"] = others
    audit.record(conn, actor, "view", code, detail, drill=drill, durable=False)
    if resident is not None:
        flag_bulk_viewing(conn, actor, flag_count=flag_count, window=dt.timedelta(minutes=flag_window_minutes), drill=drill)
    return resident


def viewed_in_session(conn, session_id: str, code: str, *, drill: bool) -> bool:
    """Whether the staff member of this session has opened this resident's
    record (an audited view that found it) since the session began."""
    return conn.execute(
        "SELECT 1 FROM sessions s JOIN audit a ON a.actor = s.username AND a.action = 'view' AND a.at >= s.created_at "
        "WHERE s.id = ? AND a.target = ? AND a.drill = ? AND json_extract(a.detail, '$.found') LIMIT 1",
        (session_id, code, int(drill)),
    ).fetchone() is not None


def household_members(register, person: dict) -> list[dict]:
    """Everyone in the person's household: current members in order, then
    former members (除票), as the resident screen lists them."""
    household = register.household(person["household_id"])
    return household.active + household.removed


def flag_bulk_viewing(conn, actor: str, *, flag_count: int, window: dt.timedelta, drill: bool) -> bool:
    """Flag (once per window) a clerk who saw more distinct residents than
    `flag_count` within `window` — a record opened, or a row of a result
    list (which shows name, birth date and address): the pattern of someone
    browsing the register rather than serving the person at the counter —
    or who looked up more often than LOOK_UPS_READ times, which no one at
    a counter does."""
    since = (now() - window).isoformat(timespec="milliseconds")
    if _flagged_since(conn, actor, since, drill):
        return False  # a flagged clerk's look-ups go on; they are not counted again
    busy = _look_ups_beyond(conn, actor, since, LOOK_UPS_READ, drill)
    if not busy and residents_seen(conn, actor, since, drill=drill, stop_after=flag_count + 1) <= flag_count:
        return False
    figure = residents_seen(conn, actor, since, drill=drill)
    with Transaction(conn):
        if _flagged_since(conn, actor, since, drill):
            return False  # another thread or serving process flagged them while this one counted
        audit.append(conn, "system", "flag.bulk_viewing", actor,
                     {"distinct_residents": figure, "at_least": busy, "look_ups_over": LOOK_UPS_READ if busy else None,
                      "window_minutes": int(window.total_seconds() // 60)},
                     drill=drill)
    return True


# Every look-up asks whether its clerk is over the threshold, so what it
# reads must not grow with the clerk's window: at most the newest
# LOOK_UPS_READ views and as many searches (each up to 50 residents).
# Counted over a script's whole window (400,000 searches in the 4M bench),
# every serving thread counted for 20-40 s at once (bench/README.md,
# thirteenth session). A clerk at the counter looks up a few people a
# minute; one with more look-ups than this in the window is flagged for
# them alone, so repeated searches cannot push what they saw out of what
# is read.
LOOK_UPS_READ = 600

# Within one scope: a drill's look-ups (its invented residents) neither
# count towards a real flag nor, flagged in the drill, spare the clerk's
# real look-ups from being counted.
_NEWEST = "SELECT {columns} FROM audit WHERE actor = ? AND action = ? AND drill = ? AND at >= ? ORDER BY at DESC LIMIT ?"


def _flagged_since(conn, actor: str, since: str, drill: bool) -> bool:
    return conn.execute(
        "SELECT 1 FROM audit WHERE actor = 'system' AND action = 'flag.bulk_viewing' AND target = ? AND drill = ? AND at >= ?",
        (actor, int(drill), since),
    ).fetchone() is not None


def _look_ups_beyond(conn, actor: str, since: str, limit: int, drill: bool) -> bool:
    """Whether `actor` viewed, or searched, more than `limit` times since `since` (in the scope)."""
    return any(conn.execute(f"SELECT count(*) FROM ({_NEWEST.format(columns='1')})", (actor, action, int(drill), since, limit + 1)).fetchone()[0] > limit
               for action in ("view", "search"))


def residents_seen(conn, actor: str, since: str, *, drill: bool = False, stop_after: int = -1) -> int:
    """Distinct residents `actor` opened (with the household members their
    record showed) or was shown in a result list in their newest
    LOOK_UPS_READ views and searches since `since`, counted up
    to `stop_after` (-1: all of them): SQLite reads only until `stop_after`
    distinct ones are found (DISTINCT over UNION ALL streams; a UNION would
    collect them all first). Of the real register's look-ups, or a drill's."""
    scope = int(drill)
    return conn.execute(
        "SELECT count(*) FROM (SELECT DISTINCT resident FROM ("
        f" SELECT target AS resident FROM ({_NEWEST.format(columns='target, detail')}) WHERE json_extract(detail, '$.found')"
        " UNION ALL"
        f" SELECT member.value FROM ({_NEWEST.format(columns='detail')}) AS views, json_each(views.detail, '$.household') AS member"
        " UNION ALL"
        f" SELECT shown.value FROM ({_NEWEST.format(columns='detail')}) AS searches, json_each(searches.detail, '$.residents') AS shown"
        ") LIMIT ?)",
        (actor, "view", scope, since, LOOK_UPS_READ, actor, "view", scope, since, LOOK_UPS_READ, actor, "search", scope, since, LOOK_UPS_READ,
         stop_after),
    ).fetchone()[0]


def open_flags(conn, since: str) -> list[dict]:
    return [
        {"at": at, "clerk": target, "drill": bool(drill), **json.loads(detail)}
        for at, target, detail, drill in conn.execute(
            "SELECT at, target, detail, drill FROM audit WHERE action = 'flag.bulk_viewing' AND at >= ? ORDER BY id DESC", (since,)
        )
    ]

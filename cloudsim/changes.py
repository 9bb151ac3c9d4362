"""The change feed: life going on in the ward while the simulator runs.

Each event (a move within the ward, a move-in, a move-out and, days later,
the new municipality's 転入通知 confirming its destination, a birth, a death,
a marriage, a seal registered or revoked …) updates the register and appends
one change per touched record, with seq strictly increasing and no gaps, the
record's version incremented and updated_at set. Events draw from a random
stream derived from the seed and their first seq, so a feed replayed from
the same state is the same feed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import random
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from cloudsim import store
from cloudsim.register import Register
from sync.synthetic import codes
from sync.synthetic.refdata import Weighted
from sync.synthetic.synth import ABROAD, JST, PERIODS, SPACE, Synth, encode, period_days, resident_in_key_order, seal_record

CANDIDATE_BATCH = 64
CANDIDATE_TRIES = 20
AWAITING_CONFIRMATION = "move_outs_awaiting_confirmation"  # meta: households whose 転出先 is still 予定
AWAITING_KEPT = 200  # the oldest beyond these are never confirmed (as happens: a 転入届 never made)


@dataclass(frozen=True)
class Change:
    kind: str  # residents | seals
    op: str  # upsert | delete
    key: str
    record: dict | None


class EventRefused(ValueError):
    """A targeted event that cannot happen to this resident."""


class ResidentNotFound(KeyError):
    def __str__(self) -> str:
        return f"no resident with code {self.args[0]!r}"


def upsert_resident(record: dict) -> Change:
    return Change("residents", "upsert", record["resident_code"], record)


def upsert_seal(record: dict) -> Change:
    return Change("seals", "upsert", record["seal_number"], record)


class EventContext:
    """What an event sees: the register (through one connection inside the
    event's transaction), the clock and its random stream."""

    def __init__(self, connection: sqlite3.Connection, register: Register, rng: random.Random, now: dt.datetime):
        self.connection = connection
        self.rng = rng
        self.at = now.isoformat()
        self.today = now.date()
        self.synth = Synth(dataclasses.replace(register.spec, register_date=self.today), rng)

    # --- finding people ---------------------------------------------------------

    def find_resident(self, wanted: Callable[[dict], bool]) -> dict | None:
        """A random active resident for whom `wanted` holds."""
        bound = store.ordinal_bound(self.connection, "residents")
        for _ in range(CANDIDATE_TRIES):
            start = self.rng.randrange(bound) if bound else 0
            rows = self.connection.execute(
                "SELECT record FROM residents WHERE ordinal >= ? AND status = 'active' ORDER BY ordinal LIMIT ?",
                (start, CANDIDATE_BATCH)).fetchall()
            for (line,) in rows:
                record = json.loads(line)
                if wanted(record):
                    return record
        return None

    def household(self, household_id: str) -> list[dict]:
        rows = self.connection.execute(
            "SELECT record FROM residents WHERE household_id = ? AND status = 'active'", (household_id,)).fetchall()
        return sorted((json.loads(line) for (line,) in rows), key=lambda r: r["household_order"])

    def household_size(self, household_id: str) -> int:
        return self.connection.execute(
            "SELECT count(*) FROM residents WHERE household_id = ? AND status = 'active'", (household_id,)).fetchone()[0]

    def active_seals(self, resident_code: str) -> list[dict]:
        rows = self.connection.execute(
            "SELECT record FROM seals WHERE resident_ordinal = ? AND status = 'active'",
            (codes.ordinal_of_resident_code(resident_code),)).fetchall()
        return [json.loads(line) for (line,) in rows]

    def age(self, record: dict) -> float:
        return (self.today - dt.date.fromisoformat(record["birth_date"])).days / 365.25

    def next_ordinal(self, meta_key: str) -> int:
        ordinal = store.get_meta(self.connection, meta_key)
        store.set_meta(self.connection, meta_key, ordinal + 1)
        return ordinal

    # --- changing records ------------------------------------------------------------

    def touched(self, record: dict, **fields) -> dict:
        return {**record, **fields, "version": record["version"] + 1, "updated_at": self.at}

    def revoked_seals(self, resident_code: str) -> list[Change]:
        return [upsert_seal(self.touched(seal, status="revoked")) for seal in self.active_seals(resident_code)]

    def removed(self, record: dict, reason: str, occurred: dt.date, moved_to: str | None) -> list[Change]:
        removal = {"reason": reason, "occurred_on": occurred.isoformat(), "notified_on": self.today.isoformat(), "moved_to": moved_to,
                   "moved_to_confirmed": False, "confirmed_on": None}
        person = self.touched(record, status="removed", removal=removal, planned_move_out=None)
        return [upsert_resident(person)] + self.revoked_seals(record["resident_code"])


# --- events ----------------------------------------------------------------------
# Each returns the changes it made, or [] when the register offers nobody it
# could happen to (a tiny register), so that another event is tried.


def is_head(record: dict) -> bool:
    return record["relationship"] == "世帯主"


def is_japanese(record: dict) -> bool:
    return record["foreign"] is None


def move_within_ward(ctx: EventContext) -> list[Change]:
    head = ctx.find_resident(is_head)
    return household_moved(ctx, head) if head else []


def household_moved(ctx: EventContext, person: dict) -> list[Change]:
    """転居: the person's whole household moves to a new address in the ward."""
    members = ctx.household(person["household_id"])
    address = ctx.synth.address(len(members))
    today = ctx.today.isoformat()
    return [upsert_resident(ctx.touched(m, address=address, address_since=today, notified_on=today, notified_reason="転居",
                                        planned_move_out=None))
            for m in members]


def move_in(ctx: EventContext) -> list[Change]:
    first = store.get_meta(ctx.connection, "next_person_ordinal")
    people = ctx.synth.arriving_household(first, max_size=4)
    store.set_meta(ctx.connection, "next_person_ordinal", first + len(people))
    for person in people:
        person.update(version=1, updated_at=ctx.at)
    return [upsert_resident(person) for person in people]


def move_out(ctx: EventContext) -> list[Change]:
    head = ctx.find_resident(is_head)
    if head is None:
        return []
    planned = head["planned_move_out"]
    abroad = planned is None and ctx.rng.random() < (0.5 if head["foreign"] else 0.1)
    if abroad:
        destination = ctx.synth.ref.nationality(head["foreign"]["nationality"]).country if head["foreign"] else ABROAD.pick(ctx.rng)
    else:
        destination = planned["moved_to"] if planned else ctx.synth.place_address()
        awaiting = store.get_meta(ctx.connection, AWAITING_CONFIRMATION, [])
        store.set_meta(ctx.connection, AWAITING_CONFIRMATION, (awaiting + [head["household_id"]])[-AWAITING_KEPT:])
    changes = []
    for member in ctx.household(head["household_id"]):
        changes += ctx.removed(member, "国外転出" if abroad else "国内転出", ctx.today, destination)
    return changes


def move_out_confirmed(ctx: EventContext) -> list[Change]:
    """The new municipality's 転入通知 arrives: the 転出先 of a household that
    moved out is confirmed (予定 → 確定)."""
    awaiting = store.get_meta(ctx.connection, AWAITING_CONFIRMATION, [])
    if not awaiting:
        return []
    store.set_meta(ctx.connection, AWAITING_CONFIRMATION, awaiting[1:])
    rows = ctx.connection.execute("SELECT record FROM residents WHERE household_id = ? AND status = 'removed'", (awaiting[0],)).fetchall()
    changes = []
    for (line,) in rows:
        person = json.loads(line)
        removal = person["removal"]
        if removal["reason"] == "国内転出" and not removal["moved_to_confirmed"]:
            confirmed = {**removal, "moved_to_confirmed": True, "confirmed_on": ctx.today.isoformat()}
            changes.append(upsert_resident(ctx.touched(person, removal=confirmed)))
    return changes


def notify_move_out(ctx: EventContext) -> list[Change]:
    head = ctx.find_resident(lambda r: is_head(r) and r["planned_move_out"] is None)
    if head is None:
        return []
    planned = {"date": (ctx.today + dt.timedelta(days=ctx.rng.randint(7, 14))).isoformat(), "moved_to": ctx.synth.place_address()}
    return [upsert_resident(ctx.touched(m, planned_move_out=planned, notified_on=ctx.today.isoformat(), notified_reason="転出"))
            for m in ctx.household(head["household_id"])]


def birth(ctx: EventContext) -> list[Change]:
    mother = ctx.find_resident(lambda r: r["relationship"] in ("妻", "子の妻") and is_japanese(r) and 20 <= ctx.age(r) < 45)
    if mother is None:
        return []
    members = ctx.household(mother["household_id"])
    head = members[0]
    sex = ctx.rng.choice("男女")
    born = ctx.today - dt.timedelta(days=ctx.rng.randint(0, 10))
    given = ctx.synth.given(sex, born.year)
    surname, surname_reading = mother["name"].split(SPACE)[0], mother["name_kana"].split(SPACE)[0]
    ordinal = ctx.next_ordinal("next_person_ordinal")
    baby = resident_in_key_order({
        "resident_code": codes.resident_code(ordinal),
        "atena_number": codes.atena_number(ordinal),
        "household_id": head["household_id"],
        "household_order": max(m["household_order"] for m in members) + 1,
        "name": f"{surname}{SPACE}{given.written}",
        "name_kana": f"{surname_reading}{SPACE}{given.reading}",
        "birth_date": born.isoformat(),
        "sex": sex,
        "head_name": head["name"],
        "relationship": "子" if mother["relationship"] == "妻" else "孫",
        "address": head["address"],
        "resident_since": born.isoformat(),
        "notified_on": ctx.today.isoformat(),
        "honseki": mother["honseki"],
        "hitto": mother["hitto"],
        "status": "active",
        "support_measure": mother["support_measure"],
        "version": 1,
        "updated_at": ctx.at,
        # A 出生届 gives the 振り仮名 since 2025-05-26; the surname's is the mother's.
        "furigana": f"{(mother['furigana'] or mother['name_kana']).split(SPACE)[0]}{SPACE}{given.reading}",
        "notified_reason": "出生",
    })
    return [upsert_resident(baby)]


def death(ctx: EventContext) -> list[Change]:
    # A 世帯主 who lives with others is left out: their household would need
    # a new head, which the counter records separately.
    person = ctx.find_resident(lambda r: ctx.age(r) >= 75 and (not is_head(r) or ctx.household_size(r["household_id"]) == 1))
    if person is None:
        return []
    return ctx.removed(person, "死亡", ctx.today - dt.timedelta(days=ctx.rng.randint(0, 3)), None)


def single(ctx: EventContext, sex: str, low: int, high: int, other_than: str | None = None) -> dict | None:
    return ctx.find_resident(lambda r: is_head(r) and is_japanese(r) and r["sex"] == sex and low <= ctx.age(r) < high
                             and r["resident_code"] != other_than and ctx.household_size(r["household_id"]) == 1)


def marriage(ctx: EventContext) -> list[Change]:
    """She takes his surname and joins his household; they start a new 戸籍
    with him as 筆頭者. Her seal no longer matches her name and is revoked."""
    bride, groom = single(ctx, "女", 24, 45), single(ctx, "男", 25, 50)
    if bride is None or groom is None:
        return []
    surname, reading = groom["name"].split(SPACE)[0], groom["name_kana"].split(SPACE)[0]
    old_surname = bride["name"].split(SPACE)[0]
    former = ctx.rng.random() < 0.2  # 旧氏 is recorded on request
    today = ctx.today.isoformat()
    wife = ctx.touched(
        bride,
        name=f"{surname}{SPACE}{bride['name'].split(SPACE)[1]}",
        name_kana=f"{reading}{SPACE}{bride['name_kana'].split(SPACE)[1]}",
        furigana=renamed_furigana(groom["furigana"], bride["furigana"]),
        former_surname=old_surname if former else None,
        former_surname_furigana=bride["furigana"].split(SPACE)[0] if former and bride["furigana"] else None,
        household_id=groom["household_id"], household_order=2, relationship="妻", head_name=groom["name"],
        address=groom["address"], address_since=today, notified_on=today, notified_reason="転居",
        honseki=groom["honseki"], hitto=groom["name"], planned_move_out=None,
    )
    husband = ctx.touched(groom, hitto=groom["name"], notified_on=today, notified_reason="世帯変更")
    return [upsert_resident(wife), upsert_resident(husband)] + ctx.revoked_seals(bride["resident_code"])


def renamed_furigana(surname_from: str | None, given_from: str | None) -> str | None:
    """The 振り仮名 after a change of surname: the new surname's and the
    given name's, where both are confirmed (else not yet)."""
    if surname_from is None or given_from is None:
        return None
    return f"{surname_from.split(SPACE)[0]}{SPACE}{given_from.split(SPACE)[1]}"


def seal_text(record: dict) -> str:
    """What a resident's seal reads: the surname, in katakana for a name in
    the alphabet."""
    if record["foreign"] is not None and record["name_alphabet"] == record["name"]:
        return record["name_kana"].split(SPACE)[0]
    return record["name"].split(SPACE)[0]


def register_seal(ctx: EventContext) -> list[Change]:
    person = ctx.find_resident(lambda r: ctx.age(r) >= 18 and not ctx.active_seals(r["resident_code"]))
    if person is None:
        return []
    ordinal = ctx.next_ordinal("next_seal_ordinal")
    return [upsert_seal(seal_record(ordinal, person["resident_code"], ctx.today, seal_text(person), revoked_on=None, updated_at=ctx.at))]


def revoke_seal(ctx: EventContext) -> list[Change]:
    person = ctx.find_resident(lambda r: bool(ctx.active_seals(r["resident_code"])))
    return ctx.revoked_seals(person["resident_code"]) if person else []


def renew_residence(ctx: EventContext) -> list[Change]:
    """在留期間更新: a new period from today and a new residence card."""
    person = ctx.find_resident(lambda r: r["foreign"] is not None and r["foreign"]["period_expiry"] is not None
                               and r["foreign"]["status"] in PERIODS and PERIODS[r["foreign"]["status"]] is not None)
    if person is None:
        return []
    period = PERIODS[person["foreign"]["status"]].pick(ctx.rng)
    expiry = ctx.today + dt.timedelta(days=period_days(period) - 1)
    foreign = {**person["foreign"], "period": period, "period_expiry": expiry.isoformat(),
               "card_number": codes.residence_card_number(ctx.rng)}
    # The immigration authority notifies the ward, which enters it (職権記載).
    return [upsert_resident(ctx.touched(person, foreign=foreign, notified_on=ctx.today.isoformat(), notified_reason="職権記載"))]


def delete_erroneous_seal(ctx: EventContext) -> list[Change]:
    """A registration entered in error is deleted outright (not revoked)."""
    first = store.get_meta(ctx.connection, "feed_first_seal_ordinal")
    row = ctx.connection.execute("SELECT record FROM seals WHERE ordinal >= ? ORDER BY ordinal DESC LIMIT 1", (first,)).fetchone()
    if row is None:
        return []
    return [Change("seals", "delete", json.loads(row[0])["seal_number"], None)]


def delete_erroneous_move_in(ctx: EventContext) -> list[Change]:
    """A move-in registered twice by mistake: the duplicate row is deleted."""
    first = store.get_meta(ctx.connection, "feed_first_person_ordinal")
    row = ctx.connection.execute(
        "SELECT r.record FROM residents r WHERE r.ordinal >= ? AND r.status = 'active' "
        "AND NOT EXISTS (SELECT 1 FROM seals s WHERE s.resident_ordinal = r.ordinal) "
        "AND (SELECT count(*) FROM residents h WHERE h.household_id = r.household_id) = 1 "
        "ORDER BY r.ordinal DESC LIMIT 1", (first,)).fetchone()
    if row is None:
        return []
    return [Change("residents", "delete", json.loads(row[0])["resident_code"], None)]


def died_today(ctx: EventContext, person: dict) -> list[Change]:
    return ctx.removed(person, "死亡", ctx.today, None)


def surname_changed(ctx: EventContext, person: dict) -> list[Change]:
    """氏の変更: a new surname (and reading); the household's records name
    their head anew, and the seal, which no longer matches the name, is
    revoked."""
    if not is_japanese(person):
        raise EventRefused("a surname change is simulated for Japanese residents only")
    surname = ctx.synth.surname()
    given, given_reading = person["name"].split(SPACE)[1], person["name_kana"].split(SPACE)[1]
    name = f"{surname.written}{SPACE}{given}"
    today = ctx.today.isoformat()
    furigana = renamed_furigana(surname.reading, person["furigana"])
    changes = [upsert_resident(ctx.touched(person, name=name, name_kana=f"{surname.reading}{SPACE}{given_reading}", furigana=furigana,
                                           head_name=name if is_head(person) else person["head_name"], notified_on=today,
                                           notified_reason="職権記載"))]
    if is_head(person):
        changes += [upsert_resident(ctx.touched(m, head_name=name)) for m in ctx.household(person["household_id"])
                    if m["resident_code"] != person["resident_code"]]
    return changes + ctx.revoked_seals(person["resident_code"])


def seal_revoked(ctx: EventContext, person: dict) -> list[Change]:
    """廃止: the resident's registered seal is revoked (the card was lost,
    or the registration given up)."""
    changes = ctx.revoked_seals(person["resident_code"])
    if not changes:
        raise EventRefused(f"resident {person['resident_code']} has no registered seal to revoke")
    return changes


# Events an operator makes happen to one given resident (the admin port's
# /admin/residents/<code>/events), e.g. so that a certificate issued during
# an outage turns out to have been out of date.
TARGETED_EVENTS: dict[str, Callable[[EventContext, dict], list[Change]]] = {
    "move": household_moved,
    "death": died_today,
    "name_change": surname_changed,
    "seal_revoked": seal_revoked,
}


EVENTS = Weighted(
    [move_within_ward, move_in, move_out, move_out_confirmed, notify_move_out, birth, death, marriage, register_seal, revoke_seal,
     renew_residence, delete_erroneous_seal, delete_erroneous_move_in],
    [20, 15, 12, 8, 5, 9, 8, 6, 12, 6, 4, 1, 1],
)
MAX_ATTEMPTS = 50


class ChangeFeed:
    def __init__(self, register: Register):
        self.register = register

    def make(self, events: int) -> int:
        """Let `events` events happen; returns the number of changes made."""
        made = 0
        with self.register.lock:
            connection = self.register.connect()
            try:
                for _ in range(events):
                    made += self._one_event(connection)
            finally:
                connection.close()
        return made

    def make_for(self, resident_code: str, event: str) -> list[dict]:
        """Let a TARGETED_EVENTS event happen to one active resident now;
        returns the changes as the feed serves them."""
        if event not in TARGETED_EVENTS:
            raise EventRefused(f"unknown event {event!r}; known: {', '.join(TARGETED_EVENTS)}")
        ordinal = codes.ordinal_of_resident_code(resident_code)
        with self.register.lock:
            connection = self.register.connect()
            try:
                with connection:
                    row = None if ordinal is None else connection.execute(
                        "SELECT record FROM residents WHERE ordinal = ?", (ordinal,)).fetchone()
                    if row is None:
                        raise ResidentNotFound(resident_code)
                    person = json.loads(row[0])
                    if person["status"] != "active":
                        raise EventRefused(f"resident {resident_code} is not an active resident")
                    seq, ctx = self._context(connection)
                    changes = TARGETED_EVENTS[event](ctx, person)
                    return [json.loads(line) for line in record_changes(connection, changes, seq, ctx.at)]
            finally:
                connection.close()

    def _context(self, connection: sqlite3.Connection) -> tuple[int, EventContext]:
        seq = store.last_seq(connection) + 1
        rng = random.Random(f"cloudsim/{self.register.spec.seed}/feed/{seq}")
        # Microseconds: a reader comparing a change with something it did
        # within the same second must still be able to order the two.
        return seq, EventContext(connection, self.register, rng, dt.datetime.now(JST))

    def _one_event(self, connection: sqlite3.Connection) -> int:
        with connection:
            seq, ctx = self._context(connection)
            for _ in range(MAX_ATTEMPTS):
                changes = EVENTS.pick(ctx.rng)(ctx)
                if changes:
                    break
            record_changes(connection, changes, seq, ctx.at)
        return len(changes)

    def page(self, after: int, limit: int) -> tuple[list[str], int]:
        """Changes with seq > after, at most `limit`, as JSON texts; and the
        feed's last seq."""
        connection = store.connect(self.register.db_path, readonly=True)
        try:
            rows = connection.execute("SELECT change FROM changes WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)).fetchall()
            return [line for (line,) in rows], store.last_seq(connection)
        finally:
            connection.close()


def record_changes(connection: sqlite3.Connection, changes: list[Change], first_seq: int, at: str) -> list[str]:
    """Apply `changes` with consecutive seqs from `first_seq`; returns the
    feed entries written."""
    return [apply(connection, change, first_seq + offset, at) for offset, change in enumerate(changes)]


def apply(connection: sqlite3.Connection, change: Change, seq: int, at: str) -> str:
    if change.kind == "residents":
        ordinal = codes.ordinal_of_resident_code(change.key)
        if change.op == "delete":
            connection.execute("DELETE FROM residents WHERE ordinal = ?", (ordinal,))
        else:
            record = change.record
            connection.execute("INSERT OR REPLACE INTO residents VALUES (?, ?, ?, ?)",
                               (ordinal, record["household_id"], record["status"], encode(record)))
    else:
        ordinal = codes.seal_ordinal(change.key)
        if change.op == "delete":
            connection.execute("DELETE FROM seals WHERE ordinal = ?", (ordinal,))
        else:
            owner = codes.ordinal_of_resident_code(change.record["resident_code"])
            connection.execute("INSERT OR REPLACE INTO seals VALUES (?, ?, ?, ?)",
                               (ordinal, owner, change.record["status"], encode(change.record)))
    envelope = encode({"seq": seq, "op": change.op, "kind": change.kind, "key": change.key, "record": change.record, "at": at})
    connection.execute("INSERT INTO changes VALUES (?, ?)", (seq, envelope))
    return envelope

"""The waiting-time estimate against scripted issuance timings.

The timings are scripted, so the rows are written straight into the real
operational database (the issuance and audit code stamp the current time).
"""

from __future__ import annotations

import datetime as dt
import json

import pytest

from fallback import modes
from fallback.config import load_config
from fallback.ops import open_ops
from fallback.residents.waits import erlang_c_wait, estimate_waits

from .conftest import jst

BASE = jst(2026, 11, 25, 10, 0)
AT = BASE + dt.timedelta(minutes=30)
TERMINALS = [
    {"id": "本庁1", "office": "本庁", "printer": "プリンタ001", "queue": ""},
    {"id": "本庁2", "office": "本庁", "printer": "プリンタ002", "queue": ""},
    {"id": "本庁3", "office": "本庁", "printer": "プリンタ003", "queue": ""},
    {"id": "蒲田1", "office": "蒲田特別出張所", "printer": "プリンタ011", "queue": ""},
    {"id": "蒲田2", "office": "蒲田特別出張所", "printer": "プリンタ012", "queue": ""},
    {"id": "羽田1", "office": "羽田特別出張所", "printer": "プリンタ021", "queue": ""},
]


@pytest.fixture
def config(sonae_env, monkeypatch):
    monkeypatch.setenv("SONAE_COUNTER_TERMINALS", json.dumps(TERMINALS, ensure_ascii=False))
    return load_config()


@pytest.fixture
def db(config):
    conn = open_ops(config)
    modes.change(conn, modes.DOWNTIME, actor="boss", role="supervisor", reason="住民記録システム障害")
    yield conn
    conn.close()


def stamp(minutes: float) -> str:
    return (BASE + dt.timedelta(minutes=minutes)).isoformat(timespec="milliseconds")


def serve(conn, terminal: str, *, searched: float, requested: float, printed: float | None, scope: str = "real") -> None:
    """One resident at one counter: the clerk's first search, the request,
    and the certificate's print (None: the request was refused)."""
    office = next(t["office"] for t in TERMINALS if t["id"] == terminal)
    clerk = f"clerk-{terminal}"
    conn.execute(
        "INSERT INTO audit (at, actor, action, target, detail, drill, prev_hash, hash) VALUES (?,?,?,?,?,?,?,?)",
        (stamp(searched), clerk, "search", None, "{}", int(scope == "drill"), "scripted", "scripted"),
    )
    request_id = conn.execute(
        "INSERT INTO requests (created_at, scope, drill_id, clerk, office, terminal, printer, kind, subject_code, requester_type, "
        "options, copies, fee_yen, outcome) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (stamp(requested), scope, 1 if scope == "drill" else None, clerk, office, terminal, "p", "juminhyo", "10000000011",
         "self", "{}", 1, 300, "issued" if printed is not None else "refused"),
    ).lastrowid
    if printed is not None:
        conn.execute(
            "INSERT INTO certificates (serial, scope, request_id, copy_number, status, issued_at, rendered_at, resident_codes, "
            "printed_records) VALUES (?,?,?,?,?,?,?,?,?)",
            (900000 + request_id, scope, request_id, 1, "rendered", stamp(requested), stamp(printed), "[]", "{}"),
        )


def by_office(conn, config):
    return {wait.office: wait for wait in estimate_waits(conn, config, at=AT)}


def test_erlang_c_matches_the_single_counter_formula():
    # M/M/1: Wq = ρ/(1-ρ) · handling
    assert erlang_c_wait(1, 0.5, 4.0) == pytest.approx(4.0)
    assert erlang_c_wait(3, 0.0, 4.0) == 0.0


def test_light_load_medium_load_saturation_and_too_little_data(db, config):
    # 本庁: three counters, 4 minutes a resident, nine residents in half an
    # hour — the counters are mostly free.
    for clerk in range(3):
        for visit in range(3):
            start = 2 + clerk + 10 * visit
            serve(db, f"本庁{clerk + 1}", searched=start, requested=start + 3, printed=start + 4)
    # 蒲田: two counters, 5 minutes a resident, nine residents: 75 % busy.
    for visit in range(9):
        start = 1 + visit * 3
        serve(db, f"蒲田{visit % 2 + 1}", searched=start, requested=start + 4, printed=start + 5)
    # 羽田: only four requests (one refused): too few to say anything.
    for visit in range(4):
        serve(db, "羽田1", searched=visit * 7, requested=visit * 7 + 2, printed=None if visit == 0 else visit * 7 + 3)

    waits = by_office(db, config)
    honcho, kamata, haneda = waits["本庁"], waits["蒲田特別出張所"], waits["羽田特別出張所"]
    # a = 0.3/min × 4 min = 1.2 on 3 counters: Wq ≈ 0.3 min, plus 4 min handling.
    assert (honcho.requests, honcho.counters, honcho.handling_minutes) == (9, 3, pytest.approx(4.0))
    assert (honcho.minutes, honcho.at_least) == (5, False)
    # a = 0.3/min × 5 min = 1.5 on 2 counters: Wq ≈ 6.4 min, plus 5: 11.4 → 15.
    assert (kamata.counters, kamata.handling_minutes) == (2, pytest.approx(5.0))
    assert (kamata.minutes, kamata.at_least) == (15, False)
    assert (haneda.requests, haneda.minutes) == (4, None)
    assert [w.public() for w in waits.values()] == [
        {"office": "本庁", "minutes": 5, "at_least": False},
        {"office": "蒲田特別出張所", "minutes": 15, "at_least": False},
        {"office": "羽田特別出張所", "minutes": None, "at_least": False},
    ]


def test_saturated_counters_give_a_lower_bound(db, config):
    # Three counters busy back to back, 5 minutes a resident: the records
    # cannot see the queue, so the estimate is "at least".
    for clerk in range(3):
        for visit in range(6):
            start = 5 * visit
            serve(db, f"本庁{clerk + 1}", searched=start, requested=start + 4, printed=start + 5)
    honcho = by_office(db, config)["本庁"]
    assert honcho.requests == 18 and honcho.at_least
    # The model's wait at 95 % utilisation (≈30.2 min) plus 5 min handling.
    assert honcho.minutes == 40


def test_drill_records_never_count(db, config):
    for visit in range(20):
        serve(db, "本庁1", searched=visit, requested=visit + 1, printed=visit + 1.5, scope="drill")
    assert by_office(db, config)["本庁"].minutes is None


def test_old_records_and_other_modes_give_no_estimate(db, config):
    for visit in range(10):
        serve(db, "本庁1", searched=-60 + visit, requested=-59 + visit, printed=-58.5 + visit)
    assert by_office(db, config)["本庁"].requests == 0
    for visit in range(10):
        serve(db, "本庁2", searched=visit * 2, requested=visit * 2 + 1, printed=visit * 2 + 1.5)
    assert by_office(db, config)["本庁"].minutes is not None
    modes.change(db, modes.RECOVERY, actor="boss", role="supervisor", reason="復旧")
    assert {w.minutes for w in estimate_waits(db, config, at=AT)} == {None}


def test_handling_starts_at_the_first_search_after_the_previous_request(db, config):
    # A search left over from the clerk's previous resident does not count:
    # handling is measured from the first search after that request.
    serve(db, "本庁1", searched=0, requested=2, printed=3)
    db.execute("INSERT INTO audit (at, actor, action, target, detail, drill, prev_hash, hash) VALUES (?,?,?,?,?,?,?,?)",
               (stamp(1), "clerk-本庁1", "view", "10000000011", "{}", 0, "scripted", "scripted"))
    for visit in range(4):
        start = 10 + visit * 5
        serve(db, "本庁1", searched=start, requested=start + 1, printed=start + 2)
    honcho = by_office(db, config)["本庁"]
    assert honcho.handling_minutes == pytest.approx((3 + 2 * 4) / 5)

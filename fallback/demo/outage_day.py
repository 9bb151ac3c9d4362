"""The outage day, scripted: `sonae demo outage` and the end-to-end tests
run this same script against the real processes.

cloudsim serves a register with a live change feed; the appliance syncs,
then cloudsim goes down. The worker's probes detect it and alert by
webhook and SMTP (both received here); a supervisor declares downtime in a
headless Chromium; three counters, each in its own Chromium, search and
issue every type of certificate — and meet the refusals (support measure,
revoked seal, third party) — and record deferred requests. Meanwhile the
cloud register keeps changing (the upstream's admin port makes a move, a
death and a surname change happen to residents before they are served, and
a move after). cloudsim comes back, the appliance catches up, the
supervisor ends downtime, reconciliation lists the certificates at risk,
and the incident report is fetched.

The outage lasts a second day (DayOptions.second_day; a fault's run keeps
one day): the counters take 届出 — a 転出届, a death from 戸籍, a lost seal
card, a move within the ward, people moving in, a seal registration — and a
supervisor records holds (an urgent 支援措置, a police request); then the
counters meet what those change. After recovery the supervisor fetches the
re-entry files, the worklist and the issuance history, the vendor takes
the files in (cloudsim records the death and the lost seal), the clerks'
manual entries are ticked off and the holds the register now shows are
reconciled. The DayRecord keeps all of it for the tests to compare.

Faults (FAULTS) are injected at the points of the day where they hurt
most. Everything the script did is kept in a DayRecord, which the tests
compare with the report.

Selenium, Chromium and aiosmtpd are needed only here (the `test` extra and
Debian's chromium/chromium-driver); they are imported when the day starts.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import email
import email.policy
import io
import json
import os
import random
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import click
import requests

from fallback import filings, holds
from fallback.config import load_config
from fallback.demo.site import DemoSite
from fallback.mirror.registry import snapshot_store
from fallback.ops import now, open_ops
from printing.wareki import format_wareki

FAULTS = {
    "web_kill": "the web server is SIGKILLed in the middle of an issuance, then restarted",
    "worker_kill": "the worker is SIGKILLed in the middle of the catch-up sync, then restarted",
    "disk_full": "the snapshot disk (a tmpfs; needs root) fills up during the catch-up sync, then IT frees it",
    "flapping": "the upstream flaps, down and up every flap_every_s seconds, while the counters work",
    "corrupt_export": "a full export with a damaged file is published during the outage; IT's reload is refused",
    "printer_stopped": "the first counter's CUPS queue (printer_queue) is stopped while the counters work",
}
TERMINALS = (
    {"id": "本庁1", "office": "本庁", "printer": "プリンタ001", "queue": ""},
    {"id": "蒲田1", "office": "蒲田", "printer": "プリンタ101", "queue": ""},
    {"id": "大森1", "office": "大森", "printer": "プリンタ201", "queue": ""},
)
# The supervisor's own PC: a counter PC too (a hold is recorded at an open counter).
SUPERVISOR_TERMINAL = {"id": "本庁2", "office": "本庁", "printer": "プリンタ002", "queue": ""}
CLERKS = ("madoguchi1", "madoguchi2", "madoguchi3")
SUPERVISOR, IT_STAFF = "kakaricho", "joho"
CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic", "--lang=ja",
)
SCREENSHOT_SIZE = (1200, 800)


def free_ports(count: int, *, width: int = 1) -> list[int]:
    """`count` distinct ports p, each free with the `width` - 1 ports after
    it (cloudsim takes p and p + 1). They are picked below Linux's
    ephemeral range (32768–60999), so that no outgoing connection of the
    day takes one between the pick and the server binding it."""
    rng = random.Random()
    chosen: list[int] = []
    while len(chosen) < count:
        port = rng.randrange(20000, 32000 - width)
        if any(abs(port - other) < width for other in chosen):
            continue
        try:
            for offset in range(width):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port + offset))
        except OSError:
            continue
        chosen.append(port)
    return chosen


class DayFailed(click.ClickException):
    """A step of the day did not happen as the script expects."""


def start_chromium(window: tuple[int, int] = (1400, 1000)):
    """Debian's headless Chromium through its ChromeDriver."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        raise DayFailed("the outage day drives a real browser: install the test extra (pip install -e '.[test]')") from None
    for path in ("/usr/bin/chromium", "/usr/bin/chromedriver"):
        if not os.path.exists(path):
            raise DayFailed(f"{path} is missing: apt-get install chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in (*CHROMIUM_FLAGS, f"--window-size={window[0]},{window[1]}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.implicitly_wait(0)
    return driver


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise DayFailed(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


# --- what the day is told and what it records ------------------------------------


@dataclass(frozen=True)
class DayOptions:
    residents: int = 100_000
    seed: int = 1
    change_rate: float = 30.0  # the upstream's live feed, changes per minute
    probe_interval_s: int = 2
    faults: frozenset[str] = frozenset()
    flap_every_s: float = 30.0
    printer_queue: str = ""  # CUPS queue of the first counter (printer_stopped)
    screenshots: Path | None = None
    web_port: int = 8080
    upstream_port: int = 8700
    second_day: bool = True  # the outage goes on: 届出, holds and what they change (see the module's docstring)


@dataclass
class Issued:
    clerk: str
    office: str
    kind: str
    subject: str
    request_id: int
    serials: list[int]
    day: int = 1


@dataclass
class Refused:
    clerk: str
    office: str
    kind: str
    subject: str
    rule: str
    day: int = 1


@dataclass
class Deferred:
    clerk: str
    office: str
    kind: str
    id: int
    resident_code: str | None
    status: str = "open"


@dataclass
class UpstreamChange:
    resident_code: str
    event: str
    before_issue: bool
    changes: list[dict]  # the feed entries it made


@dataclass
class Filed:
    """A 届出 the counter recorded (the second day)."""

    id: int
    kind: str
    clerk: str
    persons: list[str]  # resident codes, or the names of people moving in
    holds: list[str]  # the kinds of hold it created


@dataclass
class Held:
    """A hold recorded by a supervisor on the hold form (the second day)."""

    kind: str
    resident_code: str


@dataclass
class DayRecord:
    root: Path
    residents: int
    faults: frozenset[str]
    snapshot_at_outage: tuple[int, dt.datetime] | None = None  # (generation, data as of) the counters work from
    outage_started_at: dt.datetime | None = None
    upstream_back_at: dt.datetime | None = None
    alerts: list[dict] = field(default_factory=list)  # every webhook body received
    mails: list[str] = field(default_factory=list)  # every mail's subject
    declared: tuple[dt.datetime, dt.datetime] | None = None  # before and after the click
    downtime_ended: tuple[dt.datetime, dt.datetime] | None = None
    standby: tuple[dt.datetime, dt.datetime] | None = None
    issued: list[Issued] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)
    deferred: list[Deferred] = field(default_factory=list)
    upstream_changes: list[UpstreamChange] = field(default_factory=list)
    feed_since_outage: list[dict] = field(default_factory=list)  # every upstream change after the snapshot's last_seq
    killed_request: int | None = None  # web_kill: the request whose serial the kill left unrendered
    fault_notes: dict[str, str] = field(default_factory=dict)
    incident_id: int | None = None
    report_markdown: str = ""
    report_pdf: bytes = b""
    screenshots: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # consistency problems found at the end
    # the second day and after recovery
    filings: list[Filed] = field(default_factory=list)
    holds: list[Held] = field(default_factory=list)
    reentry_files: dict[str, bytes] = field(default_factory=dict)  # kind -> the CSV as downloaded
    worklist_pdf: bytes = b""
    worklist: list[int] = field(default_factory=list)  # filing ids the re-entry page lists for manual entry
    ticked: list[int] = field(default_factory=list)  # filing ids ticked off as entered
    issuance_history_csv: str = ""
    reentered: list[UpstreamChange] = field(default_factory=list)  # what the vendor's import changed upstream
    reconciled_holds: list[int] = field(default_factory=list)

    @property
    def certificates(self) -> int:
        return sum(len(i.serials) for i in self.issued)


# --- alerts are received here ----------------------------------------------------------


class AlertInbox:
    """A webhook receiver and an SMTP server (aiosmtpd) on loopback, keeping
    everything the appliance sends."""

    def __init__(self):
        try:
            from aiosmtpd.controller import Controller
        except ImportError:
            raise DayFailed("the outage day receives alert mail with aiosmtpd: install the test extra (pip install -e '.[test]')") from None
        self.bodies: list[dict] = []
        self.mails: list = []
        self._lock = threading.Lock()
        inbox = self

        class Webhook(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))).decode("utf-8"))
                with inbox._lock:
                    inbox.bodies.append(body)
                self.send_response(204)
                self.end_headers()

        class Mailbox:
            async def handle_DATA(self, server, session, envelope):
                message = email.message_from_bytes(envelope.content, policy=email.policy.default)
                with inbox._lock:
                    inbox.mails.append(message)
                return "250 OK"

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Webhook)
        self._http.daemon_threads = True
        threading.Thread(target=self._http.serve_forever, daemon=True).start()
        self.webhook_url = f"http://127.0.0.1:{self._http.server_address[1]}/hooks/sonae"
        self.smtp_port = free_ports(1)[0]
        self._smtp = Controller(Mailbox(), hostname="127.0.0.1", port=self.smtp_port, ready_timeout=60)  # not aiosmtpd's 5 s: a busy box
        self._smtp.start()

    def arrived(self, key: str, event: str, since: dt.datetime | None = None) -> tuple[dict, object] | None:
        """The webhook body and the mail of one alert event (the first sent
        at or after `since`), once both came."""
        with self._lock:
            body = next((b for b in self.bodies if b["key"] == key and b["event"] == event
                         and (since is None or dt.datetime.fromisoformat(b["at"]) >= since)), None)
            mail = None
            if body is not None:
                mail = next((m for m in self.mails if str(m["Subject"]).endswith(f"{body['title']}（Sonae {body['municipality']['name']}）")), None)
        return (body, mail) if body and mail else None

    def latest(self, key: str, event: str) -> tuple[dict, object] | None:
        """The last event of an alert, if it is `event`, with its mail."""
        with self._lock:
            events = [b for b in self.bodies if b["key"] == key]
        if not events or events[-1]["event"] != event:
            return None
        return self.arrived(key, event, dt.datetime.fromisoformat(events[-1]["at"]))

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._smtp.stop()


# --- the counters' cases ---------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One resident at one counter: what they ask for and what the clerk
    enters. `expect` is "issued" or the refusal rule."""

    clerk: int  # index into CLERKS / TERMINALS
    kind: str
    resident: dict
    expect: str  # "" for a deferred request only
    requester_type: str = "self"
    requester_name: str = ""
    identity_document: str = "運転免許証"
    whole_household: bool = False
    copies: int = 1
    seal_card_number: str = ""
    items: tuple[str, ...] = ()
    deferred: str = ""  # a deferred request recorded after the case (kind)
    contact: str = "090-1234-5678"
    acknowledge_move_out: bool = False


@dataclass(frozen=True)
class Cast:
    """The residents who come to the counters today, picked from the
    appliance's snapshot as it stands when the outage begins."""

    household: dict  # whole-household 住民票 (moves before issue)
    protected: dict  # support measure
    sealed: dict  # active seal (revoked upstream before issue)
    revoked: dict  # every seal revoked
    removed: dict  # 除票
    renamed: dict  # 記載事項証明書 (surname changes before issue)
    dying: dict  # 住民票 asked by a household member (dies before issue)
    dying_relative: dict
    third: dict  # asked for by a third party
    foreign: dict  # foreign resident (moves after issue)
    mover: dict  # reports a move, to be processed after recovery
    seal_cards: dict[str, str]  # resident code -> card number

    def cases(self) -> list[Case]:
        c = self
        return [
            Case(0, "juminhyo", c.household, "issued", whole_household=True, copies=2),
            # an agent asking for a 支援措置 resident's record is refused outright: no approval opens it
            Case(0, "juminhyo", c.protected, "support_measure", requester_type="agent", requester_name="代理　太郎",
                 identity_document="マイナンバーカード"),
            Case(0, "", c.mover, "", deferred="tenkyo"),
            Case(1, "inkan", c.sealed, "issued", identity_document="印鑑登録証", seal_card_number=c.seal_cards[c.sealed["resident_code"]]),
            Case(1, "inkan", c.revoked, "seal_revoked", identity_document="印鑑登録証",
                 seal_card_number=c.seal_cards[c.revoked["resident_code"]], deferred="inkan_toroku"),
            Case(1, "johyo", c.removed, "issued", identity_document="旅券"),
            Case(2, "kisai", c.renamed, "issued"),
            Case(2, "juminhyo", c.dying, "issued", requester_type="household", requester_name=c.dying_relative["name"]),
            Case(2, "juminhyo", c.third, "third_party", requester_type="third_party", requester_name="債権　回収",
                 deferred="certificate_mail"),
            Case(2, "juminhyo", c.foreign, "issued", identity_document="在留カード・特別永住者証明書",
                 items=("nationality", "status", "period", "expiry", "card_number")),
        ]

    def changes_before_issue(self) -> list[tuple[str, str]]:
        return [(self.household["resident_code"], "move"), (self.renamed["resident_code"], "name_change"),
                (self.dying["resident_code"], "death"), (self.sealed["resident_code"], "seal_revoked")]

    def changes_after_issue(self) -> list[tuple[str, str]]:
        return [(self.foreign["resident_code"], "move")]


def pick_cast(register, seed: int) -> Cast:
    """Residents for every case, each from a household of its own: chosen
    by their search summaries, cast with their whole records."""
    sample: dict[str, dict] = {}
    for initial in "アイウエオカキクケコサシスセソタチツテトナニヌネノハヒフヘホマミムメモヤユヨラリルレロワ":
        for summary in register.search(kana=initial, limit=400):
            sample[summary["resident_code"]] = summary
    rng = random.Random(seed)
    people = sorted(sample.values(), key=lambda r: r["resident_code"])
    rng.shuffle(people)
    households = {}
    used: set[str] = set()

    def members(person):
        if person["household_id"] not in households:
            households[person["household_id"]] = register.household(person["household_id"]).active
        return households[person["household_id"]]

    def plain(person) -> bool:
        return (person["status"] == "active" and not person["support_measure"] and not person["planned_move_out"]
                and person["household_id"] not in used)

    def take(wanted, what: str) -> dict:
        for person in people:
            if person["household_id"] not in used and wanted(person):
                used.add(person["household_id"])
                return person
        raise DayFailed(f"the register has no resident for the case: {what} (try another --seed or more --residents)")

    def calm_household(person) -> bool:
        return all(not m["support_measure"] and not m.get("planned_move_out") for m in members(person))

    seal_cards: dict[str, str] = {}

    def seals(person, status: str) -> bool:
        found = register.seals_of(person["resident_code"])
        if found and all(s["status"] == status for s in found):
            seal_cards[person["resident_code"]] = found[0]["card_number"]
            return True
        return False

    household = take(lambda p: plain(p) and not p["foreign"] and 2 <= len(members(p)) <= 4 and calm_household(p),
                     "a household of two to four")
    protected = take(lambda p: p["status"] == "active" and p["support_measure"] and not p["planned_move_out"],
                     "a resident under a support measure")
    sealed = take(lambda p: plain(p) and seals(p, "active"), "a resident with a registered seal")
    revoked = take(lambda p: plain(p) and seals(p, "revoked"), "a resident whose seal was revoked")
    # A person who moved out asks for their own 除票 (a deceased person's has no 本人: a relative is a third party).
    removed = take(lambda p: p["status"] == "removed" and not p["support_measure"]
                   and register.resident(p["resident_code"])["removal"]["reason"] != "死亡", "a resident who moved out")
    renamed = take(lambda p: plain(p) and not p["foreign"], "a Japanese resident")
    dying = take(lambda p: plain(p) and p["relationship"] != "世帯主" and len(members(p)) >= 2 and calm_household(p),
                 "a household member who is not its head")
    third = take(plain, "any resident")
    # One whose record holds every 在留 item the case asks for (a 特別永住者 has no 在留期間):
    # an item the record lacks would stop for the clerk's decision.
    foreign = take(lambda p: plain(p) and p["foreign"] and all(register.resident(p["resident_code"])["foreign"].get(field)
                                                                for field in ("status", "period", "period_expiry", "card_number")),
                   "a foreign resident with a 在留期間")
    mover = take(plain, "any resident")
    relative = next(m for m in members(dying) if m["resident_code"] != dying["resident_code"])
    cast = [register.resident(p["resident_code"]) for p in (household, protected, sealed, revoked, removed, renamed, dying)]
    cast.append(relative)
    cast += [register.resident(p["resident_code"]) for p in (third, foreign, mover)]
    return Cast(*cast, seal_cards)


# --- the second day ---------------------------------------------------------------------


NEWCOMERS = (  # a family moving in from outside the ward: not in the register yet
    {"name": "転入　陽太", "name_kana": "テンニュウ　ヨウタ", "birth_date": dt.date(1988, 4, 2), "sex": "男", "relationship": "世帯主"},
    {"name": "転入　結衣", "name_kana": "テンニュウ　ユイ", "birth_date": dt.date(1990, 9, 17), "sex": "女", "relationship": "妻"},
)


@dataclass(frozen=True)
class FilingCase:
    """A 届出 taken at the first counter on the second day."""

    kind: str
    resident: dict | None  # whom it is about (None: people moving in)
    items: dict[str, str]  # the kind's items as the clerk types them (dates in 和暦)
    members: tuple[str, ...] = ()  # more members of the household on the same 届出
    notifier_relation: str = "self"
    documents: tuple[str, ...] = ("運転免許証",)
    new_persons: tuple[dict, ...] = ()
    holds: tuple[str, ...] = ()  # the holds it must create, one per person


@dataclass(frozen=True)
class HoldCase:
    """A hold a supervisor records on the hold form."""

    kind: str
    resident: dict
    note: str


@dataclass(frozen=True)
class SecondCast:
    """Who comes on the second day, picked like the first day's cast from
    households of their own."""

    leaver: dict  # 転出届 with a member of the household
    leaver_companion: dict
    deceased: dict  # death notified by 戸籍; a household member who is not its head
    deceased_head: dict
    lost_card: dict  # reports the 印鑑登録証 lost
    lost_seal: dict  # the registration whose card was lost
    urgent: dict  # asks for an urgent 支援措置
    watched: dict  # the police asked to be told
    agent_subject: dict  # an agent collects their 住民票 (本人通知制度)
    registrant: dict  # registers a seal (entered by hand after recovery)
    mover: dict  # the first day's deferred 転居, now taken as a 届出

    @staticmethod
    def day(offset: int) -> str:
        return format_wareki(now().date() + dt.timedelta(days=offset))

    def filings(self) -> list[FilingCase]:
        return [
            FilingCase("tenshutsu", self.leaver, {"planned_move_out.date": self.day(7), "planned_move_out.moved_to": "神奈川県横浜市中区日本大通1番地"},
                       members=(self.leaver_companion["resident_code"],), holds=("move_out", "move_out")),
            FilingCase("shibo", self.deceased, {"removal.occurred_on": self.day(-1)}, notifier_relation="koseki", documents=("戸籍の通知",),
                       holds=("death",)),
            FilingCase("inkan_haishi", self.lost_card, {"seal_number": self.lost_seal["seal_number"], "reason": "亡失", "occurred_on": self.day(-1)},
                       holds=("seal_lost",)),
            FilingCase("tenkyo", self.mover, {"address_since": self.day(-1), "address.town": "西蒲田七丁目", "address.banchi": "49番1号"}),
            FilingCase("tennyu", None, {"resident_since": self.day(-2), "previous_address": "神奈川県横浜市中区日本大通1番地",
                                        "address.town": "大森北一丁目", "address.banchi": "1番1号", "head_name": NEWCOMERS[0]["name"]},
                       documents=("転出証明書", "マイナンバーカード"), new_persons=NEWCOMERS),
            FilingCase("inkan_toroku", self.registrant, {"method": "保証書"}),
        ]

    def holds(self) -> list[HoldCase]:
        return [HoldCase("support_measure", self.urgent, "DV被害の申出（相談票あり）。住所を知らせない。"),
                HoldCase("court_police", self.watched, "警察署から照会：交付の請求があれば連絡（生活安全課）。")]

    def cases(self) -> list[Case]:
        return [
            Case(1, "inkan", self.lost_card, "seal_held", identity_document="印鑑登録証", seal_card_number=self.lost_seal["card_number"]),
            Case(1, "juminhyo", self.deceased_head, "death_held", whole_household=True),
            Case(1, "juminhyo", self.deceased_head, "issued"),
            Case(1, "juminhyo", self.agent_subject, "issued", requester_type="agent", requester_name="代理　三郎"),
            Case(2, "juminhyo", self.leaver, "planned_move_out"),
            Case(2, "juminhyo", self.leaver, "issued", acknowledge_move_out=True),
            Case(2, "juminhyo", self.urgent, "support_measure", requester_type="agent", requester_name="親族　次郎",
                 identity_document="マイナンバーカード"),
            Case(2, "juminhyo", self.watched, "hold_approval"),
        ]

    def reentered(self) -> list[tuple[str, str]]:
        """What the vendor's import of the re-entry files makes the register
        say that a hold said first."""
        return [(self.deceased["resident_code"], "death"), (self.lost_card["resident_code"], "seal_revoked")]


def pick_second_day(register, seed: int, cast: Cast) -> SecondCast:
    """The second day's people, from households the first day did not touch."""
    first = [cast.household, cast.protected, cast.sealed, cast.revoked, cast.removed, cast.renamed, cast.dying, cast.third,
             cast.foreign, cast.mover]
    used = {person["household_id"] for person in first}
    rng = random.Random(f"{seed}/second-day")
    sample = {}
    for initial in "アイウエオカキクケコサシスセソタチツテトナニヌネノハヒフヘホマミムメモヤユヨラリルレロワ":
        for summary in register.search(kana=initial, limit=400):
            sample[summary["resident_code"]] = summary
    people = sorted(sample.values(), key=lambda r: r["resident_code"])
    rng.shuffle(people)

    def members(person) -> list[dict]:
        return register.household(person["household_id"]).active

    def calm(person) -> bool:
        return (person["status"] == "active" and not person["support_measure"] and not person["planned_move_out"]
                and all(not m["support_measure"] and not m.get("planned_move_out") for m in members(person)))

    def take(wanted, what: str) -> dict:
        for person in people:
            if person["household_id"] not in used and calm(person) and wanted(person):
                used.add(person["household_id"])
                return register.resident(person["resident_code"])
        raise DayFailed(f"the register has no resident for the second day's case: {what} (try another --seed or more --residents)")

    def active_seals(person) -> list[dict]:
        found = register.seals_of(person["resident_code"])
        return found if found and all(s["status"] == "active" for s in found) else []

    leaver = take(lambda p: p["relationship"] == "世帯主" and 2 <= len(members(p)) <= 4, "a household head moving out with a member")
    deceased = take(lambda p: p["relationship"] != "世帯主" and 2 <= len(members(p)) <= 4
                    and any(m["relationship"] == "世帯主" for m in members(p)), "a household member who is not its head")
    lost_card = take(lambda p: bool(active_seals(p)), "a resident with a registered seal")
    urgent = take(lambda p: True, "any resident")
    watched = take(lambda p: True, "any resident")
    agent_subject = take(lambda p: True, "any resident")
    registrant = take(lambda p: not register.seals_of(p["resident_code"]), "a resident without a seal")
    companion = next(m for m in members(leaver) if m["resident_code"] != leaver["resident_code"])
    head = next(m for m in members(deceased) if m["relationship"] == "世帯主")
    return SecondCast(leaver, companion, deceased, head, lost_card, active_seals(lost_card)[0], urgent, watched, agent_subject,
                      registrant, cast.mover)


# --- a browser at a desk ------------------------------------------------------------------


class Browser:
    def __init__(self, base_url: str, screenshots: Screenshots | None):
        self.base_url = base_url
        self.driver = start_chromium()
        self.screenshots = screenshots

    def register_terminal(self, terminal: str, supervisor: str, password: str) -> None:
        """A supervisor registers this desk's PC as `terminal`, once."""
        self.open("/terminal")
        self.select("#terminal", value=terminal)
        self.wait("#terminal-username").send_keys(supervisor)
        self.wait("#terminal-password").send_keys(password)
        self.submit(self.wait("#register-terminal"))
        self.wait("#current-terminal")

    def login(self, username: str, password: str) -> None:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys

        self.open("/login")
        self.wait("#username").send_keys(username)
        password_field = self.driver.find_element(By.ID, "password")
        password_field.send_keys(password)
        password_field.send_keys(Keys.ENTER)
        wait_until(lambda: "/login" not in self.driver.current_url, 20, f"{username} to be logged in")

    def open(self, path: str) -> None:
        self.driver.get(self.base_url + path)

    def focused(self, attribute: str) -> str:
        """An attribute of the focused element; "" while the page that had
        it is being replaced."""
        from selenium.common.exceptions import StaleElementReferenceException

        try:
            return self.driver.switch_to.active_element.get_attribute(attribute) or ""
        except StaleElementReferenceException:
            return ""

    def wait(self, css: str, timeout: float = 30):
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions
        from selenium.webdriver.support.ui import WebDriverWait

        try:
            return WebDriverWait(self.driver, timeout).until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, css)))
        except TimeoutException:
            page = self.driver.find_element(By.TAG_NAME, "body").text[:300].replace("\n", " / ")
            raise DayFailed(f"{css} did not appear within {timeout:.0f} s on {self.driver.current_url}: {page}") from None

    def submit(self, button) -> None:
        """Click a form's button and wait until the page it was on is gone
        (the next page may have elements of the same ids)."""
        self.driver.execute_script("window.sonaeLeaving = true")
        button.click()
        wait_until(lambda: self.driver.execute_script("return document.readyState === 'complete' && !window.sonaeLeaving"), 30,
                   "the next page after submitting a form")

    def find(self, css: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def press(self, *keys: str) -> None:
        """Press keys in turn; Keys.CONTROL + Keys.ENTER is one chord, Control
        held while Enter goes down (the counter issues on Ctrl+Enter only)."""
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.keys import Keys

        chain = ActionChains(self.driver)
        for key in keys:
            if len(key) == 2 and key[0] == Keys.CONTROL:
                chain.key_down(Keys.CONTROL).send_keys(key[1]).key_up(Keys.CONTROL)
            else:
                chain.send_keys(key)
        chain.perform()

    def select(self, css: str, *, value: str | None = None, text: str | None = None) -> None:
        from selenium.webdriver.support.ui import Select

        chooser = Select(self.wait(css))
        if value is not None:
            chooser.select_by_value(value)
        else:
            chooser.select_by_visible_text(text)

    def cookies(self) -> dict[str, str]:
        return {c["name"]: c["value"] for c in self.driver.get_cookies()}

    def shot(self, name: str, at: str | None = None) -> None:
        """A screenshot of this step, scrolled to the element `at` (else to the top)."""
        if self.screenshots is not None:
            self.screenshots.save(self.driver, name, at)

    def quit(self) -> None:
        self.driver.quit()


class Screenshots:
    """PNGs of the day's steps, small enough for the README: the window is
    resized to 1200×800 for the shot and the image reduced to a palette."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.saved: list[Path] = []
        self._lock = threading.Lock()
        directory.mkdir(parents=True, exist_ok=True)

    def save(self, driver, name: str, at: str | None) -> None:
        """The first shot of each step; later ones of the same step are skipped."""
        with self._lock:
            if self.taken(name):
                return
            size = driver.get_window_size()
            chrome = driver.execute_script("return [window.outerWidth - window.innerWidth, window.outerHeight - window.innerHeight]")
            driver.set_window_size(SCREENSHOT_SIZE[0] + chrome[0], SCREENSHOT_SIZE[1] + chrome[1])
            try:
                driver.execute_script("const e = arguments[0] && document.querySelector(arguments[0]);"
                                      "if (e) { e.scrollIntoView({block: 'start'}); window.scrollBy(0, -16); } else { window.scrollTo(0, 0); }", at)
                self.keep(name, driver.get_screenshot_as_png())
            finally:
                driver.set_window_size(size["width"], size["height"])

    def taken(self, name: str) -> bool:
        return any(path.stem == name for path in self.saved)

    def keep(self, name: str, png: bytes) -> None:
        """Store a PNG reduced to a small palette (a screen is mostly text)."""
        from PIL import Image

        image = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=64, method=Image.Quantize.MEDIANCUT)
        path = self.directory / f"{name}.png"
        image.save(path, optimize=True)
        self.saved.append(path)

    def certificate(self, name: str, pdf: bytes) -> None:
        """The first page of an issued certificate, as printed."""
        with self._lock:
            if self.taken(name):
                return
            png = subprocess.run(["pdftoppm", "-png", "-r", "60", "-f", "1", "-l", "1", "-singlefile", "-"], input=pdf,
                                 capture_output=True, check=True).stdout
            self.keep(name, png)


class Gate:
    """Counters do their steps under `shared()`; a fault that takes the web
    server away runs under `exclusive()`, so no other counter is caught with
    a request in flight (a clerk whose page failed would not know whether
    the certificate was issued)."""

    def __init__(self):
        self._condition = threading.Condition()
        self._shared = 0
        self._exclusive = False

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._condition:
            self._condition.wait_for(lambda: not self._exclusive)
            self._shared += 1
        try:
            yield
        finally:
            with self._condition:
                self._shared -= 1
                self._condition.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._condition:
            self._condition.wait_for(lambda: not self._exclusive)
            self._exclusive = True
            self._condition.wait_for(lambda: self._shared == 0)
        try:
            yield
        finally:
            with self._condition:
                self._exclusive = False
                self._condition.notify_all()


# --- the day ---------------------------------------------------------------------------------


class OutageDay:
    def __init__(self, site: DemoSite, options: DayOptions, say: Callable[[str], None]):
        unknown = set(options.faults) - set(FAULTS)
        if unknown:
            raise DayFailed(f"unknown fault(s) {', '.join(sorted(unknown))}; known: {', '.join(FAULTS)}")
        if "printer_stopped" in options.faults and not options.printer_queue:
            raise DayFailed("the printer_stopped fault needs the first counter's CUPS queue (printer_queue)")
        self.site = site
        self.options = options
        self.say = say
        self.record = DayRecord(site.root, options.residents, frozenset(options.faults))
        self.base_url = f"http://127.0.0.1:{options.web_port}"
        self.screenshots = Screenshots(options.screenshots) if options.screenshots else None
        self.gate = Gate()
        self.browsers: list[Browser] = []
        self.inbox: AlertInbox | None = None
        self.web = self.worker = None
        self.upstream: dict = {}
        self.config = None  # the appliance's configuration, once written
        self.passwords: dict[str, str] = {}
        self.mounted: Path | None = None
        self._flapping = threading.Event()
        self._web_kill_pending = threading.Event()
        if "web_kill" in options.faults:
            self._web_kill_pending.set()
        self.last_seq_before_outage = 0
        self._flapper: threading.Thread | None = None
        self.day_number = 1

    # --- the day, step by step -------------------------------------------------------

    def run(self) -> DayRecord:
        self.prepare()
        self.outage()
        self.declare()
        cast = self.cast()
        for code, event in cast.changes_before_issue():
            self.upstream_event(code, event, before_issue=True)
        if "flapping" in self.options.faults:
            self.start_flapping()
        if "printer_stopped" in self.options.faults:
            self.cups("cupsdisable", "-r", "用紙切れ", self.options.printer_queue)
        self.counters(cast.cases())
        if "printer_stopped" in self.options.faults:
            self.cups("cupsenable", self.options.printer_queue)
        for code, event in cast.changes_after_issue():
            self.upstream_event(code, event, before_issue=False)
        second = self.second_day(cast) if self.options.second_day else None
        self.during_outage_faults()
        self.restore()
        self.end_downtime()
        self.reconcile()
        if second is not None:
            self.reenter(second)
        self.return_to_standby()
        self.fetch_report()
        self.record.problems = consistency_problems(self.site, self.config)
        self.record.alerts = list(self.inbox.bodies)
        self.record.mails = [str(mail["Subject"]) for mail in self.inbox.mails]
        self.record.screenshots = list(self.screenshots.saved) if self.screenshots else []
        return self.record

    def prepare(self) -> None:
        options = self.options
        if "disk_full" in options.faults:
            self.mount_small_snapshot_disk()
        self.say(f"starting cloudsim with {options.residents:,} synthetic residents and a live change feed …")
        self.upstream = self.site.start_cloudsim(change_rate=options.change_rate)
        self.inbox = AlertInbox()
        self.site.configure(self.upstream, extra=self.settings())
        self.config = load_config(self.site.etc / "sonae.toml", env=self.site.env)
        self.say("loading the full export …")
        self.say(self.site.run("sync", "full", "--actor", "demo").strip())
        self.passwords = {username: password for username, _, password in self.site.seed_accounts()}
        self.worker = self.site.start("worker", log="worker.log")
        self.web = self.site.start("serve", log="web.log")
        self.wait_for_web()
        wait_until(self.components_up, 60, "the probes to see the upstream up")
        self.wait_for_feed("the appliance to catch up with the change feed")

    def settings(self) -> dict:
        options = self.options
        interval = options.probe_interval_s
        terminals = [dict(t) for t in (*TERMINALS, SUPERVISOR_TERMINAL)]
        if options.printer_queue:
            terminals[0]["queue"] = options.printer_queue
        counter = {"terminals": terminals}
        if "web_kill" in options.faults:
            # Short enough for the day, long past a render: with 10 s, a busy
            # test machine's first render after the restart (its render
            # processes still starting) was voided as never rendered.
            counter["void_unrendered_after_s"] = 60
        sync = {"changes_interval_s": max(2, interval), "retry_attempts": 1, "retry_backoff_s": 1.0}
        if "worker_kill" in options.faults:
            sync["changes_batch"] = 20  # many small pages: the kill lands between two of them
        return {
            "probes": {"interval_s": interval, "timeout_s": 1.0, "down_after": 3, "up_after": 2},
            "alerts": {"webhook_url": self.inbox.webhook_url, "smtp_host": "127.0.0.1", "smtp_port": self.inbox.smtp_port,
                       "mail_to": "joho-seisaku@city.example.lg.jp", "evaluate_interval_s": interval, "webhook_retries": 1},
            "sync": sync,
            "recovery": {"interval_s": max(2, interval)},
            "counter": counter,
        }

    def outage(self) -> None:
        self.say("the cloud register goes down …")
        self.record.outage_started_at = now()
        self.admin("PUT", "/admin/faults/down")
        _, mail = wait_until(lambda: self.inbox.arrived("upstream.register", "opened", self.record.outage_started_at), 120,
                             "the upstream-down alert by webhook and mail")
        self.say(f"alert received: {mail['Subject']}")
        # The upstream has not answered three probes: the snapshot stays as it is now.
        with snapshot_store(self.config).open_register() as register:
            meta = register.meta
        self.last_seq_before_outage = meta.last_seq
        self.record.snapshot_at_outage = (meta.generation, meta.as_of)
        it = self.browser(IT_STAFF)
        it.open("/monitor/")
        it.wait("#outage-headline")
        it.shot("it-dashboard-upstream-down")
        it.quit()
        self.browsers.remove(it)

    def declare(self) -> None:
        boss = self.supervisor = self.browser(SUPERVISOR, SUPERVISOR_TERMINAL["id"])
        boss.open("/supervisor/")
        boss.select("#declare-reason", text="住民記録システム障害")
        boss.wait("#declare-detail").send_keys("クラウドの住民記録システムが応答しない。ベンダーに連絡済み。")
        boss.submit(boss.wait("#declare-downtime"))
        boss.wait("#confirm-changes")
        before = now()
        boss.submit(boss.wait("#confirm-mode-change"))
        boss.wait("#end-downtime")
        self.record.declared = (before, now())
        boss.shot("supervisor-declares-downtime")
        self.say("downtime declared by the supervisor")

    def cast(self) -> Cast:
        with snapshot_store(self.config).open_register() as register:
            return pick_cast(register, self.options.seed)

    def counters(self, cases: list[Case]) -> None:
        desks = []
        for index, username in enumerate(CLERKS):
            desk = self.browser(username, TERMINALS[index]["id"])
            desks.append((desk, [c for c in cases if c.clerk == index]))
        errors: list[BaseException] = []

        def work(desk: Browser, own: list[Case]) -> None:
            try:
                for case in own:
                    self.serve(desk, case)
            except BaseException as exc:  # reported after every counter has stopped
                errors.append(exc)

        threads = [threading.Thread(target=work, args=desk_cases, name=f"counter-{i}") for i, desk_cases in enumerate(desks)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for desk, _ in desks:
            desk.quit()
            self.browsers.remove(desk)
        if errors:
            raise errors[0]
        self.say(f"counters done: {len(self.record.issued)} requests issued ({self.record.certificates} certificates), "
                 f"{len(self.record.refused)} refused, {len(self.record.deferred)} deferred")

    def serve(self, desk: Browser, case: Case) -> None:
        clerk, terminal = CLERKS[case.clerk], TERMINALS[case.clerk]
        code = case.resident["resident_code"]
        with self.gate.shared():
            self.find_resident(desk, case.resident)
        if case.expect:
            if case.clerk == 0 and case.expect == "issued" and self._web_kill_pending.is_set():
                self._web_kill_pending.clear()
                with self.gate.exclusive():
                    self.issue_while_the_web_server_dies(desk, case)
            with self.gate.shared():
                self.fill_issue_form(desk, case)
                outcome = self.submit(desk)
                if outcome != "issued":
                    self.record.refused.append(Refused(clerk, terminal["office"], case.kind, code, outcome, self.day_number))
                    desk.shot(f"counter-refused-{outcome}")  # the outcome is at the top of the page
                else:
                    self.record_issued(desk, case)
        if case.deferred:
            with self.gate.shared():
                self.defer(desk, case)

    def find_resident(self, desk: Browser, resident: dict) -> None:
        """Search by フリガナ and 生年月日 (typed in 和暦, as residents give it),
        move down the results with the arrow key to the resident, open them.
        A resident whose name changed since the cast was picked (a sync
        while the upstream flapped) is found by 住民票コード instead."""
        from selenium.webdriver.common.keys import Keys

        target = f"/counter/resident/{resident['resident_code']}"
        desk.open("/counter/")
        desk.wait("#q-kana").send_keys(resident["name_kana"])
        desk.wait("#q-birth").send_keys(format_wareki(dt.date.fromisoformat(resident["birth_date"])), Keys.ENTER)
        desk.wait("#results, #no-results")
        if not any(row.get_attribute("data-href").endswith(target) for row in desk.find("tr.result-row")):
            desk.open("/counter/")
            desk.wait("#q-code").send_keys(resident["resident_code"], Keys.ENTER)
            desk.wait("#results")
        wait_until(lambda: "result-row" in desk.focused("class"), 10, "the focus on the first result")
        for _ in range(len(desk.find("tr.result-row"))):
            if desk.focused("data-href").endswith(target):
                break
            desk.press(Keys.ARROW_DOWN)
        else:
            raise DayFailed(f"{resident['resident_code']} is not among the results")
        desk.shot("counter-search")
        desk.press(Keys.ENTER)
        desk.wait("#issue-form")

    def fill_issue_form(self, desk: Browser, case: Case) -> None:
        from selenium.webdriver.common.by import By

        desk.press(str(list(("juminhyo", "kisai", "johyo", "inkan")).index(case.kind) + 1))
        if case.requester_type != "self":
            desk.select("#requester-type", value=case.requester_type)
            desk.wait("#requester-name").send_keys(case.requester_name)
        if case.requester_type == "agent":
            desk.driver.find_element(By.NAME, "delegation_letter").click()
        desk.select("#identity-document", text=case.identity_document)
        if case.whole_household:
            desk.wait("#whole-household").click()
        if case.copies != 1:
            copies = desk.wait("#copies")
            copies.clear()
            copies.send_keys(str(case.copies))
        if case.seal_card_number:
            desk.wait("#seal-card-number").send_keys(case.seal_card_number)
        if case.acknowledge_move_out:
            desk.wait("#ack-moveout").click()
        if case.items:
            desk.wait("#issue-form details summary").click()
            for item in case.items:
                desk.driver.find_element(By.CSS_SELECTOR, f'input[name="items"][value="{item}"]').click()
        desk.wait("#contact").send_keys(case.contact)
        desk.shot("counter-resident")

    def submit(self, desk: Browser) -> str:
        """Ctrl+Enter; "issued" or the rule that refused."""
        from selenium.webdriver.common.keys import Keys

        desk.press(Keys.CONTROL + Keys.ENTER)
        wait_until(lambda: desk.find("#issued-title") or desk.find("#issue-error"), 60, "the issuance to be answered")
        if desk.find("#issued-title"):
            return "issued"
        return desk.find("#issue-error")[0].get_attribute("data-rule") or "error: " + desk.find("#issue-error")[0].text

    def record_issued(self, desk: Browser, case: Case) -> None:
        terminal = TERMINALS[case.clerk]
        request_id = int(re.search(r"/counter/issued/(\d+)", desk.driver.current_url).group(1))
        serials = [int(cell.text.split()[0]) for cell in desk.find("#issued-copies .serial")]
        self.record.issued.append(Issued(CLERKS[case.clerk], terminal["office"], case.kind, case.resident["resident_code"],
                                         request_id, serials, self.day_number))
        desk.shot("counter-issued")
        if desk.find("#print-form"):  # a counter with a CUPS queue prints with one key
            desk.driver.execute_script("window.sonaeLeaving = true")
            desk.press("p")
            wait_until(lambda: desk.driver.execute_script("return document.readyState === 'complete' && !window.sonaeLeaving"), 60,
                       "the page saying where the certificates were printed")
            desk.wait("#flash-outcome")
        if self.screenshots is not None and not self.screenshots.taken("certificate"):
            pdf = requests.get(desk.find("#open-pdf")[0].get_attribute("href"), cookies=desk.cookies(), timeout=60)
            self.screenshots.certificate("certificate", pdf.content)

    def defer(self, desk: Browser, case: Case) -> None:
        desk.open(f"/counter/resident/{case.resident['resident_code']}")
        desk.wait("#defer-link").click()
        desk.select("#deferred-kind", value=case.deferred)
        desk.wait("#deferred-contact").send_keys(case.contact)
        desk.wait("#deferred-consent").click()
        desk.submit(desk.wait("#deferred-form button[type=submit]"))
        saved = desk.wait("#deferred-saved")
        number = int(re.search(r"受付番号 (\d+)", saved.text).group(1))
        self.record.deferred.append(Deferred(CLERKS[case.clerk], TERMINALS[case.clerk]["office"], case.deferred, number,
                                             case.resident["resident_code"]))
        desk.shot("counter-deferred")

    def issue_while_the_web_server_dies(self, desk: Browser, case: Case) -> None:
        """web_kill: the clerk presses Ctrl+Enter; the moment the serial is
        committed (before its PDF exists) the web server is SIGKILLed. The
        browser shows its error page; the server is restarted and the
        clerk opens the resident again and issues anew."""
        from selenium.webdriver.common.keys import Keys

        self.fill_issue_form(desk, case)
        failures: list[BaseException] = []

        def kill_once_allocated() -> None:
            conn = open_ops(self.config)
            try:
                allocated = wait_until(
                    lambda: conn.execute("SELECT request_id FROM certificates WHERE status = 'allocated'").fetchall(), 30,
                    "a serial to be committed", interval=0.002)
                self.site.kill(self.web)
                self.record.killed_request = allocated[0][0]
            except BaseException as exc:  # raised in the counter's thread below
                failures.append(exc)
            finally:
                conn.close()

        # The browser's key press returns only once the page has loaded (or
        # failed): the kill has to be watching before it.
        killer = threading.Thread(target=kill_once_allocated, name="web-kill")
        killer.start()
        desk.press(Keys.CONTROL + Keys.ENTER)
        killer.join()
        if failures:
            raise failures[0]
        self.say(f"web server SIGKILLed while request {self.record.killed_request} was being rendered; restarting it")
        self.web = self.site.start("serve", log="web.log")
        self.wait_for_web()
        desk.open(f"/counter/resident/{case.resident['resident_code']}")
        desk.wait("#issue-form")

    def during_outage_faults(self) -> None:
        faults = self.options.faults
        if faults & {"worker_kill", "disk_full"}:
            # Life goes on upstream: enough changes for a catch-up sync of many pages.
            made = self.admin("POST", "/admin/changes", {"events": 300})
            self.say(f"{made['changes']} changes made upstream during the outage")
        if "disk_full" in faults:
            self.fill_snapshot_disk()
        if "corrupt_export" in faults:
            self.admin("PUT", "/admin/faults/bytes_mismatch")
            manifest = self.admin("POST", "/admin/exports")
            self.record.fault_notes["corrupt_export"] = manifest["export_id"]
            self.say(f"a full export with a damaged file was published: {manifest['export_id']}")

    def restore(self) -> None:
        faults = self.options.faults
        self.stop_flapping()
        if "worker_kill" in faults:
            self.admin("PUT", "/admin/faults/slow", {"seconds": 0.3})  # the catch-up takes long enough to be interrupted
        sync_runs_before = self.ops_value("SELECT coalesce(max(id), 0) FROM sync_runs")
        self.admin("DELETE", "/admin/faults/down")
        self.record.upstream_back_at = now()
        self.say("the cloud register is back")
        if "worker_kill" in faults:
            self.kill_worker_mid_sync(sync_runs_before)
        # The last word on the register, by webhook and by mail, says it is back
        # (while it flapped, an earlier "back" may already have been sent).
        _, mail = wait_until(lambda: self.components_up() and self.inbox.latest("upstream.register", "resolved"), 120,
                             "the upstream-recovered alert by webhook and mail")
        self.say(f"alert received: {mail['Subject']}")
        if "disk_full" in faults:
            error = wait_until(lambda: self.ops_value(
                "SELECT error FROM sync_runs WHERE id > ? AND outcome = 'failed' AND error LIKE '%disk is full%'", (sync_runs_before,)),
                120, "the catch-up sync to fail on the full disk")
            self.record.fault_notes["disk_full"] = error
            self.say(f"sync failed: {error}")
            _, mail = wait_until(lambda: self.inbox.arrived("sync.changes", "opened", self.record.upstream_back_at), 120,
                                 "the alert that the change feed cannot be applied")
            self.say(f"alert received: {mail['Subject']}")
            (self.mounted / "filler").unlink()
            self.say("IT freed the snapshot disk")
        self.wait_for_feed("the appliance to catch up with the changes made during the outage")
        if "corrupt_export" in faults:
            self.reload_the_corrupt_export()

    def kill_worker_mid_sync(self, sync_runs_before: int) -> None:
        """worker_kill: once the catch-up sync has committed a page of the
        changes made during the outage, and has more to go, the worker is
        SIGKILLed; restarted, it carries on from the last committed page."""
        def mid_sync():
            running = self.ops_value("SELECT id FROM sync_runs WHERE id > ? AND kind = 'changes' AND outcome = 'running'",
                                     (sync_runs_before,))
            return running if running and self.snapshot_last_seq() > self.last_seq_before_outage else None

        run_id = wait_until(mid_sync, 120, "the catch-up sync to be applying pages", interval=0.05)
        self.site.kill(self.worker)
        self.record.fault_notes["worker_kill"] = f"sync run {run_id}"
        self.say(f"worker SIGKILLed during sync run {run_id}; restarting it")
        self.admin("DELETE", "/admin/faults/slow")
        self.worker = self.site.start("worker", log="worker.log")

    def reload_the_corrupt_export(self) -> None:
        """IT reloads the full export after the outage, as the runbook says;
        the damaged one is refused and the mirror keeps serving."""
        result = subprocess.run(self.site.sonae("sync", "full", "--actor", IT_STAFF), env=self.site.env, capture_output=True, text=True)
        if result.returncode == 0:
            raise DayFailed("a full export with a damaged file was loaded")
        self.record.fault_notes["corrupt_export_refused"] = result.stderr.strip()
        self.say(f"reload refused: {result.stderr.strip()}")
        _, mail = wait_until(lambda: self.inbox.arrived("sync.full", "opened", self.record.upstream_back_at), 120,
                             "the alert that the full export was refused")
        self.say(f"alert received: {mail['Subject']}; the vendor republishes the export")
        self.admin("DELETE", "/admin/faults/bytes_mismatch")
        self.say(self.site.run("sync", "full", "--actor", IT_STAFF).strip())

    def change_mode(self, button: str, then: str) -> tuple[dt.datetime, dt.datetime]:
        """Press a mode button on the supervisor's screen and wait for the
        button of the next mode; returns the moments before and after."""
        boss = self.supervisor
        boss.open("/supervisor/")
        boss.submit(boss.wait(button))
        boss.wait("#confirm-changes")
        before = now()
        boss.submit(boss.wait("#confirm-mode-change"))
        boss.wait(then)
        return before, now()

    def end_downtime(self) -> None:
        self.record.downtime_ended = self.change_mode("#end-downtime", then="#return-standby")
        self.say("downtime ended: recovery")

    def reconcile(self) -> None:
        boss = self.supervisor
        boss.open("/recovery/")
        boss.submit(boss.wait("#reconcile-now"))
        wait_until(lambda: self.reconciled(), 120, "every issued certificate to be checked against the upstream")
        contacted = self.record.deferred[0]
        boss.open("/recovery/")
        row = boss.wait(f"#deferred-{contacted.id}")
        from selenium.webdriver.support.ui import Select

        Select(row.find_element("css selector", "select[name=status]")).select_by_value("contacted")
        boss.submit(row.find_element("css selector", "button[type=submit]"))
        contacted.status = "contacted"
        boss.shot("recovery-at-risk", at="#at-risk")
        self.say(f"reconciled: {boss.wait('#at-risk-count').text} certificate(s) at risk")

    def reconciled(self) -> bool:
        from fallback import recovery

        conn = open_ops(self.config)
        try:
            return not recovery.pending_checks(conn)
        finally:
            conn.close()

    def return_to_standby(self) -> None:
        self.record.standby = self.change_mode("#return-standby", then="#declare-downtime")

    def fetch_report(self) -> None:
        boss = self.supervisor
        boss.open("/recovery/incidents")
        link = boss.wait("#incident-list a")
        incident_id = int(re.search(r"/incidents/(\d+)", link.get_attribute("href")).group(1))
        link.click()
        boss.wait("h1")
        boss.shot("incident-report")
        http = requests.Session()
        http.cookies.update(boss.cookies())
        markdown = http.get(f"{self.base_url}/recovery/incidents/{incident_id}.md", timeout=60)
        pdf = http.get(f"{self.base_url}/recovery/incidents/{incident_id}.pdf", timeout=120)
        if markdown.status_code != 200 or pdf.status_code != 200:
            raise DayFailed(f"the incident report could not be fetched (HTTP {markdown.status_code}, {pdf.status_code})")
        self.record.incident_id = incident_id
        self.record.feed_since_outage = self.feed_after(self.last_seq_before_outage)
        self.record.report_markdown = markdown.text
        self.record.report_pdf = pdf.content
        if "web_kill" in self.options.faults:
            wait_until(lambda: not self.ops_value("SELECT count(*) FROM certificates WHERE status = 'allocated'"), 60,
                       "the serial the killed web server never rendered to be voided (by the restarted server at its start, or the worker after its window)")

    # --- the second day ---------------------------------------------------------------------

    def second_day(self, cast: Cast) -> SecondCast:
        """The outage goes on: 届出 and holds, then the counters meet them."""
        self.day_number = 2
        with snapshot_store(self.config).open_register() as register:
            second = pick_second_day(register, self.options.seed, cast)
        self.say("day two: the counters take 届出 and the supervisor records holds")
        desk = self.browser(CLERKS[0], TERMINALS[0]["id"])
        for filing in second.filings():
            self.file(desk, filing)
        desk.quit()
        self.browsers.remove(desk)
        for hold in second.holds():
            self.record_hold(hold)
        self.counters(second.cases())
        return second

    def file(self, desk: Browser, case: FilingCase) -> None:
        """Take a 届出 on the form, from the keyboard: its kind by number,
        the fields, the supervisor's confirmation where it creates a hold,
        Ctrl+Enter."""
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys

        code = case.resident["resident_code"] if case.resident else ""
        desk.open("/filings/new" + (f"?resident_code={code}" if code else ""))
        desk.wait("#filing-form")
        desk.press(str(list(filings.KINDS).index(case.kind) + 1))
        notifier = desk.wait("#notifier-name")
        notifier.clear()
        notifier.send_keys(case.new_persons[0]["name"] if case.new_persons else case.resident["name"])
        desk.select("#notifier-relation", value=case.notifier_relation)
        for document in case.documents:
            desk.driver.find_element(By.CSS_SELECTOR, f'input[name="documents"][value="{document}"]').click()
        for member in case.members:
            desk.driver.find_element(By.CSS_SELECTOR, f'input[name="members"][value="{member}"]').click()
        for item in filings.ITEMS[case.kind]:
            if item.key in case.items:
                name = f"{case.kind}:{item.key}"
                if item.type in ("choice", "seal"):
                    desk.select(f'select[name="{name}"]', text=case.items[item.key])
                else:
                    desk.driver.find_element(By.NAME, name).send_keys(case.items[item.key])
        for row, person in enumerate(case.new_persons, start=1):
            for key, value in person.items():
                if key == "sex":
                    desk.select(f'select[name="p{row}_sex"]', text=value)
                else:
                    desk.driver.find_element(By.NAME, f"p{row}_{key}").send_keys(format_wareki(value) if key == "birth_date" else value)
        if case.holds:  # a 届出 that creates a hold: the supervisor confirms it at the clerk's terminal
            desk.wait("#approver").send_keys(SUPERVISOR)
            desk.wait("#approver-password").send_keys(self.passwords[SUPERVISOR])
        desk.shot("filing-form")
        desk.press(Keys.CONTROL + Keys.ENTER)
        saved = desk.wait("#filing-saved, #filing-error")
        if saved.get_attribute("id") == "filing-error":
            raise DayFailed(f"the {case.kind} 届出 was not recorded: {saved.text}")
        filing_id = int(re.search(r"/filings/(\d+)$", desk.driver.current_url).group(1))
        persons = [case.resident["resident_code"], *case.members] if case.resident else [p["name"] for p in case.new_persons]
        self.record.filings.append(Filed(filing_id, case.kind, CLERKS[0], persons, list(case.holds)))
        desk.shot("filing-saved")

    def record_hold(self, case: HoldCase) -> None:
        """The supervisor records a hold on the resident's hold form."""
        from selenium.webdriver.common.keys import Keys

        boss = self.supervisor
        code = case.resident["resident_code"]
        boss.open(f"/holds/new/{code}")
        boss.wait("#hold-form")
        boss.press(str(list(holds.KINDS).index(case.kind) + 1))
        boss.wait("#hold-note").send_keys(case.note)
        boss.press(Keys.CONTROL + Keys.ENTER)
        boss.wait("#hold-notices")
        boss.shot("hold-recorded", at="#hold-notices")
        self.record.holds.append(Held(case.kind, code))

    def reenter(self, second: SecondCast) -> None:
        """After recovery: the supervisor fetches the re-entry files, the
        worklist and the issuance history; the vendor takes the files in;
        the manual entries are ticked off; the holds the register now shows
        are reconciled."""
        boss = self.supervisor
        boss.open("/reentry/")
        boss.wait("#reentry-files")
        boss.shot("reentry")
        links = {row.get_attribute("id").removeprefix("file-"): row.find_element("css selector", "a").get_attribute("href")
                 for row in boss.find("#reentry-files tr[id^=file-]")}
        self.record.worklist = [int(row.get_attribute("id").removeprefix("work-")) for row in boss.find("#reentry-worklist tr[id^=work-]")]
        http = requests.Session()
        http.cookies.update(boss.cookies())
        for kind, url in links.items():
            self.record.reentry_files[kind] = self._fetched(http, url)
        self.record.worklist_pdf = self._fetched(http, boss.find("#worklist-pdf")[0].get_attribute("href"))
        self.record.issuance_history_csv = self._fetched(http, boss.find("#history-csv")[0].get_attribute("href")).decode("utf-8-sig")
        self.say(f"re-entry: {len(links)} file(s), {len(self.record.worklist)} 届出 to enter by hand")
        for code, event in second.reentered():
            changes = self.admin("POST", f"/admin/residents/{code}/events", {"event": event})["changes"]
            self.record.reentered.append(UpstreamChange(code, event, False, changes))
        self.wait_for_feed("the appliance to see what the vendor's import changed")
        for filing_id in self.record.worklist:
            boss.open("/reentry/")
            boss.submit(boss.wait(f"#work-{filing_id} .tick-button"))
            self.record.ticked.append(filing_id)
        boss.open("/holds/")
        boss.wait("#holds-list")
        boss.shot("holds-list", at="#holds-list")
        for row_id in [row.get_attribute("id") for row in boss.find("#holds-list tr[data-status=active]")
                       if row.find_elements("css selector", ".upstream-match")]:
            boss.open("/holds/")
            boss.submit(boss.wait(f"#{row_id} .reconcile-form button"))
            self.record.reconciled_holds.append(int(row_id.removeprefix("hold-")))
        self.say(f"holds reconciled with the register: {len(self.record.reconciled_holds)}")

    @staticmethod
    def _fetched(http: requests.Session, url: str) -> bytes:
        answer = http.get(url, timeout=120)
        if answer.status_code != 200:
            raise DayFailed(f"{url}: HTTP {answer.status_code}")
        return answer.content

    # --- helpers ---------------------------------------------------------------------------------

    def browser(self, username: str, terminal: str | None = None) -> Browser:
        """A desk's browser, logged in as `username`; a counter's PC is
        registered as its terminal by the supervisor first."""
        browser = Browser(self.base_url, self.screenshots)
        self.browsers.append(browser)
        if terminal is not None:
            browser.register_terminal(terminal, SUPERVISOR, self.passwords[SUPERVISOR])
        browser.login(username, self.passwords[username])
        return browser

    def admin(self, method: str, path: str, body: dict | None = None) -> dict:
        response = requests.request(method, self.upstream["admin_url"] + path, json=body, timeout=300,
                                    headers={"Authorization": f"Bearer {self.upstream['token']}"})
        if response.status_code != 200:
            raise DayFailed(f"cloudsim {method} {path}: HTTP {response.status_code} {response.text[:200]}")
        return response.json()

    def upstream_event(self, code: str, event: str, *, before_issue: bool) -> None:
        changes = self.admin("POST", f"/admin/residents/{code}/events", {"event": event})["changes"]
        self.record.upstream_changes.append(UpstreamChange(code, event, before_issue, changes))

    def feed_after(self, seq: int) -> list[dict]:
        """The upstream's change feed after `seq`, read as the contract serves it."""
        changes: list[dict] = []
        while True:
            page = requests.get(f"{self.upstream['url']}/v1/changes", params={"after": seq, "limit": 1000}, timeout=60,
                                headers={"Authorization": f"Bearer {self.upstream['token']}"}).json()
            changes += page["changes"]
            if not page["changes"] or page["changes"][-1]["seq"] >= page["last_seq"]:
                return changes
            seq = page["changes"][-1]["seq"]

    def ops_value(self, sql: str, params: tuple = ()):
        conn = open_ops(self.config)
        try:
            row = conn.execute(sql, params).fetchone()
        finally:
            conn.close()
        return row[0] if row else None

    def components_up(self) -> bool:
        statuses = dict(self.ops_rows("SELECT component, status FROM component_status"))
        return len(statuses) == 4 and set(statuses.values()) == {"up"}

    def ops_rows(self, sql: str, params: tuple = ()) -> list[tuple]:
        conn = open_ops(self.config)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def snapshot_last_seq(self) -> int:
        with snapshot_store(self.config).open_register() as register:
            return register.meta.last_seq

    def wait_for_feed(self, what: str) -> None:
        target = self.admin("GET", "/admin/status")["last_seq"]
        wait_until(lambda: self.snapshot_last_seq() >= target, 300, what, interval=0.5)

    def wait_for_web(self) -> None:
        def answering() -> bool:
            try:
                return requests.get(self.base_url + "/healthz", timeout=2).status_code == 200
            except requests.ConnectionError:
                return False

        wait_until(answering, 60, "the web server to answer")

    def start_flapping(self) -> None:
        def flap() -> None:
            down = True
            while not self._flapping.wait(self.options.flap_every_s):
                self.admin("DELETE" if down else "PUT", "/admin/faults/down")
                down = not down
            if not down:
                self.admin("PUT", "/admin/faults/down")  # the outage itself goes on until restore()

        self._flapper = threading.Thread(target=flap, name="flapping", daemon=True)
        self._flapper.start()

    def stop_flapping(self) -> None:
        if self._flapper is not None:
            self._flapping.set()
            self._flapper.join()
            self._flapper = None

    def cups(self, command: str, *args: str) -> None:
        server = os.environ.get("CUPS_SERVER")
        subprocess.run([command, *(["-h", server] if server else []), *args], check=True, capture_output=True)

    def mount_small_snapshot_disk(self) -> None:
        if os.geteuid() != 0:
            raise DayFailed("the disk_full fault mounts a tmpfs: run as root")
        directory = self.site.home / "snapshots"
        directory.mkdir(parents=True, exist_ok=True)
        size_mb = max(64, self.options.residents // 250)
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(directory)], capture_output=True, text=True)
        if mounted.returncode:
            raise DayFailed(f"the disk_full fault cannot mount its small tmpfs here: {(mounted.stderr or mounted.stdout).strip()}")
        self.mounted = directory

    def fill_snapshot_disk(self) -> None:
        stats = os.statvfs(self.mounted)
        free = stats.f_bavail * stats.f_frsize
        with open(self.mounted / "filler", "wb") as handle:
            os.posix_fallocate(handle.fileno(), 0, max(1, free - 48 * 1024))  # takes the space without building it in memory
        self.say("the snapshot disk is full")

    def close(self) -> None:
        self.stop_flapping()
        for browser in self.browsers:
            with contextlib.suppress(Exception):
                browser.quit()
        if self.inbox is not None:
            self.inbox.close()
        self.site.stop()
        if self.mounted is not None:
            subprocess.run(["umount", "-l", str(self.mounted)], capture_output=True)


def consistency_problems(site: DemoSite, config) -> list[str]:
    """What would make the day end inconsistent: a certificate neither
    rendered nor void, a serial outside its range, an issued request without
    its audit entry, a chain that `sonae audit verify` refuses, a snapshot
    that `sonae snapshot verify` refuses."""
    conn = open_ops(config)
    try:
        problems = [f"certificate {scope}:{serial} is {status}" for scope, serial, status in conn.execute(
            "SELECT scope, serial, status FROM certificates WHERE status NOT IN ('rendered', 'void')")]
        low, high = config["counter"]["serial_range"]
        problems += [f"serial {serial} is outside the range {low}–{high}" for (serial,) in conn.execute(
            "SELECT serial FROM certificates WHERE scope = 'real' AND serial NOT BETWEEN ? AND ?", (low, high))]
        audited = {json.loads(detail)["request"] for (detail,) in conn.execute("SELECT detail FROM audit WHERE action = 'issue'")}
        problems += [f"issued request {request_id} has no audit entry" for (request_id,) in conn.execute(
            "SELECT id FROM requests WHERE outcome = 'issued'") if request_id not in audited]
    finally:
        conn.close()
    for command in (("audit", "verify"), ("snapshot", "verify")):
        verified = subprocess.run(site.sonae(*command), env=site.env, capture_output=True, text=True)
        if verified.returncode != 0:
            problems.append(f"sonae {' '.join(command)}: {verified.stderr.strip()}")
    return problems


def run_outage_day(root: Path, options: DayOptions, say: Callable[[str], None] = lambda line: None) -> DayRecord:
    """Run the whole day in `root` and return what happened. The appliance
    starts afresh; the upstream's generated register (root/cloudsim) is
    reused when it matches. Every process started is stopped at the end."""
    for name in ("home", "etc", "logs", "cloudsim-ready.json"):
        path = root / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)

    site = DemoSite(root, residents=options.residents, seed=options.seed, web_port=options.web_port,
                    upstream_port=options.upstream_port)
    day = OutageDay(site, options, say)
    try:
        return day.run()
    finally:
        day.close()

"""Issuing certificates at the counter: the rules a clerk would otherwise
have to remember, serial numbers, and the durable record of every request.

The order of work is what makes a crash survivable:
  1. check every rule against the snapshot (a refusal is recorded and
     audited, nothing else happens);
  2. in ONE transaction: allocate a serial per copy, write the request and
     one `certificates` row per copy with status 'allocated', and its audit
     entry — committed with synchronous=FULL before any PDF exists;
  3. render each copy and store it (status 'rendered');
  4. the clerk sends it to the terminal's printer with one key
     (fallback.counter.printer), or prints the PDF from the browser.
A crash between 2 and 3 leaves 'allocated' rows; the worker's
`void_unrendered` turns them into 'void' once they are older than any
render could take. A serial is never handed out twice.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import socket
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fallback import audit, clock
from fallback.errors import SonaeError
from fallback.holds import APPROVAL_KINDS
from fallback.holds import SEAL_KINDS as SEAL_HOLD_KINDS
from fallback.ops import Transaction, now, now_iso
from printing.wareki import Era, format_seireki, format_wareki
from sync.normalize import name_key

KINDS = {
    "juminhyo": "住民票の写し",
    "kisai": "住民票記載事項証明書",
    "johyo": "除票の写し",
    "inkan": "印鑑登録証明書",
}
OFFICIAL = "official"  # 公用請求: another public office (住民基本台帳法第12条の2)
THIRD_PARTY = "third_party"
REQUESTER_TYPES = {
    "self": "本人",
    "household": "同一世帯の方",
    "agent": "代理人（委任状あり）",
    THIRD_PARTY: "第三者",
    OFFICIAL: "公用請求（国・地方公共団体の機関）",
}
STAFF_ID = "職員の身分証明書"  # how a 公用請求's requester is identified
IDENTITY_DOCUMENTS = (
    "マイナンバーカード", "運転免許証", "旅券", "在留カード・特別永住者証明書", "健康保険証等（2点）", "印鑑登録証", STAFF_ID, "その他",
)
OPTIONAL_ITEMS = {
    "honseki": "本籍・筆頭者",
    "head": "世帯主・続柄",
    "resident_code": "住民票コード",
    "individual_number": "個人番号",
    "nationality": "国籍・地域",
    "category": "30条の45区分",
    "status": "在留資格",
    "period": "在留期間",
    "expiry": "満了日",
    "card_number": "在留カード等番号",
}
# Never printed for a third party, whatever is ticked.
IDENTIFIER_ITEMS = ("resident_code", "individual_number")
# A foreign resident's optional items and the `foreign` field each prints.
FOREIGN_ITEM_FIELDS = {
    "nationality": "nationality", "category": "category", "status": "status", "period": "period",
    "expiry": "period_expiry", "card_number": "card_number",
}
DEATH = "死亡"
LAYOUTS = {"renketsu": "世帯連記式", "kojin": "個人票"}
SQLITE_MAX_INTEGER = 2**63 - 1


class IssueRefused(SonaeError):
    """A request the rules do not allow. `rule` is a stable identifier
    (for the API and the drill report), the message is for the clerk;
    `detail` is what the API adds to its answer (e.g. the items that would
    not be printed)."""

    status = 422
    code = "refused"
    title = "交付できません"

    def __init__(self, rule: str, message: str, **detail):
        super().__init__(message)
        self.rule = rule
        self.detail = detail  # what the faces show beside the message (e.g. the items a certificate would leave out)

    def details(self) -> dict:
        return {"rule": self.rule, **self.detail}


class AwaitsConfirmation(IssueRefused):
    """A request stopped for the clerk to confirm (the service's same-day
    repeat), not refused by a rule: it is not recorded as a refused request."""


class IssueError(SonaeError):
    """A request that is malformed (not a rule refusal): missing or invalid
    fields. The clerk fixes the form and tries again; nothing is recorded."""


@dataclass
class IssueRequest:
    kind: str
    subject_code: str
    requester_type: str
    identity_document: str = ""
    requester_name: str = ""
    purpose: str = ""
    contact: str = ""
    members: list[str] = field(default_factory=list)  # empty: the subject only (juminhyo: whole household if whole_household)
    whole_household: bool = False
    layout: str = "renketsu"
    items: list[str] = field(default_factory=list)
    omit_katagaki: bool = False
    copies: int = 1
    delegation_letter: bool = False
    seal_card_number: str = ""
    approved_by: str | None = None  # a supervisor who approved on the spot (already authenticated)
    acknowledge_move_out: bool = False
    acknowledge_omissions: bool = False  # the clerk saw which requested items will not be printed, and issues without them

    def options(self) -> dict[str, Any]:
        return {
            "members": self.members, "whole_household": self.whole_household, "layout": self.layout,
            "items": sorted(self.items), "omit_katagaki": self.omit_katagaki,
            "delegation_letter": self.delegation_letter,
        }


@dataclass(frozen=True)
class Clerk:
    username: str
    office: str
    terminal: str
    printer: str


@dataclass(frozen=True)
class Scope:
    """'real' or 'drill'; a drill has its own serial range, records and
    register (fallback.mirror.registry.register_for)."""

    name: str
    drill_id: int | None = None

    @property
    def is_drill(self) -> bool:
        return self.name == "drill"


REAL = Scope("real")


@dataclass
class Plan:
    """What a valid request will print: the residents (in household order),
    the seal for 印鑑登録証明書, the optional items printed, and flags for
    the clerk; `omissions`: the requested items that are not printed, each
    with its reason (the clerk saw them before issuing)."""

    residents: list[dict]
    seal: dict | None
    flags: list[str]
    fee_yen: int
    items: frozenset[str] = frozenset()
    omissions: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class IssuedCopy:
    serial: int
    scope: str
    copy_number: int


@dataclass(frozen=True)
class IssueResult:
    request_id: int
    copies: list[IssuedCopy]
    flags: list[str]
    fee_yen: int
    audit_entry: int  # the issuance's audit entry: its commit put it, and every entry before it, on the disk
    omissions: list[dict] = field(default_factory=list)


# --- validation and rules ----------------------------------------------------


def check_identity_document(document: str) -> None:
    """Every request records how the requester proved who they are; so does
    showing a 支援措置 resident's withheld record to the person themself
    (counter.service.view_resident), which reveals as much as a certificate.
    It is one of the counter's list: free text let a name nobody sees (a
    Hangul filler, a tag character) reveal an address and stand in the
    audit as a blank."""
    if not document.strip():
        raise IssueError("本人確認書類を選んでください。")
    if document not in IDENTITY_DOCUMENTS:
        raise IssueError(f"本人確認書類は一覧（{'・'.join(IDENTITY_DOCUMENTS)}）から選んでください。")


def validate_form(req: IssueRequest, max_copies: int) -> None:
    if req.kind not in KINDS:
        raise IssueError(f"証明書の種類を選んでください（{req.kind!r} は使えません）。")
    if req.requester_type not in REQUESTER_TYPES:
        raise IssueError("請求者の区分を選んでください。")
    check_identity_document(req.identity_document)
    if req.requester_type != "self" and not req.requester_name.strip():
        raise IssueError("請求者（窓口に来た方）の氏名を入力してください。")
    if not 1 <= req.copies <= max_copies:
        raise IssueError(f"通数は1から{max_copies}までです。")
    unknown = [item for item in req.items if item not in OPTIONAL_ITEMS]
    if unknown:
        raise IssueError(f"不明な記載事項: {', '.join(unknown)}")
    if req.layout not in LAYOUTS:
        raise IssueError("様式（世帯連記式・個人票）を選んでください。")
    if req.kind == "inkan" and not req.seal_card_number.strip():
        raise IssueError("印鑑登録証の番号を入力してください（印鑑登録証明書は登録証の提示が必要です）。")


def requester_key(req: IssueRequest) -> str:
    """Who a daily cap counts against: the resident for 本人, otherwise the
    requester's normalised name (hashed: the key is for counting only)."""
    basis = f"self:{req.subject_code}" if req.requester_type == "self" else f"name:{name_key(req.requester_name)}"
    return hashlib.sha256(basis.encode()).hexdigest()[:32]


def plan_request(register, req: IssueRequest, *, counter_config: dict, data_age_hours: float, third_party_allowed: bool,
                 eras: Sequence[Era], enforce_data_age_limit: bool = True, clock_doubts: list[clock.Doubt] = ()) -> Plan:
    """Apply every rule; return what to print or raise IssueRefused.

    `enforce_data_age_limit` is off only for a drill, whose long-outage
    scenario rehearses with data made to look old on purpose.
    `clock_doubts`: what disagrees with this appliance's clock now
    (fallback.clock.doubts). `eras`: the 和暦 the clerk's messages give dates in."""
    subject = register.resident(req.subject_code)
    if subject is None:
        raise IssueError("対象の住民が写しに見つかりません。検索し直してください。")
    # The clock: it prints the 交付日 and the 発行番号, and judges the data's
    # age (a clock two days behind printed a 交付日 before the data's as-of).
    # Drills too: their certificates carry the same dates.
    if clock_doubts:
        raise IssueRefused("clock_implausible", clock.refusal_message(list(clock_doubts)))
    hard_limit = counter_config["data_age_hard_limit_hours"]
    if enforce_data_age_limit and data_age_hours > hard_limit:
        raise IssueRefused(
            "data_too_old",
            f"住民記録の写しが{data_age_hours:.0f}時間前のもので、交付できる上限（{hard_limit:g}時間）を超えています。"
            "証明書は交付されていません。後日交付として受け付け、情報政策課に写しの更新を依頼してください。",
        )
    kill_hours = counter_config["kill_switch_hours"].get(req.kind, 0)
    if kill_hours and data_age_hours > kill_hours:
        raise IssueRefused(
            "kill_switch",
            f"データが{data_age_hours:.0f}時間前のものであり、{KINDS[req.kind]}の交付は停止中です（上限{kill_hours}時間）。後日交付として受け付けてください。",
        )
    relation = requester_relation(req, subject)
    # The 支援措置 refusal before any other about the requester: a third
    # party's refusal says to take the request for later (後日交付), which
    # the measure refuses at any time.
    if subject.get("support_measure"):
        check_support_measure(req, subject, counter_config["support_measure_approvable"], relation)
    check_protected_household(register, subject, relation)
    check_third_party(relation, req, third_party_allowed)
    check_official_request(req)
    if req.requester_type == "agent" and not req.delegation_letter:
        raise IssueRefused("agent_without_letter", "代理人の請求には委任状が必要です。")

    check_death_hold(subject, eras)
    removed = subject["status"] == "removed"
    if req.kind == "johyo" and not removed:
        raise IssueRefused("johyo_for_active", "この方は現在の住民です。除票の写しではなく住民票の写しを交付してください。")
    if req.kind == "inkan" and removed:
        # The seal registration ended with the residence: no card, however
        # current the register's copy of it looks, makes it valid again.
        raise IssueRefused(
            "seal_revoked",
            "この方は除票です（転出・死亡等）。住民でなくなったときに印鑑登録は廃止されるため、印鑑登録証明書は交付できません。"
            "請求された方にそのことを説明してください（転出先の市区町村で改めて印鑑登録ができます）。",
        )
    if req.kind != "johyo" and removed:
        raise IssueRefused("removed_resident", f"この方は除票です（転出・死亡等）。{KINDS[req.kind]}は交付できません。除票の写しを選んでください。")

    seal = None
    if req.kind == "inkan":
        seal = _active_seal(register, subject, req.seal_card_number)
        residents = [subject]
    elif req.kind == "johyo":
        residents = [subject]
    else:
        residents = _members(register, subject, req)

    check_members_death_holds(residents)
    flags = []
    if check_approval_holds(req, residents):
        flags.append("hold_approved")
    protected = [r for r in residents if r.get("support_measure")]
    for resident in protected:
        check_support_measure(req, resident, counter_config["support_measure_approvable"], relation)
    if protected:
        flags.append("support_measure_approved" if req.approved_by else "support_measure_self")
    moves = [move for move in map(planned_move, residents) if move]
    if moves:
        if not req.acknowledge_move_out:
            raise IssueRefused("planned_move_out", f"{planned_move_message(moves[0], eras)}住民の方にそのことを説明し、確認欄にチェックしてください。")
        flags.append("planned_move_out")
    items, omissions = printed_items(req, residents, relation)
    if omissions:
        if not req.acknowledge_omissions:
            raise IssueRefused("items_not_printed", omissions_message(omissions), omissions=omissions)
        flags.append("items_omitted")
    return Plan(residents=residents, seal=seal, flags=flags, fee_yen=fee_yen(req, counter_config), items=items, omissions=omissions)


# Requesters for whom a ward may allow an approved exception; an agent or a
# third party asking for a 支援措置 resident's record is always refused.
SUPPORT_MEASURE_APPROVABLE = ("household",)


def check_support_measure(req: IssueRequest, resident: dict, approvable: list[str], relation: str) -> None:
    """A 支援措置 (DV等) resident's record goes to the resident themself;
    to a member of their household only if the ward lists "household" in
    counter.support_measure_approvable and a supervisor other than the
    issuing clerk approved (fallback.counter.certificates); to nobody else
    (`relation`: requester_relation, so a deceased person's relative and
    another public office are refused too)."""
    if relation == "self" and resident["resident_code"] == req.subject_code:
        return
    relation = "household" if relation in ("self", "household") else relation
    if relation not in approvable or relation not in SUPPORT_MEASURE_APPROVABLE:
        if relation == "household":  # the requester lives there: the rest of the household may still be issued
            raise IssueRefused(
                "support_measure",
                "記載する方に支援措置（DV等）の対象者が含まれています。対象者の記載は、対象者ご本人の請求にしか交付できません。"
                "対象者を除いた方（ご本人だけ、または選んだ方）の分なら交付できます。請求者には、理由を伝えずにそのことだけを案内してください。",
            )
        raise IssueRefused(
            "support_measure",
            "支援措置（DV等）の対象者が含まれています。本人以外からの請求には交付できません。"
            "請求者に、交付できないことだけを伝えてください（理由や住所は伝えません）。",
        )
    if not req.approved_by:
        raise IssueRefused(
            "support_measure",
            "支援措置（DV等）の対象者が含まれています。同一世帯の方への交付には、交付する職員とは別の係長の承認が必要です。",
        )


# Requesters who do not live at the address a certificate prints.
OUTSIDE_REQUESTERS = ("agent", THIRD_PARTY, OFFICIAL)
PROTECTED_HOUSEHOLD = (
    "この方の世帯には支援措置（DV等）の対象者がいます。世帯の住所が記載される証明書は、代理人・第三者・公用の請求には交付できません。"
    "請求者には交付できないことだけを伝え（理由や住所は伝えません）、ご本人が来庁して請求するよう案内してください。"
    "区の定めで例外を扱う場合は、係長に相談してください。"
)


def check_protected_household(register, subject: dict, relation: str) -> None:
    """Every certificate prints the subject's address (a 除票 its last
    one), which is also the address of each current member of their
    household: where one of them is under 支援措置, a requester from
    outside the household (an agent, a third party, another office) is
    refused, whoever the certificate is for. The person themself and a
    member of the household live there and are not refused by this rule."""
    if relation not in OUTSIDE_REQUESTERS:
        return
    if any(member.get("support_measure") for member in register.household(subject["household_id"]).active):
        raise IssueRefused("support_measure", PROTECTED_HOUSEHOLD)


def requester_relation(req: IssueRequest, subject: dict) -> str:
    """Who the requester is to the rules: the type on the form, except that
    a deceased person's 除票 has no 本人 and no household any more — a
    relative asking for it is a third party (so is anyone else but another
    public office)."""
    deceased = subject["status"] == "removed" and (subject.get("removal") or {}).get("reason") == DEATH
    return THIRD_PARTY if deceased and req.requester_type != OFFICIAL else req.requester_type


def check_third_party(relation: str, req: IssueRequest, third_party_allowed: bool) -> None:
    if relation != THIRD_PARTY or third_party_allowed:
        return
    because = "" if req.requester_type == THIRD_PARTY else "死亡により消除された方の除票の写しは、ご家族からの請求でも第三者からの請求です。"
    raise IssueRefused("third_party", f"{because}障害対応中は第三者からの請求を受け付けていません。後日交付として受け付けてください。")


def check_official_request(req: IssueRequest) -> None:
    """A 公用請求 (another public office): the staff member shows their
    職員の身分証明書, and names the office's task and its legal basis."""
    if req.requester_type != OFFICIAL:
        return
    if req.identity_document != STAFF_ID:
        raise IssueRefused("official_without_staff_id", f"公用請求は、来庁した職員の{STAFF_ID}（職員証）で確認してください。")
    if not req.purpose.strip():
        raise IssueRefused(
            "official_without_purpose", "公用請求には、請求する機関の事務の名称と根拠となる法令を「使用目的」に記入してください。"
        )


def fee_yen(req: IssueRequest, counter_config: dict) -> int:
    """The fee: none for a 公用請求 where the ward exempts it (the common rule)."""
    if req.requester_type == OFFICIAL and counter_config["official_fee_exempt"]:
        return 0
    return counter_config["fees_yen"].get(req.kind, 300) * req.copies


def printed_items(req: IssueRequest, residents: list[dict], relation: str) -> tuple[frozenset[str], list[dict]]:
    """The optional items that will be printed, and each requested one that
    will not be, with the reason (never dropped silently): a third party
    never receives 住民票コード or 個人番号, and an item the record does not
    hold (本籍 empty, 個人番号 not mirrored, a 在留 item missing) cannot be
    printed for that person."""
    items = set(req.items) if req.kind != "inkan" else set()
    omissions = []
    if relation == THIRD_PARTY:
        for item in IDENTIFIER_ITEMS:
            if item in items:
                items.discard(item)
                omissions.append({"item": item, "label": OPTIONAL_ITEMS[item], "resident_code": None, "name": None,
                                  "reason": "第三者への証明書には記載できません（住民基本台帳法・番号法）"})
    for resident in residents:
        for item in sorted(items):
            reason = _missing_item(item, resident)
            if reason:
                omissions.append({"item": item, "label": OPTIONAL_ITEMS[item], "resident_code": resident["resident_code"],
                                  "name": resident["name"], "reason": reason})
    return frozenset(items), omissions


# The 在留 items a person's category or status has none of: a 特別永住者 has
# no 在留資格 and no period, a 永住者 no period — nothing is missing from
# their record, so nothing is reported as not printed.
NOT_THEIRS = {("category", "特別永住者"): {"status", "period", "expiry"}, ("status", "永住者"): {"period", "expiry"}}


def _missing_item(item: str, resident: dict) -> str | None:
    foreign = resident.get("foreign")
    if item == "honseki" and not foreign and not resident.get("honseki"):
        return "本籍の記録がありません"
    if item == "individual_number" and not resident.get("individual_number"):
        return "個人番号がこの装置の写しにありません（複製しない設定か、記録がありません）"
    if foreign and item in FOREIGN_ITEM_FIELDS and not foreign.get(FOREIGN_ITEM_FIELDS[item]):
        if any(item in items for (field, value), items in NOT_THEIRS.items() if foreign.get(field) == value):
            return None
        return "記録がありません"
    return None


def omissions_message(omissions: list[dict]) -> str:
    listed = "、".join(
        f"{o['label']}（{o['name'] + '：' if o['name'] else ''}{o['reason']}）" for o in omissions
    )
    return (
        f"請求された次の事項は証明書に記載されません：{listed}。"
        "このまま交付する場合は「記載されない事項を確認した」にチェックして交付し、"
        "記載が必要な場合は後日交付として受け付けてください。"
    )


def planned_move(resident: dict) -> dict | None:
    """The one rule for a planned move-out, whichever source notified it
    (the upstream's planned_move_out; a 転出届 received at the counter
    will be given in the same shape): {"date", "moved_to"}, or None."""
    return resident.get("planned_move_out")


def wareki_text(iso_date: str, eras: Sequence[Era]) -> str:
    """A date of the register (YYYY-MM-DD) in a counter message, in 和暦 as
    the screen and the certificate give it."""
    return format_wareki(dt.date.fromisoformat(iso_date), eras)


def planned_move_message(move: dict, eras: Sequence[Era]) -> str:
    """What the clerk is told, in the words of what the certificate does:
    the standard prints a move-out only once the record is a 除票."""
    return (
        f"転出予定の届出があります（転出予定日 {wareki_text(move['date'], eras)}、転出先 {move['moved_to']}）。"
        "証明書は現在の住所のまま交付され、転出予定日と転出先は記載されません（除票になるまで記載しないのが標準仕様です）。"
    )


def residence_period_warning(resident: dict, data_as_of: dt.date, today: dt.date) -> str | None:
    """A foreign resident whose 在留期間 ended before the data-as-of (an
    extension or a departure may be missing from the copy), or ends during
    the outage (on or before today). Dates in 西暦, as the 在留カード and
    the certificate print a 在留期間."""
    expiry = (resident.get("foreign") or {}).get("period_expiry")
    if not expiry:
        return None
    day = dt.date.fromisoformat(expiry)
    if day < data_as_of:
        return (f"{resident['name']}：在留期間の満了日（{format_seireki(day)}）が住民記録の時点（{format_seireki(data_as_of)}）より前です。"
                "更新や出国が写しに反映されていない可能性があります。在留カードで在留期間を確認してください。")
    if day <= today:
        return (f"{resident['name']}：在留期間の満了日（{format_seireki(day)}）が障害中に到来しています。"
                "在留カードで更新（申請中を含む）を確認してください。")
    return None


# Upstream data anomalies (sync.anomalies): what IT's dashboard calls them,
# and what the counter says on an affected record.
ANOMALY_LABELS = {
    "duplicate_atena_number": "宛名番号の重複",
    "notified_before_birth": "生年月日より前の届出日",
    "seal_registered_on_birth_date": "生年月日に登録された印鑑",
    "shared_seal_image": "他の住民と同じ印影",
}
ANOMALY_WARNINGS = {
    "duplicate_atena_number": "宛名番号（{detail}）が他の住民と重複しています。本人確認を念入りに行ってください。",
    "notified_before_birth": "届出日（{detail}）が生年月日より前になっています。証明書に印字される届出日を本人と確認してください。",
    "seal_registered_on_birth_date": "印鑑登録（{detail}）の登録年月日が生年月日と同じです。印鑑登録証明書は登録証と印影をよく確認してから交付してください。",
    "shared_seal_image": "印鑑登録（{detail}）の印影が他の住民の登録と同じです。印鑑登録証明書は係長に確認してから交付してください。",
}


def counter_warnings(register, person: dict, household: list[dict], today: dt.date, eras: Sequence[Era]) -> list[dict]:
    """What the resident screen (and the API) warns about before anything
    is issued, each {"kind", "resident_code", "message"}: a planned move-out
    (in the certificate's own terms), a 在留期間 that ended before the data
    or during the outage (the person and the current members of the
    household), and the upstream data anomalies the load found on the
    person. `eras`: the 和暦 its dates are given in."""
    warnings = []
    move = planned_move(person)
    if move:
        warnings.append({"kind": "planned_move_out", "resident_code": person["resident_code"],
                         "message": planned_move_message(move, eras)})
    as_of = register.meta.as_of.astimezone(now().tzinfo).date()
    members = [person, *(m for m in household if m["status"] == "active" and m["resident_code"] != person["resident_code"])]
    for member in members:
        message = residence_period_warning(member, as_of, today)
        if message:
            warnings.append({"kind": "residence_period", "resident_code": member["resident_code"], "message": message})
    for kind, detail in register.anomalies(person["resident_code"]):
        message = "上流データの異常（全件取込で検出）：" + ANOMALY_WARNINGS.get(kind, "{detail}").format(detail=detail)
        warnings.append({"kind": kind, "resident_code": person["resident_code"], "message": message})
    return warnings


# --- holds recorded at the counter (fallback.holds) --------------------------------
# A held record carries its active holds (fallback.holds.applied); a 転出届's
# and a 仮支援措置's are already on the record as planned_move_out and
# support_measure, which the rules above apply. These are the others.


def _held(record: dict, kinds) -> list[dict]:
    return [hold for hold in record.get("holds", ()) if hold["kind"] in kinds]


def check_death_hold(subject: dict, eras: Sequence[Era]) -> None:
    """Nothing is issued of a person whose 死亡届 the counter received: the
    register still shows them living, so a 住民票 would certify a living
    resident, and there is no 除票 to copy until the register removes them
    (after recovery). The clerk takes the request as a deferred one."""
    for hold in _held(subject, ("death",)):
        raise IssueRefused(
            "death_held",
            f"死亡届を受け付けた方です（死亡日 {wareki_text(hold['details']['occurred_on'], eras)}）。住民記録に死亡が記録されるまで、"
            "この方の住民票・記載事項証明書・印鑑登録証明書は交付できず、除票の写しも作れません。後日対応として受け付けてください。",
        )


def check_members_death_holds(residents: list[dict]) -> None:
    """A certificate of several members never prints one whose 死亡届 the
    counter received; the others can be chosen without them."""
    for resident in residents:
        if _held(resident, ("death",)):
            raise IssueRefused(
                "death_held",
                f"世帯員の{resident['name']}さんは死亡届を受け付けた方です。この方を除いて世帯員を選び直してください"
                "（この方を含む写しは、住民記録に死亡が記録されてから交付します）。",
            )


def check_approval_holds(req: IssueRequest, residents: list[dict]) -> bool:
    """A court's or the police's request, or a supervisor's free hold, on a
    person printed: issued only with the on-the-spot approval of a
    supervisor other than the issuing clerk (as for the 支援措置
    exception). Returns whether such a hold was approved."""
    held = [(resident, hold) for resident in residents for hold in _held(resident, APPROVAL_KINDS)]
    if not held:
        return False
    if not req.approved_by:
        resident, hold = held[0]
        raise IssueRefused(
            "hold_approval",
            f"{resident['name']}さんに保留があります：{hold['text']}。交付には、交付する職員とは別の係長の承認が必要です。",
        )
    return True


def check_seal_holds(seal: dict) -> None:
    """A seal whose card was reported lost, or whose registration the
    resident asked to end, certifies nothing from that moment — before
    the card's number is compared, so a found card tells its finder
    nothing."""
    for hold in _held(seal, SEAL_HOLD_KINDS):
        raise IssueRefused(
            "seal_held",
            f"この印鑑登録は{hold['label']}を受け付けています（{hold['recorded_at'][:16].replace('T', ' ')}）。印鑑登録証明書は交付できません。",
        )


# What a clerk may type between the characters of a card number (spaces,
# hyphens and their look-alikes, after NFKC has folded full width).
_CARD_NUMBER_SEPARATORS = re.compile("[\\s\\-\u2010-\u2015\u2212\u30fc\uff70]")


def card_number_key(text: str) -> str:
    """A 印鑑登録証 number as compared: typed with the IME on (Ｃ０００…),
    in lower case or with spaces and hyphens, it is the same number."""
    return _CARD_NUMBER_SEPARATORS.sub("", unicodedata.normalize("NFKC", text)).upper()


def _active_seal(register, subject: dict, card_number: str) -> dict:
    seals = register.seals_of(subject["resident_code"])
    if not seals:
        raise IssueRefused("no_seal", "この方の印鑑登録はありません。")
    active = [s for s in seals if s["status"] == "active"]
    if not active:
        raise IssueRefused("seal_revoked", "この方の印鑑登録は廃止されています。印鑑登録証明書は交付できません。")
    seal = active[0]
    check_seal_holds(seal)
    typed = card_number_key(card_number)
    if typed != card_number_key(seal["card_number"]):
        revoked = next((s for s in seals if s["status"] != "active" and typed == card_number_key(s["card_number"])), None)
        if revoked is not None:  # an old card of a person who registered anew: the runbook has the clerk explain a 廃止
            raise IssueRefused(
                "seal_revoked",
                f"この印鑑登録証（{revoked['seal_number']}）の登録は廃止されています。印鑑登録証明書は、"
                "いま登録されている印鑑の登録証でだけ交付できます。住民の方に廃止されていることを説明してください。",
            )
        raise IssueRefused(
            "seal_card_mismatch",
            "印鑑登録証の番号が登録と一致しません。入力するのは印鑑登録証（カード）に印字されている番号で、"
            "画面の印鑑登録の登録番号とは別の番号です。登録証を確認してください。",
        )
    return seal


def _members(register, subject: dict, req: IssueRequest) -> list[dict]:
    household = register.household(subject["household_id"]).active
    if req.whole_household:
        return household
    wanted = set(req.members) | {req.subject_code}
    chosen = [r for r in household if r["resident_code"] in wanted]
    missing = wanted - {r["resident_code"] for r in chosen}
    if missing:
        raise IssueError("選んだ方の中に、同じ世帯の現在の住民でない方がいます。")
    return chosen


def check_daily_cap(conn, key: str, copies: int, cap: int, scope: Scope) -> None:
    if cap <= 0:
        return
    start_of_day = now().replace(hour=0, minute=0, second=0, microsecond=0).isoformat(timespec="milliseconds")
    # Voided serials were never handed out; one still rendering counts.
    issued = conn.execute(
        "SELECT count(*) FROM certificates c JOIN requests r ON r.id = c.request_id "
        "WHERE r.requester_key = ? AND r.created_at >= ? AND r.scope = ? AND c.scope = r.scope AND c.status != 'void'",
        (key, start_of_day, scope.name),
    ).fetchone()[0]
    if issued + copies > cap:
        raise IssueRefused(
            "daily_cap",
            f"本日この請求者への交付は{issued}通で、上限{cap}通を超えます。必要であれば後日交付として受け付けてください。",
        )


# --- recording -----------------------------------------------------------------


def record_refusal(conn, req: IssueRequest, clerk: Clerk, scope: Scope, refusal: IssueRefused, *, snapshot_generation, data_as_of) -> int:
    with Transaction(conn):
        request_id = _insert_request(conn, req, clerk, scope, outcome="refused", fee=0, flags=[],
                                     snapshot_generation=snapshot_generation, data_as_of=data_as_of,
                                     refusal=refusal)
        audit.append(conn, clerk.username, "issue.refused", req.subject_code,
                     {"request": request_id, "kind": req.kind, "rule": refusal.rule,
                      "requester_type": req.requester_type}, drill=scope.is_drill)
    return request_id


def _insert_request(conn, req, clerk, scope, *, outcome, fee, flags, snapshot_generation, data_as_of, refusal=None) -> int:
    cursor = conn.execute(
        """INSERT INTO requests (created_at, scope, drill_id, clerk, office, terminal, printer, kind, subject_code,
               requester_type, requester_name, requester_key, identity_document, purpose, contact, options, copies,
               fee_yen, outcome, refusal_rule, refusal_reason, approved_by, flags, snapshot_generation, data_as_of)
           VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)""",
        (now_iso(), scope.name, scope.drill_id, clerk.username, clerk.office, clerk.terminal, clerk.printer, req.kind,
         req.subject_code, req.requester_type, req.requester_name or None, requester_key(req), req.identity_document,
         req.purpose, req.contact, json.dumps(req.options(), ensure_ascii=False), req.copies, fee, outcome,
         refusal.rule if refusal else None, refusal.message if refusal else None, req.approved_by,
         json.dumps(flags), snapshot_generation, data_as_of),
    )
    return cursor.lastrowid


def allocate_and_record(conn, req: IssueRequest, plan: Plan, clerk: Clerk, scope: Scope, *, box_id: str,
                        serial_range: tuple[int, int], daily_cap: int, snapshot_generation: int, data_as_of: str,
                        serial_floor: int = 0, before_recording: Callable[[Any], None] | None = None,
                        on_recorded: Callable[[Any, int, list[dict]], None] | None = None) -> IssueResult:
    """Step 2: serials, request, certificate rows and audit in one durable
    transaction. The daily cap is checked inside it so two counters cannot
    both slip under the cap at once. Serials come from this box's range
    (`claim_serial_range`); those at or below `serial_floor` (the highest
    of this box's the audit anchor saw handed out) are never taken, even if
    the database has lost them. `before_recording(conn)` decides first,
    under the same write lock, whether to record at all (the counter
    service's idempotency key and same-day repeat: what it reads, no
    concurrent request can change before this one commits);
    `on_recorded(conn, request_id, omissions)` runs inside the same
    transaction (the service records the request's idempotency key there).
    Raising from either undoes the whole request."""
    with Transaction(conn):
        if before_recording is not None:
            before_recording(conn)
        check_daily_cap(conn, requester_key(req), req.copies, daily_cap, scope)
        first = _take_serials(conn, scope.name, box_id, req.copies, serial_range, serial_floor)
        request_id = _insert_request(conn, req, clerk, scope, outcome="issued", fee=plan.fee_yen, flags=plan.flags,
                                     snapshot_generation=snapshot_generation, data_as_of=data_as_of)
        if on_recorded is not None:
            on_recorded(conn, request_id, plan.omissions)
        codes = [r["resident_code"] for r in plan.residents]
        # Each record as printed, kept with the certificate: after the outage
        # the change feed updates the snapshot in place, and reconciliation
        # must still say field by field what the certificate got wrong.
        printed = json.dumps(
            {"residents": [{"resident_code": r["resident_code"], "version": r["version"], "updated_at": r["updated_at"], "record": r}
                           for r in plan.residents],
             "seal": {"seal_number": plan.seal["seal_number"], "version": plan.seal["version"]} if plan.seal else None},
            ensure_ascii=False,
        )
        stamp = now_iso()
        copies = []
        for offset in range(req.copies):
            serial = first + offset
            conn.execute(
                "INSERT INTO certificates (serial, scope, request_id, copy_number, status, issued_at, resident_codes, printed_records) "
                "VALUES (?,?,?,?, 'allocated', ?, ?, ?)",
                (serial, scope.name, request_id, offset + 1, stamp, json.dumps(codes), printed),
            )
            copies.append(IssuedCopy(serial, scope.name, offset + 1))
        entry = audit.append(conn, clerk.username, "issue", req.subject_code,
                             {"request": request_id, "kind": req.kind, "serials": [c.serial for c in copies],
                              "requester_type": req.requester_type, "approved_by": req.approved_by, "flags": plan.flags,
                              "residents": codes, "omitted": [[o["item"], o["resident_code"]] for o in plan.omissions]},
                             drill=scope.is_drill)
    return IssueResult(request_id, copies, plan.flags, plan.fee_yen, entry, plan.omissions)


def _take_serials(conn, scope: str, box_id: str, count: int, serial_range: tuple[int, int], floor: int) -> int:
    counter = "SELECT host, first_serial, last_serial, next_serial FROM serial_counters WHERE scope = ? AND box_id = ?"
    row = conn.execute(counter, (scope, box_id)).fetchone()
    if row is None or row[:3] != (socket.gethostname(), *serial_range):
        # `sonae serve` claimed the range at its start; an app built another
        # way, or a range changed since, is checked the same way here
        claim_serial_range(conn, scope, box_id, serial_range)
        row = conn.execute(counter, (scope, box_id)).fetchone()
    first, last = max(row[3], floor + 1), row[2]
    if first + count - 1 > last:
        raise IssueRefused("serials_exhausted", "この装置に割り当てられた発行番号を使い切りました。情報政策課に連絡してください。")
    conn.execute("UPDATE serial_counters SET next_serial = ? WHERE scope = ? AND box_id = ?", (first + count, scope, box_id))
    return first


# --- serial ranges: two boxes never hand out the same serial ------------------

SERIAL_RANGE_KEYS = {"real": "serial_range", "drill": "drill_serial_range"}  # scope -> its range in [counter]


class SerialRangeError(SonaeError):
    """This box may not issue from its configured range: another box of the
    pair holds part of it, another host runs under this box's id, or the
    range leaves out serials the box has handed out. `sonae serve` and
    `sonae worker` refuse to start with the reason; a running app refuses
    to issue."""

    status = 503
    code = "serial_range"
    title = "発行番号の範囲を確認できません"

    def __init__(self, reason: str):
        super().__init__("この装置の発行番号の範囲の設定に問題があるため、交付できません。情報政策課に連絡してください。", reason=reason)


def claim_serial_ranges(conn, counter_config) -> None:
    """At the start of `sonae serve` and `sonae worker`: this box claims its
    configured ranges of every scope in ops.db, or is refused."""
    with Transaction(conn):
        for scope, key in SERIAL_RANGE_KEYS.items():
            claim_serial_range(conn, scope, counter_config["box_id"], tuple(counter_config[key]))


def claim_serial_range(conn, scope: str, box_id: str, bounds: tuple[int, int]) -> None:
    """Record (inside the caller's transaction) that box `box_id`, on this
    host, allocates `scope` serials from `bounds`. Refused when another box
    recorded a range that overlaps it — every serial a box handed out lies
    in the range recorded for it, so no two boxes can hand out the same one
    — when another host already runs as this box (a configuration copied
    from the other box), or when a changed range leaves out serials this
    box has handed out."""
    host, (first, last), key = socket.gethostname(), bounds, SERIAL_RANGE_KEYS[scope]
    rows = conn.execute("SELECT box_id, host, first_serial, last_serial, next_serial FROM serial_counters WHERE scope = ?", (scope,)).fetchall()
    for other, other_host, other_first, other_last, _ in rows:
        if other == box_id and other_host not in ("", host):
            raise SerialRangeError(
                f"ops.db records box {box_id} on host {other_host}, and this host is {host}: each box of a pair needs its own "
                "counter.box_id and serial ranges (a box that replaces another takes a new box_id and new ranges)")
        if other != box_id and first <= other_last and other_first <= last:
            raise SerialRangeError(
                f"counter.{key} {first}-{last} of box {box_id} overlaps box {other}'s {other_first}-{other_last} "
                f"(host {other_host or 'not started since the upgrade'}) recorded in ops.db: give each box a range of its own")
    mine = next((row for row in rows if row[0] == box_id), None)
    if mine is not None and tuple(mine[1:4]) == (host, first, last):
        return
    if mine is None:
        conn.execute("INSERT INTO serial_counters (scope, box_id, host, first_serial, last_serial, next_serial) VALUES (?,?,?,?,?,?)",
                     (scope, box_id, host, first, last, first))
    else:
        held_first, held_last, next_serial = mine[2:]
        handed_out = next_serial > held_first
        if handed_out and not (first <= held_first and next_serial - 1 <= last):
            raise SerialRangeError(
                f"counter.{key} {first}-{last} of box {box_id} leaves out serials it has handed out "
                f"({held_first}-{next_serial - 1}): a box's range may only change to one that still holds them")
        conn.execute("UPDATE serial_counters SET host = ?, first_serial = ?, last_serial = ?, next_serial = ? WHERE scope = ? AND box_id = ?",
                     (host, first, last, next_serial if handed_out else first, scope, box_id))
    audit.append(conn, "system", "serial_range.claimed", box_id,
                 {"scope": scope, "host": host, "range": [first, last], "before": list(mine[1:4]) if mine else None})


def store_rendered(conn, scope: str, serial: int, *, pdf: bytes, pages: int, content_digest: str) -> None:
    """Keep the PDF of an allocated serial. Raises IssueError when the
    worker has voided the serial meanwhile (the render took longer than
    counter.void_unrendered_after_s): that PDF must never be handed out."""
    with Transaction(conn):
        stored = conn.execute(
            "UPDATE certificates SET status = 'rendered', rendered_at = ?, pdf = ?, pages = ?, content_digest = ? "
            "WHERE scope = ? AND serial = ? AND status = 'allocated'",
            (now_iso(), pdf, pages, content_digest, scope, serial),
        ).rowcount
    if not stored:
        raise IssueError(f"発行番号 {serial} は作成に時間がかかりすぎたため無効になりました。この証明書は渡さず、もう一度交付してください。")


def record_print_job(conn, scope: str, serial: int, job: str | None, state: str) -> None:
    conn.execute("UPDATE certificates SET print_job = ?, print_state = ? WHERE scope = ? AND serial = ?", (job, state, scope, serial))


def void_unrendered(conn, *, older_than: dt.timedelta, request_id: int | None = None) -> list[tuple[str, int]]:
    """Void serials whose PDF was never produced (a crash between commit and
    render): allocated more than `older_than` ago, in a request none of
    whose copies was rendered within that time either — a request whose
    copies are still coming out one by one is left alone. The worker runs
    this at its start and every counter.void_unrendered_after_s; the counter
    service for one request (`request_id`) when its form is sent again.
    Returns (scope, serial)."""
    cutoff = (now() - older_than).isoformat(timespec="milliseconds")
    with Transaction(conn):
        rows = conn.execute(
            "SELECT c.scope, c.serial FROM certificates c WHERE c.status = 'allocated' AND c.issued_at < ? "
            "AND (? IS NULL OR c.request_id = ?) "
            "AND NOT EXISTS (SELECT 1 FROM certificates d WHERE d.request_id = c.request_id AND d.rendered_at >= ?)",
            (cutoff, request_id, request_id, cutoff),
        ).fetchall()
        for scope, serial in rows:
            conn.execute("UPDATE certificates SET status = 'void' WHERE scope = ? AND serial = ?", (scope, serial))
        if rows:
            audit.append(conn, "system", "issue.void", None, {"serials": [[s, n] for s, n in rows], "reason": "PDF never rendered (crash)"})
    return [(s, n) for s, n in rows]


def handed_out_by_kind(conn, scope: str = "real", since: str = "") -> dict[str, int]:
    """Certificates handed out (rendered) by type, of requests made since
    `since`: a serial voided before its PDF existed, or one still rendering,
    was not handed out."""
    return dict(conn.execute(
        "SELECT r.kind, count(*) FROM certificates c JOIN requests r ON r.id = c.request_id "
        "WHERE r.scope = ? AND c.scope = r.scope AND c.status = 'rendered' AND r.created_at >= ? GROUP BY r.kind", (scope, since)
    ).fetchall())


def certificate_pdf(conn, scope: str, serial: int) -> bytes | None:
    if not 0 <= serial <= SQLITE_MAX_INTEGER:  # a URL can carry any number; no serial is that large
        return None
    row = conn.execute("SELECT pdf FROM certificates WHERE scope = ? AND serial = ? AND status = 'rendered'", (scope, serial)).fetchone()
    return row[0] if row else None

"""届出 received at the counter while the register cannot take them: moves
in, out and within the ward, household changes, a death notified by 戸籍,
seal registration and its end — recorded as structured data (the 届出日,
the clerk, the notifier, the documents seen, the persons and the kind's
items under the contract's field names), so that after recovery they go
back into the register (fallback.reentry) rather than from a pile of paper.

A filing names its persons: residents of the register (their identifying
items copied from the record as the clerk saw it, so the filing stands on
its own after the register has moved on) or, for a 転入, the people moving
in. A 転出届, a 死亡 and a 廃止届 also change what the counter issues at
once: recording one creates the matching hold (fallback.holds) in the same
transaction — which is why a clerk records those with a supervisor's
confirmation, as any hold.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field

from fallback import audit, holds
from fallback.errors import SonaeError
from fallback.ops import Transaction, now, now_iso

KINDS = {
    "tennyu": "転入届",
    "tenshutsu": "転出届",
    "tenkyo": "転居届",
    "setai": "世帯変更届",
    "shibo": "死亡（戸籍からの通知）",
    "inkan_toroku": "印鑑登録申請",
    "inkan_haishi": "印鑑登録廃止届（亡失を含む）",
}
NEW_PERSON_KINDS = ("tennyu",)  # persons who are not in the register yet
ONE_PERSON_KINDS = ("shibo", "inkan_toroku", "inkan_haishi")
NOTIFIER_RELATIONS = {"self": "本人", "household": "同一世帯の方", "agent": "代理人（委任状あり）", "koseki": "戸籍担当（通知）"}
DOCUMENTS = (
    "マイナンバーカード", "運転免許証", "旅券", "在留カード・特別永住者証明書", "健康保険証等（2点）", "転出証明書",
    "印鑑登録証", "委任状", "戸籍の通知", "その他",
)
SETAI_CHANGES = ("世帯主変更", "世帯分離", "世帯合併", "世帯構成変更")
SEAL_METHODS = ("即日登録（本人確認書類）", "照会書の回答", "保証書")
HAISHI_REASONS = {"廃止": "seal_abolished", "亡失": "seal_lost"}
SEXES = ("男", "女")
MAX_NEW_PERSONS = 4  # the rows of a paper 転入届


@dataclass(frozen=True)
class Item:
    key: str  # the contract's field name (dotted inside an object), or Sonae's own where the contract has none
    label: str
    type: str = "text"  # text, date, choice, seal
    required: bool = True
    choices: tuple[str, ...] = ()


# What each kind records beside the persons, in the order of its form.
ITEMS: dict[str, tuple[Item, ...]] = {
    "tennyu": (
        Item("resident_since", "転入日", "date"), Item("previous_address", "前住所"),
        Item("address.town", "新住所（町名・丁目）"), Item("address.banchi", "新住所（番地）"),
        Item("address.katagaki", "新住所（方書）", required=False),
        Item("household_id", "加わる世帯の世帯番号（新しい世帯は空欄）", required=False), Item("head_name", "世帯主"),
    ),
    "tenshutsu": (Item("planned_move_out.date", "転出予定日", "date"), Item("planned_move_out.moved_to", "転出先")),
    "tenkyo": (
        Item("address_since", "転居日", "date"), Item("address.town", "新住所（町名・丁目）"), Item("address.banchi", "新住所（番地）"),
        Item("address.katagaki", "新住所（方書）", required=False),
    ),
    "setai": (
        Item("occurred_on", "異動日", "date"), Item("setai_change", "変更の内容", "choice", choices=SETAI_CHANGES),
        Item("household_id", "加わる世帯の世帯番号（合併のとき）", required=False), Item("head_name", "新しい世帯主"),
        Item("relationship", "新しい続柄", required=False),
    ),
    "shibo": (Item("removal.occurred_on", "死亡日", "date"),),
    "inkan_toroku": (
        Item("method", "登録の方法", "choice", choices=SEAL_METHODS), Item("card_number", "交付した印鑑登録証の番号", required=False),
    ),
    "inkan_haishi": (
        Item("seal_number", "印鑑登録番号", "seal"), Item("reason", "理由", "choice", choices=tuple(HAISHI_REASONS)),
        Item("occurred_on", "亡失・廃止の日", "date", required=False),
    ),
}
# A resident's items copied into the filing (the contract's names).
PERSON_KEYS = ("resident_code", "atena_number", "household_id", "name", "name_kana", "birth_date", "sex", "relationship")
NEW_PERSON_ITEMS = (Item("name", "氏名"), Item("name_kana", "フリガナ"), Item("birth_date", "生年月日", "date"),
                    Item("sex", "性別", "choice", choices=SEXES), Item("relationship", "続柄"))
MAX_TEXT = 200
MAX_NOTE = 500


class FilingError(SonaeError):
    """A 届出 that cannot be recorded as entered; the message says what to fix."""

    status = 422
    code = "filing_refused"
    title = "届出を記録できません"


@dataclass(frozen=True)
class Filing:
    id: int
    scope: str
    drill_id: int | None
    kind: str
    notified_on: str
    recorded_at: str
    clerk: str
    office: str
    terminal: str
    notifier_name: str
    notifier_relation: str
    documents: list[str] = field(hash=False)
    persons: list[dict] = field(hash=False)
    fields: dict = field(hash=False)
    manual_entry: bool
    note: str
    confirmed_by: str | None

    @property
    def label(self) -> str:
        return KINDS[self.kind]

    def item(self, key: str) -> str:
        return self.fields.get(key, "")


_COLUMNS = ("id, scope, drill_id, kind, notified_on, recorded_at, clerk, office, terminal, notifier_name, notifier_relation, "
            "documents, persons, fields, manual_entry, note, confirmed_by")


def _filing(row) -> Filing:
    values = list(row)
    for index in (11, 12, 13):
        values[index] = json.loads(values[index])
    values[14] = bool(values[14])
    return Filing(*values)


def creates_hold(kind: str) -> bool:
    return kind in ("tenshutsu", "shibo", "inkan_haishi")


def checked_items(kind: str, items: dict, seals: list[str]) -> dict:
    """The kind's items, trimmed and checked (dates as ISO, set by the face
    from what was typed); FilingError names the first wrong one."""
    kept = {}
    for item in ITEMS[kind]:
        value = str(items.get(item.key) or "").strip()
        if not value:
            if item.required:
                raise FilingError(f"{item.label}を入力してください。")
            continue
        if len(value) > MAX_TEXT:
            raise FilingError(f"{item.label}が長すぎます（{MAX_TEXT}文字まで）。")
        if item.type == "date":
            _iso_date(value, item.label)
        if item.type == "choice" and value not in item.choices:
            raise FilingError(f"{item.label}は {'・'.join(item.choices)} から選んでください。")
        if item.type == "seal" and value not in seals:
            raise FilingError(f"{item.label}は、この方の登録中の印鑑から選んでください。")
        kept[item.key] = value
    return kept


def _iso_date(value: str, label: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise FilingError(f"{label}は年月日で入力してください（{value!r}）。") from None


def new_person(values: dict) -> dict:
    person = {}
    for item in NEW_PERSON_ITEMS:
        value = str(values.get(item.key) or "").strip()
        if not value:
            raise FilingError(f"転入する方の{item.label}を入力してください。")
        if len(value) > MAX_TEXT:
            raise FilingError(f"転入する方の{item.label}が長すぎます（{MAX_TEXT}文字まで）。")
        if item.type == "date":
            _iso_date(value, item.label)
        if item.type == "choice" and value not in item.choices:
            raise FilingError(f"転入する方の{item.label}は {'・'.join(item.choices)} から選んでください。")
        person[item.key] = value
    return person


def resident_person(record: dict) -> dict:
    """A register resident as a filing keeps them."""
    return {key: record.get(key) for key in PERSON_KEYS}


@dataclass(frozen=True)
class Received:
    """A 届出 as the counter received it, before it is recorded."""

    kind: str
    notified_on: str  # ISO date
    notifier_name: str
    notifier_relation: str
    documents: list[str]
    persons: list[dict]  # resident_person(...) or new_person(...)
    items: dict
    manual_entry: bool = False
    note: str = ""


def check(received: Received, *, seals: list[str] = ()) -> dict:
    """Everything a filing needs, or FilingError; returns the checked items."""
    kind = received.kind
    if kind not in KINDS:
        raise FilingError("届出の種類を選んでください。")
    notified = _iso_date(received.notified_on, "届出日")
    if notified > now().date():
        raise FilingError("届出日が今日より後になっています。")
    if not received.notifier_name.strip():
        raise FilingError("届出人の氏名を入力してください。")
    if len(received.notifier_name) > MAX_TEXT:
        raise FilingError(f"届出人の氏名が長すぎます（{MAX_TEXT}文字まで）。")
    if received.notifier_relation not in NOTIFIER_RELATIONS:
        raise FilingError("届出人の区分を選んでください。")
    if not received.documents:
        raise FilingError("確認した書類を1つ以上選んでください。")
    unknown = [d for d in received.documents if d not in DOCUMENTS]
    if unknown:
        raise FilingError(f"確認した書類の名前が分かりません: {unknown[0]}")
    if not received.persons:
        raise FilingError("届出の対象の方を選んでください。" if kind not in NEW_PERSON_KINDS else "転入する方を1人以上入力してください。")
    if kind in NEW_PERSON_KINDS and len(received.persons) > MAX_NEW_PERSONS:
        raise FilingError(f"1枚の転入届に入るのは{MAX_NEW_PERSONS}人までです。残りは別の届出にしてください。")
    if kind in ONE_PERSON_KINDS and len(received.persons) != 1:
        raise FilingError(f"{KINDS[kind]}は1人ずつ受け付けます。")
    if len(received.note) > MAX_NOTE:
        raise FilingError(f"備考が長すぎます（{MAX_NOTE}文字まで）。")
    return checked_items(kind, received.items, list(seals))


def record(conn, received: Received, *, scope: str, drill_id: int | None, clerk: str, role: str, office: str, terminal: str,
           confirmed_by: str | None, seals: list[str] = ()) -> tuple[int, list[int]]:
    """Record a 届出 and the hold it creates, in one transaction with their
    audit entries. Returns (filing id, hold ids)."""
    items = check(received, seals=seals)
    if creates_hold(received.kind) and role != "supervisor" and not confirmed_by:
        raise FilingError(f"{KINDS[received.kind]}は交付を止める保留を作るため、窓口職員が受け付けるときは別の係長の確認が必要です。")
    with Transaction(conn):
        cursor = conn.execute(
            f"INSERT INTO filings ({_COLUMNS.split(', ', 1)[1]}) VALUES ({', '.join('?' * 16)})",
            (scope, drill_id, received.kind, received.notified_on, now_iso(), clerk, office, terminal, received.notifier_name.strip(),
             received.notifier_relation, json.dumps(received.documents, ensure_ascii=False),
             json.dumps(received.persons, ensure_ascii=False), json.dumps(items, ensure_ascii=False), int(received.manual_entry),
             received.note.strip(), confirmed_by if creates_hold(received.kind) and role != "supervisor" else None),
        )
        filing_id = cursor.lastrowid
        hold_ids = [holds.append(conn, scope=scope, drill_id=drill_id, filing_id=filing_id, recorded_by=clerk, recorder_role=role,
                                 confirmed_by=confirmed_by, **spec) for spec in hold_specs(received.kind, received.persons, items)]
        audit.append(conn, clerk, "filing.record", received.persons[0].get("resident_code"),
                     {"filing": filing_id, "kind": received.kind, "persons": [p.get("resident_code") for p in received.persons],
                      "holds": hold_ids}, drill=scope == "drill")
    return filing_id, hold_ids


def hold_specs(kind: str, persons: list[dict], items: dict) -> list[dict]:
    """The holds a filing creates: a 転出届 a planned move per person, a
    death a death hold, a 廃止届 a lost or abolished seal."""
    if kind == "tenshutsu":
        details = {"date": items["planned_move_out.date"], "moved_to": items["planned_move_out.moved_to"]}
        return [{"kind": "move_out", "resident_code": p["resident_code"], "seal_number": None, "details": details} for p in persons]
    if kind == "shibo":
        return [{"kind": "death", "resident_code": persons[0]["resident_code"], "seal_number": None,
                 "details": {"occurred_on": items["removal.occurred_on"]}}]
    if kind == "inkan_haishi":
        return [{"kind": HAISHI_REASONS[items["reason"]], "resident_code": persons[0]["resident_code"],
                 "seal_number": items["seal_number"], "details": {}}]
    return []


def get(conn, filing_id: int) -> Filing | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM filings WHERE id = ?", (filing_id,)).fetchone()
    return _filing(row) if row else None


def listing(conn, *, scope: str, drill_id: int | None, clerk: str | None = None, kind: str | None = None) -> list[Filing]:
    clauses, params = ["scope = ?", "drill_id IS ?"], [scope, drill_id]
    if clerk is not None:
        clauses.append("clerk = ?")
        params.append(clerk)
    if kind is not None:
        clauses.append("kind = ?")
        params.append(kind)
    return [_filing(row) for row in conn.execute(f"SELECT {_COLUMNS} FROM filings WHERE {' AND '.join(clauses)} ORDER BY id", params)]


def counts(conn, *, since: str, until: str) -> dict[str, int]:
    """Real filings by kind recorded within [since, until] (the incident report)."""
    return dict(conn.execute(
        "SELECT kind, count(*) FROM filings WHERE scope = 'real' AND recorded_at BETWEEN ? AND ? GROUP BY kind", (since, until)).fetchall())

"""Drill personas: the residents that staff play during a drill.

Each case is a situation the counter gets wrong under pressure (a support-
measure resident, a revoked seal, a removed resident, a foreign resident, a
planned move-out, a household of six) plus an ordinary resident, a seal
holder, and a newcomer who is not in the register at all. The register
cases are picked at random from the drill's own synthetic register
(fallback.drills.register) — never from the real one — so clerks find them
with the counter's search in the drill; the newcomer is made up here,
because a person who has not moved in yet cannot be in the register.

The choice is stored per drill (resident codes only; names and addresses
are read from the drill register when the cards are shown), so every card
stays the same for the whole drill. Showing the cards is audited, on the
page and as a PDF, like every view of resident data; since the people are
synthetic, the cards exist in every mode, before the drill too.

The long outage's cases are here too: a lost seal card, a death notified
by 戸籍, a 転出届 and an urgent 支援措置 — people whose news reaches the
counter before the register. The participants record the hold (or the
届出 that creates it) in the drill's scope, against the drill register,
and meet what it changes at the next request: the drill register is the
ward's register in miniature, so the same rules act on it. Each case is a
different person of the register.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

from fallback import audit, drills
from fallback.config import Config
from fallback.mirror.registry import drill_snapshot_store
from fallback.ops import Transaction
from sync.register import connect_snapshot


@dataclass(frozen=True)
class PersonaCase:
    label: str
    request: str  # what the person playing the resident asks for
    expected: str  # what a correct counter does


_ACTIVE = "r.status = 'active'"
_PLAIN = (f"{_ACTIVE} AND r.support_measure = 0 AND json_extract(rec.record, '$.foreign') IS NULL "
          "AND json_extract(rec.record, '$.planned_move_out') IS NULL")
CASES: dict[str, PersonaCase] = {
    "ordinary": PersonaCase("一般の住民", "本人として、住民票の写し（世帯全員）を1通請求する。",
                            "本人確認のうえ、データ時点を説明して交付する。"),
    "support_measure": PersonaCase("支援措置（DV等）の対象者", "別に住む親族として、この方の住民票の写しを請求する。",
                                   "代理人・第三者からの請求には交付しない（お断り）。本人からの請求なら本人確認のうえ交付する。"),
    "seal_holder": PersonaCase("印鑑登録をしている方", "本人として、カードに書いた印鑑登録証で印鑑登録証明書を請求する。",
                               "印鑑登録証の番号を確かめ、本人確認のうえ印鑑登録証明書を交付する。"),
    "seal_revoked": PersonaCase("廃止された印鑑登録証を持ってきた方", "本人として、カードに書いた（廃止された）印鑑登録証で印鑑登録証明書を請求する。",
                                "廃止された登録証では交付できないと説明する。新しい登録は後日対応で受け付ける。"),
    "removed": PersonaCase("除票の方（転出）", "親族として、この方の住民票の写しを請求する。",
                           "現在の住民票は交付できない。除票の写しを選んで交付する。"),
    "foreign": PersonaCase("外国人住民", "本人として、在留資格と在留期間の載った住民票の写しを請求する。",
                           "載せる事項（在留資格・在留期間など）を選んで交付する。"),
    "planned_move_out": PersonaCase("転出予定の方", "本人として、住民票の写しを請求する。",
                                    "転出届の内容は証明書に載らないことを説明し、確認欄にチェックして交付する。"),
    "household_six": PersonaCase("6人世帯の世帯主", "本人として、世帯全員の住民票の写しを請求する。",
                                 "世帯全員を選んで交付する（世帯連記式で2枚になる）。"),
    "newcomer": PersonaCase("転入の届出に来た方（写しにいない方）", "区外から引っ越してきたので、転入届を出したい。",
                            "転入届を届出として記録する（処理は復旧後）。証明書が必要なら後日対応の受付に連絡先と同意を記録する。"),
    "hold_seal_lost": PersonaCase("印鑑登録証をなくした方", "本人として、印鑑登録証をなくしたと届け出る。続けて家族役が、カードに書いた番号で印鑑登録証明書を請求する。",
                                  "廃止届（亡失）を受け付け（係長の確認）、保留ができたことを確かめる。その後の印鑑登録証明書はお断りする。"),
    "hold_death": PersonaCase("死亡の通知が戸籍から届いた方の家族", "同じ世帯の家族として、亡くなった方を含む世帯全員の住民票の写しを請求する。",
                              "戸籍からの死亡の通知を届出として記録する（保留ができる）。亡くなった方の載る写しはお断りし、ほかの世帯員だけの写しを交付する。"),
    "hold_move_out": PersonaCase("転出届を出しに来た方", "本人として転出届を出し、続けて住民票の写しを請求する。",
                                 "転出届を記録する（係長の確認）。住民票の写しは転出予定の説明をして、確認欄にチェックして交付する。"),
    "hold_support_measure": PersonaCase("支援措置を緊急に申し出た方", "本人として、DVから逃れてきたので住所を知られないようにしてほしいと申し出る。続けて別に住む親族役が、この方の住民票の写しを請求する。",
                                        "係長が仮支援措置の保留を記録する。親族からの請求はお断りする（理由も住所も伝えない）。"),
}

# How to find each register case among the drill register's residents
# (r: the search table, rec: the record JSON).
_FINDERS = {
    "ordinary": _PLAIN,
    "support_measure": f"{_ACTIVE} AND r.support_measure = 1",
    "seal_holder": f"{_PLAIN} AND EXISTS (SELECT 1 FROM seals s WHERE s.resident_code = r.resident_code AND s.status = 'active')",
    "seal_revoked": f"{_ACTIVE} AND EXISTS (SELECT 1 FROM seals s WHERE s.resident_code = r.resident_code AND s.status = 'revoked')",
    # moved out, not deceased: a deceased person's 除票 is a third party's request for a relative (another rule, another case)
    "removed": "r.status = 'removed' AND json_extract(rec.record, '$.removal.reason') IN ('国内転出', '国外転出')",
    "foreign": f"{_ACTIVE} AND json_extract(rec.record, '$.foreign') IS NOT NULL",
    "planned_move_out": f"{_ACTIVE} AND json_extract(rec.record, '$.planned_move_out') IS NOT NULL",
    "household_six": (f"{_ACTIVE} AND r.household_order = 1 AND r.household_id IN "
                      "(SELECT household_id FROM residents WHERE status = 'active' GROUP BY household_id HAVING count(*) >= 6)"),
    "hold_seal_lost": f"{_PLAIN} AND EXISTS (SELECT 1 FROM seals s WHERE s.resident_code = r.resident_code AND s.status = 'active')",
    "hold_death": f"{_PLAIN} AND r.household_order > 1",
    "hold_move_out": _PLAIN,
    "hold_support_measure": _PLAIN,
}

NEWCOMER = {
    "name": "訓練　花子", "name_kana": "クンレン　ハナコ", "birth_date": "1990-04-01",
    "previous_address": "神奈川県横浜市中区日本大通1番地", "note": "住民記録にはいない架空の方です（転入前）。",
}


@dataclass(frozen=True)
class Persona:
    case_key: str
    case: PersonaCase
    resident_code: str | None
    synthetic: dict | None


def find_cases(snapshot_path, key: bytes, rng: random.Random) -> dict[str, str | None]:
    """Case -> a resident code from the drill register (None where it has
    no such resident). Each search starts at a random row and wraps round,
    so it stops at the first match instead of reading the whole register."""
    conn = connect_snapshot(snapshot_path, key, readonly=True)
    try:
        top = conn.execute("SELECT coalesce(max(id), 0) FROM residents").fetchone()[0]
        found: dict[str, str | None] = {}
        for case_key, condition in _FINDERS.items():
            start = rng.randint(0, top)
            code = None
            taken = [c for c in found.values() if c]  # each case a person of their own
            for range_clause in ("r.id >= ?", "r.id < ?"):
                row = conn.execute(
                    f"SELECT r.resident_code FROM residents r JOIN resident_records rec ON rec.id = r.id "
                    f"WHERE {range_clause} AND {condition} AND r.resident_code NOT IN ({','.join('?' * len(taken))}) "
                    "ORDER BY r.id LIMIT 1", (start, *taken)
                ).fetchone()
                if row:
                    code = row[0]
                    break
            found[case_key] = code
        return found
    finally:
        conn.close()


def prepare(conn, config: Config, drill_id: int, *, actor: str, rng: random.Random | None = None) -> list[Persona]:
    """Choose this drill's personas from its synthetic register (loaded now
    if it is not yet) and record them, replacing an earlier choice."""
    drill = drills.get(conn, drill_id)
    if drill is None or drill.status == drills.ENDED:
        raise drills.DrillError("終了した訓練の住民役は用意できません。")
    drills.ensure_register(conn, config, drill, actor=actor)
    store = drill_snapshot_store(config, drill_id)
    generation = store.current()
    found = find_cases(store.path_of(generation), store.key, rng or random.SystemRandom())
    with Transaction(conn):
        conn.execute("DELETE FROM drill_personas WHERE drill_id = ?", (drill_id,))
        for case_key in CASES:
            synthetic = json.dumps(NEWCOMER, ensure_ascii=False) if case_key == "newcomer" else None
            conn.execute("INSERT INTO drill_personas (drill_id, case_key, resident_code, synthetic) VALUES (?,?,?,?)",
                         (drill_id, case_key, found.get(case_key), synthetic))
        drills.append_event(conn, drill_id, actor, "personas_prepared",
                            {"missing": [k for k in _FINDERS if found.get(k) is None], "generation": generation})
    return personas(conn, drill_id)


def personas(conn, drill_id: int) -> list[Persona]:
    rows = conn.execute("SELECT case_key, resident_code, synthetic FROM drill_personas WHERE drill_id = ? ORDER BY id", (drill_id,))
    return [Persona(key, CASES[key], code, json.loads(synthetic) if synthetic else None) for key, code, synthetic in rows]


def cards(conn, config: Config, drill_id: int, *, actor: str, output: str) -> list[tuple[Persona, list[tuple[str, str]]]]:
    """The drill's personas with what each card shows, read from the drill
    register; showing them (output: "page" or "pdf") is audited."""
    chosen = personas(conn, drill_id)
    if not chosen:
        return []
    store = drill_snapshot_store(config, drill_id)
    if store.current_if_readable() is None:
        shown = [(p, card_details(p, None)) for p in chosen]
    else:
        with store.open_register() as register:
            shown = [(p, card_details(p, register)) for p in chosen]
    audit.record(conn, actor, "drill.personas_view", str(drill_id),
                 {"output": output, "residents": [p.resident_code for p, details in shown if p.resident_code and details]}, drill=True)
    return shown


def card_details(persona: Persona, register) -> list[tuple[str, str]]:
    """What the person playing the resident needs on their card, as
    (label, value) lines: who they are and, for the seal cases, the number
    of the 印鑑登録証 they present."""
    if persona.synthetic is not None:
        s = persona.synthetic
        return [("氏名", f"{s['name']}（{s['name_kana']}）"), ("生年月日", s["birth_date"]), ("前住所", s["previous_address"]), ("", s["note"])]
    resident = register.resident(persona.resident_code) if persona.resident_code and register is not None else None
    if resident is None:
        return []
    a = resident["address"]
    lines = [
        ("氏名", f"{resident['name']}（{resident['name_kana']}）"), ("生年月日", resident["birth_date"]),
        ("住所", f"{a['prefecture']}{a['city']}{a['town']}{a['banchi']}" + (f"　{a['katagaki']}" if a.get("katagaki") else "")),
        ("住民票コード", resident["resident_code"]),
    ]
    card_status = {"seal_revoked": "revoked", "seal_holder": "active", "hold_seal_lost": "active"}.get(persona.case_key)
    if card_status:
        card = next(s["card_number"] for s in register.seals_of(resident["resident_code"]) if s["status"] == card_status)
        lines.append(("印鑑登録証の番号", card))
    if persona.case_key == "household_six":
        lines.append(("世帯の人数", f"{len(register.household(resident['household_id']).active)}人"))
    return lines

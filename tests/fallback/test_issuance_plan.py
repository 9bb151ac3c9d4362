"""The issuance rules decided in-process on the example register, each in
both directions at its boundary: what `plan_request` refuses (with the
rule's name) and what it lets through (with what it will print), the form
checks, the fee, and the daily cap and serials on a real operational
database. The same rules through the app and API are in
test_issuance_rules.py; these run in milliseconds, so mutation testing
(README "Mutation testing") can run them once per mutant."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from fallback import clock, holds
from fallback.counter import issuance
from fallback.counter.issuance import IssueError, IssueRefused, IssueRequest, plan_request
from fallback.holds.applied import HeldRegister
from fallback.ops import TOKYO, open_ops
from printing.wareki import DEFAULT_ERAS
from tests.clocks import set_clock_off

YAMADA_TARO, YAMADA_HANAKO, YAMADA_ICHIRO = "10000000011", "10000000029", "10000000037"
TAKAHASHI, WANG, SATO_SUPPORT = "10000000045", "10000000061", "10000000087"
SUZUKI_MOVED_OUT, TANAKA_MOVING, KOBAYASHI_DECEASED = "10000000095", "10000000100", "10000000118"
ID = "運転免許証"


@pytest.fixture
def counter(sonae_env) -> dict:
    """The default [counter] settings, as a dict a test may change."""
    return dict(sonae_env["counter"])


def request(subject=YAMADA_TARO, **fields) -> IssueRequest:
    return IssueRequest(**{"kind": "juminhyo", "subject_code": subject, "requester_type": "self", "identity_document": ID, **fields})


def plan(register, counter, req, *, age=1.0, third_party_allowed=False, **options):
    return plan_request(register, req, counter_config=counter, data_age_hours=age, third_party_allowed=third_party_allowed,
                        eras=DEFAULT_ERAS, **options)


def refusal(register, counter, req, **options) -> str | None:
    """The rule that refuses `req`, or None when it is planned. Every
    refusal tells the clerk in whole Japanese sentences."""
    try:
        plan(register, counter, req, **options)
    except IssueRefused as refused:
        assert str(refused).endswith("。"), str(refused)
        return refused.rule
    return None


AGENT = {"requester_type": "agent", "requester_name": "代理　人"}
THIRD = {"requester_type": "third_party", "requester_name": "債権　者"}
OFFICIAL = {"requester_type": "official", "requester_name": "職員　某", "identity_document": issuance.STAFF_ID, "purpose": "国民健康保険法第9条"}


def test_an_unknown_subject_is_an_error_not_a_refusal(example_register, counter):
    with pytest.raises(IssueError, match="見つかりません"):
        plan(example_register, counter, request("99999999999"))


def test_a_doubted_clock_refuses_everything(example_register, counter):
    doubt = clock.Doubt("upstream", "上流の時刻と3時間ずれています")
    with pytest.raises(IssueRefused, match="上流の時刻と3時間ずれています") as refused:
        plan(example_register, counter, request(), clock_doubts=[doubt])
    assert refused.value.rule == "clock_implausible"
    assert refusal(example_register, counter, request(), clock_doubts=[]) is None


def test_data_older_than_the_hard_limit_is_refused_just_past_it(example_register, counter):
    counter["data_age_hard_limit_hours"] = 240.0
    assert refusal(example_register, counter, request(), age=240.0) is None
    with pytest.raises(IssueRefused, match="241時間前.*240時間") as refused:
        plan(example_register, counter, request(), age=240.6)
    assert refused.value.rule == "data_too_old"
    assert refusal(example_register, counter, request(), age=240.6, enforce_data_age_limit=False) is None  # a drill's aged data


def test_the_kill_switch_stops_its_type_just_past_its_age(example_register, counter):
    counter["kill_switch_hours"] = {"inkan": 48, "juminhyo": 0}
    inkan = request(kind="inkan", seal_card_number="C00000011")
    assert refusal(example_register, counter, inkan, age=48.0) is None
    assert refusal(example_register, counter, inkan, age=48.01) == "kill_switch"
    assert refusal(example_register, counter, request(), age=200) is None  # 0: no kill switch for the type
    assert refusal(example_register, counter, request(kind="kisai"), age=200) is None  # not listed: none either


def test_an_agent_needs_a_letter_of_delegation(example_register, counter):
    assert refusal(example_register, counter, request(**AGENT)) == "agent_without_letter"
    assert refusal(example_register, counter, request(**AGENT, delegation_letter=True)) is None
    assert refusal(example_register, counter, request(**THIRD), third_party_allowed=True) is None  # no letter for anyone else


def test_third_parties_follow_the_configuration(example_register, counter):
    with pytest.raises(IssueRefused, match="^障害対応中は第三者") as refused:
        plan(example_register, counter, request(**THIRD), third_party_allowed=False)
    assert refused.value.rule == "third_party"
    assert refusal(example_register, counter, request(**THIRD), third_party_allowed=True) is None
    for requester in ({}, {"requester_type": "household", "requester_name": "山田　花子"}, AGENT | {"delegation_letter": True}, OFFICIAL):
        assert refusal(example_register, counter, request(**requester), third_party_allowed=False) is None


def test_a_deceased_persons_relative_is_a_third_party(example_register, counter):
    relative = request(KOBAYASHI_DECEASED, kind="johyo", requester_type="household", requester_name="小林　一")
    with pytest.raises(IssueRefused, match="^死亡により消除された方の除票") as refused:
        plan(example_register, counter, relative, third_party_allowed=False)
    assert refused.value.rule == "third_party"
    assert refusal(example_register, counter, relative, third_party_allowed=True) is None
    assert refusal(example_register, counter, request(KOBAYASHI_DECEASED, kind="johyo", **OFFICIAL)) is None
    moved = request(SUZUKI_MOVED_OUT, kind="johyo", requester_type="household", requester_name="鈴木　一")
    assert refusal(example_register, counter, moved, third_party_allowed=False) is None  # moved out, not deceased


def test_an_official_request_needs_a_staff_id_and_a_purpose(example_register, counter):
    assert refusal(example_register, counter, request(**OFFICIAL)) is None
    assert refusal(example_register, counter, request(**{**OFFICIAL, "identity_document": ID})) == "official_without_staff_id"
    assert refusal(example_register, counter, request(**{**OFFICIAL, "purpose": "  "})) == "official_without_purpose"
    assert refusal(example_register, counter, request(purpose="")) is None  # only a 公用請求 must state one


def test_johyo_is_for_removed_residents_and_the_others_for_current_ones(example_register, counter):
    assert refusal(example_register, counter, request(SUZUKI_MOVED_OUT, kind="johyo")) is None
    assert refusal(example_register, counter, request(YAMADA_TARO, kind="johyo")) == "johyo_for_active"
    for kind in ("juminhyo", "kisai"):
        assert refusal(example_register, counter, request(SUZUKI_MOVED_OUT, kind=kind)) == "removed_resident"
    # a removed resident's seal registration ended with the residence
    assert refusal(example_register, counter, request(SUZUKI_MOVED_OUT, kind="inkan", seal_card_number="C1")) == "seal_revoked"


def test_a_seal_certificate_needs_the_matching_card_of_an_active_seal(example_register, counter):
    def seal_of(code, card):
        return plan(example_register, counter, request(code, kind="inkan", seal_card_number=card)).seal

    assert seal_of(YAMADA_TARO, " c00000011 ")["card_number"] == "C00000011"
    assert seal_of(YAMADA_HANAKO, "C00000029")["status"] == "active"  # her revoked seal is not the one certified
    assert refusal(example_register, counter, request(kind="inkan", seal_card_number="C00000012")) == "seal_card_mismatch"
    assert refusal(example_register, counter, request(YAMADA_ICHIRO, kind="inkan", seal_card_number="C00000037")) == "no_seal"


def test_a_certificate_prints_the_members_chosen_or_the_whole_household(example_register, counter):
    def printed(**fields):
        return [r["resident_code"] for r in plan(example_register, counter, request(**fields)).residents]

    assert printed() == [YAMADA_TARO]
    assert plan(example_register, counter, request()).seal is None  # a seal only for 印鑑登録証明書
    assert printed(members=[YAMADA_ICHIRO]) == [YAMADA_TARO, YAMADA_ICHIRO]
    assert printed(whole_household=True) == [YAMADA_TARO, YAMADA_HANAKO, YAMADA_ICHIRO]
    with pytest.raises(IssueError, match="同じ世帯の現在の住民でない方"):
        plan(example_register, counter, request(members=[TAKAHASHI]))


def test_a_support_measure_record_goes_to_the_resident_only_unless_the_ward_allows_approved_household(example_register, counter):
    assert plan(example_register, counter, request(SATO_SUPPORT)).flags == ["support_measure_self"]
    household = request(SATO_SUPPORT, requester_type="household", requester_name="佐藤　一", approved_by="boss")
    assert refusal(example_register, counter, household) == "support_measure"  # the ward allows no exception (the default)
    counter["support_measure_approvable"] = ["household"]
    assert plan(example_register, counter, household).flags == ["support_measure_approved"]
    with pytest.raises(IssueRefused, match="別の係長の承認が必要です") as refused:
        plan(example_register, counter, dataclasses.replace(household, approved_by=None))
    assert refused.value.rule == "support_measure"
    counter["support_measure_approvable"] = ["household", "agent", "third_party", "official"]  # never more than household
    for requester in (AGENT | {"delegation_letter": True}, THIRD, OFFICIAL):
        req = request(SATO_SUPPORT, approved_by="boss", **requester)
        assert refusal(example_register, counter, req, third_party_allowed=True) == "support_measure"


def test_a_planned_move_out_is_issued_only_once_the_clerk_acknowledged_it(example_register, counter):
    with pytest.raises(IssueRefused, match="転出予定日 令和8年12月1日、転出先 東京都品川区広町二丁目1番36号") as refused:
        plan(example_register, counter, request(TANAKA_MOVING))
    assert refused.value.rule == "planned_move_out"
    assert plan(example_register, counter, request(TANAKA_MOVING, acknowledge_move_out=True)).flags == ["planned_move_out"]
    assert plan(example_register, counter, request()).flags == []


def test_items_that_cannot_be_printed_are_named_and_issued_only_once_acknowledged(example_register, counter):
    req = request(items=["honseki", "individual_number", "head"])
    with pytest.raises(IssueRefused, match="個人番号（山田　太郎：個人番号がこの装置の写しにありません") as refused:
        plan(example_register, counter, req)
    assert refused.value.rule == "items_not_printed"
    assert [(o["item"], o["resident_code"]) for o in refused.value.detail["omissions"]] == [("individual_number", YAMADA_TARO)]
    planned = plan(example_register, counter, dataclasses.replace(req, acknowledge_omissions=True))
    assert planned.flags == ["items_omitted"] and [o["item"] for o in planned.omissions] == ["individual_number"]
    assert plan(example_register, counter, request(items=["honseki", "head"])).items == {"honseki", "head"}


def test_a_third_party_never_receives_the_resident_code_whatever_is_ticked(example_register, counter):
    req = request(**THIRD, items=["resident_code", "head"], acknowledge_omissions=True)
    planned = plan(example_register, counter, req, third_party_allowed=True)
    assert planned.items == {"head"}
    assert planned.omissions == [{"item": "resident_code", "label": "住民票コード", "resident_code": None, "name": None,
                                  "reason": "第三者への証明書には記載できません（住民基本台帳法・番号法）"}]
    assert plan(example_register, counter, request(items=["resident_code"])).items == {"resident_code"}  # the resident may


def test_a_foreign_residents_missing_items_are_named_and_honseki_is_not_theirs(example_register, counter):
    wang = example_register.resident(WANG)["foreign"]
    present = [item for item, key in issuance.FOREIGN_ITEM_FIELDS.items() if wang.get(key)]
    assert present and plan(example_register, counter, request(WANG, items=present)).items == set(present)
    planned = plan(example_register, counter, request(WANG, items=["honseki"]))
    assert planned.items == {"honseki"} and planned.omissions == []  # nothing to print, nothing to warn about
    missing = [item for item, key in issuance.FOREIGN_ITEM_FIELDS.items() if not wang.get(key)]
    if missing:
        assert refusal(example_register, counter, request(WANG, items=missing)) == "items_not_printed"
    assert refusal(example_register, counter, request(SUZUKI_MOVED_OUT, kind="johyo", items=["honseki"])) == "items_not_printed"


def test_a_permanent_residents_absent_period_is_not_reported_as_missing(example_register, counter):
    """A 永住者 has no 在留期間, a 特別永住者 no 在留資格 either: asking for
    every 在留 item is no omission for them (an outside tester was told the
    record lacked them and to take the request for later), but still is for
    a 中長期在留者 whose record lacks one."""
    wang = example_register.resident(WANG)
    every = list(issuance.FOREIGN_ITEM_FIELDS)
    foreign = {"nationality": "米国", "category": "中長期在留者", "status": "永住者", "period": None, "period_expiry": None,
               "card_number": "AB12345678CD"}
    permanent = {**wang, "foreign": foreign}
    special = {**wang, "foreign": {**foreign, "category": "特別永住者", "status": None}}
    lacking = {**wang, "foreign": {**foreign, "status": "定住者"}}
    req = request(WANG, items=every)
    assert issuance.printed_items(req, [permanent], "self")[1] == []
    assert issuance.printed_items(req, [special], "self")[1] == []
    assert [o["item"] for o in issuance.printed_items(req, [lacking], "self")[1]] == ["expiry", "period"]


def test_a_seal_certificate_prints_no_optional_items(example_register, counter):
    planned = plan(example_register, counter, request(kind="inkan", seal_card_number="C00000011", items=["honseki"]))
    assert planned.items == frozenset() and planned.omissions == []


def test_the_fee_is_per_copy_and_waived_for_an_exempt_official_request(example_register, counter):
    counter["fees_yen"] = {"juminhyo": 300, "inkan": 350}
    assert plan(example_register, counter, request(copies=3)).fee_yen == 900
    assert plan(example_register, counter, request(kind="inkan", seal_card_number="C00000011", copies=2)).fee_yen == 700
    assert plan(example_register, counter, request(kind="kisai")).fee_yen == 300  # unlisted: the standard fee
    assert plan(example_register, counter, request(**OFFICIAL, copies=2)).fee_yen == 0
    counter["official_fee_exempt"] = False
    assert plan(example_register, counter, request(**OFFICIAL, copies=2)).fee_yen == 600


@pytest.mark.parametrize("fields, message", [
    ({"kind": "koseki"}, "証明書の種類"),
    ({"requester_type": "friend"}, "請求者の区分"),
    ({"identity_document": ""}, "本人確認書類"),
    ({"requester_type": "agent", "requester_name": "　 "}, "請求者（窓口に来た方）の氏名"),
    ({"copies": 0}, "通数は1から3まで"),
    ({"copies": 4}, "通数は1から3まで"),
    ({"items": ["head", "blood_type"]}, "不明な記載事項: blood_type"),
    ({"layout": "a4"}, "様式"),
    ({"kind": "inkan", "seal_card_number": " "}, "印鑑登録証の番号"),
])
def test_a_malformed_form_is_refused_with_what_to_fix(fields, message):
    with pytest.raises(IssueError, match=message):
        issuance.validate_form(request(**fields), max_copies=3)


@pytest.mark.parametrize("fields", [
    {"copies": 1}, {"copies": 3}, {"requester_type": "household", "requester_name": "山田　花子"},
    {"items": list(issuance.OPTIONAL_ITEMS), "layout": "kojin"}, {"kind": "inkan", "seal_card_number": "C1"},
])
def test_a_complete_form_passes(fields):
    issuance.validate_form(request(**fields), max_copies=3)


def test_the_daily_cap_counts_one_requester_by_their_name_however_written():
    one = request(requester_type="agent", requester_name="山田　花子")
    assert issuance.requester_key(one) == issuance.requester_key(dataclasses.replace(one, requester_name="山田 花子", subject_code=TAKAHASHI))
    assert issuance.requester_key(one) != issuance.requester_key(dataclasses.replace(one, requester_name="山田　太郎"))
    assert issuance.requester_key(request()) != issuance.requester_key(request(YAMADA_HANAKO))  # 本人: by the resident
    assert issuance.requester_key(request()) == issuance.requester_key(request(requester_name="誰か"))


@pytest.fixture
def ops(sonae_env):
    conn = open_ops(sonae_env)
    yield conn
    conn.close()


# --- holds recorded at the counter (fallback.holds), read through HeldRegister -------


def with_hold(ops, example_register, kind, code, *, seal_number=None, **details) -> HeldRegister:
    holds.record(ops, scope="real", drill_id=None, kind=kind, resident_code=code, seal_number=seal_number, details=details,
                 recorded_by="boss", recorder_role="supervisor", confirmed_by=None)
    return HeldRegister(example_register, holds.ActiveHolds.load(ops, scope="real", drill_id=None))


def recorded_at(ops) -> str:
    """When the last hold was recorded, as a clerk's message shows it."""
    return ops.execute("SELECT recorded_at FROM holds ORDER BY id DESC LIMIT 1").fetchone()[0][:16].replace("T", " ")


def test_a_seal_under_a_lost_card_hold_certifies_nothing(ops, example_register, counter):
    (seal,) = example_register.seals_of(YAMADA_TARO)
    register = with_hold(ops, example_register, "seal_lost", YAMADA_TARO, seal_number=seal["seal_number"])
    with pytest.raises(IssueRefused, match=f"^この印鑑登録は印鑑登録証の亡失届を受け付けています（{recorded_at(ops)}）。") as refused:
        plan(register, counter, request(kind="inkan", seal_card_number="C00000011"))
    assert refused.value.rule == "seal_held"
    assert refusal(register, counter, request(kind="inkan", seal_card_number="C00000012")) == "seal_held"  # before the card is compared
    assert refusal(register, counter, request()) is None  # the 住民票 is not held
    assert refusal(register, counter, request(TAKAHASHI, kind="inkan", seal_card_number="C00000045")) is None


def test_a_death_received_at_the_counter_stops_the_person_and_any_certificate_printing_them(ops, example_register, counter):
    register = with_hold(ops, example_register, "death", YAMADA_ICHIRO, occurred_on="2026-12-01")
    with pytest.raises(IssueRefused, match="死亡日 令和8年12月1日") as refused:
        plan(register, counter, request(YAMADA_ICHIRO))
    assert refused.value.rule == "death_held"
    with pytest.raises(IssueRefused, match="世帯員の山田　一郎さんは死亡届を受け付けた方です") as refused:
        plan(register, counter, request(whole_household=True))
    assert refused.value.rule == "death_held"
    assert refusal(register, counter, request(members=[YAMADA_HANAKO])) is None  # chosen without him


def test_a_provisional_support_measure_protects_a_member_from_their_own_household(ops, example_register, counter):
    """A 仮支援措置 on 山田花子: 山田太郎 asking for the whole household is
    asking, for her, as a member of her household."""
    register = with_hold(ops, example_register, "support_measure", YAMADA_HANAKO, note="緊急の申出")
    whole = request(whole_household=True, approved_by="boss")
    assert refusal(register, counter, whole) == "support_measure"
    counter["support_measure_approvable"] = ["household"]
    assert plan(register, counter, whole).flags == ["support_measure_approved"]
    assert refusal(register, counter, dataclasses.replace(whole, approved_by=None)) == "support_measure"
    assert plan(register, counter, request()).flags == []  # his own certificate


def test_a_court_or_police_hold_needs_a_supervisors_approval(ops, example_register, counter):
    register = with_hold(ops, example_register, "court_police", YAMADA_HANAKO, note="照会番号123")
    with pytest.raises(IssueRefused, match="^山田　花子さんに保留があります：裁判所・警察からの依頼（照会番号123）。") as refused:
        plan(register, counter, request(whole_household=True))
    assert refused.value.rule == "hold_approval"
    assert plan(register, counter, request(whole_household=True, approved_by="boss")).flags == ["hold_approved"]
    assert plan(register, counter, request()).flags == []  # a certificate without her


# --- the daily cap and serials, on a real operational database --------------------

CLERK = issuance.Clerk("clerk1", "本庁", "本庁1", "プリンタ001")


def issue(ops, example_register, counter, req, *, cap=3, scope=issuance.REAL, serial_range=(900001, 900009), floor=0):
    planned = plan(example_register, counter, req)
    return issuance.allocate_and_record(ops, req, planned, CLERK, scope, box_id="1", serial_range=serial_range, daily_cap=cap,
                                        snapshot_generation=1, data_as_of="2026-12-01T00:00:00+09:00", serial_floor=floor)


def capped(ops, example_register, counter, req, **options) -> bool:
    try:
        issue(ops, example_register, counter, req, **options)
    except IssueRefused as refused:
        assert refused.rule == "daily_cap"
        return True
    return False


def test_the_daily_cap_counts_copies_up_to_the_cap_exactly(ops, example_register, counter):
    assert not capped(ops, example_register, counter, request(copies=2))
    assert capped(ops, example_register, counter, request(copies=2))  # 4 > 3
    assert not capped(ops, example_register, counter, request(copies=1))  # 3 = 3
    assert capped(ops, example_register, counter, request(copies=1))
    assert not capped(ops, example_register, counter, request(YAMADA_HANAKO, copies=3))  # another requester


def test_the_daily_cap_does_not_count_voided_serials_nor_other_scopes(ops, example_register, counter):
    assert not capped(ops, example_register, counter, request(copies=3))
    ops.execute("UPDATE certificates SET status = 'void'")  # never handed out (a render that never came)
    assert not capped(ops, example_register, counter, request(copies=3))
    drill = issuance.Scope("drill", 1)
    assert not capped(ops, example_register, counter, request(copies=3), scope=drill, serial_range=(800001, 800009))
    assert capped(ops, example_register, counter, request(copies=1))


def test_a_cap_of_zero_means_no_cap_and_one_means_one(ops, example_register, counter):
    for _ in range(2):
        assert not capped(ops, example_register, counter, request(copies=4), cap=0)
    assert not capped(ops, example_register, counter, request(YAMADA_HANAKO), cap=1)
    assert capped(ops, example_register, counter, request(YAMADA_HANAKO), cap=1)


def move_clock_to(monkeypatch, moment: dt.datetime) -> None:
    set_clock_off(monkeypatch, moment - dt.datetime.now(TOKYO))


def test_the_daily_cap_counts_from_midnight(ops, example_register, counter, monkeypatch):
    midnight = dt.datetime.now(TOKYO).replace(hour=0, minute=0, second=0, microsecond=0) + dt.timedelta(days=1)
    move_clock_to(monkeypatch, midnight - dt.timedelta(seconds=5))
    assert not capped(ops, example_register, counter, request(copies=3))
    move_clock_to(monkeypatch, midnight + dt.timedelta(milliseconds=100))
    assert not capped(ops, example_register, counter, request(copies=3))  # yesterday's do not count
    move_clock_to(monkeypatch, midnight + dt.timedelta(hours=23, minutes=59, seconds=59, milliseconds=600))
    assert capped(ops, example_register, counter, request(copies=1))  # today's, to the last second of the day


def test_serials_run_to_the_last_of_the_range_and_no_further(ops, example_register, counter):
    def serials(copies):
        return [c.serial for c in issue(ops, example_register, counter, request(copies=copies), cap=0, serial_range=(900001, 900003)).copies]

    assert serials(2) == [900001, 900002]
    with pytest.raises(IssueRefused, match="^この装置に割り当てられた発行番号を使い切りました。") as refused:
        serials(2)
    assert refused.value.rule == "serials_exhausted"
    assert serials(1) == [900003]
    with pytest.raises(IssueRefused, match="発行番号を使い切りました"):
        serials(1)


def test_a_range_extended_in_the_configuration_is_used_at_once(ops, example_register, counter):
    def serials(last):
        return [c.serial for c in issue(ops, example_register, counter, request(), cap=0, serial_range=(900001, last)).copies]

    assert serials(900001) == [900001]
    assert serials(900002) == [900002]


def test_no_serial_at_or_below_the_anchors_floor_is_taken(ops, example_register, counter):
    def serials(floor):
        return [c.serial for c in issue(ops, example_register, counter, request(), cap=0, floor=floor).copies]

    assert serials(900004) == [900005]  # the anchor saw 900004 handed out; the database had lost it
    assert serials(900001) == [900006]  # a lower floor changes nothing

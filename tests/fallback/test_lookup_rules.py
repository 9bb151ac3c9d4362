"""The search's rules in-process, each in both directions at its boundary:
what a query must hold to be searched, and when a clerk who has seen many
residents is flagged (the window moved with the appliance's clock, not
slept). The same through the app is in test_search_privacy.py; these run
in milliseconds, so mutation testing (README "Mutation testing") can run
them once per mutant."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from fallback import audit
from fallback.counter import lookup
from fallback.counter.lookup import Query, QueryError, parse_query
from fallback.ops import open_ops
from printing.wareki import DEFAULT_ERAS
from tests.clocks import set_clock_off

YAMADA_TARO, YAMADA_HANAKO, YAMADA_ICHIRO, TAKAHASHI, SATO_SUPPORT = (
    "10000000011", "10000000029", "10000000037", "10000000045", "10000000087")


def parsed(**args) -> dict:
    return parse_query(args, DEFAULT_ERAS)[1]


def test_each_field_becomes_its_criterion():
    assert parsed(kana=" ヤマダ ", name="山田", address="西蒲田") == {"kana": "ヤマダ", "name": "山田", "address": "西蒲田"}
    assert parsed(birth="S50.6.15") == {"birth_date": dt.date(1975, 6, 15)}
    assert parsed(code="１０００００００-０１１") == {"resident_code": YAMADA_TARO}  # full-width, with a hyphen


NOTHING_GIVEN = "カナ・氏名・生年月日・住所・住民票コードのいずれかを入力してください。"
NOT_A_CODE = "住民票コードは11桁の数字です。"
TOO_LONG = "検索の条件が長すぎます（各欄100文字まで）。"


@pytest.mark.parametrize("args, message", [
    ({}, NOTHING_GIVEN),
    ({"kana": "   ", "name": None}, NOTHING_GIVEN),
    ({"code": "1000000001"}, NOT_A_CODE),
    ({"code": "100000000111"}, NOT_A_CODE),
    ({"code": "1000000001X"}, NOT_A_CODE),
    ({"address": "西蒲"}, "住所だけで検索するときは、町名を3文字以上入力してください。"),
    ({"kana": "ア" * (lookup.MAX_QUERY_LENGTH + 1)}, TOO_LONG),
    ({"kana": "ヤマダ", "address": "西" * (lookup.MAX_QUERY_LENGTH + 1)}, TOO_LONG),
])
def test_a_query_the_clerk_must_correct_is_refused_saying_how(args, message):
    with pytest.raises(QueryError) as refused:
        parse_query(args, DEFAULT_ERAS)
    assert str(refused.value) == message


def test_a_birth_date_that_cannot_be_read_is_refused_saying_why():
    with pytest.raises(QueryError) as refused:
        parse_query({"birth": "昭和64年1月8日"}, DEFAULT_ERAS)
    assert str(refused.value) == "生年月日を読み取れません: 「昭和64年1月8日」: 昭和64年1月8日は存在しません（昭和は1989年1月7日まで）"


def test_the_boundaries_just_inside_are_searched():
    assert parsed(address="西蒲田") == {"address": "西蒲田"}  # three characters alone
    assert parsed(address="西", kana="ヤ") == {"address": "西", "kana": "ヤ"}  # short, beside another field
    assert parsed(kana="ア" * lookup.MAX_QUERY_LENGTH) == {"kana": "ア" * lookup.MAX_QUERY_LENGTH}


def test_a_query_keeps_only_the_fields_given():
    query, _ = parse_query({"kana": "ヤマダ", "birth": ""}, DEFAULT_ERAS)
    assert query == Query(kana="ヤマダ") and query.as_dict() == {"kana": "ヤマダ"} and not query.empty
    assert Query().empty and Query().as_dict() == {}


# --- the audited search and view, and the flag ---------------------------------------------


@pytest.fixture
def ops(sonae_env):
    conn = open_ops(sonae_env)
    yield conn
    conn.close()


def search(ops, register, *, flag_count=30, actor="clerk1", drill=False, **args):
    query, criteria = parse_query(args, DEFAULT_ERAS)
    return lookup.search(ops, register, query, criteria, actor=actor, drill=drill, flag_count=flag_count, flag_window_minutes=10)


def view(ops, register, code, *, flag_count=30, actor="clerk1", drill=False):
    return lookup.view_resident(ops, register, code, actor=actor, drill=drill, flag_count=flag_count, flag_window_minutes=10)


def flags(ops, actor="clerk1") -> list[dict]:
    return [f for f in lookup.open_flags(ops, "") if f["clerk"] == actor]


def test_a_flagged_clerk_is_not_counted_again(ops, example_register, monkeypatch):
    search(ops, example_register, kana="ヤマダ", flag_count=3)  # three shown: not above 3
    view(ops, example_register, TAKAHASHI, flag_count=3)  # a fourth
    assert len(flags(ops)) == 1
    counted = []
    monkeypatch.setattr(lookup, "residents_seen", lambda *args, **kwargs: counted.append(args) or 99)
    search(ops, example_register, kana="タカハシ", flag_count=3)
    view(ops, example_register, SATO_SUPPORT, flag_count=3)
    assert counted == [] and len(flags(ops)) == 1  # flagged already in this window: nothing counted


def test_more_look_ups_than_anyone_at_a_counter_makes_are_flagged_and_only_the_newest_are_read(ops, example_register, monkeypatch):
    """A script repeating the same searches sees few residents, but every
    look-up would read its whole window: the newest LOOK_UPS_READ views and
    searches are read, and a clerk with more is flagged for them."""
    monkeypatch.setattr(lookup, "LOOK_UPS_READ", 3)
    search(ops, example_register, kana="ヤマダ")  # three residents, then the same search again and again
    for _ in range(2):
        search(ops, example_register, kana="ヤマダ")
    assert flags(ops) == []  # three searches: not more than 3
    view(ops, example_register, TAKAHASHI)
    assert flags(ops) == []  # one view
    search(ops, example_register, kana="タカハシ")  # a fourth search: its newest three are read
    (flag,) = flags(ops)
    assert (flag["distinct_residents"], flag["at_least"], flag["look_ups_over"]) == (4, True, 3)


def test_look_ups_that_cross_the_threshold_at_once_raise_one_flag(ops, example_register, sonae_env, monkeypatch):
    """Two serving processes' threads may both find the clerk over the
    threshold; the one that writes second finds the first's flag."""
    other_process = open_ops(sonae_env)
    counted = lookup.residents_seen

    def while_another_flags(conn, *args, **kwargs):
        if conn is ops and "stop_after" not in kwargs:  # the figure of a flag about to be written
            assert lookup.flag_bulk_viewing(other_process, "clerk1", flag_count=3, window=dt.timedelta(minutes=10), drill=False)
        return counted(conn, *args, **kwargs)

    monkeypatch.setattr(lookup, "residents_seen", while_another_flags)
    search(ops, example_register, kana="ヤマダ", flag_count=3)
    view(ops, example_register, TAKAHASHI, flag_count=3)
    other_process.close()
    assert len(flags(ops)) == 1


def test_a_search_is_audited_with_its_query_and_the_residents_it_showed(ops, example_register):
    found = search(ops, example_register, kana="ヤマダ")
    codes = [s["resident_code"] for s in found.summaries()]
    assert sorted(codes) == [YAMADA_TARO, YAMADA_HANAKO, YAMADA_ICHIRO] and not found.truncated
    (entry,) = audit.entries(ops, action="search")
    assert (entry["actor"], entry["detail"]) == ("clerk1", {"query": {"kana": "ヤマダ"}, "results": 3, "residents": codes})


def test_a_support_measure_resident_is_listed_without_an_address(ops, example_register):
    (sato,) = search(ops, example_register, name="佐藤").summaries()
    assert sato["resident_code"] == SATO_SUPPORT and sato["address"] is None
    (yamada, *_) = search(ops, example_register, kana="ヤマダ").summaries()
    assert yamada["address"]["town"] == "西蒲田七丁目"


def test_a_search_of_punctuation_only_is_refused_saying_how(ops, example_register):
    with pytest.raises(QueryError) as refused:
        search(ops, example_register, kana="・")
    assert str(refused.value) == "検索の条件が記号だけです。氏名・カナ・住所は文字で入力してください。"


def test_a_view_is_audited_found_or_not(ops, example_register):
    assert view(ops, example_register, YAMADA_TARO)["name"] == "山田　太郎"
    assert view(ops, example_register, "99999999999") is None
    assert [(e["target"], e["detail"]) for e in audit.entries(ops, action="view")] == [
        (YAMADA_TARO, {"found": True}), ("99999999999", {"found": False})]


def test_searches_and_views_count_together_and_only_above_the_threshold(ops, example_register):
    search(ops, example_register, kana="ヤマダ", flag_count=4)  # three shown
    view(ops, example_register, TAKAHASHI, flag_count=4)  # a fourth: 4 is not above 4
    view(ops, example_register, YAMADA_TARO, flag_count=4)  # one already seen
    view(ops, example_register, "99999999999", flag_count=4)  # nobody seen
    search(ops, example_register, kana="ヌヌヌ", flag_count=4)  # nobody shown
    assert flags(ops) == []
    view(ops, example_register, SATO_SUPPORT, flag_count=4, actor="clerk2")  # another clerk's
    view(ops, example_register, SATO_SUPPORT, flag_count=4)  # a fifth
    (flag,) = flags(ops)
    (entry,) = audit.entries(ops, action="flag.bulk_viewing")
    assert flag == {"at": entry["at"], "clerk": "clerk1", "distinct_residents": 5, "at_least": False, "look_ups_over": None,
                    "window_minutes": 10, "drill": False}
    search(ops, example_register, name="葛", flag_count=4)
    assert len(flags(ops)) == 1  # once per window
    assert not lookup.flag_bulk_viewing(ops, "clerk1", flag_count=4, window=dt.timedelta(minutes=10), drill=False)
    assert flags(ops, "clerk2") == []


def test_what_was_seen_before_the_window_does_not_count_nor_does_an_older_flag(ops, example_register, monkeypatch):
    search(ops, example_register, kana="ヤマダ")
    view(ops, example_register, TAKAHASHI)
    set_clock_off(monkeypatch, dt.timedelta(minutes=11))
    view(ops, example_register, SATO_SUPPORT)
    window = dt.timedelta(minutes=10)
    assert not lookup.flag_bulk_viewing(ops, "clerk1", flag_count=1, window=window, drill=False)  # one in the window
    assert lookup.flag_bulk_viewing(ops, "clerk1", flag_count=4, window=dt.timedelta(minutes=12), drill=False)  # five in twelve minutes
    set_clock_off(monkeypatch, dt.timedelta(minutes=30))
    search(ops, example_register, kana="ヤマダ")
    assert lookup.flag_bulk_viewing(ops, "clerk1", flag_count=2, window=window, drill=False)  # the older flag is outside the window


def test_a_drills_searches_views_and_flags_are_marked_as_the_drills(ops, example_register):
    view(ops, example_register, TAKAHASHI, flag_count=3, drill=True)
    search(ops, example_register, kana="ヤマダ", flag_count=3, drill=True)  # the fourth: flagged by the search
    search(ops, example_register, kana="ヤマダ", flag_count=2, actor="clerk3", drill=True)
    view(ops, example_register, TAKAHASHI, flag_count=2, actor="clerk3", drill=True)  # the fourth: flagged by the view
    assert [(e["action"], e["target"], e["drill"]) for e in audit.entries(ops) if e["action"] == "flag.bulk_viewing"] == [
        ("flag.bulk_viewing", "clerk1", True), ("flag.bulk_viewing", "clerk3", True)]
    assert all(e["drill"] for e in audit.entries(ops))
    search(ops, example_register, kana="ヤマダ", flag_count=3, actor="clerk2")
    assert [e["drill"] for e in audit.entries(ops, actor="clerk2")] == [False]


# --- at most 50 results, and whether more matched -------------------------------------------


def codes_of(found) -> list[str]:
    return [s["resident_code"] for s in found.summaries()]


def test_fifty_matches_are_all_shown_and_not_truncated(ops, crowded_register):
    found = search(ops, crowded_register, kana="ミナミ", flag_count=1000)
    assert len(found.summaries()) == lookup.MAX_RESULTS == 50 and found.truncated is False
    assert {s["name_kana"] for s in found.summaries()} == {"ミナミ\u3000タロウ"}


def test_fifty_one_matches_show_the_first_fifty_and_say_more_matched(ops, crowded_register):
    everyone = [s["resident_code"] for s in crowded_register.search(kana="ミナ", birth_date=dt.date(1980, 1, 1), limit=100)]
    found = search(ops, crowded_register, kana="ミナ", birth="1980-01-01", flag_count=1000)
    assert len(everyone) == 51 and found.truncated is True
    assert codes_of(found) == everyone[:50]
    (entry,) = audit.entries(ops, action="search")
    assert entry["detail"] == {"query": {"kana": "ミナ", "birth": "1980-01-01"}, "results": 51, "residents": everyone[:50]}


def test_a_search_reads_one_result_past_the_fifty_it_shows_never_more(ops, crowded_register):
    found = search(ops, crowded_register, kana="ミナ", flag_count=1000)  # 61 match
    assert len(found.summaries()) == 50 and found.truncated is True
    assert [e["detail"]["results"] for e in audit.entries(ops, action="search")] == [51]
    assert json.loads(found.json_array()) == found.summaries()


def test_a_household_lists_its_current_members_in_order_then_its_former_ones(crowded_register):
    person = crowded_register.resident("30000000000")  # its second member by household_order; the first was removed
    members = lookup.household_members(crowded_register, person)
    assert [(m["resident_code"], m["status"]) for m in members] == [(person["resident_code"], "active"), ("10000000095", "removed")]


def test_a_drill_s_look_ups_and_the_real_register_s_are_counted_apart(ops, example_register):
    """A drill's residents are invented: seen in a drill they do not count
    towards a real flag, and a clerk flagged in a drill is still counted
    (and flagged) for what they see of the real register."""
    search(ops, example_register, kana="ヤマダ", flag_count=3, drill=True)  # three, in the drill
    search(ops, example_register, kana="タカハシ", flag_count=3)  # one, real: four in all, but not in one scope
    assert flags(ops) == []
    view(ops, example_register, TAKAHASHI, flag_count=0, drill=True)
    (drill_flag,) = flags(ops)
    assert drill_flag["drill"] is True and drill_flag["distinct_residents"] == 4  # the drill's three and the one viewed
    view(ops, example_register, SATO_SUPPORT, flag_count=1)  # a second real resident: over 1 in the real scope
    real = [f for f in flags(ops) if not f["drill"]]
    assert len(real) == 1 and real[0]["distinct_residents"] == 2

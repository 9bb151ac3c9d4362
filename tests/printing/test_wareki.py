from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from printing.wareki import (
    DEFAULT_ERA_TABLE,
    DEFAULT_ERAS,
    eras_from_config,
    format_seireki,
    format_wareki,
    format_wareki_datetime,
    parse_date_input,
)

JST = dt.timezone(dt.timedelta(hours=9))


@pytest.mark.parametrize(
    "day, expected",
    [
        ("1873-01-01", "明治6年1月1日"),
        ("1912-07-29", "明治45年7月29日"),
        ("1912-07-30", "大正元年7月30日"),
        ("1926-12-24", "大正15年12月24日"),
        ("1926-12-25", "昭和元年12月25日"),
        ("1989-01-07", "昭和64年1月7日"),
        ("1989-01-08", "平成元年1月8日"),
        ("2019-04-30", "平成31年4月30日"),
        ("2019-05-01", "令和元年5月1日"),
        ("2026-11-25", "令和8年11月25日"),
    ],
)
def test_format_wareki_boundaries_and_gannen(day, expected):
    assert format_wareki(dt.date.fromisoformat(day)) == expected


def test_format_seireki():
    assert format_seireki(dt.date(1990, 4, 1)) == "1990年4月1日"


def test_format_wareki_datetime_is_japan_time():
    assert format_wareki_datetime(dt.datetime(2026, 11, 24, 23, 0, tzinfo=JST)) == "令和8年11月24日23時00分"
    # 14:05 UTC is 23:05 in Japan
    assert format_wareki_datetime(dt.datetime(2026, 11, 24, 14, 5, tzinfo=dt.UTC)) == "令和8年11月24日23時05分"
    with pytest.raises(ValueError):
        format_wareki_datetime(dt.datetime(2026, 11, 24, 23, 0))


def test_dates_before_the_calendar_reform_are_refused():
    with pytest.raises(ValueError, match="改暦"):
        format_wareki(dt.date(1872, 12, 31))


def test_an_eras_first_character_abbreviates_it_only_when_no_other_era_shares_it():
    eras = eras_from_config([*DEFAULT_ERA_TABLE, ("令明", "2099-01-01", "A")])
    with pytest.raises(ValueError, match="元号「令」が分かりません"):
        parse_date_input("令8.12.15", eras)
    assert parse_date_input("明45.7.29", eras) == dt.date(1912, 7, 29)


def test_a_future_era_is_a_config_change():
    eras = eras_from_config([*[[era.name, era.start.isoformat()] for era in DEFAULT_ERAS], ["新元", "2040-01-01", "N"]])
    assert format_wareki(dt.date(2039, 12, 31), eras) == "令和21年12月31日"
    assert format_wareki(dt.date(2040, 1, 1), eras) == "新元元年1月1日"
    assert parse_date_input("N2.3.4", eras) == dt.date(2041, 3, 4)
    assert parse_date_input("新元元年1月1日", eras) == dt.date(2040, 1, 1)
    with pytest.raises(ValueError, match="令和は2039年12月31日まで"):
        parse_date_input("令和22年1月1日", eras)


@pytest.mark.parametrize(
    "table",
    [[], [["昭和", "1989-01-08"], ["平成", "1926-12-25"]], [["令和", "2019-5-1"]], [["令和", "2019-05-01", "RR"]]],
)
def test_bad_era_tables_are_refused(table):
    with pytest.raises(ValueError):
        eras_from_config(table)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("1975-06-15", "1975-06-15"),
        ("1975/6/15", "1975-06-15"),
        ("1975.6.15", "1975-06-15"),
        ("19750615", "1975-06-15"),
        ("1975年6月15日", "1975-06-15"),
        ("S50.6.15", "1975-06-15"),
        ("s50.6.15", "1975-06-15"),
        ("昭和50年6月15日", "1975-06-15"),
        ("H31/4/30", "2019-04-30"),
        ("R1.5.1", "2019-05-01"),
        ("令和元年5月1日", "2019-05-01"),
        ("平成元年1月8日", "1989-01-08"),
        ("昭和64年1月7日", "1989-01-07"),
        ("Ｓ５０．６．１５", "1975-06-15"),
        ("１９７５－０６－１５", "1975-06-15"),
        ("昭和５０年６月１５日", "1975-06-15"),
        (" 3500615 ", "1975-06-15"),
        ("昭47.8.21", "1972-08-21"),
        ("明45.7.29", "1912-07-29"),
        ("大1.7.30", "1912-07-30"),
        ("平元.1.8", "1989-01-08"),
        ("令8/12/15", "2026-12-15"),
        ("昭47年8月21日", "1972-08-21"),
        ("昭４７．８．２１", "1972-08-21"),
    ],
)
def test_parse_date_input_accepts_counter_forms(text, expected):
    assert parse_date_input(text) == dt.date.fromisoformat(expected)


@pytest.mark.parametrize(
    "text, message",
    [
        ("昭和64年1月8日", "昭和は1989年1月7日まで"),
        ("平成32年1月1日", "平成は2019年4月30日まで"),
        ("H31.5.1", "平成は2019年4月30日まで"),
        ("令和元年4月30日", "令和は2019年5月1日から"),
        ("S50.2.30", "存在しない日付"),
        ("2019-02-29", "存在しない日付"),
        ("X1.1.1", "元号"),
        ("成1.1.8", "元号「成」が分かりません"),  # only an era's first character abbreviates it
        ("昭64.1.8", "昭和は1989年1月7日まで"),
        ("明日", "日付として読めません"),
        ("", "入力されていません"),
        ("9500101", "元号番号"),
    ],
)
def test_parse_date_input_refuses_impossible_dates_with_a_reason(text, message):
    with pytest.raises(ValueError, match=message):
        parse_date_input(text)


dates = st.dates(min_value=dt.date(1873, 1, 1), max_value=dt.date(2100, 12, 31))


@given(dates)
def test_wareki_round_trip(day):
    assert parse_date_input(format_wareki(day)) == day


@given(dates)
def test_seireki_round_trip(day):
    assert parse_date_input(format_seireki(day)) == day
    assert parse_date_input(day.isoformat()) == day


@given(dates)
def test_abbreviated_full_width_round_trip(day):
    wareki = format_wareki(day)
    era = next(era for era in DEFAULT_ERAS if wareki.startswith(era.name))
    year = wareki[len(era.name):].split("年")[0].replace("元", "1")
    typed = f"{era.abbreviation}{year}.{day.month}.{day.day}"
    full_width = typed.translate({code: code + 0xFEE0 for code in range(0x21, 0x7F)})
    assert parse_date_input(full_width) == day

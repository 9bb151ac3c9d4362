"""Splitting the notice into SNS posts: within the limit, numbered, nothing
lost, and split where a reader would expect."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from fallback import modes
from fallback.residents import notice
from fallback.residents.notice_outputs import notice_sns_posts, notice_sns_text, sns_posts
from tests.support import squeezed

from .conftest import jst

COUNTER = re.compile(r" ?[（(]\d+/\d+[）)]$")


def content(posts: list[str]) -> str:
    return squeezed("".join(COUNTER.sub("", post) for post in posts))


def test_a_short_notice_is_one_post_without_a_number():
    assert sns_posts("【大田区】システムの障害は復旧しました", 140) == ["【大田区】システムの障害は復旧しました"]


def test_paragraphs_stay_whole_and_posts_are_numbered():
    paragraphs = ["あ" * 60, "い" * 60, "う" * 60]
    posts = sns_posts("\n\n".join(paragraphs), 140)
    assert posts == ["あ" * 60 + "\n\n" + "い" * 60 + "（1/2）", "う" * 60 + "（2/2）"]


def test_a_heading_never_ends_a_post():
    text = "前置き" + "。" * 100 + "\n\n■ 現在できないこと\n・" + "転入届の処理" * 20
    posts = sns_posts(text, 140)
    assert all(len(post) <= 140 for post in posts)
    for post in posts:
        assert not COUNTER.sub("", post).rstrip().endswith("■ 現在できないこと")
    assert content(posts) == squeezed(text)


def test_long_lines_break_after_sentences_then_clauses_then_spaces():
    japanese = "令和8年11月25日から障害が発生しています。ご不便をおかけします。" * 6
    posts = sns_posts(japanese, 140)
    assert all(len(post) <= 140 for post in posts)
    assert all(COUNTER.sub("", post).endswith("。") for post in posts)
    assert content(posts) == squeezed(japanese)

    english = " ".join(f"word{i}" for i in range(80))
    posts = sns_posts(english, 140, language="en")
    assert all(len(post) <= 140 for post in posts)
    words = [w for post in posts for w in COUNTER.sub("", post).split()]
    assert words == english.split()  # no word was cut in two


def test_text_without_any_break_is_cut_hard_but_kept():
    text = "あ" * 500
    posts = sns_posts(text, 140)
    assert all(len(post) <= 140 for post in posts)
    assert content(posts) == text


def test_ten_or_more_posts_leave_room_for_a_two_digit_number():
    text = "\n\n".join("お" * 130 for _ in range(12))
    posts = sns_posts(text, 140)
    assert len(posts) == 12 and posts[-1].endswith("（12/12）")
    assert all(len(post) <= 140 for post in posts)


@pytest.mark.parametrize("reason", ["住民記録システム障害", "住基ネット連携障害"])
def test_every_language_of_a_drafted_notice_fits(ops, sonae_env, tmp_path, reason):
    modes.change(ops, modes.DOWNTIME, actor="boss", role="supervisor", reason=reason)
    at = jst(2026, 11, 25, 12, 0)
    situation = notice.assess(ops, sonae_env, data_as_of=at - dt.timedelta(days=3), at=at)
    version = notice.get(ops, notice.create_draft(ops, sonae_env, situation, actor="boss"))
    posts = notice_sns_posts(version, sonae_env)
    for language, texts in version.texts.items():
        assert all(len(post) <= 140 for post in posts[language])
        assert content(posts[language]).startswith(squeezed(texts["title"] + texts["body"]))
    assert COUNTER.sub("", posts["ja"][-1]).endswith("次回更新予定：令和8年11月25日 13時00分ごろ")
    assert COUNTER.sub("", posts["en"][-1]).endswith("Next update: around 13:00 on 25 November 2026")
    text = notice_sns_text(version, sonae_env)
    assert f"----- 日本語 1/{len(posts['ja'])}" in text and "----- English 1/" in text

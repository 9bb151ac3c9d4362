"""What the drafted notice says in each outage scenario: a full outage, a
住基ネット-only outage, a long outage on old data, and after recovery —
in Japanese, やさしい日本語 and English, following the ward's policy."""

from __future__ import annotations

import datetime as dt

import pytest

from fallback import modes
from fallback.config import load_config
from fallback.monitoring.probes import JUKI_NET, REGISTER, ProbeResult, reconcile_mode, record_results
from fallback.residents import notice

from .conftest import jst

NOON = jst(2026, 11, 25, 12, 0)


def draft(ops, config, *, data_age_hours=12.0, at=NOON, **kwargs):
    situation = notice.assess(ops, config, data_as_of=at - dt.timedelta(hours=data_age_hours), at=at, **kwargs)
    return situation, notice.draft_texts(situation, config)


def declare(ops, reason):
    modes.change(ops, modes.DOWNTIME, actor="boss", role="supervisor", reason=reason)


def with_config(monkeypatch, **overrides):
    """The configuration with SONAE_<SECTION>_<KEY> overrides, as a ward's
    IT would set them."""
    for name, value in overrides.items():
        monkeypatch.setenv(f"SONAE_{name.upper()}", value)
    return load_config()


def test_full_outage(ops, sonae_env):
    declare(ops, "住民記録システム障害: 11:20 ベンダーから連絡")
    situation, texts = draft(ops, sonae_env, data_age_hours=13)
    assert situation.components == (REGISTER,)
    assert situation.certificates_now == ("juminhyo", "kisai", "johyo", "inkan")
    ja = texts["ja"]["body"]
    assert texts["ja"]["title"] == "【大田区】住民記録システムの障害のお知らせ"
    assert "住民票の写し、住民票記載事項証明書、除票の写し、印鑑登録証明書の交付" in ja
    # The data-as-of time, in 和暦, exactly as the copy has it.
    assert "令和8年11月24日 23時00分時点の情報で発行します" in ja
    assert "転入・転出・転居の届出の処理（届出は受け付け、システムの復旧後に処理します）" in ja
    assert "印鑑登録（新規登録・廃止）" in ja
    # コンビニ交付 reads the same register: it is down too, and said so.
    assert "コンビニ交付（コンビニエンスストアでの証明書の取得）も停止しています" in ja
    assert "マイナンバーカードで、コンビニエンスストアでも" not in ja
    assert "引越しワンストップサービス" in ja and "区の負担で郵送します" in ja
    assert "お問い合わせ：大田区 戸籍住民課" in ja

    easy = texts["easy"]["body"]
    assert texts["easy"]["title"] == "区役所の コンピューターが 止まっています"
    assert "住民票（じゅうみんひょう）" in easy and "11月24日 23時00分の 情報で つくります" in easy
    assert "コンビニで 証明書（しょうめいしょ）を もらうことも できません" in easy

    en = texts["en"]["body"]
    assert texts["en"]["title"] == "Ota City: service disruption at the ward office"
    assert "as of 23:00 on 24 November 2026" in en
    assert "Convenience store issuance is also suspended" in en
    assert "Moving One-Stop Service" in en and "free of charge" in en
    assert "My Number Card procedures" not in en


def test_juki_net_only_outage_detected_by_the_probes(ops, sonae_env):
    # The monitor sees the 住基ネット link fail three times in a row; the
    # register itself answers. The appliance goes to suspect, not downtime.
    probes = sonae_env["probes"]
    for minute in range(probes["down_after"]):
        at = jst(2026, 11, 25, 11, 20 + minute)
        statuses = record_results(ops, [ProbeResult(REGISTER, True, "ok", 40.0, None),
                                        ProbeResult(JUKI_NET, False, "down", 40.0, "住基ネット連携が停止")], at, probes)
        reconcile_mode(ops, statuses, at, probes)
    assert modes.current(ops).mode == modes.SUSPECT
    situation, texts = draft(ops, sonae_env)
    assert situation.components == (JUKI_NET,)
    assert situation.since == jst(2026, 11, 25, 11, 20)  # the first failure of the streak that made it down
    # The counters still issue from the cloud register: no data-as-of caveat.
    assert situation.data_as_of is None and situation.certificates_stopped == ()
    ja = texts["ja"]["body"]
    assert texts["ja"]["title"] == "【大田区】住基ネット（住民基本台帳ネットワーク）との連携の障害のお知らせ"
    assert "令和8年11月25日 11時20分ごろから" in ja
    assert "住民票の写し、住民票記載事項証明書、除票の写し、印鑑登録証明書の交付" in ja
    assert "時点の情報で発行します" not in ja
    assert "転入・転出・転居の届出の処理" in ja and "マイナンバーカードの手続き" in ja
    assert "印鑑登録（新規登録・廃止）" not in ja
    # The outage spares コンビニ交付: it is offered as the alternative.
    assert "・コンビニ交付：マイナンバーカードで、コンビニエンスストアでも" in ja
    assert "停止しています" not in ja
    assert "with your My Number Card you can get" in texts["en"]["body"]
    assert "コンビニでも 住民票（じゅうみんひょう）などを もらえます" in texts["easy"]["body"]


def test_juki_net_downtime_declared_from_the_reason_alone(ops, sonae_env):
    # No probe data: the components come from the reason the supervisor chose.
    declare(ops, "住基ネット連携障害")
    situation, texts = draft(ops, sonae_env)
    assert situation.components == (JUKI_NET,)
    assert situation.mode == modes.DOWNTIME and situation.data_as_of is not None
    assert "時点の情報で発行します" in texts["ja"]["body"]
    assert "・コンビニ交付：" in texts["ja"]["body"]


def test_long_outage_with_old_data(ops, sonae_env, monkeypatch):
    # The ward stops 印鑑登録証明書 on data older than three days.
    config = with_config(monkeypatch, counter_kill_switch_hours='{"juminhyo": 0, "kisai": 0, "johyo": 0, "inkan": 72}')
    declare(ops, "住民記録システム障害")
    situation, texts = draft(ops, config, data_age_hours=5 * 24 + 1)
    assert situation.certificates_now == ("juminhyo", "kisai", "johyo")
    assert situation.certificates_stopped == ("inkan",)
    ja = texts["ja"]["body"]
    can, cannot = ja.split("■ 現在できないこと")
    assert "・住民票の写し、住民票記載事項証明書、除票の写しの交付\n" in can
    assert "令和8年11月20日 11時00分時点の情報で発行します" in can
    assert "（5日前の情報です。内容が変わった方は、窓口でお申し出ください。）" in can
    assert "・証明書の申請の受付（後日、区の負担で郵送します）" in can
    assert "・印鑑登録証明書の交付（データが古いため停止しています）" in cannot
    assert "(These records are 5 days old." in texts["en"]["body"]
    assert "seal registration certificate (印鑑登録証明書) (suspended because the records are too old)" in texts["en"]["body"]


def test_data_past_the_hard_limit_stops_every_certificate(ops, sonae_env):
    declare(ops, "住民記録システム障害")
    hours = sonae_env["counter"]["data_age_hard_limit_hours"] + 1
    situation, texts = draft(ops, sonae_env, data_age_hours=hours)
    assert situation.certificates_now == ()
    ja = texts["ja"]["body"]
    assert "■ 窓口でできること\n・証明書の申請の受付（後日、区の負担で郵送します）" in ja
    assert "・住民票の写し、住民票記載事項証明書、除票の写し、印鑑登録証明書の交付（現在停止しています）" in ja
    assert "障害時用のシステムで" not in ja


def test_ward_policy_changes_the_wording(ops, sonae_env, monkeypatch):
    config = with_config(monkeypatch, notice_moves_accepted_for_later="false", notice_convenience_store="false",
                         notice_moving_one_stop="false", notice_mail_later_at_ward_cost="false",
                         notice_phone="03-5744-1111", notice_website="https://www.city.ota.tokyo.jp/")
    declare(ops, "住民記録システム障害")
    _, texts = draft(ops, config)
    ja = texts["ja"]["body"]
    assert "転入・転出・転居の届出（恐れ入りますが、後日あらためてお越しください）" in ja
    assert "コンビニ" not in ja and "引越しワンストップ" not in ja and "郵送" not in ja
    assert "■ ほかの方法" not in ja
    assert "お問い合わせ：大田区 戸籍住民課　電話 03-5744-1111　https://www.city.ota.tokyo.jp/" in ja
    assert "please come back another day" in texts["en"]["body"]
    assert "Contact: Ota City, 戸籍住民課 / phone 03-5744-1111 / https://www.city.ota.tokyo.jp/" in texts["en"]["body"]


def test_outage_start_is_the_start_of_the_episode(ops, sonae_env):
    modes.change(ops, modes.SUSPECT, actor="boss", role="supervisor", reason="住民記録システム障害")
    first = modes.current(ops).since
    declare(ops, "住民記録システム障害")
    situation, _ = draft(ops, sonae_env)
    assert situation.since == dt.datetime.fromisoformat(first)


def test_recovery_and_after(ops, sonae_env):
    declare(ops, "住民記録システム障害")
    modes.change(ops, modes.RECOVERY, actor="boss", role="supervisor", reason="住民記録システム復旧")
    situation, texts = draft(ops, sonae_env)
    assert not situation.outage
    assert texts["ja"]["title"] == "【大田区】システムの復旧作業のお知らせ"
    assert "窓口の手続きは順次再開します" in texts["ja"]["body"]
    modes.change(ops, modes.STANDBY, actor="boss", role="supervisor", reason="確認完了")
    _, texts = draft(ops, sonae_env)
    assert texts["ja"]["title"] == "【大田区】システムの障害は復旧しました"
    assert "障害の間にお受けした届出・申請は順次処理し" in texts["ja"]["body"]
    assert texts["easy"]["title"] == "区役所の コンピューターが なおりました"
    assert "All counter services are available as usual." in texts["en"]["body"]


@pytest.mark.parametrize(("scenario", "expected_components", "issues_now"), [
    ("full_outage", (REGISTER,), True),
    ("juki_net", (JUKI_NET,), True),
    ("paper_only", (REGISTER,), False),
])
def test_a_drill_drafts_from_its_scenario_not_the_real_mode(ops, sonae_env, scenario, expected_components, issues_now):
    situation, texts = draft(ops, sonae_env, drill_scenario=scenario)
    assert modes.current(ops).mode == modes.STANDBY
    assert situation.components == expected_components
    assert bool(situation.certificates_now) is issues_now
    if not issues_now:
        assert "（現在停止しています）" in texts["ja"]["body"]


def test_next_update_is_rounded_up_to_the_quarter_hour(sonae_env):
    assert notice.next_update_default(sonae_env, jst(2026, 11, 25, 11, 47, 10)) == jst(2026, 11, 25, 13, 0)
    assert notice.next_update_default(sonae_env, jst(2026, 11, 25, 11, 45)) == jst(2026, 11, 25, 12, 45)

"""The residents' notice during an outage: what Sonae knows about the
situation, the notice it drafts from that, and every version a supervisor
approved.

Sonae knows what works and what does not (the mode, which upstream
components are down, how old the copy is, which certificate types the data
age still allows) and the ward's policy ([notice] in the configuration). It
drafts the notice in Japanese, やさしい日本語 and English; a supervisor edits
and approves it; only an approved, real (not drill) version is ever shown
on the public page. Approved versions are frozen by the database and kept
with who approved them and when, for the incident report.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from dataclasses import dataclass

from fallback import audit, documents, modes
from fallback.config import Config
from fallback.counter.issuance import KINDS
from fallback.errors import SonaeError
from fallback.monitoring.probes import BATCH, DOWN, JUKI_NET, REGISTER, SYNTHETIC, component_statuses
from fallback.ops import TOKYO, Transaction, now, now_iso
from printing.wareki import eras_from_config, format_wareki

LANGUAGES = {"ja": "日本語", "easy": "やさしい にほんご", "en": "English"}
MAX_TITLE_CHARS = 100
MAX_BODY_CHARS = 4000

DRAFT, APPROVED, DISCARDED = "draft", "approved", "discarded"

# What residents call each upstream component.
COMPONENT_NAMES = {
    REGISTER: {"ja": "住民記録システム", "easy": "住民の 記録の コンピューター", "en": "the resident records system"},
    JUKI_NET: {"ja": "住基ネット（住民基本台帳ネットワーク）との連携", "easy": "国との ネットワーク（住基ネット）",
               "en": "the link to the national resident network (Juki-net)"},
    BATCH: {"ja": "夜間のデータ処理", "easy": "夜の コンピューターの 処理", "en": "the overnight data processing"},
}

KIND_NAMES = {
    "juminhyo": {"ja": KINDS["juminhyo"], "easy": "住民票（じゅうみんひょう）", "en": "certificate of residence (住民票の写し)"},
    "kisai": {"ja": KINDS["kisai"], "easy": "住民票記載事項証明書（じゅうみんひょう きさいじこう しょうめいしょ）",
              "en": "certificate of resident record items (住民票記載事項証明書)"},
    "johyo": {"ja": KINDS["johyo"], "easy": "除票（じょひょう）", "en": "certificate of a removed resident record (除票の写し)"},
    "inkan": {"ja": KINDS["inkan"], "easy": "印鑑登録証明書（いんかん とうろく しょうめいしょ）",
              "en": "seal registration certificate (印鑑登録証明書)"},
}

# The mode reasons a supervisor picks (modes.DOWNTIME_REASONS) and the
# monitor writes, read for the components they name when no probe says so.
_REASON_COMPONENTS = (
    ("住基ネット", JUKI_NET),
    ("バッチ", BATCH),
    ("住民記録", REGISTER),
    ("ネットワーク", REGISTER),
)

# A drill rehearses a situation that is not the real one: its notice is
# drafted from the scenario (mode, components down), never from the real mode.
DRILL_SITUATIONS = {
    "full_outage": (modes.DOWNTIME, (REGISTER,)),
    "juki_net": (modes.SUSPECT, (JUKI_NET,)),
    "batch_stuck": (modes.DOWNTIME, (BATCH,)),
    "paper_only": (modes.DOWNTIME, (REGISTER,)),
    "long_outage": (modes.DOWNTIME, (REGISTER,)),
    "custom": (modes.DOWNTIME, (REGISTER,)),
}


class NoticeError(SonaeError):
    """A notice operation that cannot be done; the message says why, in
    Japanese, for the supervisor."""


@dataclass(frozen=True)
class Situation:
    """What the notice is drafted from. `certificates_now` are the types the
    counter can issue at this moment; `certificates_stopped` the ones it
    cannot (data too old, the register unreachable, no system at all)."""

    at: dt.datetime
    mode: str
    components: tuple[str, ...]
    since: dt.datetime | None
    data_as_of: dt.datetime | None
    certificates_now: tuple[str, ...]
    certificates_stopped: tuple[str, ...]
    drill_scenario: str | None = None
    planned_until: dt.datetime | None = None  # a vendor's planned window (fallback.maintenance), from `since` to this

    @property
    def outage(self) -> bool:
        return self.mode == modes.DOWNTIME or bool(self.components)

    @property
    def data_age_hours(self) -> float | None:
        if self.data_as_of is None:
            return None
        return (self.at - self.data_as_of).total_seconds() / 3600

    @property
    def moves_blocked(self) -> bool:
        return self.outage

    @property
    def seal_registration_blocked(self) -> bool:
        return self.mode == modes.DOWNTIME or REGISTER in self.components

    @property
    def my_number_card_blocked(self) -> bool:
        return JUKI_NET in self.components

    def as_dict(self) -> dict:
        return {
            "at": self.at.isoformat(), "mode": self.mode, "components": list(self.components),
            "since": self.since.isoformat() if self.since else None,
            "data_as_of": self.data_as_of.isoformat() if self.data_as_of else None,
            "certificates_now": list(self.certificates_now), "certificates_stopped": list(self.certificates_stopped),
            "drill_scenario": self.drill_scenario,
            "planned_until": self.planned_until.isoformat() if self.planned_until else None,
        }


# --- what Sonae knows -----------------------------------------------------------


def down_components(conn, state: modes.ModeState) -> tuple[str, ...]:
    """The upstream components that are down: from the monitor's debounced
    probes when it has any down, else from the words of the mode's reason.
    A declared downtime whose reason names nothing is taken as the register
    being down — the worst case, which the supervisor can soften."""
    probed = {s.component for s in component_statuses(conn).values() if s.status == DOWN}
    if probed:
        # The synthetic read failing means the register does not serve records.
        return tuple(c for c in (REGISTER, JUKI_NET, BATCH) if c in probed or (c == REGISTER and SYNTHETIC in probed))
    if state.mode not in (modes.SUSPECT, modes.DOWNTIME):
        return ()
    named = {component for word, component in _REASON_COMPONENTS if word in state.reason}
    if not named and state.mode == modes.DOWNTIME:
        named = {REGISTER}
    return tuple(c for c in (REGISTER, JUKI_NET, BATCH) if c in named)


def outage_since(conn, state: modes.ModeState, components: tuple[str, ...]) -> dt.datetime | None:
    """When the current outage began: the earliest probe-detected start of a
    down component, else the first mode change of the current stretch away
    from standby."""
    starts = [dt.datetime.fromisoformat(s.since) for s in component_statuses(conn).values()
              if s.status == DOWN and (s.component in components or s.component == SYNTHETIC)]
    if starts:
        return min(starts)
    if state.mode == modes.STANDBY:
        return None
    start = None
    for change in reversed(modes.history(conn)):
        if change["to_mode"] == modes.STANDBY:
            break
        start = change["at"]
    return dt.datetime.fromisoformat(start) if start else None


def issuable_kinds(config: Config, data_age_hours: float | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(issuable, stopped) certificate types for a copy this old: the
    per-type kill switch and the hard limit on data age, as the counter
    applies them."""
    counter = config["counter"]
    if data_age_hours is None or data_age_hours > counter["data_age_hard_limit_hours"]:
        return (), tuple(KINDS)
    stopped = tuple(kind for kind, hours in counter["kill_switch_hours"].items() if hours and data_age_hours > hours)
    return tuple(k for k in KINDS if k not in stopped), tuple(k for k in KINDS if k in stopped)


def assess(conn, config: Config, *, data_as_of: dt.datetime | None, at: dt.datetime | None = None,
           drill_scenario: str | None = None) -> Situation:
    """The situation now, or the one a drill scenario rehearses."""
    at = at or now()
    state = modes.current(conn)
    if drill_scenario is not None:
        mode, components = DRILL_SITUATIONS.get(drill_scenario, DRILL_SITUATIONS["custom"])
        since = at
    else:
        mode, components = state.mode, down_components(conn, state)
        since = outage_since(conn, state, components)
    age = (at - data_as_of).total_seconds() / 3600 if data_as_of else None
    if mode == modes.DOWNTIME and drill_scenario != "paper_only":
        # The counters issue from the copy: its age decides what they may issue.
        now_kinds, stopped = issuable_kinds(config, age)
    elif mode == modes.DOWNTIME or (REGISTER in components and mode == modes.SUSPECT):
        # No system to issue from (paper only), or the register is failing
        # and downtime is not declared yet: nothing can be issued right now.
        now_kinds, stopped = (), tuple(KINDS)
    else:
        # The cloud register serves the counters as usual.
        now_kinds, stopped, data_as_of = tuple(KINDS), (), None
    return Situation(at=at, mode=mode, components=components, since=since, data_as_of=data_as_of,
                     certificates_now=now_kinds, certificates_stopped=stopped, drill_scenario=drill_scenario)


def next_update_default(config: Config, at: dt.datetime) -> dt.datetime:
    """The configured interval from now, rounded up to the quarter hour:
    residents read "around 15:00", not "around 14:47"."""
    target = at.astimezone(TOKYO) + dt.timedelta(minutes=config["notice"]["next_update_minutes"])
    quarter = math.ceil((target.minute * 60 + target.second + target.microsecond / 1e6) / 900)
    return target.replace(minute=0, second=0, microsecond=0) + dt.timedelta(minutes=15 * quarter)


# --- how times read in each language ----------------------------------------------


def time_text(moment: dt.datetime, language: str, config: Config) -> str:
    local = moment.astimezone(TOKYO)
    if language == "ja":
        eras = eras_from_config(config["printing"]["eras"])
        return f"{format_wareki(local.date(), eras)} {local.hour}時{local.minute:02d}分"
    if language == "easy":
        return f"{local.month}月{local.day}日 {local.hour}時{local.minute:02d}分"
    return f"{local.hour}:{local.minute:02d} on {local.day} {local.strftime('%B')} {local.year}"


def next_update_line(moment: dt.datetime | None, language: str, config: Config) -> str:
    if moment is None:
        return {"ja": "次回の更新予定はありません。", "easy": "つぎの おしらせは ありません。",
                "en": "No further update is planned."}[language]
    when = time_text(moment, language, config)
    return {"ja": f"次回更新予定：{when}ごろ", "easy": f"つぎの おしらせ：{when}ごろ",
            "en": f"Next update: around {when}"}[language]


# --- the drafted texts ---------------------------------------------------------------


def _joined(items: list[str], language: str) -> str:
    if language == "en":
        return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
    return ("と" if language == "easy" else "、").join(items)


def _kinds(kinds: tuple[str, ...], language: str) -> str:
    return _joined([KIND_NAMES[k][language] for k in kinds], language)


def _contact(config: Config, language: str) -> str:
    policy = config["notice"]
    ward = config["municipality"]["name"] if language != "en" else policy["name_en"]
    parts = [f"{ward} {policy['contact_section']}" if language != "en" else f"{ward}, {policy['contact_section']}"]
    if policy["phone"]:
        parts.append({"ja": "電話 ", "easy": "でんわ ", "en": "phone "}[language] + policy["phone"])
    if policy["website"]:
        parts.append(policy["website"])
    label = {"ja": "お問い合わせ：", "easy": "しつもん：", "en": "Contact: "}[language]
    return label + "　".join(parts) if language != "en" else label + " / ".join(parts)


def _section(heading: str, items: list[str]) -> str:
    return heading + "\n" + "\n".join(items) if items else ""


def draft_texts(situation: Situation, config: Config) -> dict[str, dict[str, str]]:
    """The notice Sonae proposes, per language: {"ja": {"title", "body"}, ...}."""
    return {language: _draft(situation, config, language) for language in LANGUAGES}


def _draft(s: Situation, config: Config, language: str) -> dict[str, str]:
    if not s.outage:
        return _resolved(s, config, language)
    policy = config["notice"]
    L = language
    ward = config["municipality"]["name"] if L != "en" else policy["name_en"]
    names = _joined([COMPONENT_NAMES[c][L] for c in s.components or (REGISTER,)], L)
    title = {"ja": f"【{ward}】{names}の障害のお知らせ", "easy": "区役所の コンピューターが 止まっています",
             "en": f"{ward}: service disruption at the ward office"}[L]
    since = time_text(s.since, L, config) if s.since else None
    lead = {
        "ja": (f"{since}ごろから、" if since else "現在、") + f"{names}に障害が発生しています。ご不便をおかけして申し訳ありません。",
        "easy": (f"{since}ごろから、" if since else "いま、") + f"{names}が 止まっています。ごめんなさい。",
        "en": (f"Since {since}, " if since else "At present, ") + f"{names} is not working. We apologise for the inconvenience.",
    }[L]
    if s.planned_until is not None and since:
        until = time_text(s.planned_until, L, config)
        title = {"ja": f"【{ward}】{names}の計画停止のお知らせ", "easy": "区役所の コンピューターを 止めて 作業を します",
                 "en": f"{ward}: planned maintenance of the ward's systems"}[L]
        lead = {
            "ja": f"{since}から{until}まで、保守作業のため{names}を停止します。ご不便をおかけして申し訳ありません。",
            "easy": f"{since}から {until}まで、作業（さぎょう）の ため {names}を 止めます。ごめんなさい。",
            "en": f"From {since} to {until}, {names} will be stopped for planned maintenance. We apologise for the inconvenience.",
        }[L]
    if s.mode == modes.DOWNTIME and s.certificates_now:
        lead += {"ja": "区役所では障害時用のシステムで、窓口の手続きの一部を続けています。",
                 "easy": "区役所は、べつの コンピューターで、いくつかの 手続き（てつづき）を しています。",
                 "en": " The ward office is using its backup system to continue some counter services."}[L]
    mail_later = policy["mail_later_at_ward_cost"]

    can: list[str] = []
    if s.certificates_now:
        can.append({"ja": f"・{_kinds(s.certificates_now, L)}の交付", "easy": f"・{_kinds(s.certificates_now, L)}を もらう",
                    "en": f"- Getting a {_kinds(s.certificates_now, L)}"}[L])
        if s.data_as_of is not None:
            as_of = time_text(s.data_as_of, L, config)
            can.append({"ja": f"　{as_of}時点の情報で発行します。これより後に届け出た内容（引越しなど）は記載されません。",
                        "easy": f"　{as_of}の 情報で つくります。そのあとの 引っ越しなどは のりません。",
                        "en": f"  Certificates show the records as of {as_of}; anything notified after that (a move, for example) is not on them."}[L])
            age = s.data_age_hours or 0
            if age > config["counter"]["data_age_warning_hours"]:
                days = max(1, round(age / 24))
                can.append({"ja": f"　（{days}日前の情報です。内容が変わった方は、窓口でお申し出ください。）",
                            "easy": f"　（{days}日 まえの 情報です。かわったことが ある人は、窓口で 言ってください。）",
                            "en": f"  (These records are {days} day{'s' if days > 1 else ''} old. If your details have changed, please tell the counter staff.)"}[L])
    if s.certificates_stopped and mail_later:
        can.append({"ja": "・証明書の申請の受付（後日、区の負担で郵送します）",
                    "easy": "・証明書（しょうめいしょ）の 申しこみ（あとで 区が 郵便で 送ります。お金は いりません）",
                    "en": "- Applying for certificates we cannot issue today: we will post them to you later, free of charge"}[L])

    cannot: list[str] = []
    if s.certificates_stopped:
        why = {"ja": "（データが古いため停止しています）" if s.certificates_now else "（現在停止しています）",
               "easy": "（いまは できません）",
               "en": " (suspended because the records are too old)" if s.certificates_now else " (suspended for now)"}[L]
        cannot.append({"ja": f"・{_kinds(s.certificates_stopped, L)}の交付{why}", "easy": f"・{_kinds(s.certificates_stopped, L)}を もらう{why}",
                       "en": f"- Getting a {_kinds(s.certificates_stopped, L)}{why}"}[L])
    if s.moves_blocked:
        if policy["moves_accepted_for_later"]:
            cannot.append({"ja": "・転入・転出・転居の届出の処理（届出は受け付け、システムの復旧後に処理します）",
                           "easy": "・引っ越しの 手続き（てつづき）（受付は します。コンピューターが なおってから 手続きを します）",
                           "en": "- Completing a move in, out or within the ward: we accept your notification now and process it once the system is back"}[L])
        else:
            cannot.append({"ja": "・転入・転出・転居の届出（恐れ入りますが、後日あらためてお越しください）",
                           "easy": "・引っ越しの 手続き（てつづき）（ほかの 日に また 来てください）",
                           "en": "- Notifying a move in, out or within the ward: please come back another day"}[L])
    if s.seal_registration_blocked:
        cannot.append({"ja": "・印鑑登録（新規登録・廃止）", "easy": "・はんこの 登録（とうろく）",
                       "en": "- Registering or cancelling a seal (印鑑登録)"}[L])
    if s.my_number_card_blocked:
        cannot.append({"ja": "・マイナンバーカードの手続き", "easy": "・マイナンバーカードの 手続き（てつづき）",
                       "en": "- My Number Card procedures"}[L])
    store_open = policy["convenience_store"] and not set(s.components or (REGISTER,)) & set(policy["convenience_store_needs"])
    if policy["convenience_store"] and not store_open:
        cannot.append({"ja": "・コンビニ交付（コンビニエンスストアでの証明書の取得）も停止しています",
                       "easy": "・コンビニで 証明書（しょうめいしょ）を もらうことも できません",
                       "en": "- Convenience store issuance is also suspended"}[L])

    other: list[str] = []
    if store_open:
        other.append({"ja": "・コンビニ交付：マイナンバーカードで、コンビニエンスストアでも住民票の写しや印鑑登録証明書を取得できます。",
                      "easy": "・マイナンバーカードが あれば、コンビニでも 住民票（じゅうみんひょう）などを もらえます。",
                      "en": "- Convenience store issuance: with your My Number Card you can get a certificate of residence or a seal registration certificate at a convenience store."}[L])
    if s.moves_blocked and policy["moving_one_stop"]:
        other.append({"ja": "・引越しワンストップサービス：マイナポータルから転出届をオンラインで出せます（転入先への来庁予定の連絡もできます）。",
                      "easy": "・マイナポータル（インターネット）で、引っ越しの 届け（とどけ）を 出すことが できます。",
                      "en": "- Moving One-Stop Service: you can submit a moving-out notification online on Myna Portal (マイナポータル)."}[L])
    if mail_later:
        other.append({"ja": "・窓口でお待ちいただけない方には、証明書を後日、区の負担で郵送します。窓口でお申し出ください。",
                      "easy": "・待つことが できない 人には、あとで 区が 証明書（しょうめいしょ）を 郵便で 送ります。お金は いりません。窓口で 言ってください。",
                      "en": "- If you cannot wait, we can post your certificate to you later, free of charge. Please ask at the counter."}[L])

    headings = {
        "ja": ("■ 窓口でできること", "■ 現在できないこと", "■ ほかの方法"),
        "easy": ("■ いま 窓口で できること", "■ いま できないこと", "■ ほかの 方法"),
        "en": ("What you can do at the counter now:", "What you cannot do now:", "Other options:"),
    }[L]
    parts = [lead, _section(headings[0], can), _section(headings[1], cannot), _section(headings[2], other), _contact(config, L)]
    return {"title": title, "body": "\n\n".join(p for p in parts if p)}


def _resolved(s: Situation, config: Config, language: str) -> dict[str, str]:
    policy = config["notice"]
    ward = config["municipality"]["name"] if language != "en" else policy["name_en"]
    checking = s.mode == modes.RECOVERY
    title = {
        "ja": f"【{ward}】" + ("システムの復旧作業のお知らせ" if checking else "システムの障害は復旧しました"),
        "easy": "区役所の コンピューターが なおりました",
        "en": f"{ward}: " + ("systems restored, checks in progress" if checking else "services are back to normal"),
    }[language]
    lead = {
        "ja": "住民記録システムは復旧しました。" + ("現在、復旧後の確認作業を行っています。窓口の手続きは順次再開します。"
                                                  if checking else "窓口の手続きは通常どおり行っています。"),
        "easy": "コンピューターが なおりました。" + ("いま、たしかめて います。窓口は じゅんばんに はじめます。"
                                                  if checking else "窓口は いつもと おなじです。"),
        "en": "The resident records system has been restored. " + (
            "We are now checking our records and are resuming counter services step by step."
            if checking else "All counter services are available as usual."),
    }[language]
    parts = [lead]
    if policy["moves_accepted_for_later"] or policy["mail_later_at_ward_cost"]:
        parts.append({
            "ja": "障害の間にお受けした届出・申請は順次処理し、必要な方には区からご連絡します。ご迷惑をおかけしました。",
            "easy": "止まって いた ときに 受けた 手続きは、じゅんばんに します。区から 連絡（れんらく）する ことが あります。",
            "en": "Notifications and applications we accepted during the disruption are being processed; we will contact you if needed. Thank you for your patience.",
        }[language])
    parts.append(_contact(config, language))
    return {"title": title, "body": "\n\n".join(parts)}


# --- versions ------------------------------------------------------------------------------


@dataclass(frozen=True)
class NoticeVersion:
    id: int
    scope: str
    drill_id: int | None
    created_at: str
    created_by: str
    situation: dict
    drafted_texts: dict
    texts: dict
    next_update_at: str | None
    status: str
    edited_at: str | None
    edited_by: str | None
    approved_at: str | None
    approved_by: str | None
    withdrawn_at: str | None
    withdrawn_by: str | None

    @property
    def is_drill(self) -> bool:
        return self.scope == "drill"

    @property
    def next_update(self) -> dt.datetime | None:
        return dt.datetime.fromisoformat(self.next_update_at) if self.next_update_at else None


_COLUMNS = ("id", "scope", "drill_id", "created_at", "created_by", "situation", "drafted_texts", "texts", "next_update_at",
            "status", "edited_at", "edited_by", "approved_at", "approved_by", "withdrawn_at", "withdrawn_by")


def _version(row) -> NoticeVersion:
    values = dict(zip(_COLUMNS, row))
    for key in ("situation", "drafted_texts", "texts"):
        values[key] = json.loads(values[key])
    return NoticeVersion(**values)


def get(conn, version_id: int) -> NoticeVersion | None:
    row = conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM notice_versions WHERE id = ?", (version_id,)).fetchone()
    return _version(row) if row else None


def versions(conn, *, scope: str = "real", drill_id: int | None = None) -> list[NoticeVersion]:
    """Every version in a scope, newest first (a drill's own versions only)."""
    rows = conn.execute(
        f"SELECT {', '.join(_COLUMNS)} FROM notice_versions WHERE scope = ? AND drill_id IS ? ORDER BY id DESC", (scope, drill_id)
    ).fetchall()
    return [_version(r) for r in rows]


def current_public(conn) -> NoticeVersion | None:
    """What the public page shows: the most recently approved real version,
    unless it has been withdrawn. Drill versions are never public."""
    row = conn.execute(
        f"SELECT {', '.join(_COLUMNS)} FROM notice_versions WHERE scope = 'real' AND status = ? "
        "ORDER BY approved_at DESC, id DESC LIMIT 1", (APPROVED,)
    ).fetchone()
    if row is None:
        return None
    version = _version(row)
    return None if version.withdrawn_at else version


def outdated_public_notice(conn) -> NoticeVersion | None:
    """The public notice when it still tells residents of an outage that
    is over (the box is in recovery or back in standby, the notice was
    drafted during suspect or downtime): the supervisor is prompted to
    publish the 「復旧しました」 version. None when the notice is current."""
    version = current_public(conn)
    if version is None or modes.current(conn).mode not in (modes.RECOVERY, modes.STANDBY):
        return None
    return version if version.situation.get("mode") in (modes.SUSPECT, modes.DOWNTIME) else None


def create_draft(conn, config: Config, situation: Situation, *, actor: str, scope: str = "real",
                 drill_id: int | None = None) -> int:
    texts = draft_texts(situation, config)
    next_update = next_update_default(config, situation.at) if situation.outage else None
    with Transaction(conn):
        cursor = conn.execute(
            "INSERT INTO notice_versions (scope, drill_id, created_at, created_by, situation, drafted_texts, texts, next_update_at, status) "
            "VALUES (?,?,?,?,?,?,?,?,?)",
            (scope, drill_id, now_iso(), actor, json.dumps(situation.as_dict(), ensure_ascii=False),
             json.dumps(texts, ensure_ascii=False), json.dumps(texts, ensure_ascii=False),
             next_update.isoformat() if next_update else None, DRAFT),
        )
        audit.append(conn, actor, "notice.draft", str(cursor.lastrowid),
                     {"mode": situation.mode, "components": list(situation.components)}, drill=scope == "drill")
    return cursor.lastrowid


def check_texts(texts: dict) -> dict[str, dict[str, str]]:
    """The three languages, each with a title and a body within limits;
    line endings normalised (browsers send CRLF)."""
    clean = {}
    for language, label in LANGUAGES.items():
        entry = texts.get(language) or {}
        title = str(entry.get("title", "")).replace("\r\n", "\n").strip()
        body = str(entry.get("body", "")).replace("\r\n", "\n").strip()
        if not title or not body:
            raise NoticeError(f"{label}の見出しと本文を入力してください。")
        if "\n" in title or len(title) > MAX_TITLE_CHARS:
            raise NoticeError(f"{label}の見出しは1行、{MAX_TITLE_CHARS}文字以内にしてください。")
        if len(body) > MAX_BODY_CHARS:
            raise NoticeError(f"{label}の本文は{MAX_BODY_CHARS}文字以内にしてください。")
        clean[language] = {"title": title, "body": body}
    return clean


def save_draft(conn, version_id: int, texts: dict, next_update_at: dt.datetime | None, *, actor: str) -> None:
    texts = check_texts(texts)
    with Transaction(conn):
        version = get(conn, version_id)
        if version is None or version.status != DRAFT:
            raise NoticeError("この版は下書きではないため、編集できません。新しい下書きを作ってください。")
        conn.execute(
            "UPDATE notice_versions SET texts = ?, next_update_at = ?, edited_at = ?, edited_by = ? WHERE id = ?",
            (json.dumps(texts, ensure_ascii=False), next_update_at.isoformat() if next_update_at else None, now_iso(), actor, version_id),
        )
        audit.append(conn, actor, "notice.edit", str(version_id), {}, drill=version.is_drill)


def copy_as_draft(conn, version_id: int, *, actor: str) -> int:
    """Start a new draft from an existing version (to correct or update what
    is published: the published version itself never changes)."""
    with Transaction(conn):
        source = get(conn, version_id)
        if source is None:
            raise NoticeError("その版はありません。")
        cursor = conn.execute(
            "INSERT INTO notice_versions (scope, drill_id, created_at, created_by, situation, drafted_texts, texts, next_update_at, status) "
            "VALUES (?,?,?,?,?,?,?,?,?)",
            (source.scope, source.drill_id, now_iso(), actor, json.dumps(source.situation, ensure_ascii=False),
             json.dumps(source.drafted_texts, ensure_ascii=False), json.dumps(source.texts, ensure_ascii=False),
             source.next_update_at, DRAFT),
        )
        audit.append(conn, actor, "notice.draft", str(cursor.lastrowid), {"copied_from": version_id}, drill=source.is_drill)
    return cursor.lastrowid


def approve(conn, version_id: int, *, actor: str) -> NoticeVersion:
    """Publish a draft: from now on it is what the public page, the SNS text
    and the poster show (for a real-scope version), and it is frozen."""
    with Transaction(conn):
        version = get(conn, version_id)
        if version is None or version.status != DRAFT:
            raise NoticeError("承認できるのは下書きだけです。")
        check_texts(version.texts)
        stamp = now_iso()
        conn.execute("UPDATE notice_versions SET status = ?, approved_at = ?, approved_by = ? WHERE id = ?",
                     (APPROVED, stamp, actor, version_id))
        audit.append(conn, actor, "notice.approve", str(version_id), {"scope": version.scope}, drill=version.is_drill)
    return get(conn, version_id)


def discard(conn, version_id: int, *, actor: str) -> None:
    with Transaction(conn):
        version = get(conn, version_id)
        if version is None or version.status != DRAFT:
            raise NoticeError("破棄できるのは下書きだけです。")
        conn.execute("UPDATE notice_versions SET status = ? WHERE id = ?", (DISCARDED, version_id))
        audit.append(conn, actor, "notice.discard", str(version_id), {}, drill=version.is_drill)


def withdraw(conn, *, actor: str) -> NoticeVersion:
    """Take the public notice down (the outage is long over); the public
    page then says there is no notice. The version stays in the history."""
    with Transaction(conn):
        version = current_public(conn)
        if version is None:
            raise NoticeError("掲載中のお知らせはありません。")
        conn.execute("UPDATE notice_versions SET withdrawn_at = ?, withdrawn_by = ? WHERE id = ?", (now_iso(), actor, version.id))
        audit.append(conn, actor, "notice.withdraw", str(version.id), {})
    return get(conn, version.id)


def approved_between(conn, since: str, until: str | None = None, *, scope: str = "real", drill_id: int | None = None) -> list[NoticeVersion]:
    """Approved versions in a period, oldest first — the incident report's
    record of what residents were told, by whom and when."""
    rows = conn.execute(
        f"SELECT {', '.join(_COLUMNS)} FROM notice_versions WHERE scope = ? AND drill_id IS ? AND status = ? "
        "AND approved_at >= ? AND approved_at <= ? ORDER BY approved_at, id",
        (scope, drill_id, APPROVED, since, until or "9999"),
    ).fetchall()
    return [_version(r) for r in rows]


# --- the incident report ------------------------------------------------------------------

_MARKDOWN_LINE_START = re.compile(r"^([#+-]|\d+[.)])")


def _quoted(line: str) -> str:
    """One line of a notice as a Markdown quote line: escaped, and with a
    leading list or heading marker neutralised, so a notice reads as typed."""
    text = documents.md_text(line) if line.strip() else ""
    return "> " + _MARKDOWN_LINE_START.sub(r"\\\1", text) + "  "


def report_markdown(conn, since: str, until: str) -> str:
    """What residents were told during an incident: each approved real
    version with who approved it and when, and its Japanese text."""
    approved = approved_between(conn, since, until)
    if not approved:
        return "この期間に承認した住民向けのお知らせはありません。"
    parts = [documents.md_table(
        ["版", "承認日時", "承認者", "見出し", "次回更新予定", "取下げ"],
        [[f"第{v.id}版", _stamp(v.approved_at), v.approved_by, v.texts["ja"]["title"], _stamp(v.next_update_at),
          f"{_stamp(v.withdrawn_at)} {v.withdrawn_by}" if v.withdrawn_at else "—"] for v in approved],
    )]
    for v in approved:
        parts += ["", f"### 第{v.id}版（{_stamp(v.approved_at)} {documents.md_text(v.approved_by)} 承認）", "",
                  _quoted(v.texts["ja"]["title"]), ">"]
        parts += [_quoted(line) for line in v.texts["ja"]["body"].split("\n")]
    parts += ["", "やさしい日本語と英語の文面は、Sonae の「住民向けのお知らせ」画面の各版にあります。"]
    return "\n".join(parts)


def _stamp(value: str | None) -> str:
    return value[:16].replace("T", " ") if value else "—"

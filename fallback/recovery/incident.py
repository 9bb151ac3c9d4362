"""The incident report (障害報告書) drafted from what Sonae recorded.

An incident is one stretch away from standby: from the mode change that
left standby to the one that returned to it (or now, while it lasts). Its
figures come from real-scope records only — drills never appear — and are
gathered once into `IncidentFacts`; each section of the report is written
from those facts by a *section provider*.

Extension point: VARIANTS maps a report variant to its ordered providers.
"internal" is the report to the 課長. Another version (for example a public
notice of the outage for residents) is added by putting its own list of
providers under a new key; providers are plain functions
`(facts, config) -> Section`, so a variant can reuse any of the ones here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fallback import deferred, documents, filings, holds, modes, recovery, reentry, runbooks
from fallback.config import Config
from fallback.counter import cancellations, issuance
from fallback.documents import format_minutes, format_time, minutes_between
from fallback.monitoring.probes import COMPONENT_LABELS
from fallback.ops import now_iso, open_ops
from fallback.residents import notice
from fallback.staff import users


@dataclass(frozen=True)
class Incident:
    id: int  # the id of the mode change that began it
    started_at: str
    declared_at: str | None  # first change into downtime
    downtime_ended_at: str | None  # last change from downtime into recovery
    ended_at: str | None  # back in standby; None while it lasts
    changes: tuple[dict, ...]

    @property
    def is_open(self) -> bool:
        return self.ended_at is None


def incidents(conn) -> list[Incident]:
    """Every incident, newest first."""
    found, current = [], None
    for change_id, at, from_mode, to_mode, actor, reason in conn.execute(
        "SELECT id, at, from_mode, to_mode, actor, reason FROM mode_changes ORDER BY id"
    ):
        change = {"id": change_id, "at": at, "from_mode": from_mode, "to_mode": to_mode, "actor": actor, "reason": reason}
        if current is None:
            if to_mode == modes.STANDBY:
                continue
            current = {"id": change_id, "started_at": at, "changes": []}
        current["changes"].append(change)
        if to_mode == modes.STANDBY:
            found.append(_incident(current, ended_at=at))
            current = None
    if current is not None:
        found.append(_incident(current, ended_at=None))
    return list(reversed(found))


def _incident(raw: dict, *, ended_at: str | None) -> Incident:
    changes = raw["changes"]
    declared = next((c["at"] for c in changes if c["to_mode"] == modes.DOWNTIME), None)
    downtime_ended = next((c["at"] for c in reversed(changes) if c["from_mode"] == modes.DOWNTIME and c["to_mode"] == modes.RECOVERY), None)
    return Incident(raw["id"], raw["started_at"], declared, downtime_ended, ended_at, tuple(changes))


def get_incident(conn, incident_id: int) -> Incident | None:
    return next((i for i in incidents(conn) if i.id == incident_id), None)


# --- the facts -------------------------------------------------------------------


@dataclass(frozen=True)
class ComponentOutage:
    component: str
    label: str
    first_failure: str
    last_failure: str
    failures: int
    back_at: str | None  # first successful probe after the last failure


@dataclass(frozen=True)
class TimelineEntry:
    at: str
    what: str
    actor: str


@dataclass(frozen=True)
class IncidentFacts:
    incident: Incident
    until: str
    occurred_at: str  # 発生日時: the first failed probe of the outage, else the first mode change
    recovered_at: str | None  # 復旧日時: the upstream answering again, else the end of downtime
    components: list[ComponentOutage]
    timeline: list[TimelineEntry]
    issued: dict[tuple[str, str], int]  # (kind, office) -> certificates
    cancelled: dict[str, int]  # reason -> certificates of the outage cancelled since (fallback.counter.cancellations)
    refused: int
    deferred_by_kind: dict[str, dict[str, int]]  # kind -> status -> count
    at_risk: list[recovery.AtRiskCertificate]
    unchecked: int
    requesters: int  # residents a certificate was asked for
    deferred_people: int
    residents_affected: int
    data_as_of: list[tuple[str, int | None, int]]  # (data-as-of, generation, requests)
    ticks: list[runbooks.Tick]  # real runbook ticks and withdrawals within the incident


def gather(conn, incident: Incident, *, runbook_list: list[runbooks.Runbook]) -> IncidentFacts:
    since, until = incident.started_at, incident.ended_at or now_iso()
    components = _component_outages(conn, since, until)
    occurred = min([since] + [c.first_failure for c in components])
    backs = [c.back_at for c in components if c.back_at]
    recovered = max(backs) if backs and len(backs) == len(components) else incident.downtime_ended_at

    window = (since, until)
    issued = {
        (kind, office): copies
        for kind, office, copies in conn.execute(
            "SELECT r.kind, r.office, count(*) FROM certificates c JOIN requests r ON r.id = c.request_id "
            "WHERE r.scope = 'real' AND c.scope = 'real' AND c.status = 'rendered' AND r.created_at BETWEEN ? AND ? "
            "GROUP BY r.kind, r.office ORDER BY r.kind, r.office", window)
    }
    counted = dict(conn.execute(
        "SELECT x.reason, count(*) FROM certificate_cancellations x JOIN requests r ON r.id = x.request_id "
        "WHERE x.scope = 'real' AND r.created_at BETWEEN ? AND ? GROUP BY x.reason", window).fetchall())
    cancelled = {reason: counted[reason] for reason in cancellations.REASONS if reason in counted}  # 書損, 誤交付, その他
    refused = conn.execute("SELECT count(*) FROM requests WHERE scope = 'real' AND outcome = 'refused' AND created_at BETWEEN ? AND ?", window).fetchone()[0]
    deferred_by_kind: dict[str, dict[str, int]] = {}
    for kind, status, count in conn.execute(
        "SELECT kind, status, count(*) FROM deferred_requests WHERE scope = 'real' AND created_at BETWEEN ? AND ? GROUP BY kind, status", window
    ):
        deferred_by_kind.setdefault(kind, {})[status] = count
    requester_codes = {code for (code,) in conn.execute(
        "SELECT DISTINCT subject_code FROM requests WHERE scope = 'real' AND created_at BETWEEN ? AND ?", window)}
    deferred_people = {code or f"{name}|{contact}" for code, name, contact in conn.execute(
        "SELECT resident_code, name, contact FROM deferred_requests WHERE scope = 'real' AND created_at BETWEEN ? AND ?", window)}
    data_as_of = [tuple(row) for row in conn.execute(
        "SELECT data_as_of, snapshot_generation, count(*) FROM requests WHERE scope = 'real' AND created_at BETWEEN ? AND ? "
        "GROUP BY data_as_of, snapshot_generation ORDER BY data_as_of", window)]
    ticks = runbooks.tick_history(conn, drill_id=None, since=since, until=until)
    unchecked = len({p.request_id for p in recovery.pending_checks(conn) if since <= p.issued_at <= until})
    return IncidentFacts(
        incident=incident, until=until, occurred_at=occurred, recovered_at=recovered, components=components,
        timeline=_timeline(conn, incident, ticks, runbook_list, window), issued=issued, cancelled=cancelled, refused=refused,
        deferred_by_kind=deferred_by_kind, at_risk=recovery.at_risk(conn, since=since, until=until), unchecked=unchecked,
        requesters=len(requester_codes), deferred_people=len(deferred_people),
        residents_affected=len(requester_codes | deferred_people), data_as_of=data_as_of, ticks=ticks,
    )


def _component_outages(conn, since: str, until: str) -> list[ComponentOutage]:
    """Per component, the failures of this outage: the run of failed probes
    that was going on when the incident began (back to the last good probe
    before it) through its end."""
    outages = []
    for (component,) in conn.execute("SELECT DISTINCT component FROM probes WHERE ok = 0 AND at BETWEEN ? AND ?", (since, until)).fetchall():
        last_ok_before = conn.execute(
            "SELECT max(at) FROM probes WHERE component = ? AND ok = 1 AND at < ?", (component, since)).fetchone()[0] or ""
        first, last, failures = conn.execute(
            "SELECT min(at), max(at), count(*) FROM probes WHERE component = ? AND ok = 0 AND at > ? AND at <= ?",
            (component, last_ok_before, until)).fetchone()
        back = conn.execute("SELECT min(at) FROM probes WHERE component = ? AND ok = 1 AND at > ?", (component, last)).fetchone()[0]
        outages.append(ComponentOutage(component, COMPONENT_LABELS.get(component, component), first, last, failures, back))
    return sorted(outages, key=lambda c: c.first_failure)


def _timeline(conn, incident: Incident, ticks: list[runbooks.Tick], runbook_list, window) -> list[TimelineEntry]:
    titles = {rb.slug: rb.title for rb in runbook_list}

    def name(username: str) -> str:  # staff by the name they know each other by
        return users.display_name(conn, username)

    entries = [
        TimelineEntry(c["at"], f"{modes.LABELS.get(c['from_mode'], '—')} → {modes.LABELS[c['to_mode']]}（{c['reason']}）", name(c["actor"]))
        for c in incident.changes
    ]
    entries += [
        TimelineEntry(t.at, f"{'手順を完了' if t.done else '完了の取消し'}：{titles.get(t.runbook, t.runbook)}【{t.role}】{t.step_text}", name(t.actor))
        for t in ticks
    ]
    entries += [
        TimelineEntry(at, f"{office}で最初の証明書を交付", name(clerk))
        for office, at, clerk in conn.execute(
            "SELECT office, min(created_at), clerk FROM requests r WHERE scope = 'real' AND outcome = 'issued' AND created_at BETWEEN ? AND ? "
            "AND EXISTS (SELECT 1 FROM certificates c WHERE c.request_id = r.id AND c.status = 'rendered') GROUP BY office", window)
    ]
    return sorted(entries, key=lambda e: e.at)


# --- sections ----------------------------------------------------------------------


@dataclass(frozen=True)
class Section:
    title: str
    body: str  # Markdown


SectionProvider = Callable[[IncidentFacts, Config], Section]


def overview(facts: IncidentFacts, config: Config) -> Section:
    i = facts.incident
    duration = minutes_between(facts.occurred_at, facts.recovered_at) if facts.recovered_at else None
    lines = [
        f"- 発生日時：{format_time(facts.occurred_at)}",
        f"- 復旧日時：{format_time(facts.recovered_at)}" + ("" if facts.recovered_at else "（未復旧）"),
        f"- 障害の期間：{format_minutes(duration)}",
        f"- ダウン対策モード：{format_time(i.declared_at)} 〜 {format_time(i.downtime_ended_at)}" if i.declared_at
        else "- ダウン対策モード：宣言なし",
        f"- 通常運用に戻った日時：{format_time(i.ended_at)}" if i.ended_at else "- 通常運用に戻った日時：—（対応中）",
        f"- 作成：{format_time(now_iso())}（Sonae の記録から作成した案です）",
    ]
    return Section("概要", "\n".join(lines))


def events(facts: IncidentFacts, config: Config) -> Section:
    reasons = [documents.md_text(c["reason"]) for c in facts.incident.changes if c["to_mode"] in (modes.SUSPECT, modes.DOWNTIME)]
    lines = [f"記録された理由：{'／'.join(reasons) if reasons else '—'}", ""]
    if facts.components:
        lines.append(documents.md_table(
            ["停止した部分", "最初の失敗", "最後の失敗", "失敗した確認", "正常に戻った時刻"],
            [[c.label, format_time(c.first_failure), format_time(c.last_failure), c.failures, format_time(c.back_at)] for c in facts.components],
        ))
    else:
        lines.append("監視の記録に、この期間の停止はありません。")
    return Section("発生事象", "\n".join(lines))


def timeline(facts: IncidentFacts, config: Config) -> Section:
    return Section("経過", documents.md_table(["時刻", "出来事", "職員"],
                                            [[format_time(e.at), e.what, e.actor] for e in facts.timeline]))


def ward_response(facts: IncidentFacts, config: Config) -> Section:
    lines = ["### 交付した証明書", ""]
    if facts.issued:
        lines.append(documents.md_table(["種類", "庁舎", "枚数"], [[issuance.KINDS[k], office, n] for (k, office), n in facts.issued.items()]))
        lines.append(f"\n合計 {sum(facts.issued.values())}枚。お断りした請求 {facts.refused}件。")
        if facts.cancelled:
            kinds = "、".join(f"{cancellations.REASON_NAMES[reason]} {count}枚" for reason, count in facts.cancelled.items())
            lines.append(f"うち、交付した後に取り消した証明書 {sum(facts.cancelled.values())}枚（{kinds}）。")
    else:
        lines.append(f"交付はありませんでした。お断りした請求 {facts.refused}件。")
    lines += ["", "### 後日対応で受け付けた請求", ""]
    if facts.deferred_by_kind:
        lines.append(documents.md_table(
            ["種類", "件数"] + list(deferred.STATUSES.values()),
            [[deferred.KINDS[kind], sum(by.values())] + [by.get(s, 0) for s in deferred.STATUSES] for kind, by in facts.deferred_by_kind.items()],
        ))
    else:
        lines.append("ありませんでした。")
    lines += ["", "### 要確認の証明書（交付の前に住民記録が変わっていたもの）", ""]
    if facts.unchecked:
        lines.append(f"住民記録システムとの照合が済んでいない請求が {facts.unchecked}件あります（照合は自動でやり直しています）。\n")
    if facts.at_risk:
        lines.append(documents.md_table(
            ["請求番号", "交付日時", "庁舎", "種類", "判定", "変わった事項", "対応", "状況"],
            [[a.request_id, format_time(a.issued_at), a.office, issuance.KINDS[a.kind], a.verdict_label,
              "、".join(d["field"] for d in a.difference) or "—", a.action, recovery.STATUSES[a.status]] for a in facts.at_risk],
        ))
        lines.append("\n請求者の連絡先は「復旧後の確認」画面の一覧にあります。")
    else:
        lines.append("ありません。" if not facts.unchecked else "照合が済んだ分にはありません。")
    return Section("区の対応", "\n".join(lines))


def residents_affected(facts: IncidentFacts, config: Config) -> Section:
    return Section("影響を受けた住民", "\n".join([
        f"- 影響を受けた住民：{facts.residents_affected}人",
        f"- うち証明書を請求した方：{facts.requesters}人",
        f"- うち後日対応で受け付けた方：{facts.deferred_people}人",
    ]))


def data_used(facts: IncidentFacts, config: Config) -> Section:
    if not facts.data_as_of:
        return Section("使用したデータの時点", "この期間に Sonae での請求はありませんでした。")
    return Section("使用したデータの時点", documents.md_table(
        ["データ時点", "世代", "請求件数"],
        [[format_time(as_of), generation if generation is not None else "—", n] for as_of, generation, n in facts.data_as_of],
    ))


def residents_notice(facts: IncidentFacts, config: Config) -> Section:
    """Every version of the public notice approved during the incident, with
    who approved it and when (fallback.residents.notice keeps them)."""
    conn = open_ops(config)
    try:
        return Section("住民へのお知らせ", notice.report_markdown(conn, facts.incident.started_at, facts.until))
    finally:
        conn.close()


def counter_records(facts: IncidentFacts, config: Config) -> Section:
    """What the counters took that the register must still learn — the
    届出 (for the re-entry files and the worklist) and the holds — and the
    issuance history for 本人通知制度 and 支援措置 follow-up."""
    conn = open_ops(config)
    try:
        since, until = facts.incident.started_at, facts.until
        taken = reentry.incident_filings(conn, since, until)
        try:
            mapping = reentry.load_mapping(config)
        except reentry.ReentryError as exc:  # the report is written whatever the mapping file says
            mapping, mapping_problem = reentry.parse_mapping(reentry.default_mapping_values(), "layout 1"), exc.message
        else:
            mapping_problem = None
        work = reentry.worklist_of(conn, taken, mapping)
        held = holds.counts(conn, since=since, until=until)
        history = reentry.issuance_history(conn, since=since, until=until)
    finally:
        conn.close()
    lines = ["### 窓口で受け付けた届出", ""]
    if mapping_problem:
        lines += [f"再入力のマッピングに誤りがあるため、取込みと手入力の区分は第{reentry.LAYOUT_VERSION}版の既定によります：{documents.md_text(mapping_problem)}", ""]
    if taken:
        by_kind = {kind: [f for f in taken if f.kind == kind] for kind in filings.KINDS}
        lines.append(documents.md_table(["種類", "届出", "人数", "取込みファイル", "手入力"], [
            [label, len(found), sum(len(f.persons) for f in found),
             sum(1 for f in found if not reentry.needs_manual_entry(f, mapping)), sum(1 for f in found if reentry.needs_manual_entry(f, mapping))]
            for kind, label in filings.KINDS.items() if (found := by_kind[kind])
        ]))
        lines.append(f"\n合計 {len(taken)}件。手入力 {len(work)}件のうち入力済み {sum(1 for w in work if w.done)}件"
                     f"（再入力レイアウト 第{reentry.LAYOUT_VERSION}版、「復旧後の入力」画面）。")
    else:
        lines.append("ありませんでした。")
    lines += ["", "### 窓口で記録した保留", ""]
    if held:
        lines.append(documents.md_table(["種類", "記録", "照合済み", "有効"], [
            [label, held[kind][0], held[kind][1], held[kind][0] - held[kind][1]] for kind, label in holds.KINDS.items() if kind in held]))
        active = sum(recorded - reconciled for recorded, reconciled in held.values())
        if active:
            lines.append(f"\n有効な保留が {active}件あります。住民記録に反映されたことを確かめて、「保留」画面で照合済みにしてください。")
    else:
        lines.append("ありませんでした。")
    requests = len({row.request_id for row in history})
    lines += ["", "### 交付の記録（本人通知制度・支援措置の確認）", "",
              f"- 証明書を交付した請求：{requests}件（証明された方 {len(history)}人分）",
              f"- うち本人通知の対象（代理人・第三者への交付）：{sum(1 for row in history if row.for_notice)}人分",
              f"- うち支援措置の対象者が載った交付：{sum(1 for row in history if row.support_measure)}人分",
              "", "一覧（誰が、誰の、どの証明書を、いつ、どの時点のデータで受け取ったか）は「復旧後の入力」画面から CSV で出力できます（係長）。"]
    return Section("窓口の届出・保留と交付の記録", "\n".join(lines))


def blank(title: str) -> SectionProvider:
    def provider(facts: IncidentFacts, config: Config) -> Section:
        return Section(title, "（記入してください）")
    return provider


VARIANTS: dict[str, list[SectionProvider]] = {
    "internal": [overview, events, timeline, ward_response, counter_records, residents_notice, residents_affected, data_used, blank("障害原因"),
                 blank("再発防止策")],
}


def report_markdown(facts: IncidentFacts, config: Config, variant: str = "internal") -> str:
    municipality = config["municipality"]
    parts = ["# 障害報告書（案）", "", f"{municipality['prefecture']}{municipality['name']}　障害番号 {facts.incident.id}", ""]
    for provider in VARIANTS[variant]:
        section = provider(facts, config)
        parts += [f"## {section.title}", "", section.body, ""]
    return "\n".join(parts)

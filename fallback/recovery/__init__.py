"""After the outage: check every certificate issued during it against the
recovered upstream, and list those that were wrong when issued.

For each real certificate request and each resident printed on it, Sonae
asks the upstream for the resident as they are now (`/v1/residents/{code}`:
a signed look-up, verified by the upstream client, and refused if it is
older than the snapshot — counted as no answer, like an outage) and
compares with what was printed — the `version` and `updated_at` stored
in the certificate's printed_records:

- same version: unchanged (versions, not clocks);
- a newer version last updated *before* the certificate was issued: the
  register had already changed when Sonae printed it (the snapshot was
  behind) — **at risk**. An update stamped at the very moment of issue
  counts as before: upstream timestamps may be whole seconds, and flagging
  a correct certificate costs a phone call where missing a wrong one
  leaves a resident holding it;
- exactly one newer version, updated *after* issue: it was right when
  issued — no action;
- several newer versions, the last after issue: one of them may have come
  before issue — at risk, to be checked by hand;
- unknown upstream: at risk.

"Before issue" is decided in the upstream's own time, never by this
appliance's clock alone (with the clock an hour behind, a certificate
issued after the upstream moved the resident was judged changed after
issue, and never listed). The moment of issue is this clock's issued_at,
moved later by what the probes saw of its lag around that moment (the
upstream's clock minus this one, from the readings before and after: see
fallback/clock.py), and never earlier than the data-as-of of the snapshot
it printed: a change stamped at or before the snapshot's feed position was
due in the snapshot, so the certificate missed it whatever any clock says.

A 印鑑登録証明書 also printed a seal, and the upstream has no per-seal
lookup: its seal is judged the same way against the snapshot once the
change feed has brought it past the moment of issue (the snapshot's as_of
is then later than the issue, so every change made before issue is in it).
Until then the certificate stays pending. A seal revoked before issue puts
the certificate at risk whatever its owner's record says.

The difference is worked out field by field against the record the
certificate was printed from, which is kept with the certificate (the
snapshot generation it came from has usually been moved on by the change
feed by the time the upstream answers again). Each at-risk item carries the
requester's contact details and a suggested action, and its own status
(open / contacted / done) for the worklist.

Nothing requires the upstream to be up when the outage ends: the worker
calls `reconcile_once` every [recovery] interval_s, and every call checks
what is still unchecked, stopping at the first upstream failure and
recording the attempt.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

from fallback import audit, clock, deferred, modes
from fallback.config import Config, ConfigError
from fallback.mirror.registry import snapshot_store
from fallback.mirror.syncing import upstream_from_config
from fallback.ops import Transaction, now_iso, open_ops
from sync.contract import RuleBroken, check_not_older
from sync.errors import NoSnapshot, UpstreamUnavailable, UpstreamUntrusted
from sync.schema import blank_individual_number
from sync.upstream import HttpUpstream

UNCHANGED, CHANGED_AFTER_ISSUE, AT_RISK, UNCERTAIN, MISSING = "unchanged", "changed_after_issue", "at_risk", "uncertain", "missing"
VERDICTS = {
    UNCHANGED: "変更なし",
    CHANGED_AFTER_ISSUE: "交付の後に変更（交付時の内容は正しい）",
    AT_RISK: "交付の前に住民記録が変わっていた",
    UNCERTAIN: "交付の前後に複数回の変更（要確認）",
    MISSING: "住民記録システムに記録がない",
}
AT_RISK_VERDICTS = (AT_RISK, UNCERTAIN, MISSING)
STATUSES = deferred.STATUSES  # the same worklist states as deferred requests
JOB_ID = "recovery.reconcile"

FIELD_LABELS = {
    "name": "氏名", "name_kana": "フリガナ", "name_alphabet": "氏名（アルファベット）", "alias": "通称",
    "former_surname": "旧氏", "birth_date": "生年月日", "sex": "性別", "household_id": "世帯番号",
    "household_order": "世帯内の順", "head_name": "世帯主", "relationship": "続柄", "address": "住所",
    "address_since": "住所を定めた日", "resident_since": "住民となった日", "notified_on": "届出日",
    "previous_address": "前住所", "honseki": "本籍", "hitto": "筆頭者", "individual_number": "個人番号",
    "foreign": "外国人住民の事項", "status": "住民の状態", "removal": "除票の事由", "planned_move_out": "転出予定",
    "support_measure": "支援措置", "atena_number": "宛名番号", "furigana": "氏名の振り仮名",
    "former_surname_furigana": "旧氏の振り仮名", "remarks": "備考", "notified_reason": "届出の種別",
}
# "holds": the counter's own holds kept with the printed record (fallback.holds), not the register's
_IGNORED_FIELDS = ("version", "updated_at", "resident_code", "holds")


@dataclass(frozen=True)
class ReconcileResult:
    outcome: str  # "done", "nothing_to_check", "waiting_for_downtime_end", "waiting_for_feed", "waiting_for_clock", "upstream_unavailable"
    checked: int
    pending: int
    error: str | None = None


@dataclass(frozen=True)
class _Pending:
    request_id: int
    issued_at: str
    data_as_of: str | None  # the snapshot's data-as-of the certificate printed (its feed position, in upstream time)
    resident_code: str
    printed_version: int
    printed_updated_at: str
    printed_record: dict | None  # None for a certificate recorded without its record
    printed_seal: dict | None  # {"seal_number", "version"} on a 印鑑登録証明書


def pending_checks(conn) -> list[_Pending]:
    """(request, resident) pairs of real, issued certificates not checked
    yet. Copies of one request print the same records, so one check covers
    them all; voided serials were never handed out."""
    rows = conn.execute(
        "SELECT r.id, min(c.issued_at), r.data_as_of, c.printed_records FROM requests r "
        "JOIN certificates c ON c.request_id = r.id "
        "WHERE r.scope = 'real' AND c.scope = 'real' AND r.outcome = 'issued' AND c.status = 'rendered' "
        "GROUP BY r.id ORDER BY r.id"
    ).fetchall()
    checked = set(conn.execute("SELECT request_id, resident_code FROM recovery_checks").fetchall())
    pending = []
    for request_id, issued_at, data_as_of, printed in rows:
        printed = json.loads(printed)
        seal = printed.get("seal")
        for resident in printed["residents"]:
            if (request_id, resident["resident_code"]) not in checked:
                pending.append(_Pending(request_id, issued_at, data_as_of, resident["resident_code"], resident["version"],
                                        resident["updated_at"], resident.get("record"), seal))
    return pending


def issue_moment(issued_at: str, *, data_as_of: str | None = None, clock_lag: dt.timedelta = dt.timedelta(0)) -> dt.datetime:
    """The latest the issue can have been in the upstream's time: this
    clock's issued_at plus how far behind it may have been, and not before
    the data-as-of of the snapshot printed (module doc)."""
    moment = dt.datetime.fromisoformat(issued_at) + max(clock_lag, dt.timedelta(0))
    return max(moment, dt.datetime.fromisoformat(data_as_of)) if data_as_of else moment


def judge(printed_version: int, issued_at: str, current: dict | None, *, data_as_of: str | None = None,
          clock_lag: dt.timedelta = dt.timedelta(0)) -> str:
    if current is None:
        return MISSING
    if current["version"] == printed_version:
        return UNCHANGED
    changed_at = dt.datetime.fromisoformat(current["updated_at"])
    if current["version"] > printed_version and changed_at <= issue_moment(issued_at, data_as_of=data_as_of, clock_lag=clock_lag):
        return AT_RISK
    if current["version"] == printed_version + 1:
        return CHANGED_AFTER_ISSUE
    return UNCERTAIN


SEVERITY = (UNCHANGED, CHANGED_AFTER_ISSUE, UNCERTAIN, AT_RISK, MISSING)


def combined(*verdicts: str) -> str:
    """The verdict of a certificate whose resident and seal were judged
    apart: the graver one."""
    return max(verdicts, key=SEVERITY.index)


def seal_difference(printed: dict, current: dict | None) -> list[dict]:
    """The seal row of a difference: printed while registered, now revoked,
    deleted or re-registered."""
    number = printed["seal_number"]
    if current is None:
        now_shown = f"{number}（記録なし）"
    elif current["status"] == "revoked":
        now_shown = f"{number}（廃止）"
    elif current["version"] != printed["version"]:
        now_shown = f"{number}（登録中・内容変更）"
    else:
        return []
    return [{"field": "印鑑登録", "key": "seal", "printed": f"{number}（登録中）", "now": now_shown}]


def _show(field: str, value) -> str:
    if value is None or value == "":
        return "なし"
    if field == "address":
        return "".join(value.get(k) or "" for k in ("prefecture", "city", "town", "banchi")) + (f"　{value['katagaki']}" if value.get("katagaki") else "")
    if field == "support_measure":
        return "対象" if value else "対象外"
    if field == "status":
        return {"active": "住民", "removed": "除票"}.get(value, str(value))
    if field == "removal":
        moved_to = value.get("moved_to")
        planned = "" if value.get("moved_to_confirmed", True) else "（予定）"
        return f"{value['reason']}（{value['occurred_on']}）" + (f" {moved_to}{planned}" if moved_to else "")
    if field == "planned_move_out":
        return f"{value['date']} {value['moved_to']}へ転出予定"
    if isinstance(value, dict):
        return "、".join(f"{v}" for v in value.values() if v)
    return str(value)


def difference(printed: dict | None, current: dict | None, printed_version: int) -> list[dict]:
    """What changed, field by field, as the staff read it. Without the
    printed record only the versions can be compared."""
    if current is None:
        return []
    if printed is None:
        return [{"field": "版", "printed": str(printed_version), "now": str(current["version"])}]
    return [
        {"field": FIELD_LABELS.get(key, key), "key": key, "printed": _show(key, printed.get(key)), "now": _show(key, current.get(key))}
        for key in sorted(set(printed) | set(current), key=lambda k: list(FIELD_LABELS).index(k) if k in FIELD_LABELS else 99)
        if key not in _IGNORED_FIELDS and printed.get(key) != current.get(key)
    ]


def suggested_action(verdict: str, changes: list[dict], current: dict | None) -> str:
    if verdict not in AT_RISK_VERDICTS:
        return ""
    keys = {c.get("key") for c in changes}
    if verdict == MISSING and current is None:
        return "住民記録システムにこの住民票コードの記録がありません。情報政策課からベンダーに確認し、結果を請求者に連絡してください。"
    if "seal" in keys:
        return ("交付の前に印鑑登録の廃止・変更がありました。直ちに請求者に連絡して印鑑登録証明書を回収し、"
                "提出先が分かればそちらにも連絡して、課長に報告してください。")
    if current.get("support_measure") and "support_measure" in keys:
        return "支援措置が始まっていました。直ちに課長と支援措置の担当に報告し、交付先と証明書の扱いを確かめてください。"
    if "status" in keys or "removal" in keys:
        reason = (current.get("removal") or {}).get("reason", "転出・死亡等")
        return f"交付の時点で{reason}の届出が済んでいました。請求者に連絡して証明書を回収し、除票の写しなど正しい証明書を案内してください。"
    if keys & {"address", "name", "household_id", "head_name", "relationship", "alias", "foreign"}:
        changed = "・".join(c["field"] for c in changes if c.get("key") in {"address", "name", "household_id", "head_name", "relationship", "alias", "foreign"})
        return f"{changed}が変わっていました。請求者に連絡し、正しい内容の証明書を無料で交付し直して、先の証明書を回収してください。"
    if "planned_move_out" in keys:
        return "交付の前に転出予定の届出がありました。請求者に連絡して、証明書の内容を説明してください。"
    return "記録の内容を住民記録システムで確かめ、証明書に影響があれば請求者に連絡して交付し直してください。"


def reconcile_once(config: Config) -> ReconcileResult:
    """Check what is still unchecked against the upstream; the worker calls
    this every [recovery] interval_s until nothing is pending."""
    conn = open_ops(config, check_same_thread=False)
    try:
        pending = pending_checks(conn)
        if not pending:
            return ReconcileResult("nothing_to_check", 0, 0)
        if modes.current(conn).mode == modes.DOWNTIME:
            # The upstream is down by declaration; checking now would only
            # compare with the records the outage is hiding.
            return ReconcileResult("waiting_for_downtime_end", 0, len(pending))
        return _check(conn, config, pending)
    finally:
        conn.close()


def _check(conn, config: Config, pending: list[_Pending]) -> ReconcileResult:
    try:
        upstream = upstream_from_config(config)
    except ConfigError as exc:
        _record_attempt(conn, "upstream_unavailable", 0, len(pending), str(exc))
        return ReconcileResult("upstream_unavailable", 0, len(pending), str(exc))
    seals = _SealsAsOfNow(config)
    held_as_of = seals.as_of()  # read before asking: every answer after it is at least as new
    doubts = clock.doubts(conn, data_as_of=held_as_of)
    if doubts:
        # Every look-up would be judged by, and refused against, this clock.
        seals.close()
        upstream.close()
        message = clock.warning_message(doubts)
        _record_attempt(conn, "waiting_for_clock", 0, len(pending), message)
        return ReconcileResult("waiting_for_clock", 0, len(pending), message)
    checked = waiting = 0
    try:
        for item in pending:
            lag = clock.offset_around(conn, dt.datetime.fromisoformat(item.issued_at))
            moment = issue_moment(item.issued_at, data_as_of=item.data_as_of, clock_lag=lag)
            if item.printed_seal is not None and not seals.caught_up_past(moment):
                waiting += 1  # the change feed has not yet brought the snapshot past the issue
                continue
            try:
                current = resident_now(upstream, item.resident_code, held_as_of)
            except UpstreamUnavailable as exc:
                _record_attempt(conn, "upstream_unavailable", checked, len(pending) - checked, str(exc))
                return ReconcileResult("upstream_unavailable", checked, len(pending) - checked, str(exc))
            if current is not None:  # 個人番号 stays out unless mirrored, as in the snapshot the certificate came from
                current = dict(current)
                blank_individual_number(current, config["sync"]["mirror_individual_number"])
            verdict = judge(item.printed_version, item.issued_at, current, data_as_of=item.data_as_of, clock_lag=lag)
            changes = difference(item.printed_record, current, item.printed_version) if verdict != UNCHANGED else []
            if item.printed_seal is not None:
                seal = seals.seal(item.printed_seal["seal_number"])
                seal_verdict = judge(item.printed_seal["version"], item.issued_at, seal, data_as_of=item.data_as_of, clock_lag=lag)
                verdict = combined(verdict, seal_verdict)
                if seal_verdict in AT_RISK_VERDICTS:  # a seal changed after issue was right on the certificate
                    changes += seal_difference(item.printed_seal, seal)
            with Transaction(conn):
                if conn.execute("SELECT 1 FROM recovery_checks WHERE request_id = ? AND resident_code = ?",
                                (item.request_id, item.resident_code)).fetchone():
                    continue  # the worker and the supervisor's button may run at once: the other one checked it
                conn.execute(
                    "INSERT INTO recovery_checks (request_id, resident_code, checked_at, printed_version, printed_updated_at, "
                    "upstream_version, upstream_updated_at, verdict, difference, action) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (item.request_id, item.resident_code, now_iso(), item.printed_version, item.printed_updated_at,
                     current["version"] if current else None, current["updated_at"] if current else None, verdict,
                     json.dumps(changes, ensure_ascii=False), suggested_action(verdict, changes, current)),
                )
                if verdict in AT_RISK_VERDICTS:
                    audit.append(conn, "system", "recovery.at_risk", item.resident_code, {"request": item.request_id, "verdict": verdict})
            checked += 1
    finally:
        upstream.close()
        seals.close()
    if waiting:
        message = f"{waiting} 印鑑登録証明書 wait until the change feed has brought the snapshot past their issue"
        _record_attempt(conn, "waiting_for_feed", checked, waiting, message)
        return ReconcileResult("waiting_for_feed", checked, waiting, message)
    _record_attempt(conn, "done", checked, 0, None)
    return ReconcileResult("done", checked, 0)


def resident_now(upstream: HttpUpstream, resident_code: str, held_as_of: dt.datetime | None) -> dict | None:
    """The resident as the upstream holds them now (None: unknown there),
    from a verified look-up no older than the snapshot."""
    lookup = upstream.lookup(resident_code)
    if held_as_of is not None:
        try:
            check_not_older(lookup.as_of, held_as_of, "the resident look-up")
        except RuleBroken as exc:
            raise UpstreamUntrusted(f"resident look-up: refused by the contract's {exc}; counted as no answer") from None
    return lookup.resident


class _SealsAsOfNow:
    """Seals as the current snapshot holds them, opened when first needed."""

    def __init__(self, config: Config):
        self.config = config
        self.register = None
        self.opened = False

    def _open(self):
        if not self.opened:
            self.opened = True
            try:
                self.register = snapshot_store(self.config).open_register()
            except NoSnapshot:
                self.register = None
        return self.register

    def as_of(self) -> dt.datetime | None:
        register = self._open()
        return None if register is None else register.meta.as_of

    def caught_up_past(self, moment: dt.datetime) -> bool:
        register = self._open()
        return register is not None and register.meta.as_of > moment

    def seal(self, seal_number: str) -> dict | None:
        return self._open().seal(seal_number)

    def close(self) -> None:
        if self.register is not None:
            self.register.close()


def _record_attempt(conn, outcome: str, checked: int, pending: int, error: str | None) -> None:
    with Transaction(conn):
        conn.execute("INSERT INTO recovery_attempts (at, outcome, checked, pending, error) VALUES (?,?,?,?,?)",
                     (now_iso(), outcome, checked, pending, error))


def register_recovery_jobs(scheduler, config: Config) -> None:
    """Add the reconciliation job to the worker's APScheduler scheduler."""
    scheduler.add_job(reconcile_once, "interval", seconds=config["recovery"]["interval_s"], args=[config],
                      id=JOB_ID, replace_existing=True, max_instances=1, coalesce=True)


# --- what the recovery page and the incident report read --------------------


@dataclass(frozen=True)
class AtRiskCertificate:
    check_id: int
    request_id: int
    issued_at: str
    office: str
    terminal: str
    clerk: str
    kind: str
    subject_code: str
    resident_code: str
    requester_type: str
    requester_name: str | None
    contact: str | None
    serials: list[int]
    verdict: str
    difference: list[dict]
    action: str
    status: str
    status_changed_at: str | None
    status_changed_by: str | None

    @property
    def verdict_label(self) -> str:
        return VERDICTS[self.verdict]


def at_risk(conn, *, since: str = "", until: str | None = None) -> list[AtRiskCertificate]:
    """At-risk certificates of requests made within [since, until]."""
    rows = conn.execute(
        "SELECT k.id, r.id, r.created_at, r.office, r.terminal, r.clerk, r.kind, r.subject_code, k.resident_code, "
        "r.requester_type, r.requester_name, r.contact, "
        "(SELECT group_concat(serial) FROM certificates c WHERE c.request_id = r.id AND c.status = 'rendered'), "
        "k.verdict, k.difference, k.action, k.status, k.status_changed_at, k.status_changed_by "
        "FROM recovery_checks k JOIN requests r ON r.id = k.request_id "
        f"WHERE r.scope = 'real' AND k.verdict IN ({','.join('?' * len(AT_RISK_VERDICTS))}) AND r.created_at >= ? AND r.created_at <= ? "
        "ORDER BY r.id, k.id",
        (*AT_RISK_VERDICTS, since, until or "9999"),
    ).fetchall()
    return [
        AtRiskCertificate(*row[:12], [int(s) for s in (row[12] or "").split(",") if s], row[13], json.loads(row[14]), *row[15:])
        for row in rows
    ]


def set_status(conn, check_id: int, status: str, *, actor: str) -> None:
    if status not in STATUSES:
        raise ValueError(f"unknown status {status!r}")
    with Transaction(conn):
        changed = conn.execute(
            "UPDATE recovery_checks SET status = ?, status_changed_at = ?, status_changed_by = ? WHERE id = ?",
            (status, now_iso(), actor, check_id),
        ).rowcount
        if not changed:
            raise ValueError(f"no recovery check {check_id}")
        audit.append(conn, actor, "recovery.status", str(check_id), {"status": status})


@dataclass(frozen=True)
class Progress:
    issued_requests: int
    checked: int
    pending: int
    at_risk: int
    last_attempt: dict | None


def progress(conn) -> Progress:
    issued = conn.execute(
        "SELECT count(DISTINCT r.id) FROM requests r JOIN certificates c ON c.request_id = r.id "
        "WHERE r.scope = 'real' AND c.status = 'rendered'"
    ).fetchone()[0]
    checked, flagged = conn.execute(
        f"SELECT count(*), coalesce(sum(verdict IN ({','.join('?' * len(AT_RISK_VERDICTS))})), 0) FROM recovery_checks", AT_RISK_VERDICTS
    ).fetchone()
    last = conn.execute("SELECT at, outcome, checked, pending, error FROM recovery_attempts ORDER BY id DESC LIMIT 1").fetchone()
    return Progress(issued, checked, len(pending_checks(conn)), flagged,
                    dict(zip(("at", "outcome", "checked", "pending", "error"), last)) if last else None)

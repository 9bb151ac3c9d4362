"""A scripted history written straight into the operational database, with
the timestamps a real outage or drill would have had — so report figures
can be checked exactly. Only the tables' columns are assumed, as a restored
backup of a real appliance would present them."""

from __future__ import annotations

import json

from fallback.ops import Transaction


def request(conn, at: str, *, kind="juminhyo", office="本庁", terminal="本庁1", subject="10000000011", copies=1,
            outcome="issued", rule=None, scope="real", drill_id=None, serial=None, contact="03-0000-0000",
            printed=(("10000000011", 1, "2026-11-20T10:00:00+09:00"),), data_as_of="2025-01-05T23:00:00+09:00", generation=3) -> int:
    with Transaction(conn):
        request_id = conn.execute(
            "INSERT INTO requests (created_at, scope, drill_id, clerk, office, terminal, printer, kind, subject_code, requester_type, "
            "requester_name, requester_key, identity_document, purpose, contact, options, copies, fee_yen, outcome, refusal_rule, "
            "flags, snapshot_generation, data_as_of) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (at, scope, drill_id, "clerk1", office, terminal, "プリンタ001", kind, subject, "self", None, "k", "運転免許証", "",
             contact, "{}", copies, 300 * copies, outcome, rule, "[]", generation, data_as_of),
        ).lastrowid
        if outcome == "issued":
            records = json.dumps({"residents": [{"resident_code": c, "version": v, "updated_at": u} for c, v, u in printed], "seal": None})
            for copy in range(copies):
                conn.execute(
                    "INSERT INTO certificates (serial, scope, request_id, copy_number, status, issued_at, resident_codes, printed_records) "
                    "VALUES (?,?,?,?, 'rendered', ?, ?, ?)",
                    (serial + copy, scope, request_id, copy + 1, at, json.dumps([p[0] for p in printed]), records),
                )
    return request_id


def mode_change(conn, at: str, from_mode: str | None, to_mode: str, reason: str, actor: str = "boss") -> None:
    with Transaction(conn):
        conn.execute("INSERT INTO mode_changes (at, from_mode, to_mode, actor, reason) VALUES (?,?,?,?,?)", (at, from_mode, to_mode, actor, reason))


def probe(conn, at: str, component: str, ok: bool) -> None:
    with Transaction(conn):
        conn.execute("INSERT INTO probes (at, component, ok, state, latency_ms, error) VALUES (?,?,?,?,?,?)",
                     (at, component, int(ok), "ok" if ok else "no_answer", 12.0, None if ok else "応答なし"))


def deferred(conn, at: str, kind: str, *, status="open", resident_code=None, name="区民　一郎", contact="090-0000-0000",
             scope="real", drill_id=None) -> None:
    with Transaction(conn):
        conn.execute(
            "INSERT INTO deferred_requests (created_at, scope, drill_id, clerk, office, kind, resident_code, name, contact, delivery, consent, status) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,1,?)", (at, scope, drill_id, "clerk1", "本庁", kind, resident_code, name, contact, "mail", status))


def tick(conn, at: str, runbook, step, *, actor="boss", done=True, drill_id=None) -> None:
    with Transaction(conn):
        conn.execute(
            "INSERT INTO runbook_ticks (at, scope, drill_id, runbook, step_id, step_text, role, actor, done) VALUES (?,?,?,?,?,?,?,?,?)",
            (at, "drill" if drill_id else "real", drill_id, runbook.slug, step.id, step.text, step.role, actor, int(done)))


def drill(conn, *, title: str, started: str, ended: str, terminals=("本庁1", "本庁2"), declared: str | None = None,
          suspended: tuple[str, str] | None = None) -> int:
    with Transaction(conn):
        drill_id = conn.execute(
            "INSERT INTO drills (scenario, title, planned_start, planned_end, participants, terminals, status, created_by, created_at, "
            "started_at, ended_at) VALUES ('full_outage', ?, ?, ?, '[\"clerk1\",\"clerk2\"]', ?, 'ended', 'coord', ?, ?, ?)",
            (title, started, ended, json.dumps(list(terminals)), started, started, ended),
        ).lastrowid
        events = [(started, "started", {})]
        if declared:
            events.append((declared, "declared", {"reason": "住民記録システム障害（訓練）"}))
        if suspended:
            events += [(suspended[0], "suspended", {"reason": "実際の障害"}), (suspended[1], "resumed", {})]
        events.append((ended, "ended", {"reason": "訓練終了"}))
        for at, event, detail in sorted(events):
            conn.execute("INSERT INTO drill_events (drill_id, at, actor, event, detail) VALUES (?,?,?,?,?)",
                         (drill_id, at, "coord", event, json.dumps(detail, ensure_ascii=False)))
    return drill_id

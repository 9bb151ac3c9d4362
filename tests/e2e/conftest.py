"""The whole appliance end to end: the scripted outage day of
fallback.demo.outage_day (the same script as `sonae demo outage`) run against
real processes — cloudsim, `sonae worker`, `sonae serve` under waitress —
with headless Chromium at the desks, a real SMTP server and webhook
receiver for the alerts, and a smaller register than the demo's."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from fallback.app import create_app
from fallback.config import load_config
from fallback.demo.outage_day import DayOptions, DayRecord, free_ports, run_outage_day
from fallback.modes.views import issuance_summary
from fallback.ops import open_ops

# Big enough to hold a resident for every case (support-measure households
# are 0.06 % of the register); seed 2 has five of them in 10,000 residents.
RESIDENTS = 10_000
SEED = 2


def run_day(root: Path, **overrides) -> DayRecord:
    """The day as the tests play it. A fault's day is played without the
    second day (one outage day per fault keeps the suite's time)."""
    web_port, upstream_port = free_ports(2, width=2)
    overrides.setdefault("second_day", not overrides.get("faults"))
    options = DayOptions(residents=RESIDENTS, seed=SEED, change_rate=12.0, probe_interval_s=1,
                         web_port=web_port, upstream_port=upstream_port, **overrides)
    return run_outage_day(root, options)


def appliance_config(record: DayRecord, **overrides: str):
    """The day's appliance configuration (its processes have stopped; its
    operational database and snapshots stay for inspection), with SONAE_*
    environment overrides if any."""
    return load_config(record.root / "etc" / "sonae.toml", env={"SONAE_HOME": str(record.root / "home"), **overrides})


def ops_rows(record: DayRecord, sql: str, params: tuple = ()) -> list[tuple]:
    conn = open_ops(appliance_config(record))
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def report_sections(markdown: str) -> dict[str, str]:
    """The report's `## ` sections by title."""
    parts = re.split(r"^## (.+)$", markdown, flags=re.MULTILINE)
    return {parts[i].strip(): parts[i + 1].strip() for i in range(1, len(parts), 2)}


def tables(text: str) -> list[list[dict[str, str]]]:
    """Every Markdown table in `text`, as rows keyed by heading."""
    found, lines = [], text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("| ") and i + 1 < len(lines) and lines[i + 1].startswith("|---"):
            headings = [cell.strip() for cell in lines[i].strip("|").split("|")]
            rows, i = [], i + 2
            while i < len(lines) and lines[i].startswith("| "):
                rows.append(dict(zip(headings, (cell.strip() for cell in lines[i].strip().strip("|").split(" | ")))))
                i += 1
            found.append(rows)
        else:
            i += 1
    return found


AT_RISK_HEADING = "### 要確認の証明書"


def at_risk_rows(response: str) -> list[dict[str, str]]:
    """The report's at-risk table; none when nothing was at risk (when the
    upstream flapped up during the outage, the appliance may have caught up
    before the counters issued anything)."""
    part = response.split(AT_RISK_HEADING, 1)[1]
    found = tables(part)
    if not found:
        assert "ありません。" in part, part
        return []
    return found[0]


def minute(moment) -> str:
    """A time as the report prints it."""
    return moment.isoformat()[:16].replace("T", " ")


def printed_subjects(record: DayRecord) -> dict[tuple[int, str], tuple[int, str, dict | None]]:
    """(request, resident) -> (version printed, issued at, seal printed or
    None), from the appliance's record of every rendered real certificate."""
    printed = {}
    for request_id, issued_at, records in ops_rows(
            record, "SELECT request_id, min(issued_at), printed_records FROM certificates "
                    "WHERE scope = 'real' AND status = 'rendered' GROUP BY request_id"):
        records = json.loads(records)
        for resident in records["residents"]:
            printed[(request_id, resident["resident_code"])] = (resident["version"], issued_at, records.get("seal"))
    return printed


def listed_at_risk_by_feed(record: DayRecord) -> dict[tuple[int, str], bool]:
    """(request, resident) -> whether reconciliation must list it, worked
    out from the upstream's change feed alone: listed when the record (or
    the seal a 印鑑登録証明書 printed) had changed upstream at or before the
    certificate was issued, when it changed more than once since (one of
    them may have come first), or when it was deleted."""
    import datetime as dt
    from collections import defaultdict

    changes = defaultdict(list)
    for change in record.feed_since_outage:
        changes[(change["kind"], change["key"])].append(change)

    def changed_first(kind: str, key: str, version: int, issued: dt.datetime) -> bool:
        later = [c for c in changes[(kind, key)] if c["op"] == "delete" or c["record"]["version"] > version]
        return bool(later) and (
            any(dt.datetime.fromisoformat(c["at"]) <= issued for c in later) or len(later) > 1 or later[-1]["op"] == "delete")

    listed = {}
    for (request_id, code), (version, issued_at, seal) in printed_subjects(record).items():
        issued = dt.datetime.fromisoformat(issued_at)
        listed[(request_id, code)] = changed_first("residents", code, version, issued) or (
            seal is not None and changed_first("seals", seal["seal_number"], seal["version"], issued))
    return listed


# --- the report's figures, expected from what the script did ----------------------


def expected_issued(record: DayRecord) -> dict[tuple[str, str], int]:
    """(type as printed, office) -> certificates handed out."""
    from collections import Counter

    from fallback.counter.issuance import KINDS

    counts = Counter()
    for item in record.issued:
        counts[(KINDS[item.kind], item.office)] += len(item.serials)
    return dict(counts)


def expected_deferred(record: DayRecord) -> dict[str, tuple[int, ...]]:
    """Deferred request type as printed -> (count, then one count per status)."""
    from collections import Counter

    from fallback.deferred import KINDS, STATUSES

    by_kind: dict[str, Counter] = {}
    for item in record.deferred:
        by_kind.setdefault(item.kind, Counter())[item.status] += 1
    return {KINDS[kind]: (sum(by.values()), *(by[status] for status in STATUSES)) for kind, by in by_kind.items()}


def requests_made(record: DayRecord) -> int:
    """Every request the counters recorded, a refusal included, and the one
    the web server died in (web_kill) — the clerk made it, nothing came of it."""
    return len(record.issued) + len(record.refused) + (record.killed_request is not None)


def affected_lines(record: DayRecord) -> list[str]:
    requesters = {i.subject for i in record.issued} | {r.subject for r in record.refused}
    deferred = {d.resident_code for d in record.deferred}
    return [
        f"- 影響を受けた住民：{len(requesters | deferred)}人",
        f"- うち証明書を請求した方：{len(requesters)}人",
        f"- うち後日対応で受け付けた方：{len(deferred)}人",
    ]


def assert_report_matches_the_day(record: DayRecord) -> dict[str, str]:
    """The figures every variant of the day must get right; returns the sections."""
    from collections import Counter

    from fallback.deferred import STATUSES

    report = report_sections(record.report_markdown)
    response = report["区の対応"]
    issued, deferred = tables(response.split(AT_RISK_HEADING)[0])
    at_risk = at_risk_rows(response)
    assert {(row["種類"], row["庁舎"]): int(row["枚数"]) for row in issued} == expected_issued(record)
    assert f"合計 {record.certificates}枚。お断りした請求 {len(record.refused)}件。" in response
    assert {row["種類"]: (int(row["件数"]), *(int(row[label]) for label in STATUSES.values())) for row in deferred} == expected_deferred(record)
    listed = listed_at_risk_by_feed(record)
    assert Counter(int(row["請求番号"]) for row in at_risk) == Counter(request for (request, _), yes in listed.items() if yes)
    assert report["影響を受けた住民"].splitlines() == affected_lines(record)
    assert sum(int(row["請求件数"]) for row in tables(report["使用したデータの時点"])[0]) == requests_made(record)
    return report


# --- the fault days (test_outage_faults*.py) ---


def sonae(record: DayRecord, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SONAE_HOME": str(record.root / "home"), "SONAE_CONFIG": str(record.root / "etc" / "sonae.toml")}
    return subprocess.run([sys.executable, "-m", "fallback.cli", *args], capture_output=True, text=True, env=env)


def assert_the_day_ends_consistent(record: DayRecord) -> None:
    """Whatever the fault, the day ends with a consistent issuance log
    (every certificate rendered or void, none left allocated after the
    worker's sweep, serials unique, an audit entry for every issued
    request), a chain that `sonae audit verify` accepts, a snapshot that
    `sonae snapshot verify` accepts, and an incident report whose figures
    are what the counters did."""
    assert record.problems == []  # `sonae audit verify` and `sonae snapshot verify` passed at the end of the day
    statuses = dict(ops_rows(record, "SELECT status, count(*) FROM certificates GROUP BY status"))
    killed = ops_rows(record, "SELECT copies FROM requests WHERE id = ?", (record.killed_request,))
    assert statuses == {"rendered": record.certificates, **({"void": killed[0][0]} if killed else {})}
    rows = ops_rows(record, "SELECT scope, serial FROM certificates")
    assert len(rows) == len(set(rows))
    issued = {row[0] for row in ops_rows(record, "SELECT id FROM requests WHERE outcome = 'issued'")}
    audited = [json.loads(detail)["request"] for (detail,) in ops_rows(record, "SELECT detail FROM audit WHERE action = 'issue'")]
    assert sorted(audited) == sorted(issued)
    verified = sonae(record, "audit", "verify")
    assert verified.returncode == 0 and verified.stdout.startswith("audit chain intact"), verified.stderr
    assert_report_matches_the_day(record)
    # what the supervisor's screen and /metrics count as handed out
    conn = open_ops(appliance_config(record))
    try:
        assert issuance_summary(conn, "")["total"] == record.certificates
    finally:
        conn.close()
    # the counts are for IT's scraper, not the public
    scraped = create_app(appliance_config(record, SONAE_ALERTS_METRICS_TOKEN="scrape-secret"))
    metrics = scraped.test_client().get("/metrics", headers={"Authorization": "Bearer scrape-secret"}).get_data(as_text=True)
    counted = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines() if line.startswith("sonae_certificates_issued_total{"))
    assert counted == record.certificates

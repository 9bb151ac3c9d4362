"""After recovery: what the counter took during the outage, back into the
register, and the outage's issuance history for 本人通知制度 and 支援措置
follow-up.

**The re-entry files.** No vendor publishes its import layout, and the
standard obliges the vendor system to take a bulk CSV, so Sonae writes
its own documented, versioned layout — layout LAYOUT_VERSION — one CSV per
kind of 届出, one row per person of a filing, under column keys that are
the contract's field names (`planned_move_out.date`, `address.town`,
`removal.occurred_on` …) and Sonae's own for what the contract has no
name for (`filing_id`, `documents` …). A ward adapts it to its vendor with
a mapping file (`reentry.mapping_file`; the shipped
deploy/reentry-mapping.toml is the default, written out): per kind the
file name, whether the vendor can import it at all, and the columns to
write as [key, heading] pairs in their order (rename, reorder, leave out);
the encoding (UTF-8 with BOM, or CP932 for an older importer), the date
format, and whether the first line names the layout. That first line is
`#sonae-reentry,layout=1,kind=…,municipality=…,exported_at=…,rows=N`.
Every cell a person typed is neutralised like the other CSV exports
(fallback.staff.spreadsheets).

**The worklist.** What cannot be imported — every filing of a kind the
mapping marks `import = false` (印鑑登録: the 印影 is on paper), and every
filing the clerk marked as needing manual entry — is printed for the
clerks who enter it by hand, and each item is ticked off when done
(appended, audited: a withdrawn tick is a new row).

**The issuance history.** One row per certificate request and person
printed on it: who received what certificate of whom, when, on which data
(the snapshot's generation and data-as-of), and whether the person is one
for 本人通知 (an agent or a third party received it) or for 支援措置
follow-up (a 支援措置 person was printed, a 仮支援措置 hold included).

The exports are real-scope records only, of one incident's window; the
faces (fallback.reentry.views) put them behind supervisor login and audit
every export.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import io
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fallback import audit, filings
from fallback.config import Config
from fallback.counter import cancellations
from fallback.counter.issuance import KINDS as CERTIFICATE_KINDS
from fallback.counter.issuance import REQUESTER_TYPES
from fallback.errors import SonaeError
from fallback.ops import Transaction, now, now_iso
from fallback.staff.spreadsheets import csv_text, write_rows

LAYOUT_VERSION = 1
LAYOUT_NAME = "sonae-reentry"
ENCODINGS = ("utf-8-sig", "cp932")

# Sonae's own columns of every file, then the person's (the contract's
# RESIDENT names), then the kind's items (fallback.filings.ITEMS).
COMMON_COLUMNS = {
    "filing_id": "受付番号", "notified_on": "届出日", "received_at": "受付日時", "office": "受付庁舎", "clerk": "受付者",
    "notifier_name": "届出人", "notifier_relation": "届出人の区分", "documents": "確認した書類", "note": "備考",
}
PERSON_COLUMNS = {
    "resident_code": "住民票コード", "atena_number": "宛名番号", "household_id": "世帯番号", "name": "氏名",
    "name_kana": "フリガナ", "birth_date": "生年月日", "sex": "性別", "relationship": "続柄",
}
# Kinds a vendor importer cannot take by default: a seal registration needs
# the 印影, which the counter has on paper only.
NOT_IMPORTED_BY_DEFAULT = ("inkan_toroku",)


def columns(kind: str) -> dict[str, str]:
    """Every column key of a kind's file in layout 1, with its default heading."""
    person = {k: v for k, v in PERSON_COLUMNS.items() if not (k == "household_id" and kind in ("tennyu", "setai"))}
    items = {item.key: item.label for item in filings.ITEMS[kind]}
    return {**COMMON_COLUMNS, **person, **items}


def date_keys(kind: str) -> set[str]:
    return {"notified_on", "birth_date"} | {item.key for item in filings.ITEMS[kind] if item.type == "date"}


class ReentryError(SonaeError):
    """A re-entry export that cannot be made; the message says what to fix."""

    status = 409
    code = "reentry_refused"
    title = "復旧後の入力用ファイルを作れません"


# --- the mapping ------------------------------------------------------------------------


@dataclass(frozen=True)
class KindMapping:
    kind: str
    file: str
    imported: bool
    columns: tuple[tuple[str, str], ...]  # (key, heading) in file order


@dataclass(frozen=True)
class Mapping:
    encoding: str
    date_format: str
    metadata_line: bool
    kinds: dict[str, KindMapping]
    source: str


def default_mapping_values() -> dict[str, Any]:
    """Layout 1 as a mapping file's contents (deploy/reentry-mapping.toml is this, written out)."""
    return {
        "layout_version": LAYOUT_VERSION, "encoding": "utf-8-sig", "date_format": "%Y-%m-%d", "metadata_line": True,
        "kinds": {kind: {"file": f"{LAYOUT_NAME}-v{LAYOUT_VERSION}-{kind}.csv", "import": kind not in NOT_IMPORTED_BY_DEFAULT,
                         "columns": [[key, heading] for key, heading in columns(kind).items()]} for kind in filings.KINDS},
    }


def default_mapping_toml() -> str:
    """The default mapping as the commented TOML file a ward copies and edits."""
    values = default_mapping_values()
    lines = [
        f"# Sonae re-entry layout {LAYOUT_VERSION}: how the 届出 taken during an outage are written for the register",
        "# vendor's bulk CSV import. Copy this file, set `reentry.mapping_file` to it, and edit it to match the",
        "# vendor's import layout: per kind, the file name, whether the vendor can import it (false: the 届出 go to",
        "# the printed worklist for entry by hand), and the columns as [key, heading] pairs in the vendor's order.",
        "# Rename a heading, reorder or leave out a row; a key must be one of the layout's (README, \"Re-entry\").",
        f"layout_version = {values['layout_version']}",
        f"encoding = \"{values['encoding']}\"      # or \"cp932\" (Shift_JIS) for an older importer",
        f"date_format = \"{values['date_format']}\"   # strftime: \"%Y%m%d\" for 20261201",
        "metadata_line = true          # first line: #sonae-reentry,layout=1,kind=…,municipality=…,exported_at=…,rows=N",
        "",
    ]
    for kind, spec in values["kinds"].items():
        lines += [f"[kinds.{kind}]  # {filings.KINDS[kind]}", f"file = \"{spec['file']}\"", f"import = {'true' if spec['import'] else 'false'}",
                  "columns = ["]
        lines += [f"  [\"{key}\", \"{heading}\"]," for key, heading in spec["columns"]]
        lines += ["]", ""]
    return "\n".join(lines)


def load_mapping(config: Config) -> Mapping:
    """The ward's mapping (reentry.mapping_file) or layout 1's default;
    ReentryError names the first thing wrong in the file."""
    path = config["reentry"]["mapping_file"]
    if not path:
        return parse_mapping(default_mapping_values(), "the built-in layout 1")
    try:
        values = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReentryError(f"reentry.mapping_file {path} does not exist; copy deploy/reentry-mapping.toml there") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ReentryError(f"reentry.mapping_file {path}: {exc}") from None
    return parse_mapping(values, path)


def parse_mapping(values: dict, source: str) -> Mapping:
    def wrong(what: str) -> ReentryError:
        return ReentryError(f"{source}: {what}")

    unknown = set(values) - {"layout_version", "encoding", "date_format", "metadata_line", "kinds"}
    if unknown:
        raise wrong(f"unknown key {sorted(unknown)[0]!r}")
    if values.get("layout_version") != LAYOUT_VERSION:
        raise wrong(f"the mapping is for layout {values.get('layout_version')!r}; this Sonae writes layout {LAYOUT_VERSION}"
                    " (README, \"Re-entry\", lists what changed)")
    encoding = values.get("encoding", "utf-8-sig")
    if encoding not in ENCODINGS:
        raise wrong(f"encoding {encoding!r} is not one of {', '.join(ENCODINGS)}")
    date_format = values.get("date_format", "%Y-%m-%d")
    if not isinstance(date_format, str) or "%" not in date_format:
        raise wrong(f"date_format {date_format!r} is not a strftime pattern such as %Y-%m-%d")
    kinds = values.get("kinds", {})
    unknown_kinds = set(kinds) - set(filings.KINDS)
    if unknown_kinds:
        raise wrong(f"[kinds.{sorted(unknown_kinds)[0]}] is not a kind of 届出 ({', '.join(filings.KINDS)})")
    default = default_mapping_values()["kinds"]
    parsed = {}
    for kind in filings.KINDS:
        spec = {**default[kind], **kinds.get(kind, {})}
        extra = set(spec) - {"file", "import", "columns"}
        if extra:
            raise wrong(f"[kinds.{kind}] has no key {sorted(extra)[0]!r}")
        known = columns(kind)
        pairs = []
        for entry in spec["columns"]:
            if not (isinstance(entry, list) and len(entry) == 2 and all(isinstance(part, str) and part for part in entry)):
                raise wrong(f"[kinds.{kind}] columns: {entry!r} is not a [key, heading] pair")
            key, heading = entry
            if key not in known:
                nearest = difflib.get_close_matches(key, known, n=1)
                raise wrong(f"[kinds.{kind}] has no column {key!r}" + (f"; did you mean {nearest[0]!r}?" if nearest else ""))
            pairs.append((key, heading))
        if not pairs:
            raise wrong(f"[kinds.{kind}] has no columns")
        for seen in ({key for key, _ in pairs}, {heading for _, heading in pairs}):
            if len(seen) != len(pairs):
                raise wrong(f"[kinds.{kind}] names a column or a heading twice")
        if not isinstance(spec["file"], str) or not spec["file"].endswith(".csv") or "/" in spec["file"]:
            raise wrong(f"[kinds.{kind}] file {spec['file']!r} must be a file name ending in .csv")
        parsed[kind] = KindMapping(kind, spec["file"], bool(spec["import"]), tuple(pairs))
    files = [m.file for m in parsed.values()]
    if len(set(files)) != len(files):
        raise wrong("two kinds are written to the same file")
    return Mapping(encoding, date_format, bool(values.get("metadata_line", True)), parsed, source)


# --- the filings of an incident -------------------------------------------------------------


def incident_filings(conn, since: str, until: str) -> list[filings.Filing]:
    return [f for f in filings.listing(conn, scope="real", drill_id=None) if since <= f.recorded_at <= until]


def needs_manual_entry(filing: filings.Filing, mapping: Mapping) -> bool:
    return filing.manual_entry or not mapping.kinds[filing.kind].imported


@dataclass(frozen=True)
class ExportFile:
    kind: str
    name: str
    rows: int
    filings: int
    content: bytes


def _cell(filing: filings.Filing, person: dict, key: str, dates: set[str], date_format: str):
    if key in COMMON_COLUMNS:
        value = {
            "filing_id": filing.id, "notified_on": filing.notified_on, "received_at": filing.recorded_at[:16].replace("T", " "),
            "office": filing.office, "clerk": filing.clerk, "notifier_name": filing.notifier_name,
            "notifier_relation": filings.NOTIFIER_RELATIONS[filing.notifier_relation], "documents": "・".join(filing.documents),
            "note": filing.note,
        }[key]
    elif key in PERSON_COLUMNS:
        value = person.get(key)
    else:
        value = filing.item(key)
    if key in dates and value:
        value = dt.date.fromisoformat(value).strftime(date_format)
    return "" if value is None else value


def export_files(conn, config: Config, *, since: str, until: str) -> list[ExportFile]:
    """One CSV per importable kind with its filings of the window (every
    kind gets its file, empty ones with the header only, so the vendor's
    batch finds each file it expects)."""
    mapping = load_mapping(config)
    found = incident_filings(conn, since, until)
    exported_at = now().isoformat(timespec="seconds")
    files = []
    for kind, spec in mapping.kinds.items():
        if not spec.imported:
            continue
        chosen = [f for f in found if f.kind == kind and not f.manual_entry]
        dates = date_keys(kind)
        rows = [[_cell(f, person, key, dates, mapping.date_format) for key, _ in spec.columns] for f in chosen for person in f.persons]
        out = io.StringIO()
        if mapping.metadata_line:
            out.write(",".join([f"#{LAYOUT_NAME}", f"layout={LAYOUT_VERSION}", f"kind={kind}",
                                f"municipality={config['municipality']['code']}", f"exported_at={exported_at}", f"rows={len(rows)}"]) + "\r\n")
        write_rows(out, [heading for _, heading in spec.columns], rows)
        files.append(ExportFile(kind, spec.file, len(rows), len(chosen), _encoded(out.getvalue(), mapping.encoding, spec.file)))
    return files


def _encoded(text: str, encoding: str, name: str) -> bytes:
    try:
        return text.encode(encoding)
    except UnicodeEncodeError as exc:
        raise ReentryError(
            f"{name}: 「{text[exc.start:exc.end]}」は {encoding} で書けない文字です（行政事務標準文字・異体字）。"
            "マッピングの encoding を utf-8-sig にするか、その届出を手入力の一覧に回してください。"
        ) from None


# --- the worklist ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkItem:
    filing: filings.Filing
    reason: str
    done: bool
    done_at: str | None
    done_by: str | None


def worklist(conn, config: Config, *, since: str, until: str) -> list[WorkItem]:
    return worklist_of(conn, incident_filings(conn, since, until), load_mapping(config))


def worklist_of(conn, taken: list[filings.Filing], mapping: Mapping) -> list[WorkItem]:
    """The filings among `taken` that are entered by hand, with their latest tick."""
    ticks = {filing_id: (done, at, actor) for filing_id, done, at, actor in conn.execute(
        "SELECT filing_id, done, at, actor FROM reentry_ticks WHERE id IN (SELECT max(id) FROM reentry_ticks GROUP BY filing_id)")}
    items = []
    for filing in taken:
        if not needs_manual_entry(filing, mapping):
            continue
        reason = "取り込めない種類（印影など紙の書類による）" if not mapping.kinds[filing.kind].imported else "受付者が手入力を指定"
        done, at, actor = ticks.get(filing.id, (0, None, None))
        items.append(WorkItem(filing, reason, bool(done), at if done else None, actor if done else None))
    return items


def tick(conn, filing_id: int, *, done: bool, actor: str) -> None:
    """Mark a worklist item entered (or not, withdrawing a tick): appended
    with its audit entry."""
    with Transaction(conn):
        found = filings.get(conn, filing_id)
        if found is None or found.scope != "real":
            raise ReentryError(f"届出 {filing_id} はありません。")
        conn.execute("INSERT INTO reentry_ticks (filing_id, at, actor, done) VALUES (?,?,?,?)", (filing_id, now_iso(), actor, int(done)))
        audit.append(conn, actor, "reentry.tick", str(filing_id), {"done": done, "kind": found.kind})


# --- the issuance history --------------------------------------------------------------------------------


HISTORY_HEADINGS = [
    "請求番号", "交付日時", "庁舎", "端末", "交付した職員", "証明書", "発行番号", "通数", "証明された方の住民票コード", "証明された方の氏名",
    "請求者の区分", "請求者の氏名", "本人確認書類", "使用目的", "承認した係長", "データ時点", "世代", "本人通知の対象", "支援措置",
    "窓口の保留", "取り消した発行番号",
]
NOTIFY_REQUESTERS = ("agent", "third_party")  # 本人通知制度: someone other than the person or their household received it


@dataclass(frozen=True)
class HistoryRow:
    request_id: int
    issued_at: str
    office: str
    terminal: str
    clerk: str
    kind: str
    serials: list[int]
    resident_code: str
    name: str
    requester_type: str
    requester_name: str
    identity_document: str
    purpose: str
    approved_by: str
    data_as_of: str
    generation: int | None
    support_measure: bool
    holds: list[str]
    cancelled: list[str] = dataclasses.field(default_factory=list)  # 「000123（書損）」: copies cancelled after issue

    @property
    def for_notice(self) -> bool:
        return self.requester_type in NOTIFY_REQUESTERS


def issuance_history(conn, *, since: str, until: str) -> list[HistoryRow]:
    """Every real certificate handed out within the window, one row per
    request and person printed (copies counted, voided serials left out)."""
    rows = []
    for (request_id, created_at, office, terminal, clerk, kind, requester_type, requester_name, document, purpose, approved_by,
         data_as_of, generation, serials, printed) in conn.execute(
        "SELECT r.id, r.created_at, r.office, r.terminal, r.clerk, r.kind, r.requester_type, r.requester_name, r.identity_document, "
        "r.purpose, r.approved_by, r.data_as_of, r.snapshot_generation, "
        "(SELECT group_concat(serial) FROM certificates c WHERE c.request_id = r.id AND c.status = 'rendered'), "
        "(SELECT printed_records FROM certificates c WHERE c.request_id = r.id AND c.status = 'rendered' LIMIT 1) "
        "FROM requests r WHERE r.scope = 'real' AND r.outcome = 'issued' AND r.created_at BETWEEN ? AND ? ORDER BY r.id", (since, until)
    ):
        if not serials:
            continue
        for resident in json.loads(printed)["residents"]:
            record = resident.get("record") or {}
            rows.append(HistoryRow(
                request_id, created_at, office, terminal, clerk, kind, sorted(int(s) for s in serials.split(",")), resident["resident_code"],
                record.get("name", ""), requester_type, requester_name or "", document or "", purpose or "", approved_by or "",
                data_as_of or "", generation, bool(record.get("support_measure")), [h["label"] for h in record.get("holds", ())],
            ))
    cancelled = cancellations.cancelled(conn, "real", {serial for row in rows for serial in row.serials})
    return [dataclasses.replace(row, cancelled=[f"{serial:06d}（{cancellations.REASON_NAMES[cancelled[serial].reason]}）"
                                                for serial in row.serials if serial in cancelled]) for row in rows]


def history_csv(rows: list[HistoryRow]) -> str:
    return csv_text(HISTORY_HEADINGS, ([
        r.request_id, r.issued_at[:19].replace("T", " "), r.office, r.terminal, r.clerk, CERTIFICATE_KINDS[r.kind],
        " ".join(str(s) for s in r.serials), len(r.serials), r.resident_code, r.name, REQUESTER_TYPES[r.requester_type],
        r.requester_name, r.identity_document, r.purpose, r.approved_by, r.data_as_of[:16].replace("T", " "),
        "" if r.generation is None else r.generation, "対象" if r.for_notice else "", "対象" if r.support_measure else "",
        "・".join(r.holds), " ".join(r.cancelled),
    ] for r in rows))


def record_export(conn, actor: str, what: str, detail: dict) -> None:
    audit.record(conn, actor, f"reentry.export.{what}", None, detail)

"""The 届出 form at the counter — one page for every kind, keyboard first
(the kind by its number key, Enter to the next field, Ctrl+Enter to
record; dates in 和暦 as residents write them) — and the list of 届出
taken. Like deferred requests, they are seen by the clerk who took them
and by supervisors, only while their counter is open and in its scope
(in recovery, supervisors keep the real ones)."""

from __future__ import annotations

from flask import Blueprint, current_app, g, redirect, render_template, request, url_for

from fallback import audit, filings, holds
from fallback.counter import service
from fallback.counter.certificates import supervisor_approval
from fallback.counter.issuance import IssueRefused
from fallback.counter.rendering import print_settings
from fallback.counter.state import COUNTER_ROLES
from fallback.db import get_ops
from fallback.errors import NotFound
from fallback.ops import now
from fallback.staff.security import roles
from printing.wareki import parse_date_input

bp = Blueprint("filings", __name__, url_prefix="/filings", template_folder="templates", static_folder="static")


def _date(text: str, label: str, eras) -> str:
    """A date typed at the counter (西暦 or 和暦) as ISO; FilingError names the field."""
    try:
        return parse_date_input(text, eras).isoformat()
    except ValueError as exc:
        raise filings.FilingError(f"{label}: {exc}") from None


def received_from_form(form, record: service.ResidentRecord | None, eras) -> filings.Received:
    kind = form.get("kind", "")
    if kind not in filings.KINDS:
        raise filings.FilingError("届出の種類を選んでください（キー 1〜7）。")
    items = {}
    for item in filings.ITEMS[kind]:
        value = str(form.get(f"{kind}:{item.key}") or "").strip()
        items[item.key] = _date(value, item.label, eras) if value and item.type == "date" else value
    if kind in filings.NEW_PERSON_KINDS:
        persons = []
        for row in range(1, filings.MAX_NEW_PERSONS + 1):
            values = {item.key: str(form.get(f"p{row}_{item.key}") or "").strip() for item in filings.NEW_PERSON_ITEMS}
            if not any(values.values()):
                continue
            if values["birth_date"]:
                values["birth_date"] = _date(values["birth_date"], f"{row}人目の生年月日", eras)
            persons.append(filings.new_person(values))
    else:
        if record is None:
            raise filings.FilingError(f"{filings.KINDS[kind]}は、住民を検索して開いた画面から受け付けてください。")
        if record.person["status"] != "active":
            raise filings.FilingError("除票の方の届出は受け付けられません。")
        chosen = set(form.getlist("members")) or {record.person["resident_code"]}
        persons = [filings.resident_person(m) for m in record.household if m["status"] == "active" and m["resident_code"] in chosen]
        if len(persons) != len(chosen):
            raise filings.FilingError("選んだ方の中に、同じ世帯の現在の住民でない方がいます。")
    notified_on = str(form.get("notified_on") or "").strip()
    return filings.Received(
        kind=kind, notified_on=_date(notified_on, "届出日", eras) if notified_on else "",
        notifier_name=str(form.get("notifier_name") or ""), notifier_relation=str(form.get("notifier_relation") or ""),
        documents=form.getlist("documents"), persons=persons, items=items, manual_entry=form.get("manual_entry") == "1",
        note=str(form.get("note") or ""),
    )


def _confirmation(counter: service.Counter, form, kind: str, subject: str) -> str | None:
    """A clerk recording a 届出 that creates a hold needs a supervisor's
    confirmation at the terminal, as for any hold (audited, throttled,
    never the clerk)."""
    if not filings.creates_hold(kind) or g.staff.role == "supervisor":
        return None
    return supervisor_approval(counter.conn, counter.config, str(form.get("approver") or "").strip(),
                               str(form.get("approver_password") or ""), clerk=g.staff.username, subject=subject)


@bp.route("/new", methods=["GET", "POST"])
@roles(*COUNTER_ROLES)
def new():
    counter = service.open_counter(get_ops(), g.staff, current_app.config["SONAE"])
    code = (request.values.get("resident_code") or "").strip()
    record = None
    if code:
        record = service.view_resident(counter, code) if request.method == "GET" else service.record_for_form(counter, code)
    error = None
    if request.method == "POST":
        try:
            received = received_from_form(request.form, record, print_settings(counter.config).eras)
            seals = [s["seal_number"] for s in record.seals if s["status"] == "active"] if record else []
            filings.check(received, seals=seals)  # before a supervisor's password is checked
            confirmed_by = _confirmation(counter, request.form, received.kind, code or "tennyu")
            filing_id, _ = filings.record(counter.conn, received, scope=counter.scope.name, drill_id=counter.scope.drill_id,
                                          clerk=g.staff.username, role=g.staff.role, office=g.staff.office, terminal=g.staff.terminal,
                                          confirmed_by=confirmed_by, seals=seals)
        except (filings.FilingError, IssueRefused) as exc:
            error = exc.message
        else:
            return redirect(url_for("filings.show", filing_id=filing_id))
    return render_template(
        "filings/new.html", record=record, form=request.form, error=error, scope=counter.scope, kinds=filings.KINDS,
        items=filings.ITEMS, relations=filings.NOTIFIER_RELATIONS, documents=filings.DOCUMENTS, new_person_items=filings.NEW_PERSON_ITEMS,
        rows=range(1, filings.MAX_NEW_PERSONS + 1), today=now().date().isoformat(), hold_kinds=[k for k in filings.KINDS if filings.creates_hold(k)],
    ), (422 if error else 200)


def _visible(filing_id: int) -> tuple[filings.Filing, object]:
    """A filing the staff member may see now, or RecordDenied / NotFound (audited)."""
    conn, config = get_ops(), current_app.config["SONAE"]
    scope = service.records_scope(conn, g.staff, config)
    found = filings.get(conn, filing_id)
    if found is None:
        raise NotFound(f"届出 {filing_id} はありません。")
    in_scope = found.scope == scope.name and found.drill_id == scope.drill_id
    if not in_scope or (found.clerk != g.staff.username and g.staff.role != "supervisor"):
        audit.record(conn, g.staff.username, "records.denied", f"filing:{filing_id}", {"clerk": found.clerk}, drill=scope.is_drill)
        raise service.RecordDenied("この届出は、受け付けた職員と係長だけが、その窓口の範囲（本番・訓練）で見られます。")
    return found, scope


@bp.route("/<int:filing_id>")
@roles(*COUNTER_ROLES)
def show(filing_id):
    found, scope = _visible(filing_id)
    conn = get_ops()
    created = [h for h in holds.listing(conn, scope=scope.name, drill_id=scope.drill_id) if h.filing_id == filing_id]
    audit.record(conn, g.staff.username, "filing.view", str(filing_id), {"kind": found.kind}, drill=scope.is_drill)
    return render_template("filings/show.html", filing=found, holds=created, kinds=filings.KINDS, items=filings.ITEMS,
                           relations=filings.NOTIFIER_RELATIONS, scope=scope)


@bp.route("/")
@roles(*COUNTER_ROLES)
def index():
    conn, config = get_ops(), current_app.config["SONAE"]
    scope = service.records_scope(conn, g.staff, config)
    found = filings.listing(conn, scope=scope.name, drill_id=scope.drill_id,
                            clerk=None if g.staff.role == "supervisor" else g.staff.username)
    audit.record(conn, g.staff.username, "filing.list", None, {"rows": len(found)}, drill=scope.is_drill)
    return render_template("filings/index.html", rows=found, kinds=filings.KINDS, scope=scope)

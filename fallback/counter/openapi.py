"""The OpenAPI 3.0 document for /api/v1, served at /api/v1/openapi.json and
exercised by schemathesis (tests/e2e/test_api_schema.py): every status an
endpoint can answer is listed here, so an undocumented one fails the build.

The request bodies written here are also what the API checks a body
against (`body_problem`), so the document and the checks cannot drift
apart: a body the document calls invalid is refused with 400.
"""

from __future__ import annotations

import copy
import re

from fallback.counter.certificates import MAX_APPROVER_LENGTH, MAX_FIELD_LENGTHS, MAX_MEMBERS
from fallback.counter.issuance import IDENTITY_DOCUMENTS, KINDS, LAYOUTS, OPTIONAL_ITEMS, REQUESTER_TYPES
from fallback.counter.lookup import MAX_QUERY_LENGTH
from fallback.counter.service import IDEMPOTENCY_KEY_PATTERN, MAX_IDEMPOTENCY_KEY_LENGTH
from fallback.deferred import DELIVERY
from fallback.deferred import KINDS as DEFERRED_KINDS
from fallback.deferred import MAX_LENGTHS as DEFERRED_LENGTHS
from fallback.modes import MAX_REASON_LENGTH
from fallback.staff.users import MAX_USERNAME_LENGTH

_ERROR = {"$ref": "#/components/schemas/Error"}
# At least one character that is not a space, as Python's str.strip() sees
# spaces (ECMA's \s, which the document's readers use, is a different set).
_TEXT = {"type": "string", "pattern": "[^\\t-\\r\\x1c- \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]"}
MAX_PASSWORD_LENGTH = 1024  # Argon2 takes any length; nobody types more
# Every body here is an object of plain values and lists of them (3 levels);
# anything much deeper is a mistake or an attack on the parser.
MAX_JSON_DEPTH = 16


def _text(max_length: int) -> dict:
    return {**_TEXT, "maxLength": max_length}


def _string(max_length: int) -> dict:
    return {"type": "string", "maxLength": max_length}


# The counter's rules for free text (fallback.deferred, fallback.counter.
# certificates) as patterns: a body the document calls valid is never
# refused for its form.
RESIDENT_CODE_OR_BLANK = r"^\s*$|^\s*-*([0-9０-９]-*){11}\s*$"
NO_CONTROL_CHARACTERS = r"^\s*[^\x00-\x1f\x7f-\x9f]*\s*$"
VISIBLE_WITHOUT_CONTROL_CHARACTERS = r"^\s*[^\x00-\x1f\x7f-\x9f\s][^\x00-\x1f\x7f-\x9f]*\s*$"


def _free_text(max_length: int) -> dict:
    """Text a clerk types, blank allowed: no control character but at either end."""
    return {**_string(max_length), "pattern": NO_CONTROL_CHARACTERS}


def _json(schema: dict) -> dict:
    return {"content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict:
    text = {400: "bad request", 401: "not logged in", 403: "role not allowed", 404: "not found",
            409: "conflict (issuance: the first request under this Idempotency-Key is still rendering, or was cut by a crash "
                 "and its serials are void: issue again under a new key)",
            410: "the certificate was cancelled after it was issued (certificate_cancelled: 書損・誤交付); it is neither served nor printed",
            422: "refused by a rule (or a same-day repeat to confirm, or an Idempotency-Key reused with another body)", 423: "counter locked (not in downtime)",
            429: "too many failed logins: wait Retry-After seconds",
            503: "no snapshot loaded (no_snapshot), or the appliance's disk failed: full, I/O error, busy (storage, with a one-line cause)"}
    return {str(c): {"description": text[c], **_json(_ERROR)} for c in codes}


_SEARCH_PARAMS = [
    {"name": name, "in": "query", "required": False, "schema": schema, "description": desc}
    for name, desc, schema in (
        ("kana", "カナ氏名（前方一致）", {"type": "string", "maxLength": MAX_QUERY_LENGTH}),
        ("name", "漢字氏名（旧字・IVSは通常の字でも一致）", {"type": "string", "maxLength": MAX_QUERY_LENGTH}),
        ("birth", "生年月日（西暦または和暦: S50.6.15, 昭和50年6月15日, 1975-06-15）", {"type": "string", "maxLength": MAX_QUERY_LENGTH}),
        ("address", "住所（前方一致）", {"type": "string", "maxLength": MAX_QUERY_LENGTH}),
        ("code", "住民票コード（11桁、全角・ハイフン可）", {"type": "string", "pattern": r"^-*([0-9０-９]-*){11}$"}),
    )
]

# How the requester proved who they are (本人確認書類): one rule for a
# certificate request and for showing the person themself their withheld record.
_IDENTITY_DOCUMENT = {"type": "string", "enum": list(IDENTITY_DOCUMENTS),
                      "description": "本人確認書類 as the counter's list names it (e.g. 運転免許証, マイナンバーカード)"}
_ISSUE_BODY = {
    "type": "object",
    "required": ["kind", "requester_type", "identity_document"],
    "properties": {
        "kind": {"type": "string", "enum": list(KINDS)},
        "requester_type": {"type": "string", "enum": list(REQUESTER_TYPES),
                           "description": "official: 公用請求 (another public office; identity_document 職員の身分証明書, purpose required)"},
        "identity_document": _IDENTITY_DOCUMENT,
        "requester_name": _free_text(MAX_FIELD_LENGTHS["requester_name"][1]),
        "purpose": _free_text(MAX_FIELD_LENGTHS["purpose"][1]),
        "contact": _free_text(MAX_FIELD_LENGTHS["contact"][1]),
        "members": {"type": "array", "maxItems": MAX_MEMBERS, "items": _string(20)},
        "whole_household": {"type": "boolean"},
        "layout": {"type": "string", "enum": list(LAYOUTS)},
        "items": {"type": "array", "items": {"type": "string", "enum": list(OPTIONAL_ITEMS)}},
        "omit_katagaki": {"type": "boolean"},
        "copies": {"type": "integer", "minimum": 1, "description": "at most counter.max_copies (maximum filled in per appliance)"},
        "delegation_letter": {"type": "boolean"},
        "seal_card_number": _free_text(MAX_FIELD_LENGTHS["seal_card_number"][1]),
        "acknowledge_move_out": {"type": "boolean"},
        "acknowledge_omissions": {"type": "boolean", "description": "issue although requested items will not be printed "
                                  "(a 422 with rule items_not_printed lists them in `omissions`)"},
        "confirm_repeat": {"type": "boolean", "description": "issue although the same type was issued to this person today "
                                                             "(otherwise refused with rule same_day_repeat and earlier_serials)"},
        "approver": _string(MAX_APPROVER_LENGTH),
        "approver_password": _string(MAX_PASSWORD_LENGTH),
    },
}
SELF_BODY = {"type": "object", "required": ["identity_document"], "properties": {"identity_document": _IDENTITY_DOCUMENT}}
_LOGIN_BODY = {"type": "object", "required": ["username", "password"], "properties": {
    "username": _string(MAX_USERNAME_LENGTH), "password": _string(MAX_PASSWORD_LENGTH),
    "terminal": {"type": "string", "description": "one of the configured counter terminals (enum filled in per appliance). "
                                                  "The session is at the terminal the client was registered as by a supervisor "
                                                  "at /terminal (its sonae_terminal cookie); this only confirms it: another "
                                                  "terminal, or any from an unregistered client (terminal_not_registered), is "
                                                  "refused with 403 (terminal_mismatch, terminal_not_registered). Without a registration the login has no counter."}}}
DEFERRED_BODY = {"type": "object", "required": ["kind", "name", "contact", "delivery", "consent"], "properties": {
    "kind": {"type": "string", "enum": list(DEFERRED_KINDS)}, "name": {**_string(DEFERRED_LENGTHS["name"]), "pattern": VISIBLE_WITHOUT_CONTROL_CHARACTERS},
    "contact": {**_string(DEFERRED_LENGTHS["contact"]), "pattern": VISIBLE_WITHOUT_CONTROL_CHARACTERS}, "delivery": {"type": "string", "enum": list(DELIVERY)},
    "consent": {"type": "boolean", "enum": [True], "description": "the resident agreed to be contacted after recovery"},
    "resident_code": {**_string(DEFERRED_LENGTHS["resident_code"]), "pattern": RESIDENT_CODE_OR_BLANK,
                      "description": "11 digits (full-width or with hyphens taken), or blank; a resident of the register "
                                     "the counter reads when one is loaded, else 404"},
    "note": {**_string(DEFERRED_LENGTHS["note"]), "pattern": NO_CONTROL_CHARACTERS,
             "description": "no control characters but at either end (stripped there)"}}}
MODE_BODY = {"type": "object", "required": ["to_mode", "reason"], "properties": {
    "to_mode": {"type": "string", "enum": ["standby", "suspect", "downtime", "recovery"]}, "reason": _text(MAX_REASON_LENGTH)}}

OPENAPI = {
    "openapi": "3.0.3",
    "info": {"title": "Sonae counter API", "version": "1",
             "description": "Staff session (cookie) from POST /session; unsafe methods need X-CSRF-Token. A client works a "
                            "counter only once a supervisor has registered it as a terminal at /terminal (cookie sonae_terminal)."},
    "paths": {
        "/api/v1/session": {
            "get": {"summary": "Current session and CSRF token", "responses": {"200": {"description": "session", **_json({"type": "object"})}}},
            "post": {
                "summary": "Log in at a counter terminal",
                "requestBody": {"required": True, **_json(_LOGIN_BODY)},  # terminal's enum: see document()
                "responses": {"201": {"description": "logged in", **_json({"type": "object"})}, **_errors(400, 401, 403, 429, 503)},
            },
            "delete": {"summary": "Log out", "responses": {"204": {"description": "logged out"}, **_errors(400, 401, 503)}},
        },
        "/api/v1/status": {
            "get": {"summary": "Mode, banner, this staff member's counter, snapshot data-as-of: every open screen polls it "
                               "(send X-Sonae-Poll: 1 so that polling keeps no idle session alive)", "responses": {
                "200": {"description": "status", **_json({"$ref": "#/components/schemas/Status"})}, **_errors(401, 503)}},
        },
        "/api/v1/residents": {
            "get": {"summary": "Search residents (downtime or drill only)", "parameters": _SEARCH_PARAMS, "responses": {
                "200": {"description": "results", **_json({"type": "object", "required": ["results", "truncated"], "properties": {
                    "results": {"type": "array", "items": {"$ref": "#/components/schemas/ResidentSummary"}},
                    "truncated": {"type": "boolean"}}})},
                **_errors(400, 401, 403, 423, 503)}},
        },
        "/api/v1/residents/{code}": {
            "get": {"summary": "One resident with household and seals",
                    "parameters": [{"name": "code", "in": "path", "required": True, "schema": {"type": "string"}}],
                    "responses": {"200": {"description": "resident", **_json({"type": "object"})}, **_errors(401, 403, 404, 423, 503)}},
        },
        "/api/v1/residents/{code}/self": {
            "post": {"summary": "One resident with what a 支援措置 withholds, for the person themself",
                     "description": "The clerk states that the requester is the person themself and names the identity "
                                    "document they showed, as a certificate request for them must; without one (or with a "
                                    "blank or overlong one) the answer is 400 and nothing is shown. Audited with the "
                                    "document, and put before the supervisors for a 支援措置 record.",
                     "parameters": [{"name": "code", "in": "path", "required": True, "schema": {"type": "string"}}],
                     "requestBody": {"required": True, **_json(SELF_BODY)},
                     "responses": {"200": {"description": "resident", **_json({"type": "object"})},
                                   **_errors(400, 401, 403, 404, 423, 503)}},
        },
        "/api/v1/residents/{code}/certificates": {
            "post": {"summary": "Issue certificates",
                     "description": "With an Idempotency-Key header (IETF draft-ietf-httpapi-idempotency-key-header) a "
                                    "repeat of the same request answers the first result (header Idempotent-Replayed: true) "
                                    "and issues nothing; the same key with another body is refused (422 "
                                    "idempotency_key_reused), while the first is still rendering the answer is 409 issue_in_progress, and once "
                                    "a first cut by a crash is past counter.void_unrendered_after_s its serials are voided and "
                                    "the answer is 409 issue_interrupted (issue again under a new key).",
                     "parameters": [{"name": "code", "in": "path", "required": True, "schema": {"type": "string"}},
                                    {"name": "Idempotency-Key", "in": "header", "required": False,
                                     "schema": {"type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY_LENGTH,
                                                "pattern": IDEMPOTENCY_KEY_PATTERN}}],
                     "requestBody": {"required": True, **_json(_ISSUE_BODY)},  # copies' maximum: see document()
                     "responses": {"201": {"description": "issued", **_json({"type": "object"})},
                                   **_errors(400, 401, 403, 404, 409, 422, 423, 503)}},
        },
        "/api/v1/certificates/{scope}/{serial}.pdf": {
            "get": {"summary": "An issued certificate's PDF",
                    "parameters": [{"name": "scope", "in": "path", "required": True, "schema": {"type": "string", "enum": ["real", "drill"]}},
                                   {"name": "serial", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}}],
                    "responses": {"200": {"description": "PDF", "content": {"application/pdf": {"schema": {"type": "string", "format": "binary"}}}},
                                  **_errors(401, 403, 404, 410, 423, 503)}},
        },
        "/api/v1/deferred": {
            "get": {"summary": "Deferred requests (a clerk's own; every counter's for a supervisor)",
                    "responses": {"200": {"description": "list", **_json({"type": "object"})}, **_errors(401, 403, 423, 503)}},
            "post": {"summary": "Record a deferred request",
                     "requestBody": {"required": True, **_json(DEFERRED_BODY)},
                     "responses": {"201": {"description": "recorded", **_json({"type": "object"})}, **_errors(400, 401, 403, 423, 503)}},
        },
        "/api/v1/mode": {
            "post": {"summary": "Change the operating mode (supervisor)",
                     "requestBody": {"required": True, **_json(MODE_BODY)},
                     "responses": {"200": {"description": "changed", **_json({"type": "object"})}, **_errors(400, 401, 403, 409, 503)}},
        },
    },
    "components": {"schemas": {
        "Error": {"type": "object", "required": ["error", "message"], "properties": {
            "error": {"type": "string"}, "message": {"type": "string", "description": "for staff, in Japanese"},
            "cause": {"type": "string", "description": "storage errors: the fault in one line (disk full, I/O error, busy)"},
            "rule": {"type": "string", "description": "refused: the issuance rule that refused"},
            "retry_after": {"type": "integer", "description": "login_throttled: seconds to wait"}}},
        "Status": {"type": "object", "required": ["mode", "snapshot", "banner", "revision"], "properties": {
            "mode": {"type": "string"}, "mode_label": {"type": "string"}, "mode_since": {"type": "string", "nullable": True},
            "snapshot": {"type": "object", "nullable": True},
            "banner": {"type": "object", "description": "what every screen's banner shows (level, data-as-of, warning, drill)"},
            "counter": {"type": "object", "nullable": True,
                        "description": "this staff member's counter: open or not and why (null for roles without a counter)"},
            "revision": {"type": "string", "description": "changes when what the self-refreshing screens show changes"},
            "poll_interval_ms": {"type": "integer", "description": "how often an open screen asks"}}},
        "ResidentSummary": {"type": "object", "required": ["resident_code", "name", "birth_date", "status"], "properties": {
            "resident_code": {"type": "string"}, "name": {"type": "string"}, "name_kana": {"type": "string"},
            "birth_date": {"type": "string"}, "status": {"type": "string", "enum": ["active", "removed"]},
            "support_measure": {"type": "boolean"},
            "address": {"type": "object", "nullable": True, "description": "null for a 支援措置 resident: a result list never shows their address"}}},
    }},
}


def login_body(terminals: list[dict]) -> dict:
    """The login body of this appliance: its configured terminals."""
    body = copy.deepcopy(_LOGIN_BODY)
    body["properties"]["terminal"]["enum"] = [t["id"] for t in terminals]
    return body


def issue_body(max_copies: int) -> dict:
    """The issue body of this appliance: its cap on copies."""
    body = copy.deepcopy(_ISSUE_BODY)
    body["properties"]["copies"]["maximum"] = max_copies
    return body


def document(counter: dict) -> dict:
    """The document as this appliance serves it, from its [counter] section."""
    served = copy.deepcopy(OPENAPI)
    served["paths"]["/api/v1/session"]["post"]["requestBody"] = {"required": True, **_json(login_body(counter["terminals"]))}
    served["paths"]["/api/v1/residents/{code}/certificates"]["post"]["requestBody"] = {
        "required": True, **_json(issue_body(counter["max_copies"]))}
    return served


_TYPES = {"string": str, "boolean": bool, "integer": int, "array": list, "object": dict}


def body_problem(schema: dict, body) -> str | None:
    """What is wrong with a JSON body, judged by its schema in this document
    (the subset of JSON Schema used here); None when nothing is."""
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    if problem := json_problem(body):
        return problem
    missing = [name for name in schema["required"] if name not in body]
    if missing:
        return f"missing: {', '.join(missing)}"
    for name, rule in schema["properties"].items():
        if name in body:
            problem = _value_problem(rule, body[name])
            if problem:
                return f"{name}: {problem}"
    return None


def json_problem(body) -> str | None:
    """What no schema can say about a parsed JSON body: nesting deeper than
    MAX_JSON_DEPTH, or text that is not valid Unicode (JSON's \\ud800
    escapes decode to a lone surrogate, which no database nor hash takes).
    Walked without recursion, so a deep body cannot exhaust the stack here."""
    pending: list = [(body, 1, None)]  # (value, its depth, the top-level field it is in)
    while pending:
        value, depth, field = pending.pop()
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return f"{field or 'a field'}: text that is not valid Unicode (an unpaired surrogate such as \\ud800)"
        elif isinstance(value, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                return f"the body is nested too deeply (at most {MAX_JSON_DEPTH} levels)"
            if isinstance(value, list):
                pending.extend((item, depth + 1, field) for item in value)
                continue
            for key, item in value.items():
                inside = field or (key if isinstance(key, str) and key.isascii() and key.isprintable() else None)
                pending.extend(((key, depth + 1, field), (item, depth + 1, inside)))
    return None


def _value_problem(rule: dict, value) -> str | None:
    expected = _TYPES[rule["type"]]
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        return f"must be of type {rule['type']}"
    if "enum" in rule and value not in rule["enum"]:
        return f"must be one of {rule['enum']}"
    if "maxLength" in rule and len(value) > rule["maxLength"]:
        return f"must be at most {rule['maxLength']} characters"
    if "maxItems" in rule and len(value) > rule["maxItems"]:
        return f"must have at most {rule['maxItems']} items"
    if "pattern" in rule and not re.search(rule["pattern"], value):
        return f"must match {rule['pattern']}"
    if "minimum" in rule and value < rule["minimum"] or "maximum" in rule and value > rule["maximum"]:
        return f"must be between {rule.get('minimum')} and {rule.get('maximum')}"
    if "items" in rule:
        return next((f"item {i}: {p}" for i, item in enumerate(value) if (p := _value_problem(rule["items"], item))), None)
    return None

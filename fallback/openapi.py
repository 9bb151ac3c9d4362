"""The OpenAPI 3.0 document for /api/v1, served at /api/v1/openapi.json and
exercised by schemathesis in CI: every status an endpoint can answer is
listed here, so an undocumented one fails the build."""

from __future__ import annotations

_ERROR = {"$ref": "#/components/schemas/Error"}


def _json(schema: dict) -> dict:
    return {"content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict:
    text = {400: "bad request", 401: "not logged in", 403: "role not allowed", 404: "not found",
            409: "conflict", 422: "refused by a rule", 423: "counter locked (not in downtime)", 503: "no snapshot loaded"}
    return {str(c): {"description": text[c], **_json(_ERROR)} for c in codes}


_SEARCH_PARAMS = [
    {"name": name, "in": "query", "required": False, "schema": {"type": "string", "maxLength": 100}, "description": desc}
    for name, desc in (("kana", "カナ氏名（前方一致）"), ("name", "漢字氏名（旧字・IVSは通常の字でも一致）"),
                       ("birth", "生年月日（西暦または和暦: S50.6.15, 昭和50年6月15日, 1975-06-15）"),
                       ("address", "住所（前方一致）"), ("code", "住民票コード（11桁）"))
]

_ISSUE_BODY = {
    "type": "object",
    "required": ["kind", "requester_type", "identity_document"],
    "properties": {
        "kind": {"type": "string", "enum": ["juminhyo", "kisai", "johyo", "inkan"]},
        "requester_type": {"type": "string", "enum": ["self", "household", "agent", "third_party"]},
        "identity_document": {"type": "string"},
        "requester_name": {"type": "string"},
        "purpose": {"type": "string"},
        "contact": {"type": "string"},
        "members": {"type": "array", "items": {"type": "string"}},
        "whole_household": {"type": "boolean"},
        "layout": {"type": "string", "enum": ["renketsu", "kojin"]},
        "items": {"type": "array", "items": {"type": "string", "enum": [
            "honseki", "head", "resident_code", "individual_number", "nationality", "category", "status", "period",
            "expiry", "card_number", "alias"]}},
        "omit_katagaki": {"type": "boolean"},
        "copies": {"type": "integer", "minimum": 1, "maximum": 10},
        "delegation_letter": {"type": "boolean"},
        "seal_card_number": {"type": "string"},
        "acknowledge_move_out": {"type": "boolean"},
        "approver": {"type": "string"},
        "approver_password": {"type": "string"},
    },
}

OPENAPI = {
    "openapi": "3.0.3",
    "info": {"title": "Sonae counter API", "version": "1",
             "description": "Staff session (cookie) from POST /session; unsafe methods need X-CSRF-Token."},
    "paths": {
        "/api/v1/session": {
            "get": {"summary": "Current session and CSRF token", "responses": {"200": {"description": "session", **_json({"type": "object"})}}},
            "post": {
                "summary": "Log in at a counter terminal",
                "requestBody": {"required": True, **_json({"type": "object", "required": ["username", "password", "terminal"],
                    "properties": {"username": {"type": "string"}, "password": {"type": "string"}, "terminal": {"type": "string"}}})},
                "responses": {"201": {"description": "logged in", **_json({"type": "object"})}, **_errors(400, 401)},
            },
            "delete": {"summary": "Log out", "responses": {"204": {"description": "logged out"}, **_errors(400, 401)}},
        },
        "/api/v1/status": {
            "get": {"summary": "Mode and snapshot data-as-of", "responses": {
                "200": {"description": "status", **_json({"$ref": "#/components/schemas/Status"})}, **_errors(401)}},
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
        "/api/v1/residents/{code}/certificates": {
            "post": {"summary": "Issue certificates",
                     "parameters": [{"name": "code", "in": "path", "required": True, "schema": {"type": "string"}}],
                     "requestBody": {"required": True, **_json(_ISSUE_BODY)},
                     "responses": {"201": {"description": "issued", **_json({"type": "object"})}, **_errors(400, 401, 403, 422, 423, 503)}},
        },
        "/api/v1/certificates/{scope}/{serial}.pdf": {
            "get": {"summary": "An issued certificate's PDF",
                    "parameters": [{"name": "scope", "in": "path", "required": True, "schema": {"type": "string", "enum": ["real", "drill"]}},
                                   {"name": "serial", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 0}}],
                    "responses": {"200": {"description": "PDF", "content": {"application/pdf": {"schema": {"type": "string", "format": "binary"}}}},
                                  **_errors(401, 403, 404)}},
        },
        "/api/v1/deferred": {
            "get": {"summary": "Deferred requests", "responses": {"200": {"description": "list", **_json({"type": "object"})}, **_errors(401, 403)}},
            "post": {"summary": "Record a deferred request",
                     "requestBody": {"required": True, **_json({"type": "object", "required": ["kind", "name", "contact", "delivery", "consent"],
                        "properties": {"kind": {"type": "string"}, "name": {"type": "string"}, "contact": {"type": "string"},
                                       "delivery": {"type": "string"}, "consent": {"type": "boolean"},
                                       "resident_code": {"type": "string"}, "note": {"type": "string"}}})},
                     "responses": {"201": {"description": "recorded", **_json({"type": "object"})}, **_errors(400, 401, 403)}},
        },
        "/api/v1/mode": {
            "post": {"summary": "Change the operating mode (supervisor)",
                     "requestBody": {"required": True, **_json({"type": "object", "required": ["to_mode", "reason"], "properties": {
                        "to_mode": {"type": "string", "enum": ["standby", "suspect", "downtime", "recovery"]}, "reason": {"type": "string"}}})},
                     "responses": {"200": {"description": "changed", **_json({"type": "object"})}, **_errors(400, 401, 403, 409)}},
        },
    },
    "components": {"schemas": {
        "Error": {"type": "object", "required": ["error", "message"], "properties": {"error": {"type": "string"}, "message": {"type": "string"}}},
        "Status": {"type": "object", "required": ["mode", "snapshot"], "properties": {
            "mode": {"type": "string"}, "mode_label": {"type": "string"}, "mode_since": {"type": "string", "nullable": True},
            "snapshot": {"type": "object", "nullable": True}}},
        "ResidentSummary": {"type": "object", "required": ["resident_code", "name", "birth_date", "status"], "properties": {
            "resident_code": {"type": "string"}, "name": {"type": "string"}, "name_kana": {"type": "string"},
            "birth_date": {"type": "string"}, "status": {"type": "string", "enum": ["active", "removed"]},
            "support_measure": {"type": "boolean"}}},
    }},
}

"""The register as the counter must read it: the snapshot's records with
the scope's active holds applied, wherever a record or a result row comes
from — search results, the resident and their household, seals, issuance.

A held record is a copy of the snapshot's with:
- `holds`: every active hold on the person or their seals (Hold.shown),
  which the screens and the API show and the issuance rules read;
- for a 転出届 received: `planned_move_out` = {"date", "moved_to"}, the
  shape the upstream gives a planned move, so the one planned-move rule
  decides what the certificate and the clerk's message say;
- for a 仮支援措置: `support_measure` = true, so every 支援措置 rule applies.
A seal under a 亡失・廃止 hold carries `holds` too. Records without a hold
pass through untouched (a result list's stored JSON is not even parsed).
"""

from __future__ import annotations

import json
import re

from fallback.holds import ActiveHolds, Hold
from sync.register import Household, Register

_RESIDENT_CODE = re.compile(r'"resident_code":"([^"]*)"')


def held_record(record: dict, holds: list[Hold]) -> dict:
    if not holds:
        return record
    held = dict(record)
    for hold in holds:
        if hold.kind == "move_out":
            held["planned_move_out"] = {"date": hold.details["date"], "moved_to": hold.details["moved_to"]}
        elif hold.kind == "support_measure":
            held["support_measure"] = True
    held["holds"] = [hold.shown() for hold in holds]
    return held


def held_summary_text(text: str, holds: list[Hold]) -> str:
    """A stored result-row summary (compact JSON, as sync.schema keeps it)
    with the holds applied, in the same compact form, so the result list's
    own rules (a protected address left out) read it as stored."""
    summary = json.loads(text)
    for hold in holds:
        if hold.kind == "move_out":
            summary["planned_move_out"] = True
        elif hold.kind == "support_measure":
            summary["support_measure"] = True
    summary["holds"] = [{"kind": hold.kind, "label": hold.label} for hold in holds]
    return json.dumps(summary, ensure_ascii=False, separators=(",", ":"))


class HeldRegister:
    """A sync.register.Register read through the active holds of a scope.
    Everything not overridden here (meta, anomalies …) is the register's."""

    def __init__(self, register: Register, holds: ActiveHolds):
        self._register = register
        self.holds = holds

    def __getattr__(self, name):
        return getattr(self._register, name)

    def resident(self, resident_code: str) -> dict | None:
        record = self._register.resident(resident_code)
        return None if record is None else held_record(record, self.holds.of(resident_code))

    def household(self, household_id: str) -> Household:
        found = self._register.household(household_id)
        return Household(found.household_id, [held_record(r, self.holds.of(r["resident_code"])) for r in found.active],
                         [held_record(r, self.holds.of(r["resident_code"])) for r in found.removed])

    def seals_of(self, resident_code: str) -> list[dict]:
        return [self._held_seal(seal) for seal in self._register.seals_of(resident_code)]

    def seal(self, seal_number: str) -> dict | None:
        seal = self._register.seal(seal_number)
        return None if seal is None else self._held_seal(seal)

    def _held_seal(self, seal: dict) -> dict:
        holds = self.holds.of_seal(seal["seal_number"])
        return {**seal, "holds": [hold.shown() for hold in holds]} if holds else seal

    def search_texts(self, **criteria) -> list[str]:
        """The register's search, where an address never matches a person
        under a 仮支援措置 either (as it never matches the register's own
        支援措置 residents)."""
        texts = self._register.search_texts(**criteria, protected_codes=self.holds.support_measure_codes())
        if not self.holds:
            return texts
        return [self._held_text(text) for text in texts]

    def protected_households(self, household_ids) -> set[str]:
        """The register's, and the households of residents under a
        仮支援措置."""
        ids = set(household_ids)
        held = {record["household_id"] for code in self.holds.support_measure_codes()
                if (record := self._register.resident(code)) is not None}
        return self._register.protected_households(ids) | (held & ids)

    def search(self, **criteria) -> list[dict]:
        return [json.loads(text) for text in self.search_texts(**criteria)]

    def _held_text(self, text: str) -> str:
        match = _RESIDENT_CODE.search(text)
        holds = self.holds.of(match.group(1)) if match else []
        return held_summary_text(text, holds) if holds else text

"""Holds as drill scenarios: the persona cases of the long outage are
people of the drill's synthetic register, each their own; a hold or a 届出
recorded at a drill counter is the drill's — it changes what that drill's
counter issues from its register, and nothing real sees it."""

from __future__ import annotations

from fallback.drills import personas
from fallback.ops import open_ops
from tests.drills.support import case_codes, drill_register, start_drill
from tests.support import PASSWORD, text_of

HOLD_CASES = ("hold_seal_lost", "hold_death", "hold_move_out", "hold_support_measure")


def test_the_long_outage_cases_are_people_of_their_own_in_the_drill_register(appliance):
    config = appliance.config["SONAE"]
    drill_id = start_drill(config, scenario="long_outage")
    codes = case_codes(config, drill_id)
    found = [codes[case] for case in personas.CASES if case in codes]
    assert all(codes[case] for case in HOLD_CASES) and len(set(found)) == len(found)
    with drill_register(config, drill_id) as register:
        holder = codes["hold_seal_lost"]
        assert any(s["status"] == "active" for s in register.seals_of(holder))
        dying = register.resident(codes["hold_death"])
        assert len(register.household(dying["household_id"]).active) >= 2


def test_a_hold_at_a_drill_counter_acts_on_the_drill_register_only(appliance, login):
    config = appliance.config["SONAE"]
    drill_id = start_drill(config, scenario="long_outage", participants=("clerk1",))
    codes = case_codes(config, drill_id)
    clerk = login("clerk1")
    with drill_register(config, drill_id) as register:
        seal = next(s for s in register.seals_of(codes["hold_seal_lost"]) if s["status"] == "active")
    seal_request = {"kind": "inkan", "requester_type": "self", "identity_document": "印鑑登録証", "seal_card_number": seal["card_number"]}
    recorded = clerk.post("/filings/new", {
        "resident_code": codes["hold_seal_lost"], "kind": "inkan_haishi", "notified_on": "R8.9.15", "notifier_name": "訓練　役",
        "notifier_relation": "self", "documents": "運転免許証", "inkan_haishi:seal_number": seal["seal_number"],
        "inkan_haishi:reason": "亡失", "approver": "boss", "approver_password": PASSWORD})
    assert recorded.status_code == 302, text_of(recorded)[:400]
    refused = clerk.api("POST", f"/api/v1/residents/{codes['hold_seal_lost']}/certificates", json=seal_request)
    assert refused.status_code == 422 and refused.get_json()["rule"] == "seal_held"
    conn = open_ops(config)
    assert conn.execute("SELECT scope, drill_id, kind FROM holds").fetchall() == [("drill", drill_id, "seal_lost")]
    assert conn.execute("SELECT scope, drill_id FROM filings").fetchall() == [("drill", drill_id)]
    # the supervisor's real list (not a participant) has none of it
    assert "保留はありません" in text_of(login("boss").get("/holds/"))
    assert conn.execute("SELECT count(*) FROM audit WHERE action IN ('hold.record', 'filing.record') AND drill = 1").fetchone() == (2,)

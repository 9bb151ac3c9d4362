"""Every issuance rule in both directions, at its boundary: the request just
inside is issued, the one just outside is refused with the rule's name.
Through the real app and API, so a rule dropped or inverted anywhere on the
way fails here."""

from __future__ import annotations

import pytest

from fallback.ops import open_ops
from tests.support import Staff

YAMADA_TARO, HANAKO, KATSURAGI = "10000000011", "10000000029", "10000000053"
# Issued more than once to the same person on purpose: the same-day repeat is confirmed.
SELF_REQUEST = {"kind": "juminhyo", "requester_type": "self", "identity_document": "運転免許証", "copies": 1, "confirm_repeat": True}


def issue(clerk, code, **fields):
    return clerk.api("POST", f"/api/v1/residents/{code}/certificates", json={**SELF_REQUEST, **fields})


def refused_by(response) -> str | None:
    assert response.status_code in (201, 422), response.get_json()
    return None if response.status_code == 201 else response.get_json()["rule"]


def test_an_agent_needs_a_letter_of_delegation(login, downtime):
    clerk = login("clerk1")
    agent = {"requester_type": "agent", "requester_name": "代理　人"}
    assert refused_by(issue(clerk, YAMADA_TARO, **agent)) == "agent_without_letter"
    assert refused_by(issue(clerk, YAMADA_TARO, **agent, delegation_letter=True)) is None


@pytest.mark.parametrize("allowed, rule", [(False, "third_party"), (True, None)])
def test_third_parties_follow_the_configuration(configure_app, downtime, allowed, rule):
    clerk = Staff(configure_app(counter={"third_party_during_downtime": allowed}), "clerk1")
    assert refused_by(issue(clerk, YAMADA_TARO, requester_type="third_party", requester_name="債権　者")) == rule


def test_the_daily_cap_counts_copies_up_to_the_cap_exactly(configure_app, downtime):
    clerk = Staff(configure_app(counter={"daily_cap_per_requester": 3}), "clerk1")
    assert refused_by(issue(clerk, YAMADA_TARO, copies=2)) is None
    assert refused_by(issue(clerk, YAMADA_TARO, copies=2)) == "daily_cap"  # 4 > 3
    assert refused_by(issue(clerk, YAMADA_TARO, copies=1)) is None  # 3 = 3
    assert refused_by(issue(clerk, YAMADA_TARO, copies=1)) == "daily_cap"


def test_the_daily_cap_does_not_count_voided_serials(appliance, configure_app, downtime):
    clerk = Staff(configure_app(counter={"daily_cap_per_requester": 2}), "clerk1")
    assert refused_by(issue(clerk, YAMADA_TARO, copies=2)) is None
    conn = open_ops(appliance.config["SONAE"])
    conn.execute("UPDATE certificates SET status = 'void'")  # never handed out (a render that never came)
    assert refused_by(issue(clerk, YAMADA_TARO, copies=2)) is None
    assert refused_by(issue(clerk, YAMADA_TARO, copies=1)) == "daily_cap"


def test_a_cap_of_zero_means_no_cap(configure_app, downtime):
    clerk = Staff(configure_app(counter={"daily_cap_per_requester": 0, "max_copies": 10}), "clerk1")
    for _ in range(2):
        assert refused_by(issue(clerk, YAMADA_TARO, copies=10)) is None


def test_copies_are_bounded_by_the_configured_maximum(configure_app, downtime):
    clerk = Staff(configure_app(counter={"max_copies": 3, "daily_cap_per_requester": 0}), "clerk1")
    assert issue(clerk, YAMADA_TARO, copies=3).status_code == 201
    assert issue(clerk, YAMADA_TARO, copies=4).status_code == 400
    assert issue(clerk, YAMADA_TARO, copies=0).status_code == 400


def _data_age_hours(appliance) -> float:
    from fallback.mirror.registry import snapshot_summary

    with appliance.app_context():
        return snapshot_summary(appliance.config["SONAE"]).age_hours


@pytest.mark.parametrize("margin, rule", [(-0.001, "kill_switch"), (0.05, None)])
def test_the_kill_switch_stops_its_type_just_past_its_age(appliance, configure_app, downtime, margin, rule):
    clerk = Staff(configure_app(counter={"kill_switch_hours": {"inkan": _data_age_hours(appliance) + margin}}), "clerk1")
    assert refused_by(issue(clerk, YAMADA_TARO, kind="inkan", seal_card_number="C00000011")) == rule
    assert refused_by(issue(clerk, YAMADA_TARO)) is None  # other types are not stopped


def test_serials_run_to_the_last_of_the_range_and_no_further(configure_app, downtime):
    clerk = Staff(configure_app(counter={"serial_range": [900001, 900003], "daily_cap_per_requester": 0}), "clerk1")
    issued = issue(clerk, YAMADA_TARO, copies=2)
    assert [c["serial"] for c in issued.get_json()["certificates"]] == [900001, 900002]
    assert refused_by(issue(clerk, YAMADA_TARO, copies=2)) == "serials_exhausted"
    assert [c["serial"] for c in issue(clerk, YAMADA_TARO, copies=1).get_json()["certificates"]] == [900003]
    assert refused_by(issue(clerk, YAMADA_TARO, copies=1)) == "serials_exhausted"


@pytest.mark.parametrize("typed", [" c00000011 ", "Ｃ００００００１１", "ｃ００００００１１", "C-0000-0011", "C　0000 0011"])
def test_a_seal_card_number_matches_however_the_keyboard_typed_it(login, downtime, typed):
    """Full width (the IME left on), lower case, spaces and hyphens: the same
    number, on the API and on the screen."""
    clerk = login("clerk1")
    assert refused_by(issue(clerk, YAMADA_TARO, kind="inkan", seal_card_number=typed)) is None
    form = {**SELF_REQUEST, "kind": "inkan", "seal_card_number": typed, "idempotency_key": "screen-form"}
    assert clerk.post(f"/counter/resident/{YAMADA_TARO}/issue", form).status_code == 302


@pytest.mark.parametrize("typed", ["C00000012", "Ｃ００００００１２", "C0000001"])
def test_another_seal_card_number_is_refused_whatever_its_width(login, downtime, typed):
    assert refused_by(issue(login("clerk1"), YAMADA_TARO, kind="inkan", seal_card_number=typed)) == "seal_card_mismatch"


def test_an_old_revoked_card_of_a_person_who_registered_anew_is_named_as_revoked(login, downtime):
    """山田 花子 holds S00000029 (card C00000029) and a revoked S99990001
    (card C99990001): the old card is told as 廃止, not as a wrong number."""
    clerk = login("clerk1")
    old_card = issue(clerk, HANAKO, kind="inkan", seal_card_number="ｃ９９９９０００１")
    assert refused_by(old_card) == "seal_revoked"
    assert "この印鑑登録証（S99990001）の登録は廃止されています" in old_card.get_json()["message"]
    assert refused_by(issue(clerk, HANAKO, kind="inkan", seal_card_number="C99990002")) == "seal_card_mismatch"
    assert refused_by(issue(clerk, HANAKO, kind="inkan", seal_card_number="C00000029")) is None

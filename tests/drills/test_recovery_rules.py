"""How a certificate's printed record is judged against the register as it
is after recovery (versions and updated_at, as the contract defines them)."""

from __future__ import annotations

import pytest

from fallback import recovery

ISSUED = "2025-01-06T14:00:00.000+09:00"


def resident(version: int, updated_at: str, **changes) -> dict:
    record = {"resident_code": "10000000011", "name": "山田　太郎", "status": "active", "support_measure": False,
              "address": {"prefecture": "東京都", "city": "大田区", "town": "西蒲田七丁目", "banchi": "49番1号", "katagaki": None},
              "removal": None, "version": version, "updated_at": updated_at}
    record.update(changes)
    return record


@pytest.mark.parametrize("current, verdict", [
    (resident(3, "2024-12-01T10:00:00+09:00"), recovery.UNCHANGED),
    (resident(4, "2025-01-06T11:30:00+09:00"), recovery.AT_RISK),  # changed upstream during the outage, before issue
    (resident(4, "2025-01-06T14:00:00+09:00"), recovery.AT_RISK),  # the same instant counts as before
    (resident(4, "2025-01-07T10:00:00+09:00"), recovery.CHANGED_AFTER_ISSUE),
    (resident(6, "2025-01-07T10:00:00+09:00"), recovery.UNCERTAIN),  # three changes, the last after issue
    (None, recovery.MISSING),
])
def test_verdicts(current, verdict):
    assert recovery.judge(3, ISSUED, current) == verdict


def test_the_difference_names_fields_as_staff_read_them_and_suggests_an_action():
    printed = resident(3, "2024-12-01T10:00:00+09:00")
    moved = resident(4, "2025-01-06T11:30:00+09:00", status="removed",
                     removal={"reason": "死亡", "occurred_on": "2025-01-05", "notified_on": "2025-01-06", "moved_to": None})
    changes = recovery.difference(printed, moved, 3)
    assert [(c["field"], c["printed"], c["now"]) for c in changes] == [("住民の状態", "住民", "除票"), ("除票の事由", "なし", "死亡（2025-01-05）")]
    assert "死亡の届出が済んでいました" in recovery.suggested_action(recovery.AT_RISK, changes, moved)

    support = resident(4, "2025-01-06T11:30:00+09:00", support_measure=True)
    changes = recovery.difference(printed, support, 3)
    assert "直ちに課長と支援措置の担当に報告" in recovery.suggested_action(recovery.AT_RISK, changes, support)

    address = resident(4, "2025-01-06T11:30:00+09:00", address={**printed["address"], "town": "蒲田五丁目", "banchi": "1番1号"})
    changes = recovery.difference(printed, address, 3)
    assert changes == [{"field": "住所", "key": "address", "printed": "東京都大田区西蒲田七丁目49番1号", "now": "東京都大田区蒲田五丁目1番1号"}]
    assert recovery.suggested_action(recovery.AT_RISK, changes, address).startswith("住所が変わっていました")
    assert recovery.suggested_action(recovery.CHANGED_AFTER_ISSUE, changes, address) == ""


def test_without_the_printed_record_only_versions_are_compared():
    assert recovery.difference(None, resident(5, "2025-01-06T11:30:00+09:00"), 3) == [{"field": "版", "printed": "3", "now": "5"}]

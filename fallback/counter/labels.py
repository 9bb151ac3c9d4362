"""What staff read for the counter's codes: every refusal rule, request
outcome and print state in Japanese, on every screen and report that
shows them (the counter, the supervisor's desk, recovery, the drill and
incident reports). The codes themselves stay in the API and the audit."""

from __future__ import annotations

# The rule identifiers of issuance.IssueRefused (the standard's, the
# holds' and the clock's included), and the service's same-day warning.
RULE_LABELS = {
    "support_measure": "支援措置の対象者（本人以外・承認なし）",
    "seal_revoked": "廃止された印鑑登録",
    "no_seal": "印鑑登録なし",
    "seal_card_mismatch": "印鑑登録証の番号違い",
    "johyo_for_active": "現在の住民に除票の写し",
    "removed_resident": "除票の方に除票の写し以外の証明書",
    "planned_move_out": "転出予定の確認なし",
    "third_party": "第三者からの請求",
    "agent_without_letter": "委任状のない代理人",
    "daily_cap": "1日の上限を超える請求",
    "kill_switch": "データが古すぎる種類",
    "data_too_old": "データが交付の上限より古い",
    "approval_failed": "係長の承認の失敗",
    "serials_exhausted": "発行番号の使い切り",
    "items_not_printed": "記載できない事項の確認",
    "official_without_staff_id": "職員の身分証明書のない公用請求",
    "official_without_purpose": "根拠の記入のない公用請求",
    "official_seal": "電子公印の未設定",
    "seal_held": "亡失・廃止の届出を受けた印鑑登録（保留）",
    "death_held": "死亡届を受けた方（保留）",
    "hold_approval": "保留のある方（承認なし）",
    "clock_implausible": "時計の狂いの疑い",
    "same_day_repeat": "本日交付済みの同じ証明書",
    "prefilled_form": "記入済み申請書の印刷（白紙の申請書を案内）",
}
OUTCOME_LABELS = {"issued": "交付", "refused": "お断り"}
PRINT_STATE_LABELS = {"completed": "印刷済み", "pending": "印刷待ち", "processing": "印刷中", "stopped": "プリンタ停止",
                      "failed": "印刷失敗"}


def rule_label(rule: str | None) -> str:
    """A refusal rule as staff read it; a rule this table does not know yet
    is shown as お断り rather than as its code."""
    if not rule:
        return ""
    return RULE_LABELS.get(rule, "その他のお断り")


def outcome_label(outcome: str) -> str:
    return OUTCOME_LABELS.get(outcome, outcome)

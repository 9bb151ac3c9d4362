"""Notice versions: drafted, edited, approved (then frozen), withdrawn —
every one kept with who approved it and when, and listed in the incident
report. Drill versions never become the public notice."""

from __future__ import annotations

import pytest

from fallback import audit, modes
from fallback.ops import now
from fallback.recovery import incident
from fallback.residents import notice

EDITED = {
    "ja": {"title": "【大田区】窓口のお知らせ", "body": "本日は住民票の写しを発行しています。\r\n\r\n■ 現在できないこと\r\n・転入届"},
    "easy": {"title": "まどぐちの おしらせ", "body": "じゅうみんひょうを もらえます。"},
    "en": {"title": "Ota City: counter notice", "body": "Certificates of residence are available today."},
}


def drafted(ops, config, *, actor="boss", scope="real", drill_id=None):
    situation = notice.assess(ops, config, data_as_of=now())
    return notice.create_draft(ops, config, situation, actor=actor, scope=scope, drill_id=drill_id)


def test_draft_edit_approve(ops, sonae_env):
    modes.change(ops, modes.DOWNTIME, actor="boss", role="supervisor", reason="住民記録システム障害")
    version_id = drafted(ops, sonae_env)
    version = notice.get(ops, version_id)
    assert version.status == notice.DRAFT and version.texts == version.drafted_texts
    assert version.next_update is not None
    assert notice.current_public(ops) is None

    notice.save_draft(ops, version_id, EDITED, None, actor="boss2")
    edited = notice.get(ops, version_id)
    # Browsers send CRLF; stored text has plain newlines.
    assert edited.texts["ja"]["body"] == "本日は住民票の写しを発行しています。\n\n■ 現在できないこと\n・転入届"
    assert edited.drafted_texts["ja"]["title"] == "【大田区】住民記録システムの障害のお知らせ"
    assert (edited.edited_by, edited.next_update_at) == ("boss2", None)

    approved = notice.approve(ops, version_id, actor="boss")
    assert approved.status == notice.APPROVED and approved.approved_by == "boss" and approved.approved_at
    assert notice.current_public(ops).id == version_id
    actions = [e["action"] for e in audit.entries(ops, action="notice.")]
    assert actions == ["notice.draft", "notice.edit", "notice.approve"]


def test_an_approved_version_is_frozen_and_kept(ops, sonae_env):
    version_id = drafted(ops, sonae_env)
    notice.approve(ops, version_id, actor="boss")
    with pytest.raises(notice.NoticeError, match="下書きではない"):
        notice.save_draft(ops, version_id, EDITED, None, actor="boss")
    # Not even a direct write to the database changes or removes it.
    with pytest.raises(Exception, match="cannot be changed"):
        ops.execute("UPDATE notice_versions SET texts = '{}' WHERE id = ?", (version_id,))
    with pytest.raises(Exception, match="are kept"):
        ops.execute("DELETE FROM notice_versions WHERE id = ?", (version_id,))
    # Correcting it means a new draft, and a new approval.
    copy_id = notice.copy_as_draft(ops, version_id, actor="boss2")
    notice.save_draft(ops, copy_id, EDITED, None, actor="boss2")
    notice.approve(ops, copy_id, actor="boss2")
    assert notice.current_public(ops).texts["ja"]["title"] == "【大田区】窓口のお知らせ"
    assert [v.id for v in notice.versions(ops)] == [copy_id, version_id]


def test_incomplete_texts_are_refused(ops, sonae_env):
    version_id = drafted(ops, sonae_env)
    missing_english = {**EDITED, "en": {"title": "", "body": "x"}}
    with pytest.raises(notice.NoticeError, match="Englishの見出しと本文"):
        notice.save_draft(ops, version_id, missing_english, None, actor="boss")
    two_line_title = {**EDITED, "ja": {"title": "一行目\n二行目", "body": "本文"}}
    with pytest.raises(notice.NoticeError, match="1行"):
        notice.save_draft(ops, version_id, two_line_title, None, actor="boss")


def test_withdraw_and_discard(ops, sonae_env):
    version_id = drafted(ops, sonae_env)
    notice.approve(ops, version_id, actor="boss")
    withdrawn = notice.withdraw(ops, actor="boss2")
    assert (withdrawn.withdrawn_by, withdrawn.status) == ("boss2", notice.APPROVED)
    assert notice.current_public(ops) is None
    with pytest.raises(notice.NoticeError, match="掲載中のお知らせはありません"):
        notice.withdraw(ops, actor="boss")
    draft_id = drafted(ops, sonae_env)
    notice.discard(ops, draft_id, actor="boss")
    assert notice.get(ops, draft_id).status == notice.DISCARDED
    with pytest.raises(notice.NoticeError):
        notice.approve(ops, draft_id, actor="boss")


def test_drill_versions_are_never_public(ops, sonae_env):
    real_id = drafted(ops, sonae_env)
    notice.approve(ops, real_id, actor="boss")
    drill_id = drafted(ops, sonae_env, scope="drill", drill_id=7)
    notice.approve(ops, drill_id, actor="boss")
    assert notice.current_public(ops).id == real_id
    assert [v.id for v in notice.versions(ops, scope="drill", drill_id=7)] == [drill_id]
    assert [e["drill"] for e in audit.entries(ops, action="notice.approve")] == [False, True]


def test_versions_appear_in_the_incident_report(ops, sonae_env):
    modes.change(ops, modes.DOWNTIME, actor="boss", role="supervisor", reason="住民記録システム障害")
    first = drafted(ops, sonae_env)
    notice.approve(ops, first, actor="boss")
    second = notice.copy_as_draft(ops, first, actor="boss2")
    notice.save_draft(ops, second, EDITED, None, actor="boss2")
    notice.approve(ops, second, actor="boss2")
    drill_version = drafted(ops, sonae_env, scope="drill", drill_id=3)
    notice.approve(ops, drill_version, actor="boss")

    facts = incident.gather(ops, incident.incidents(ops)[0], runbook_list=[])
    report = incident.report_markdown(facts, sonae_env)
    section = report.split("## 住民へのお知らせ")[1].split("\n## ")[0]
    first_row = next(line for line in section.splitlines() if line.startswith(f"| 第{first}版"))
    assert "| boss |" in first_row and "【大田区】住民記録システムの障害のお知らせ" in first_row
    assert f"| 第{second}版" in section and "| boss2 |" in section
    assert f"第{drill_version}版" not in section
    # The approved wording itself, quoted line by line.
    assert "> 本日は住民票の写しを発行しています。  " in section
    assert "> ■ 現在できないこと  " in section

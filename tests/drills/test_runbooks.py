"""Runbooks: the files follow the convention, their commands exist in the
real CLI, and ticks are recorded with time and person in the right scope."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from fallback import audit, runbooks
from fallback.cli import main
from fallback.ops import open_ops
from tests.support import text_of

RUNBOOK_DIR = Path(__file__).resolve().parents[2] / "runbooks"
REQUIRED = ("01-shoki-taio", "02-downtime-madoguchi", "03-bubun-shogai", "04-paper-only", "05-fukkyu-kakunin",
            "06-nenji-kunren", "07-kagi-kanri", "08-snapshot-restore", "09-disk-full", "10-tokei", "11-nidai-kosei")


def test_every_runbook_follows_the_convention():
    books = {book.slug: book for book in runbooks.load_all(RUNBOOK_DIR)}
    assert tuple(books) == REQUIRED
    for book in books.values():
        assert book.steps, book.slug
        assert all(step.role in runbooks.STEP_ROLES for step in book.steps)
    # explanations under a step are not steps, and not part of the step's text
    first_15_minutes = books["01-shoki-taio"]
    declare = next(s for s in first_15_minutes.steps if "ダウン対策モードを宣言する" in s.text)
    assert declare.role == "係長" and "03 部分障害" not in declare.text
    assert not any(s.text.startswith("住民票の写し・住民票記載事項証明書") for s in first_15_minutes.steps)


@pytest.mark.parametrize("content, message", [
    ("# 題\n\n1. 【係長】宣言する。\n2. 【守衛】門を閉める。\n", "unknown role 【守衛】"),
    ("# 題\n\n1. 【係長】宣言する。\n2. 【係長】宣言する。\n", "appears twice"),
    ("題\n\n1. 【係長】宣言する。\n", "title"),
    ("# 題\n\n1. 係長が宣言する。\n", "no steps"),
    ("# 題\n\n1. 【係長 宣言する。\n", "close the role"),
])
def test_a_runbook_off_the_convention_is_refused_with_its_file_name(tmp_path, content, message):
    (tmp_path / "09-test.md").write_text(content, encoding="utf-8")
    with pytest.raises(runbooks.RunbookError, match=message) as error:
        runbooks.load(tmp_path, "09-test")
    assert "09-test" in str(error.value)


def test_step_ids_survive_reordering_and_change_with_the_wording(tmp_path):
    (tmp_path / "09-a.md").write_text("# 題\n\n1. 【係長】一つめ。\n2. 【窓口職員】二つめ。\n", encoding="utf-8")
    (tmp_path / "09-b.md").write_text("# 題\n\n1. 【窓口職員】二つめ。\n2. 【係長】一つめ（改）。\n", encoding="utf-8")
    a, b = runbooks.load(tmp_path, "09-a"), runbooks.load(tmp_path, "09-b")
    assert a.steps[1].id == b.steps[0].id
    assert a.steps[0].id not in {s.id for s in b.steps}


def _sonae_commands() -> list[str]:
    found = []
    for path in sorted(RUNBOOK_DIR.glob("[0-9][0-9]-*.md")):
        found += [m for m in re.findall(r"`(sonae [^`]+)`", path.read_text(encoding="utf-8"))]
    return found


def test_runbooks_name_the_real_cli_commands_and_options():
    commands = _sonae_commands()
    assert {c.split()[1] for c in commands} >= {"key", "snapshot", "sync", "audit", "drill"}
    for command in commands:
        words = shlex.split(command)[1:]
        current: click.Command = main
        ctx = click.Context(main)
        while isinstance(current, click.Group) and words and not words[0].startswith("-"):
            sub = current.get_command(ctx, words[0])
            assert sub is not None, f"{command}: `{words[0]}` is not a sonae command"
            current, words = sub, words[1:]
        options = {name for param in current.params for name in getattr(param, "opts", [])}
        for word in words:
            if word.startswith("--"):
                assert word in options, f"{command}: {word} is not an option of this command"


# --- in the app ----------------------------------------------------------------


def test_the_runbook_for_the_current_mode_comes_first(login, downtime):
    page = text_of(downtime.get("/runbooks/"))
    fitting = page[page.index("いまの状況に合う手順書"):page.index("すべての手順書")]
    assert "障害発生時の初動" in fitting and "ダウン対策モード中の窓口対応" in fitting and "復旧後の確認" not in fitting


def test_a_tick_is_recorded_with_time_and_person_and_can_be_withdrawn(appliance, login, downtime):
    book = runbooks.load(RUNBOOK_DIR, "01-shoki-taio")
    step = book.steps[3]
    response = downtime.post(f"/runbooks/01-shoki-taio/steps/{step.id}", {"done": "1"})
    assert response.status_code == 302
    page = downtime.get("/runbooks/01-shoki-taio").get_data(as_text=True)
    item = page[page.index(f'id="step-{step.id}"'):]
    assert "✔ 完了" in item[:400] and "boss" in item[:400]
    assert "完了 1 / 11" in text_of(downtime.get("/runbooks/01-shoki-taio"))

    downtime.post(f"/runbooks/01-shoki-taio/steps/{step.id}", {"done": "0"})
    assert "完了 0 / 11" in text_of(downtime.get("/runbooks/01-shoki-taio"))
    conn = open_ops(appliance.config["SONAE"])
    history = runbooks.tick_history(conn, drill_id=None)
    assert [(t.step_id, t.actor, t.done, t.role) for t in history] == [(step.id, "boss", True, "係長"), (step.id, "boss", False, "係長")]


def test_clerks_read_runbooks_but_do_not_tick(login, downtime):
    clerk = login("clerk1")
    book = runbooks.load(RUNBOOK_DIR, "02-downtime-madoguchi")
    page = clerk.get("/runbooks/02-downtime-madoguchi")
    assert page.status_code == 200 and "完了にする" not in page.get_data(as_text=True)
    assert clerk.post(f"/runbooks/02-downtime-madoguchi/steps/{book.steps[0].id}", {"done": "1"}).status_code == 403


def test_the_drill_coordinator_ticks_no_step_of_a_real_incident(appliance, login, downtime):
    """Outside a drill their tick would go into the real incident's report
    as a step done: refused (audited), and the page offers none."""
    coordinator = login("coord")
    step = runbooks.load(RUNBOOK_DIR, "01-shoki-taio").steps[1]
    page = coordinator.get("/runbooks/01-shoki-taio")
    assert page.status_code == 200 and "完了にする" not in page.get_data(as_text=True)
    refused = coordinator.post(f"/runbooks/01-shoki-taio/steps/{step.id}", {"done": "1"})
    assert refused.status_code == 403 and "訓練中の手順だけ" in text_of(refused)
    conn = open_ops(appliance.config["SONAE"])
    assert runbooks.tick_history(conn, drill_id=None) == []
    assert [e["actor"] for e in audit.entries(conn, action="records.denied")] == ["coord"]


def test_checklists_start_clean_for_each_incident(login, downtime):
    step = runbooks.load(RUNBOOK_DIR, "05-fukkyu-kakunin").steps[0]
    downtime.post("/supervisor/mode", {"to_mode": "recovery", "reason": "住民記録システム復旧"})
    downtime.post(f"/runbooks/05-fukkyu-kakunin/steps/{step.id}", {"done": "1"})
    assert "完了 1 / 17" in text_of(downtime.get("/runbooks/05-fukkyu-kakunin"))
    downtime.post("/supervisor/mode", {"to_mode": "standby", "reason": "復旧後の確認完了"})
    downtime.post("/supervisor/mode", {"to_mode": "downtime", "reason": "住民記録システム障害"})
    assert "完了 0 / 17" in text_of(downtime.get("/runbooks/05-fukkyu-kakunin"))


def test_the_paper_kit_is_a_blank_request_form_and_a_numbered_ledger(login, tmp_path):
    from tests.support import pdf_text

    boss = login("boss")
    page = boss.get("/runbooks/").get_data(as_text=True)
    assert 'href="/forms/request-blank.pdf"' in page and 'href="/runbooks/ledger.pdf"' in page
    response = boss.get("/runbooks/ledger.pdf")
    assert response.mimetype == "application/pdf"
    text = pdf_text(response.data, tmp_path)
    assert "手書き交付台帳" in text and "本庁-01-14" in text and "本庁-03-01" in text
    assert "訓練" not in text


def test_the_runbooks_name_the_upstream_parts_as_the_dashboard_does():
    """IT reads the dashboard's names and looks for them in the steps (they
    said 住民記録API, which the dashboard never shows, and left out the read
    check, the one part that alone can raise a suspicion)."""
    from fallback.monitoring.probes import COMPONENT_LABELS

    for slug in ("01-shoki-taio", "05-fukkyu-kakunin"):
        text = (RUNBOOK_DIR / f"{slug}.md").read_text(encoding="utf-8")
        assert all(label in text for label in COMPONENT_LABELS.values()), slug
        assert "住民記録API" not in text

"""Runbooks: the Japanese procedures in runbooks/, shown in the app, with
steps a supervisor ticks off as they are done.

The file convention (also in runbooks/README.md, for the staff who edit
them):

- the first `# ` heading is the title;
- a *step* is a list item (numbered or not, at any depth) whose text starts
  with the role that does it in 【】, e.g. `1. 【係長】ダウン対策モードを宣言する。`;
  the role must be one of STEP_ROLES;
- every other list item is explanation (what to say, examples), not a step.

A step is identified by a hash of its role and wording, so re-ordering the
file keeps its ticks, and rewording a step makes it a new step (a tick on
the old wording no longer applies to the new one).

Ticks are appended, never updated: withdrawing a tick is a new row with
done = 0, so the incident report can show who ticked what and when. A tick
belongs to a drill when the person ticking is taking part in an active
drill; otherwise it is real and belongs to the current incident.
"""

from __future__ import annotations

import hashlib
import re
import xml.etree.ElementTree as etree
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import markdown
from markdown.extensions import Extension
from markdown.treeprocessors import Treeprocessor

from fallback import audit, drills, modes
from fallback.config import Config
from fallback.errors import SonaeError
from fallback.ops import Transaction, now_iso

STEP_ROLES = ("係長", "窓口職員", "情報政策課", "訓練担当", "監査担当", "課長", "広報担当")
_STEP_RE = re.compile(r"^【(?P<role>[^】]+)】\s*(?P<text>\S.*)$", re.S)
_SLUG_RE = re.compile(r"^\d{2}-[a-z0-9-]+$")

# Which runbooks fit the moment. The downtime reason is the first item of
# modes.DOWNTIME_REASONS the supervisor picked.
FOR_MODE = {
    modes.STANDBY: (),
    modes.SUSPECT: ("01-shoki-taio", "03-bubun-shogai"),
    modes.DOWNTIME: ("01-shoki-taio", "02-downtime-madoguchi"),
    modes.RECOVERY: ("05-fukkyu-kakunin",),
}
PARTIAL_OUTAGE_REASONS = ("住基ネット連携障害", "夜間バッチ処理の遅延")
FOR_SCENARIO = {
    "full_outage": ("06-nenji-kunren", "01-shoki-taio", "02-downtime-madoguchi", "05-fukkyu-kakunin"),
    "juki_net": ("06-nenji-kunren", "03-bubun-shogai"),
    "batch_stuck": ("06-nenji-kunren", "03-bubun-shogai"),
    "paper_only": ("06-nenji-kunren", "04-paper-only"),
    "long_outage": ("06-nenji-kunren", "01-shoki-taio", "02-downtime-madoguchi", "05-fukkyu-kakunin"),
    "custom": ("06-nenji-kunren", "01-shoki-taio"),
}


class RunbookError(SonaeError):
    """A runbook file that does not follow the convention; the message names
    the file and what to fix."""


@dataclass(frozen=True)
class Step:
    id: str
    number: int  # 1-based, in document order
    role: str
    text: str


@dataclass(frozen=True)
class Runbook:
    slug: str
    title: str
    source: str
    steps: tuple[Step, ...]

    def step(self, step_id: str) -> Step | None:
        return next((s for s in self.steps if s.id == step_id), None)


def runbook_dir(config: Config) -> Path:
    configured = config["web"]["runbooks_dir"]
    return Path(configured) if configured else Path(__file__).resolve().parents[2] / "runbooks"


def load_all(directory: Path) -> list[Runbook]:
    return [load(directory, path.stem) for path in sorted(directory.glob("[0-9][0-9]-*.md"))]


def load(directory: Path, slug: str) -> Runbook:
    if not _SLUG_RE.match(slug):
        raise RunbookError(f"{slug!r} is not a runbook name")
    path = directory / f"{slug}.md"
    if not path.is_file():
        raise RunbookError(f"runbook {path} does not exist")
    source = path.read_text(encoding="utf-8")
    title = next((line[2:].strip() for line in source.splitlines() if line.startswith("# ")), None)
    if not title:
        raise RunbookError(f"{path}: the first line must be the title as '# タイトル'")
    steps: list[Step] = []
    _convert(source, path, on_step=steps.append)
    if not steps:
        raise RunbookError(f"{path}: no steps; write each step as a list item starting with 【役割】")
    return Runbook(slug, title, source, tuple(steps))


def render_html(runbook: Runbook, step_html: Callable[[Step], str]) -> str:
    """The runbook as HTML; each step's <li> gets id="step-<id>", class
    "step", and whatever `step_html(step)` returns (the tick control)."""
    return _convert(runbook.source, Path(runbook.slug), on_step=lambda step: None, step_html=step_html)


def _convert(source: str, path: Path, *, on_step: Callable[[Step], None], step_html: Callable[[Step], str] | None = None) -> str:
    md = markdown.Markdown(extensions=["tables", "sane_lists", _StepExtension(path, on_step, step_html)])
    return md.convert(source)


class _StepExtension(Extension):
    def __init__(self, path, on_step, step_html):
        super().__init__()
        self.path, self.on_step, self.step_html = path, on_step, step_html

    def extendMarkdown(self, md):
        # After the unescape processor (priority 0), so step text is final.
        md.treeprocessors.register(_StepProcessor(md, self), "sonae_steps", -10)


class _StepProcessor(Treeprocessor):
    def __init__(self, md, extension):
        super().__init__(md)
        self.extension = extension

    def run(self, root):
        seen: set[str] = set()
        for li in root.iter("li"):
            text = _own_text(li)
            match = _STEP_RE.match(text)
            if not match:
                if text.startswith("【"):
                    raise RunbookError(f"{self.extension.path}: {text[:30]!r} starts with 【 but is not a step; close the role with 】")
                continue
            role, wording = match["role"], match["text"]
            if role not in STEP_ROLES:
                raise RunbookError(f"{self.extension.path}: unknown role 【{role}】; use one of {', '.join(STEP_ROLES)}")
            step_id = hashlib.sha256(f"{role}|{wording}".encode()).hexdigest()[:10]
            if step_id in seen:
                raise RunbookError(f"{self.extension.path}: the step {wording[:30]!r} appears twice; steps must differ")
            seen.add(step_id)
            step = Step(step_id, len(seen), role, wording)
            self.extension.on_step(step)
            li.set("id", f"step-{step_id}")
            li.set("class", "step")
            if self.extension.step_html is not None:
                control = etree.Element("span")
                control.set("class", "step-control")
                control.text = self.md.htmlStash.store(self.extension.step_html(step))
                control.tail, li.text = li.text, None
                li.insert(0, control)
        return root


def _own_text(li) -> str:
    """The list item's own words, without nested lists (explanations under a
    step are not part of the step)."""
    parts = [li.text or ""]
    for child in li:
        if child.tag in ("ul", "ol"):
            parts.append(child.tail or "")
            continue
        parts.append("".join(child.itertext()))
        parts.append(child.tail or "")
    return " ".join("".join(parts).split())


# --- which runbooks fit now ----------------------------------------------------


def relevant(state: modes.ModeState, drill: drills.Drill | None) -> tuple[str, ...]:
    """The runbooks for the current moment: the drill's when the viewer
    takes part in an active drill, otherwise the mode's."""
    if drill is not None:
        return FOR_SCENARIO[drill.scenario]
    slugs = FOR_MODE[state.mode]
    if state.mode == modes.DOWNTIME and state.reason.startswith(PARTIAL_OUTAGE_REASONS):
        slugs = ("01-shoki-taio", "03-bubun-shogai", "02-downtime-madoguchi")
    return slugs


def drill_of(conn, username: str, terminal: str) -> drills.Drill | None:
    """The active drill this staff member takes part in, if any: their ticks
    (and the runbooks they see) belong to it."""
    drill = drills.active_drill(conn)
    return drill if drill is not None and drill.includes(username, terminal) else None


# --- ticks ---------------------------------------------------------------------


@dataclass(frozen=True)
class Tick:
    at: str
    runbook: str
    step_id: str
    step_text: str
    role: str
    actor: str
    done: bool


_TICK_COLUMNS = "at, runbook, step_id, step_text, role, actor, done"


def _tick(row) -> Tick:
    return Tick(*row[:6], bool(row[6]))


def current_run_start(conn) -> str:
    """Where the real checklist starts: the moment the current incident began
    (the last change away from standby) or, in standby, the last return to
    it — so every incident starts with clean checklists."""
    row = conn.execute(
        "SELECT at FROM mode_changes WHERE from_mode = ? OR to_mode = ? ORDER BY id DESC LIMIT 1", (modes.STANDBY, modes.STANDBY)
    ).fetchone()
    return row[0] if row else ""


def record_tick(conn, runbook: Runbook, step_id: str, *, done: bool, actor: str, drill_id: int | None) -> Tick:
    step = runbook.step(step_id)
    if step is None:
        raise RunbookError("この手順は手順書から変更または削除されています。画面を開き直してください。")
    scope = "drill" if drill_id is not None else "real"
    stamp = now_iso()
    with Transaction(conn):
        conn.execute(
            "INSERT INTO runbook_ticks (at, scope, drill_id, runbook, step_id, step_text, role, actor, done) VALUES (?,?,?,?,?,?,?,?,?)",
            (stamp, scope, drill_id, runbook.slug, step.id, step.text, step.role, actor, int(done)),
        )
        audit.append(conn, actor, "runbook.tick" if done else "runbook.untick", f"{runbook.slug}#{step.id}",
                     {"step": step.number, "drill": drill_id}, drill=drill_id is not None)
    return Tick(stamp, runbook.slug, step.id, step.text, step.role, actor, done)


def tick_history(conn, *, drill_id: int | None, since: str = "", until: str | None = None) -> list[Tick]:
    """Every tick and withdrawal in order: of one drill, or real ones within
    [since, until]."""
    if drill_id is not None:
        rows = conn.execute(f"SELECT {_TICK_COLUMNS} FROM runbook_ticks WHERE scope = 'drill' AND drill_id = ? ORDER BY id", (drill_id,))
    else:
        rows = conn.execute(
            f"SELECT {_TICK_COLUMNS} FROM runbook_ticks WHERE scope = 'real' AND at >= ? AND at <= ? ORDER BY id",
            (since, until or "9999"),
        )
    return [_tick(r) for r in rows]


def tick_state(history: list[Tick]) -> dict[tuple[str, str], Tick]:
    """(runbook, step id) -> the tick now standing (withdrawn ones removed)."""
    state: dict[tuple[str, str], Tick] = {}
    for tick in history:
        key = (tick.runbook, tick.step_id)
        if tick.done:
            state[key] = tick
        else:
            state.pop(key, None)
    return state

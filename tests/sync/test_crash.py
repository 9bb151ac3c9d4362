"""A crash at any instant leaves the old or the new generation current, both
intact: `sonae sync` is SIGKILLed at random points and the store is checked
after each kill."""

from __future__ import annotations

import itertools
import os
import random
import re
import signal
import subprocess
import sys
import time

import pytest

from fallback.mirror.syncing import INTERRUPTED, SyncStopped, run_changes, run_full_sync
from tests.sync.conftest import SONAE, reload_config, run_sonae, sync_runs
from tests.sync.exports import change, make_resident, population, write_export
from tests.sync.test_load import parsing_processes_of_this_test


def _kill_after(args: list[str], delay: float) -> int | None:
    """Start `sonae *args`, SIGKILL it after `delay` s; returns its exit code
    if it finished first."""
    process = subprocess.Popen([SONAE, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        return process.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.wait()
        return None


def _assert_intact(store, allowed: set[int]) -> int:
    current = store.current()
    assert current in allowed, (current, allowed)
    report = store.verify()
    assert report.ok, report.problems
    with store.open_register() as register:
        assert register.meta.generation == current
        assert register.search(kana="ヤマダ")
    return current


def test_sigkill_during_full_load_leaves_a_usable_generation(config, store, tmp_path):
    residents, seals = population(5000)
    write_export(tmp_path / "export", residents, seals)
    started = time.monotonic()
    run_full_sync(config, tmp_path / "export")
    duration = time.monotonic() - started + 0.8  # plus the command's start-up
    rng = random.Random(20261124)
    outcomes = []
    for _ in range(6):
        before = store.current()
        code = _kill_after(["sync", "full", "--from", str(tmp_path / "export")], rng.uniform(0.05, duration * 1.2))
        current = _assert_intact(store, {before, before + 1} | set(store.generation_numbers()))
        outcomes.append((code, current != before))
    # and once for certain in the middle: while the new generation is being built
    before = store.current()
    process = subprocess.Popen([SONAE, "sync", "full", "--from", str(tmp_path / "export")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not list(store.directory.glob("*.tmp")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "the load ended before the kill: not a mid-load crash"
    assert _assert_intact(store, {before}) == before
    # Leftovers of killed builds are cleaned by the next writer, which also
    # records the killed runs as interrupted.
    result = run_sonae("sync", "full", "--from", str(tmp_path / "export"))
    assert result.returncode == 0, result.stderr
    assert not [p.name for p in store.directory.iterdir() if p.name.endswith((".tmp", ".deleting"))]
    verify = run_sonae("snapshot", "verify")
    assert verify.returncode == 0 and "ok" in verify.stdout, verify.stderr
    runs = sync_runs(config)
    assert runs[-1]["outcome"] == "ok"
    assert all(r["outcome"] == "ok" or (r["outcome"] == "failed" and r["error"] == INTERRUPTED) for r in runs[:-1]), runs
    assert any(code is None for code, _ in outcomes), "at least one run was killed mid-way"


SIGTERM, CTRL_C = (signal.SIGTERM, "SIGTERM", 143), (signal.SIGINT, r"Ctrl-C \(SIGINT\)", 130)


@pytest.mark.parametrize(("sent", "gap"), [
    ([SIGTERM], 0.01), ([CTRL_C], 0.01), ([SIGTERM] * 2, 0.01), ([CTRL_C] * 3, 0.01),
    # Pending together, they are handled in number order: Ctrl-C first.
    ([SIGTERM, CTRL_C], 0),
], ids=["sigterm", "ctrl-c", "sigterm-twice", "ctrl-c-thrice", "sigterm-and-ctrl-c-at-once"])
def test_a_full_load_stopped_by_a_signal_says_so_and_is_recorded_as_stopped(config, store, tmp_path, sent, gap):
    # `systemctl stop` or an operator's Ctrl-C while the new generation is
    # built: the load unwinds — the build discarded, the current generation
    # serving — tells the operator in one line, and the run is recorded as
    # stopped at once, not left "running" for the next sync to find. An
    # impatient second Ctrl-C must not cut that clean-up short (it crashed
    # the process: a connection closed under the thread inserting rows).
    residents, seals = population(20000)
    write_export(tmp_path / "export", residents, seals)
    run_full_sync(config, tmp_path / "export")
    before = store.current()
    process = subprocess.Popen([SONAE, "sync", "full", "--from", str(tmp_path / "export")], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list(store.directory.glob("*.tmp")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    for signum, _, _ in sent:
        process.send_signal(signum)
        time.sleep(gap)
    out, err = process.communicate(timeout=60)
    _, how, status = next((s for s in sent if re.search(f"stopped by {s[1]} before", err)), sent[0])  # the one handled first
    assert process.returncode == status, (out, err)
    reason = rf"stopped by {how} before finishing; nothing half-done was kept and generation {before} kept serving"
    assert re.fullmatch(rf"Error: {reason}; rerun when ready\n", err)
    assert "Traceback" not in err and "Aborted" not in err
    assert _assert_intact(store, {before}) == before
    assert not list(store.directory.glob("*.tmp"))
    last = sync_runs(config)[-1]
    assert last["outcome"] == "stopped" and last["finished_at"] is not None
    assert re.fullmatch(reason, last["error"])


def test_a_stop_signal_while_the_new_generation_is_installed_lets_the_load_finish(config, store, tmp_path, capsys, signal_handlers_restored):
    # Once the new generation is built and checked, installing and promoting
    # it takes a moment (an fsync of gigabytes at 4M). A signal then must
    # not report "stopped, nothing kept" while the new generation serves:
    # it is held back, the load completes and is recorded as it happened.
    import os

    from fallback.mirror.sync_commands import StopSignals

    residents, seals = population(300)
    write_export(tmp_path / "export", residents, seals)
    stop = StopSignals()

    def committing() -> None:
        stop.hold()
        os.kill(os.getpid(), signal.SIGTERM)  # handled before the next line of Python runs

    with stop.installed():
        result = run_full_sync(config, tmp_path / "export", committing=committing)
    assert stop.received == signal.SIGTERM
    assert store.current() == result.generation
    last = sync_runs(config)[-1]
    assert (last["outcome"], last["generation"], last["error"]) == ("ok", result.generation, None)
    assert capsys.readouterr().err == "SIGTERM arrived while the new generation was being installed: the load was completed first\n"


def test_a_stop_request_ends_a_full_load_at_any_of_its_steps(config, store, tmp_path):
    # The worker's stop (fallback.mirror.syncing.StopRequest) is seen where
    # the load calls stop_if_asked: each export block, each slice of the
    # summaries, each index, each page of the catch-up. At the first, a
    # middle and the last of them, the load unwinds as after an error.
    residents, seals = population(10000)  # summaries in two slices
    write_export(tmp_path / "export", residents, seals)
    calls = []
    run_full_sync(config, tmp_path / "export", stop_if_asked=lambda: calls.append(1))
    assert len(calls) > 10, "blocks, slices and indexes each ask"
    for stop_at in sorted({1, len(calls) // 2, len(calls)}):
        asked = itertools.count(1)

        def stop_if_asked(asked=asked, stop_at=stop_at):
            if next(asked) == stop_at:
                raise SyncStopped(signal.SIGTERM)

        before = store.current()
        with pytest.raises(SyncStopped):
            run_full_sync(config, tmp_path / "export", stop_if_asked=stop_if_asked)
        assert _assert_intact(store, {before}) == before
        assert not [p.name for p in store.directory.iterdir() if p.name.endswith((".tmp", ".deleting"))]
        last = sync_runs(config)[-1]
        assert (last["outcome"], last["generation"]) == ("stopped", None), stop_at
        assert last["error"].startswith("stopped by SIGTERM before finishing")
        assert parsing_processes_of_this_test() == []


def _applied_seq(store) -> int:
    with store.open_register() as register:
        return register.meta.last_seq


def test_sigkill_during_change_feed_leaves_whole_pages(loaded, store, upstream):
    """Killed right after a page commits — while later pages are still to
    come (asserted) — the generation holds whole pages only, and the next
    run finishes the feed from there."""
    page, pages = 20, 150
    end = 1000 + page * pages
    upstream.changes = [change(1001 + i, make_resident(5000 + i)) for i in range(page * pages)]
    env = {"SONAE_SYNC_CHANGES_BATCH": str(page)}
    killed_at = []
    for _ in range(3):
        before = _applied_seq(store)
        process = subprocess.Popen([SONAE, "sync", "changes"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **env})
        deadline = time.monotonic() + 60
        while _applied_seq(store) == before and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
        process.wait()
        _assert_intact(store, {1})
        applied = _applied_seq(store)
        killed_at.append(applied)
        assert before < applied < end, f"the kill came after the feed had ended (seq {applied} of {end}): not a mid-feed crash"
        with store.open_register() as register:
            meta = register.meta
        assert (meta.last_seq - 1000) % page == 0 and meta.residents == 30 + meta.last_seq - 1000
    assert killed_at == sorted(killed_at)
    result = run_changes(reload_config())
    assert result.last_seq == end
    assert store.verify().ok


LOAD_WITH_WORKERS = """
import sys
from pathlib import Path
from fallback.config import load_config
from fallback.mirror.registry import snapshot_store
from fallback.mirror.syncing import upstream_public_key
from sync.loader import load_full
from sync.upstream import DirectoryUpstream

if __name__ == "__main__":
    config = load_config()
    load_full(DirectoryUpstream(Path(sys.argv[1])), snapshot_store(config), public_key=upstream_public_key(config),
              municipality_code="131113", workers=2)
"""


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def test_sigkill_while_worker_processes_parse_leaves_no_orphans(config, store, tmp_path):
    residents, seals = population(20000)
    write_export(tmp_path / "export", residents, seals)
    run_full_sync(config, tmp_path / "export")
    script = tmp_path / "load.py"
    script.write_text(LOAD_WITH_WORKERS)
    process = subprocess.Popen([sys.executable, str(script), str(tmp_path / "export")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not list(store.directory.glob("*.tmp")) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    time.sleep(0.5)  # parsing under way
    helpers = _descendants(process.pid)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert helpers, "the load had started worker processes"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(os.path.exists(f"/proc/{pid}") for pid in helpers):
        time.sleep(0.2)
    alive = [pid for pid in helpers if os.path.exists(f"/proc/{pid}") and "Z" not in open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]]
    assert not alive, f"worker processes outlived the killed load: {alive}"
    _assert_intact(store, {1})

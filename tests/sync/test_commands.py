"""The sync, snapshot and key commands: one-line failures, keys, the lock."""

from __future__ import annotations

import json
import re

import pytest

from fallback.keys import master_key
from fallback.mirror.registry import snapshot_store
from sync import crypto
from sync.schema import PAGE_HMAC
from tests.support import write_key
from tests.sync.conftest import audit_entries, reload_config, run_sonae, sync_runs
from tests.sync.exports import AS_OF, jst_text


def _one_line_error(result) -> str:
    assert result.returncode == 1, result.stdout
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_wrong_key_is_a_clear_message(loaded, tmp_path):
    other = {"SONAE_SECURITY_KEY_FILE": str(write_key(tmp_path / "other" / "master.key"))}
    for args in (["snapshot", "list"], ["snapshot", "verify"], ["sync", "status"]):
        line = _one_line_error(run_sonae(*args, env=other))
        assert "cannot be opened with the configured key (wrong key, or not a Sonae database); check security.key_file" in line, line


def test_missing_key_file_beside_loaded_data_says_to_restore_it(loaded, tmp_path):
    # a new key cannot read the loaded data: `sonae key init` is for a new box (tests/deploy/test_serve_start.py)
    line = _one_line_error(run_sonae("snapshot", "list", env={"SONAE_SECURITY_KEY_FILE": str(tmp_path / "nowhere.key")}))
    assert line.startswith(f"Error: master key {tmp_path / 'nowhere.key'} is missing, and ") and "holds data encrypted with it" in line
    assert line.endswith("restore the key from its offline copy (runbook 07-kagi-kanri); a new key from `sonae key init` cannot read that data")


def test_a_second_sync_is_refused_while_one_runs_and_not_recorded_as_a_run(loaded, store, small_export):
    """Turned away, it never ran: a record of it would stand as the latest
    full load over the one holding the lock (the morning report said
    「拒否（データの検査に不合格）」 of a night whose load succeeded)."""
    runs = sync_runs(loaded)
    with store.write_lock():
        line = _one_line_error(run_sonae("sync", "full", "--from", str(small_export)))
    assert "another sync is running (pid " in line and "wait for it to finish and rerun" in line
    # Since when, in the ward's time as `sonae sync status` shows it, whatever the box's own zone.
    assert re.search(r"\(pid \d+ since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d JST holds ", line), line
    assert sync_runs(loaded) == runs
    assert store.current() == 1


@pytest.mark.parametrize("content", ["鍵ではありません\n", "", "c2hvcnQ=\n"], ids=["not-base64", "emptied", "too-short"])
def test_a_damaged_key_file_beside_loaded_data_says_to_restore_it_not_to_make_one(loaded, tmp_path, content):
    """A new key would leave every generation and the operational database
    unreadable: the advice for a missing key holds for a damaged one."""
    damaged = tmp_path / "damaged.key"
    damaged.write_text(content, encoding="utf-8")
    damaged.chmod(0o600)
    line = _one_line_error(run_sonae("snapshot", "list", env={"SONAE_SECURITY_KEY_FILE": str(damaged)}))
    assert line.startswith(f"Error: the master key file {damaged} ") and " holds data encrypted with the key it held " in line, line
    assert line.endswith("restore the key from its offline copy (runbook 07-kagi-kanri); a new key from `sonae key init` cannot read that data")


def test_a_key_file_that_is_not_base64_on_a_new_box_says_how_to_make_one(tmp_path):
    damaged = tmp_path / "damaged.key"
    damaged.write_text("鍵ではありません\n", encoding="utf-8")
    damaged.chmod(0o600)
    (tmp_path / "home").mkdir()  # a new box: nothing encrypted yet (not the machine's /var/lib/sonae)
    line = _one_line_error(run_sonae("snapshot", "list", env={"SONAE_SECURITY_KEY_FILE": str(damaged), "SONAE_HOME": str(tmp_path / "home")}))
    assert line == f"Error: key file {damaged} is not base64; write a new one with `sonae key init PATH`", line


def test_key_init_refuses_a_path_inside_the_data_directory(tmp_path):
    """The key would be refused when used there (a copy of the data would
    carry it): refused when written, before anything is encrypted with it."""
    home = tmp_path / "home"
    line = _one_line_error(run_sonae("key", "init", str(home / "keys" / "master.key"), env={"SONAE_HOME": str(home)}))
    assert line == (f"Error: key file {home / 'keys' / 'master.key'} is inside the data directory {home}; write it outside "
                    "(e.g. /etc/sonae/) so that a copy of the data does not carry its key")
    assert not (home / "keys" / "master.key").exists()


def test_key_init_refuses_to_overwrite(tmp_path):
    path = tmp_path / "k" / "master.key"
    first = run_sonae("key", "init", str(path))
    assert first.returncode == 0 and oct(path.stat().st_mode & 0o777) == "0o600"
    line = _one_line_error(run_sonae("key", "init", str(path)))
    assert "already exists; refusing to overwrite a key" in line


def test_key_rotation_reencrypts_everything_and_resumes(loaded, small_export, tmp_path, monkeypatch):
    assert run_sonae("sync", "full", "--from", str(small_export)).returncode == 0
    old_master = master_key(loaded)
    new_key_file = tmp_path / "etc" / "master-2027.key"
    assert run_sonae("key", "init", str(new_key_file)).returncode == 0
    new_master = crypto.read_key_file(new_key_file)
    # An interrupted earlier rotation had already re-encrypted generation 1.
    store = snapshot_store(loaded)
    crypto.rekey(store.path_of(1), crypto.derive_key(old_master, "snapshot"), crypto.derive_key(new_master, "snapshot"), page_hmac=PAGE_HMAC)

    result = run_sonae("key", "rotate", "--new-key-file", str(new_key_file), "--actor", "it-sato")
    assert result.returncode == 0, result.stderr
    assert "re-encrypted 1 snapshot generation(s) and the operational database" in result.stdout
    assert f'set security.key_file = "{new_key_file}"' in result.stdout

    # The old key opens nothing any more; the new one opens everything.
    assert "cannot be opened with the configured key" in _one_line_error(run_sonae("snapshot", "list"))
    monkeypatch.setenv("SONAE_SECURITY_KEY_FILE", str(new_key_file))
    listing = run_sonae("snapshot", "list", "--json")
    assert [g["generation"] for g in json.loads(listing.stdout)] == [1, 2]
    for generation in ("1", "2"):
        assert run_sonae("snapshot", "verify", generation).returncode == 0
    entry = audit_entries(reload_config(), "key.rotate")[-1]
    assert entry["actor"] == "it-sato" and entry["detail"]["generations"] == [2]


def test_key_rotation_to_the_same_key_is_refused(loaded, tmp_path):
    line = _one_line_error(run_sonae("key", "rotate", "--new-key-file", str(tmp_path / "etc" / "master.key")))
    assert "holds the key already in use" in line


def test_sync_status(loaded):
    result = run_sonae("sync", "status", "--json")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["generation"] == 1 and status["last_seq"] == 1000 and status["full_export_due"] is None
    assert status["runs"][0]["outcome"] == "ok" and status["runs"][0]["kind"] == "full"
    text = run_sonae("sync", "status").stdout
    assert text.startswith(f"generation 1: data as of {jst_text(AS_OF)}")


def test_a_clock_behind_the_data_is_said_not_shown_as_a_negative_age(loaded, monkeypatch):
    """A box whose clock is a day behind showed the copy as "-24.0 h old";
    runbook 10 sends IT to these very commands to find such a clock."""
    import datetime as dt

    from click.testing import CliRunner

    from fallback.cli import main
    from tests.clocks import set_clock_off

    as_of = dt.datetime.fromisoformat(AS_OF)
    set_clock_off(monkeypatch, as_of - dt.datetime.now(as_of.tzinfo) - dt.timedelta(days=1))  # a day before the data's time
    status = CliRunner().invoke(main, ["sync", "status"])
    assert status.exit_code == 0, status.output
    first = status.stdout.splitlines()[0]
    assert first.startswith("generation 1: data as of ") and "(data as of after this box's clock: check the clock, runbooks/10-tokei.md)" in first
    assert all(re.match(r"  \d{4}-\d\d-\d\d \d\d:\d\d:\d\d JST  ", line) for line in status.stdout.splitlines() if line.startswith("  "))
    listing = CliRunner().invoke(main, ["snapshot", "list"])
    assert listing.exit_code == 0 and "ahead!" in listing.stdout.splitlines()[1] and not re.search(r"-\d+\.\dh", listing.stdout)
    assert listing.stderr.strip() == "ahead! = data as of after this box's clock: check the clock, runbooks/10-tokei.md"

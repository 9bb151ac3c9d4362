"""The `sonae` CLI as an operator runs it: a real subprocess, real config
and keys, exit codes and one-line errors."""

from __future__ import annotations

import json
import os

import pytest

from tests.support import sonae


@pytest.fixture
def env(sonae_env):
    return {k: v for k, v in os.environ.items() if k.startswith("SONAE_")}


def test_help_lists_every_area():
    out = sonae("--help").stdout
    for command in ("serve", "worker", "sync", "snapshot", "key", "user", "terminal", "audit", "verify", "certificate", "mode", "demo", "cloudsim"):
        assert f"  {command}" in out, command


def test_user_lifecycle(env):
    assert sonae("user", "add", "clerk1", "--name", "窓口 一郎", "--role", "clerk", "--password", "long-enough-pw", env=env).returncode == 0
    duplicate = sonae("user", "add", "clerk1", "--name", "x", "--role", "clerk", "--password", "long-enough-pw", env=env)
    assert duplicate.returncode == 1 and "already exists" in duplicate.stderr and len(duplicate.stderr.strip().splitlines()) == 1
    short = sonae("user", "add", "clerk2", "--name", "x", "--role", "clerk", "--password", "short", env=env)
    assert short.returncode == 1 and "at least 10" in short.stderr
    assert sonae("user", "disable", "clerk1", env=env).returncode == 0
    assert "clerk1\tclerk\tdisabled" in sonae("user", "list", env=env).stdout
    assert sonae("user", "reset", "clerk1", "--password", "another-long-pw", env=env).returncode == 0
    assert sonae("user", "reset", "nobody", "--password", "another-long-pw", env=env).returncode == 1


def test_a_password_from_the_environment_stays_off_the_command_line(env):
    given = {**env, "SONAE_USER_PASSWORD": "long-enough-pw"}
    assert sonae("user", "add", "clerk1", "--name", "窓口 一郎", "--role", "clerk", env=given).returncode == 0
    short = sonae("user", "add", "clerk2", "--name", "x", "--role", "clerk", env={**env, "SONAE_USER_PASSWORD": "short"})
    assert short.returncode == 1 and "at least 10" in short.stderr  # the variable's value, checked like --password's
    assert sonae("user", "reset", "clerk1", env={**env, "SONAE_USER_PASSWORD": "another-long-pw"}).returncode == 0
    unanswered = sonae("user", "reset", "clerk1", env=env, input="")  # neither: it asks, and nobody answers
    assert unanswered.returncode != 0


def test_mode_set_and_history_are_audited(env):
    assert sonae("mode", "set", "downtime", "--reason", "住民記録システム障害", "--actor", "it-oncall", env=env).returncode == 0
    assert sonae("mode", "show", env=env).stdout.startswith("downtime")
    refused = sonae("mode", "set", "standby", "--reason", "x", env=env)
    assert refused.returncode == 1 and "切り替えられません" in refused.stderr
    exported = [json.loads(line) for line in sonae("audit", "export", "--action", "mode", env=env).stdout.splitlines()]
    assert [(e["actor"], e["detail"]["to"]) for e in exported] == [("it-oncall", "downtime")]
    assert "intact" in sonae("audit", "verify", env=env).stdout


def test_wrong_key_is_a_one_line_error(env, tmp_path):
    assert sonae("mode", "show", env=env).returncode == 0  # creates the ops database with the right key
    other = tmp_path / "other.key"
    other.write_text("A" * 43 + "=\n")
    other.chmod(0o600)
    result = sonae("mode", "show", env={**env, "SONAE_SECURITY_KEY_FILE": str(other)})
    assert result.returncode == 1
    assert "cannot be opened with the configured key" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_key_file_readable_by_others_is_refused(env):
    os.chmod(env["SONAE_SECURITY_KEY_FILE"], 0o644)
    result = sonae("mode", "show", env=env)
    assert result.returncode == 1 and "chmod 600" in result.stderr


def test_key_inside_data_directory_is_refused(env):
    inside = os.path.join(env["SONAE_HOME"], "master.key")
    with open(env["SONAE_SECURITY_KEY_FILE"]) as src, open(inside, "w") as dst:
        dst.write(src.read())
    os.chmod(inside, 0o600)
    result = sonae("mode", "show", env={**env, "SONAE_SECURITY_KEY_FILE": inside})
    assert result.returncode == 1 and "inside the data directory" in result.stderr


def test_audit_verify_fails_on_a_tampered_log(env, sonae_env):
    from fallback.ops import open_ops

    sonae("user", "add", "clerk1", "--name", "x", "--role", "clerk", "--password", "long-enough-pw", env=env)
    sonae("user", "disable", "clerk1", env=env)
    conn = open_ops(sonae_env)
    conn.execute("DROP TRIGGER audit_no_update")
    conn.execute("UPDATE audit SET actor = 'someone-else' WHERE id = 1")
    result = sonae("audit", "verify", env=env)
    assert result.returncode == 1 and "entry 1" in result.stderr


def test_a_damaged_snapshot_is_a_one_line_error_naming_the_way_out(loaded_env):
    from fallback.mirror.registry import snapshot_store

    env = {k: v for k, v in os.environ.items() if k.startswith("SONAE_")}
    store = snapshot_store(loaded_env)
    path = store.path_of(store.current())
    data = bytearray(path.read_bytes())
    for offset in range(4096, len(data), 4096):  # every page after the header page
        data[offset + 100] ^= 0xFF
    path.write_bytes(bytes(data))
    result = sonae("sync", "status", env=env)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "damaged" in result.stderr and "sonae snapshot rollback" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
